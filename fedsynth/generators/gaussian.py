"""Generator ``gaussian``: a DP class-conditional Gaussian with a low-rank-plus-diagonal covariance.

Each record ``x`` (log-expression over ``G`` genes) is written as
``v = [x - l(x) 1, l(x)]`` in ``D = G + 1`` coordinates: its centred
profile and its level ``l(x) = mean_g x_g`` (so ``x = v_{1..G} + v_{D}``,
a fixed linear map ``A = [I_G | 1]``). The model is

.. math::

    y \\sim \\mathrm{Categorical}(\\pi), \\qquad
    v \\mid y = k \\;\\sim\\; \\mathcal{N}\\left(\\mu_k,\\; W W^\\top + \\Psi\\right),

with ``W`` a ``D x r`` matrix (the top ``r`` principal directions of the
pooled within-class scatter, DP-PCA) and ``Psi`` diagonal and positive.
Everything is estimated from four (six for counts input) noisy secure sums,
each a Gaussian mechanism with noise ``z_j * Delta_j`` (``z_j`` calibrated
from the declared releases before any data is touched,
:class:`~fedsynth.privacy.release.ReleasePlan`):

1. **class counts** ``c_k = sum_i [y_i = k]`` (``Delta = 1``); proportions
   ``pi_k = max(c_k, 1) / sum_j max(c_j, 1)``;
2. **gene means** ``m = (1/N) sum_i clip(v_i, R_1)`` (``Delta = R_1``; ``N``
   is public), the centre for the class means;
3. **class means** ``S_k = sum_{y_i = k} clip(v_i - m, R_2)``
   (``Delta = R_2``: a record is in one class),
   ``mu_k = m + S_k / max(c_k, 2 z_1)`` -- a class whose noisy count is
   within noise of zero is shrunk towards ``m`` instead of divided by ~0;
4. **second moments**: the upper triangle (diagonal included) of
   ``M = sum_i r_i r_i^T``, ``r_i = clip(v_i - mu_{y_i}, R_3)``. Since
   ``||r r^T||_F = ||r||^2 <= R_3^2``, ``Delta = R_3^2`` (the Analyze-Gauss
   mechanism). The noisy ``M`` is symmetrised, ``Sigma = M / (N - K)``;
5. for counts input, the library-size model
   (:mod:`fedsynth.privacy.library_size`).

``clip(u, R) = u min(1, R / ||u||)``. The bounds scale with the dimension:
``R_1 = c_1 sqrt(D)``, ``R_2 = c_2 sqrt(G)``, ``R_3 = c_3 sqrt(G)``
(:func:`clip_bounds`; public constants, no data touched).

**Defaults are measured** (not derived): the budget split
(:data:`BUDGET_SPLIT`) and ``c_1, c_2, c_3``; how, and what else was tried,
is in BENCHMARKS.md ("DP Gaussian: how the defaults were chosen").

**Fitting** (post-processing, free): the noise added to ``Sigma`` is a
symmetric Gaussian matrix with entry s.d. ``s = z_4 R_3^2 / (N - K)``, whose
spectrum fills ``[-2 s sqrt(D), 2 s sqrt(D)]``; a signal eigenvalue
``lambda > s sqrt(D)`` appears at ``lambda + s^2 D / lambda``. So the top
``r`` eigenpairs ``(lambda_hat, u)`` are kept only above the bulk edge
``2 s sqrt(D)`` and de-biased, ``lambda = (lambda_hat + sqrt(lambda_hat^2 -
4 s^2 D)) / 2``, ``W = U diag(sqrt(lambda))``. The diagonal of ``Sigma`` is
shrunk towards its average by the share of its spread that is noise,
``psi_g = a d_g + (1 - a) mean(d)``, ``a = max(0, 1 - s^2 / var_g(d_g))``,
then ``Psi = max(psi - diag(W W^T), f mean(d))`` (floor ``f`` =
:data:`VARIANCE_FLOOR`, :data:`VARIANCE_FLOOR_NO_DP` without DP). Without DP (``--no-dp``) nothing is clipped or
noised, ``s = 0``, and the fit is the plain pooled estimate.

**Sampling**: ``v = mu_y + W z + Psi^{1/2} e``, ``z ~ N(0, I_r)``,
``e ~ N(0, I_D)``; ``x = A v``. Counts are drawn back from ``x`` by
:mod:`fedsynth.workflows.synthesize` as for every generator.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ParameterError
from ..privacy import library_size
from ..privacy.release import ReleaseSpec
from ..privacy.clip import clip_rows
from .base import Generator, option

log = logging.getLogger("fedsynth")

NAME = "gaussian"
#: Share of the budget (of the composed RDP curve) each release gets.
BUDGET_SPLIT = {
    "class counts": 0.05,
    "gene means": 0.25,
    "class means": 0.55,
    "second moments": 0.15,
}
#: Extra releases for counts input (:mod:`fedsynth.privacy.library_size`): mean, spread.
COUNTS_SPLIT = (0.1, 0.03)
#: ``c_1, c_2, c_3`` of :func:`clip_bounds` (see the module doc, "Defaults are measured").
GENE_MEAN_CLIP = 2.5
CLASS_MEAN_CLIP = 0.5
RESIDUAL_CLIP = 0.7
#: Floor of the residual variances, as a share of the average variance: with
#: DP it regularises the noisy diagonal (measured: BENCHMARKS.md); without DP
#: it only keeps ``Psi`` positive.
VARIANCE_FLOOR = 0.3
VARIANCE_FLOOR_NO_DP = 1e-3
#: A class mean is divided by max(c_k, COUNT_SHRINK * z_counts): shrunk towards m when its count is within noise.
COUNT_SHRINK = 2.0


@dataclass
class GaussianConfig:
    """Shape of a fitted model (the model file's ``config``)."""
    n_genes: int
    n_classes: int
    components: int
    generator: str = NAME


def clip_bounds(n_genes: int) -> tuple[float, float, float]:
    """Public L2 bounds ``(R_1, R_2, R_3)`` for gene means, class means, residuals.

    ``R_1 = c_1 sqrt(G + 1)``, ``R_2 = c_2 sqrt(G)``, ``R_3 = c_3 sqrt(G)``.
    Centred log-expression profiles vary by about one unit per gene, so a
    record's deviation from its class mean has norm about ``sqrt(G)`` and
    ``R_2, R_3`` clip most records (a bias towards the centre, traded for
    less noise); ``R_1 = 2.5 sqrt(G + 1)`` is about the median norm of a
    ``[profile, level]`` row of log2 expression (19.7 at 50 PAM50 genes),
    below the CVAE's ``4 sqrt(G + 1)``: the gene means are shrunk a little
    towards 0 but their noise, which every class mean inherits, is 1.6x
    smaller.
    """
    return (GENE_MEAN_CLIP * math.sqrt(n_genes + 1), CLASS_MEAN_CLIP * math.sqrt(n_genes),
            RESIDUAL_CLIP * math.sqrt(n_genes))


def budget_split(input_kind: str) -> dict[str, float]:
    """Release name -> budget weight, in release order."""
    split = dict(BUDGET_SPLIT)
    if input_kind == "counts":
        split.update({spec.name: spec.share for spec in library_size.specs(*COUNTS_SPLIT)})
    return split


def to_profile_level(X: np.ndarray) -> np.ndarray:
    """``v = [x - l(x), l(x)]``, one row per record (local, free)."""
    level = X.mean(axis=1, keepdims=True)
    return np.hstack([X - level, level])


def from_profile_level(V: np.ndarray) -> np.ndarray:
    """``x = A v = v_{1..G} + v_D`` (the inverse of :func:`to_profile_level`)."""
    return V[:, :-1] + V[:, -1:]


class GaussianModel:
    """A fitted class-conditional Gaussian in ``v`` coordinates (see module doc).

    Parameters
    ----------
    cfg : GaussianConfig
    class_means : ndarray, shape (K, D)
        ``mu_k``.
    loadings : ndarray, shape (D, r')
        ``W`` (``r' <= r`` components survive the noise).
    residual_variance : ndarray, shape (D,)
        ``diag(Psi)``, positive.
    covariance : ndarray, shape (D, D)
        The released (noisy, symmetrised) within-class covariance ``Sigma``
        the fit came from; kept for inspection and tests.
    """

    def __init__(self, cfg: GaussianConfig, class_means, loadings, residual_variance, covariance):
        self.cfg = cfg
        self.class_means = np.asarray(class_means, dtype=float)
        self.loadings = np.asarray(loadings, dtype=float).reshape(len(self.class_means[0]), -1)
        self.residual_variance = np.asarray(residual_variance, dtype=float)
        self.covariance = np.asarray(covariance, dtype=float)

    def state_dict(self) -> dict:
        return {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
                for name in ("class_means", "loadings", "residual_variance", "covariance")}

    @classmethod
    def from_blob(cls, blob: dict) -> "GaussianModel":
        cfg = GaussianConfig(**blob["config"])
        st = blob["state_dict"]
        return cls(cfg, *(st[k].numpy() for k in ("class_means", "loadings", "residual_variance", "covariance")))

    def model_covariance(self) -> np.ndarray:
        """``W W^T + Psi`` in ``v`` coordinates."""
        return self.loadings @ self.loadings.T + np.diag(self.residual_variance)

    def expression_means(self) -> np.ndarray:
        """Class means of ``x``: ``A mu_k``, shape (K, G)."""
        return from_profile_level(self.class_means)

    def expression_covariance(self) -> np.ndarray:
        """Within-class covariance of ``x``: ``A (W W^T + Psi) A^T``, shape (G, G)."""
        G = self.cfg.n_genes
        A = np.hstack([np.eye(G), np.ones((G, 1))])
        return A @ self.model_covariance() @ A.T

    def sample(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Log-expression ``x = A (mu_y + W z + Psi^{1/2} e)`` for labels ``y``."""
        n, (D, r) = len(y), self.loadings.shape
        z = rng.standard_normal((n, r))
        e = rng.standard_normal((n, D))
        V = self.class_means[y] + z @ self.loadings.T + e * np.sqrt(self.residual_variance)
        return from_profile_level(V)


# ------------------------------------------------------------- releases
def _upper(M: np.ndarray) -> np.ndarray:
    return M[np.triu_indices(M.shape[0])]


def _symmetric(upper: np.ndarray, D: int) -> np.ndarray:
    M = np.zeros((D, D))
    M[np.triu_indices(D)] = upper
    return M + np.triu(M, 1).T


def release_moments(release, X: np.ndarray, y: np.ndarray, n_classes: int, n_total: int, *,
                    clip: bool = True, library_sizes: np.ndarray | None = None) -> dict:
    """The statistics of the module doc, each one ``release(name, values)``.

    Parameters
    ----------
    release : :class:`~fedsynth.privacy.release.Releaser`
        This site's values in, the noisy sum over all sites out (a
        :class:`~fedsynth.privacy.release.Measurement` with its noise s.d.).
    X, y
        This site's log-expression (samples x genes) and class indices.
    n_total
        ``N``, the public total record count.
    clip
        False only without DP: nothing clipped.
    library_sizes
        This site's library sizes, for counts input.
    """
    G = X.shape[1]
    D = G + 1
    r1, r2, r3 = clip_bounds(G) if clip else (math.inf, math.inf, math.inf)
    onehot = np.eye(n_classes)[y]
    counts_m = release("class counts", onehot.sum(0))
    counts = counts_m.value
    V = to_profile_level(X)
    m = release("gene means", clip_rows(V, r1).sum(0)).value / n_total
    S = release("class means", onehot.T @ clip_rows(V - m, r2)).value
    mu = m + S / np.maximum(np.maximum(counts, 1.0), COUNT_SHRINK * counts_m.noise_sd)[:, None]
    R = clip_rows(V - mu[y], r3)
    moments = release("second moments", _upper(R.T @ R))
    M = _symmetric(moments.value, D)
    dof = max(n_total - n_classes, 1)
    kept = np.maximum(counts, 1.0)
    stats = {
        "class_counts": counts.tolist(),
        "class_proportions": (kept / kept.sum()).tolist(),
        "gene_means": m.tolist(),
        "class_means": mu,
        "covariance": M / dof,
        "covariance_noise_sd": moments.noise_sd / dof if clip else 0.0,
        "clip_bounds": [r1, r2, r3] if clip else None,
    }
    if library_sizes is not None:
        stats["log_library_size"] = library_size.release(release, library_sizes, n_total)
    return stats


def fit(stats: dict, components: int, n_genes: int) -> GaussianModel:
    """DP-PCA and the diagonal residual from the released moments (module doc, "Fitting")."""
    Sigma = np.asarray(stats["covariance"], dtype=float)
    s = float(stats["covariance_noise_sd"])
    D = Sigma.shape[0]
    d = np.diag(Sigma).copy()
    avg = max(float(d.mean()), 1e-6)
    if s > 0:
        spread = float(d.var())
        a = max(0.0, 1.0 - s**2 / spread) if spread > 0 else 0.0
        d = a * d + (1.0 - a) * avg
    r = min(components, D)
    if r > 0:
        lam, U = np.linalg.eigh(Sigma)
        lam, U = lam[::-1][:r], U[:, ::-1][:, :r]
        if s > 0:
            edge = 2.0 * s * math.sqrt(D)
            keep = lam > edge
            lam, U = lam[keep], U[:, keep]
            lam = (lam + np.sqrt(np.maximum(lam**2 - 4.0 * s**2 * D, 0.0))) / 2.0
        else:
            keep = lam > 0
            lam, U = lam[keep], U[:, keep]
        # a deterministic sign per component, so every site's file is byte-identical
        signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
        W = U * signs * np.sqrt(lam)
    else:
        W = np.zeros((D, 0))
    psi = np.maximum(d - (W**2).sum(1), (VARIANCE_FLOOR if s > 0 else VARIANCE_FLOOR_NO_DP) * avg)
    cfg = GaussianConfig(n_genes=n_genes, n_classes=len(stats["class_means"]), components=components)
    return GaussianModel(cfg, stats["class_means"], W, psi, Sigma)


# ------------------------------------------------------------- generator
class GaussianGenerator(Generator):
    """Class-conditional Gaussian with a DP-PCA low-rank-plus-diagonal covariance (module doc)."""

    name = NAME
    summary = "class-conditional Gaussian, low-rank + diagonal covariance from DP-PCA"
    stream = 0x6A55

    @dataclass
    class Config:
        components: int = option(4, "gaussian: principal components r of the within-class covariance "
                                 "(low rank + diagonal; 0: diagonal only).", minimum=0,
                                 label="Principal components of the within-class covariance")

    @classmethod
    def validate(cls, config) -> None:
        if config.components < 0:
            raise ParameterError(f"--components must be >= 0 (got {config.components})")

    def releases(self, schema) -> list[ReleaseSpec]:
        G = len(schema.genes)
        r1, r2, r3 = clip_bounds(G)
        sens = {"class counts": 1.0, "gene means": r1, "class means": r2, "second moments": r3**2}
        specs = [ReleaseSpec(name, sens[name], share) for name, share in BUDGET_SPLIT.items()]
        if schema.input_kind == "counts":
            specs += library_size.specs(*COUNTS_SPLIT)
        return specs

    def fit(self, release, cohort, schema) -> None:
        t1 = time.monotonic()
        private = release.plan.private
        stats = release_moments(release, cohort.X, schema.label_index(cohort.labels), len(schema.classes),
                                schema.n_total, clip=private,
                                library_sizes=cohort.library_sizes if schema.input_kind == "counts" else None)
        self.timings["statistics"] = time.monotonic() - t1
        t2 = time.monotonic()
        self.model = fit(stats, self.config.components, len(schema.genes))
        self.timings["fit"] = time.monotonic() - t2
        self.statistics = {k: v for k, v in stats.items() if k not in ("class_means", "covariance")}
        self._split = budget_split(schema.input_kind)

    def dp_extra(self) -> dict:
        return {"budget_split": self._split, "clip_bounds": self.statistics["clip_bounds"]}

    def params(self) -> dict:
        private = self.statistics.get("clip_bounds") is not None
        return {"components": self.config.components, "components_kept": int(self.model.loadings.shape[1]),
                "gene_mean_clip": GENE_MEAN_CLIP, "class_mean_clip": CLASS_MEAN_CLIP, "residual_clip": RESIDUAL_CLIP,
                "variance_floor": VARIANCE_FLOOR if private else VARIANCE_FLOOR_NO_DP}

    @classmethod
    def from_state(cls, blob: dict) -> "GaussianGenerator":
        return cls.restored(cls.Config(components=blob["config"]["components"]), GaussianModel.from_blob(blob), blob)
