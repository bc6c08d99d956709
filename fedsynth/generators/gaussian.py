"""Generator ``gaussian``: a DP class-conditional Gaussian, sized for whole transcriptomes.

Each record ``x`` (log-expression over ``G`` genes) is written as
``v = [x - l(x) 1, l(x)]`` in ``D = G + 1`` coordinates: its centred
profile and its level ``l(x) = mean_g x_g`` (so ``x = v_{1..G} + v_{D}``,
a fixed linear map ``A = [I_G | 1]``). The model is

.. math::

    y \\sim \\mathrm{Categorical}(\\pi), \\qquad
    v \\mid y = k \\;\\sim\\; \\mathcal{N}\\left(\\mu_k,\\; W W^\\top + \\Psi\\right),

with ``W`` a ``D x r`` matrix that is zero outside a block of ``p``
coordinates (DP-PCA of that block) and ``Psi`` diagonal and positive.
Nothing of size ``D x D`` is ever formed or sent: every release has
``O(D K)`` values, so time, memory and bytes grow linearly in ``G``.

**Releases** (each a Gaussian mechanism with noise ``z_j Delta_j``; ``z_j``
calibrated from the declared releases before any data is touched,
:class:`~fedsynth.privacy.release.ReleasePlan`; ``N`` is the released noisy
record count; ``clip(u, R) = u min(1, R / ||u||)``):

1. **class counts** ``c_k = sum_i [y_i = k]`` (``Delta = 1``); proportions
   ``pi_k = max(c_k, 1) / sum_j max(c_j, 1)``; a class is divided by
   ``c'_k = max(c_k, 1, 2 s_c)`` (``s_c`` the count noise), so a class
   whose count is within noise of zero is shrunk, not divided by ~0;
2. **record scale**: histograms of ``log2(||v_i|| / sqrt(D))`` and of
   ``log2 |l(x_i)|`` in quarter octaves (one count per record in each:
   ``Delta = sqrt(2)``, :func:`scale_histogram`); their peaks give ``s_v``,
   the records' typical r.m.s. per coordinate, and ``s_l``, their typical
   level (:func:`typical_scale`). Every clip below is in units of ``s_v`` or of
   ``s_r`` (after 3), so the noise relative to the data does not depend on
   the log base or on the normalisation (log2 bulk, log1p-CPM single
   cells); where the peak does not clear its noise, fixed
   :data:`FALLBACK_SCALES` stand in;
3. **gene means** ``m = W_l^{-1} (1/N) sum_i clip(W_l v_i, R_1)``, with
   ``W_l`` = diag(1, ..., 1, ``w``) weighting the level by ``w``
   (:func:`level_weight`) and ``R_1 = c_1 sqrt(D s_v^2 + (w^2 - 1) s_l^2)``
   (:func:`gene_mean_bound`). An error in the level moves every gene of
   every record alike, so the level gets a share ``c_l^2`` of the clip
   (``w s_l = c_l s_v sqrt(D)``) and ``w`` times less noise than a profile
   coordinate. The ``G`` profile means are shrunk towards their average by
   their known noise variance ``s^2`` (:func:`shrink_towards_mean`). Then
   ``s_r^2 = s_v^2 - (||m||^2 - D s^2) / D``, the typical r.m.s. per
   coordinate of ``v - m`` (:func:`centred_scale`, post-processing);
4. **gene variances**, first as **spreads** where the class means cannot
   cover every coordinate (``g < D``, ``g = ceil(F N / K)``,
   :func:`selected_coordinates`): the sum of ``clip((v_i - m)^2, c_v
   sqrt(sum_j (s_r^2 + e_j^2)^2))`` (elementwise squares; ``e_j^2`` the
   known error variance of ``m_j``, which ``v_i - m`` carries:
   :func:`variance_bound`). ``Q_j / N - e_j^2`` is coordinate ``j``'s
   total variance; the ``g - 1`` profile coordinates of largest spread
   and the level are selected (post-processing: selection is free).
   Between-class variance goes with total variance (a gene that differs
   between classes varies across the cohort), and one number per
   coordinate with the noise of a ``D``-dimensional release ranks far
   better than ``K`` noisy class sums per coordinate would (BENCHMARKS.md,
   "The default at 700bf28: coordinates selected by their released
   spread"). ``F``
   (:func:`selection_factor`) is inverse to the noise level the budget
   allows: 1 at epsilon 1, about ``epsilon`` elsewhere;
5. **class means** on the ``g`` selected coordinates (every coordinate
   when ``g = D``): class sums of
   ``clip((v_i - m)_sel, c_s s_r sqrt(g))``, divided by the share of a
   typical record that the clip keeps, ``a = c_s s_r sqrt(g) / sqrt(g
   s_r^2 + sum_sel e_j^2)`` (:func:`clip_factor`; ``e_j^2`` the known error
   variance of ``m``), so that they are not shrunk towards ``m``. The
   pooled mean of the sums corrects ``m`` there; each class's deviation
   from it is de-noised by its known noise (:func:`denoise_deviations`:
   the larger of a per-gene empirical-Bayes weight and a per-class
   James-Stein factor; with a selection, the per-gene weight comes from a
   prior whose variance grows as a power of the gene's released spread,
   :func:`spread_prior_weights`). Elsewhere ``mu_k = m``. The level's
   deviation moves every gene of a class: with a selection each class
   keeps the pooled level (:func:`level_deviations`);
6. **within-class variances**: with a selection, from the spreads
   (post-processing), ``(Q_j - N e_j^2 - sum_k N pi_k (mu_kj - mubar_j)^2)
   / (N - K)`` (``sum_i (v_i - m)^2`` splits into the within-class and the
   class means' sums of squares; exact without noise). Without one, the
   gene-variance release is made here instead: the sums of ``clip(r_i^2,
   c_v sqrt(sum_j (s_r^2 + e_j^2)^2))``, ``r_i = v_i - mu_{y_i}`` and
   ``e_j^2`` the known error variance of ``mu_j``, divided by ``N - K``,
   less ``e_j^2``;
7. **block moments**: the upper triangle of ``sum_i u_i u_i^T``,
   ``u_i = clip(r_i[B], c_3 s_r sqrt(p))`` on the block ``B`` of the ``p``
   highest-ranked selected coordinates (by spread with a selection, by
   the class means' centred chi-square statistic without; :func:`block_size`;
   ``||u u^T||_F = ||u||^2``, so ``Delta = c_3^2 s_r^2 p``: Analyze-Gauss);
8. for counts input, the library-size model
   (:mod:`fedsynth.privacy.library_size`).

An extra weight of the gene means (:data:`SELECTION_DEPENDENT` times
:func:`skipped_fraction`, ``1 - g / D``) grows with ``D / (N / K)`` and
is taken from the class means: off the selection only the gene means
measure the data. At 50 genes and a few hundred records there is no
selection, and the class means keep it. All bounds are public
functions of ``G``, ``N``, ``K``, ``r``, the budget and the released scales
(:func:`release_bounds`); the plan is made at :data:`FALLBACK_SCALES` and
each bound is set from the released scales before its release
(:meth:`~fedsynth.privacy.release.Releaser.bound`: the noise multiplier, which
the guarantee rests on, is unchanged). The DP record lists the bounds as
used and the scales.

**Fitting** (post-processing, free): the block's noise is a symmetric
Gaussian matrix with entry s.d. ``s``, whose spectrum fills
``[-2 s sqrt(p), 2 s sqrt(p)]``; a signal eigenvalue ``lambda > s sqrt(p)``
appears at ``lambda + s^2 p / lambda``. So the top ``r`` eigenpairs are kept
only above the bulk edge ``2 s sqrt(p)`` and de-biased,
``lambda = (lambda_hat + sqrt(lambda_hat^2 - 4 s^2 p)) / 2``,
``W_B = U diag(sqrt(lambda))``. The variances are shrunk towards their
average by their known noise, then ``Psi = max(var - diag(W W^T), f
mean(var))`` (floor ``f`` = :data:`VARIANCE_FLOOR`,
:data:`VARIANCE_FLOOR_NO_DP` without DP); where the released variances
average to zero or less (a cohort too small for the release), every
``var_j`` is ``s_r^2`` instead. Without DP (``--no-dp``)
nothing is clipped or noised, every coordinate is selected, the block is
:func:`block_size` without DP, and the fit is the plain pooled estimate.

**Sampling**: ``v = mu_y + W z + Psi^{1/2} e``, ``z ~ N(0, I_r)``,
``e ~ N(0, I_D)``; ``x = A v``. Counts are drawn back from ``x`` by
:mod:`fedsynth.workflows.synthesize` as for every generator.

**Defaults are measured**: the budget split, ``c_1, c_3, c_s, c_v``
and the de-noiser; how, and what else was tried, is in BENCHMARKS.md
("Generators: how the defaults were chosen", "DP Gaussian for whole
transcriptomes").
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from ..errors import ParameterError
from ..privacy import library_size
from ..privacy.release import ReleaseSpec
from ..privacy.clip import clip_rows, clipped_sum
from .base import Generator, option

log = logging.getLogger("fedsynth")

NAME = "gaussian"
#: Share of the budget (of the composed privacy loss: zCDP ``rho``, or ``mu^2`` of Gaussian DP) each release gets.
BUDGET_SPLIT = {
    "class counts": 0.05,
    "record scale": 0.04,
    "gene means": 0.23,
    "gene variances": 0.05,
    "class means": 0.58,
    "block moments": 0.05,
}
#: Budget weights that move from the class means to these releases as :func:`skipped_fraction` ``f``
#: grows (:func:`budget_split`): the gene means, which alone measure the ``D - g`` coordinates the
#: class means skip. (The spreads that select them rank as well at their base weight: more of the
#: budget for them costs the class means more than it gains; BENCHMARKS.md.)
SELECTION_DEPENDENT = {"gene means": 0.2}
#: Extra releases for counts input (:mod:`fedsynth.privacy.library_size`): mean, spread.
COUNTS_SPLIT = (0.1, 0.03)
#: ``c_1`` of :func:`clip_bounds`; ``c_3`` of the block of second moments (module doc). Every
#: clip is in units of a released scale (:func:`typical_scale`): ``c_1`` of the records' typical
#: r.m.s. per coordinate ``s_v``, the others of the centred records' ``s_r``.
GENE_MEAN_CLIP = 1.0
RESIDUAL_CLIP = 0.45
#: Clip of the class-mean release over the ``g`` selected coordinates, ``c_s s_r sqrt(g)``.
SELECTED_CLIP = 0.6
#: Clip of a record's squared deviations (the variance release), ``c_v s_r^2 sqrt(D)``.
VARIANCE_CLIP = 0.8
#: ``c_l``: the level's share of the gene-mean clip, ``w s_l = c_l s_v sqrt(D)`` (:func:`level_weight`).
LEVEL_SHARE = 0.5
#: Bins of the scale releases: ``log2`` of a record's r.m.s. per coordinate (and of its level's
#: magnitude), in quarter octaves from 2^-6 to 2^6 (values outside go to the end bins).
SCALE_BINS = np.arange(-6.0, 6.0 + 1e-9, 0.25)
#: The chance that a scale histogram of pure noise yields a scale (:func:`typical_scale`): its peak
#: window must exceed the noise's ``1 - SCALE_FALSE_PEAK / W`` quantile, ``W`` windows (Bonferroni).
#: A false scale makes every clip wrong by its factor (a useless model, and synthetic values far
#: outside the data's range), so it must be rare per run, not per benchmark cell.
SCALE_FALSE_PEAK = 1e-4
#: Widths (bins) of the windows :func:`typical_scale` scans for the peak, widest first.
SCALE_WINDOWS = (3, 2, 1)
#: ``(s_v, s_r)`` where a scale histogram does not clear its noise: log2 expression of bulk
#: tumours (50 PAM50 genes and the generated bulk matrices: 2.4-2.8 and 1.5-1.7).
FALLBACK_SCALES = (2.5, 1.6)
#: Floor of the residual variances, as a share of the average variance: with
#: DP it regularises the noisy diagonal (measured: BENCHMARKS.md); without DP
#: it only keeps ``Psi`` positive.
VARIANCE_FLOOR = 0.3
VARIANCE_FLOOR_NO_DP = 1e-3
#: A class mean is divided by max(c_k, COUNT_SHRINK * z_counts): shrunk towards m when its count is within noise.
COUNT_SHRINK = 2.0
#: Powers ``gamma`` tried for the class-deviation prior's variance ``tau_j^2 ~ q_j^gamma`` (``q_j`` the
#: released spread; :func:`spread_prior_weights`): 0 (the spread says nothing) up to 4, the one of
#: largest marginal likelihood kept. Real panels' between-class variance grows as about ``q^1.1-1.4``
#: (brca, pbmc; BENCHMARKS.md).
SPREAD_PRIOR_POWERS = tuple(np.arange(0.0, 4.0 + 1e-9, 0.25))
#: Without DP, the block of second moments covers up to this many coordinates (a 2,000 x 2,000
#: matrix of doubles is 32 MB; :func:`block_size`).
NO_DP_BLOCK = 2000
#: zCDP ``rho`` (epsilon 1, delta 1e-5) at which ``g = ceil(N / K)`` (:func:`selection_factor`).
SELECTION_REFERENCE = (math.sqrt(math.log(1e5) + 1.0) - math.sqrt(math.log(1e5))) ** 2
#: The releases whose bounds are clips, set from the released scales (:func:`release_bounds`).
CLIPPED = ("gene means", "gene variances", "class means", "block moments")
#: Records per slice where a release over all ``D`` coordinates is summed a slice at a time
#: (:func:`_row_chunks`; memory only, the sums are the same).
ROW_CHUNK = 256
#: A selection only where ``D >= SELECTION_MIN_RATIO * g`` (:func:`selected_coordinates`).
SELECTION_MIN_RATIO = 2.0


@dataclass
class GaussianConfig:
    """Shape of a fitted model (the model file's ``config``)."""
    n_genes: int
    n_classes: int
    components: int
    generator: str = NAME


def clip_bounds(n_genes: int, scales: tuple[float, float] = FALLBACK_SCALES,
                level: float | None = None) -> float:
    """L2 bound ``R_1`` of the gene-mean release: :func:`gene_mean_bound` at the scales.

    ``R_1 = c_1 s_v sqrt(G + 1)`` when the level is not weighted, with
    ``s_v`` (``scales[0]``) the released typical r.m.s. per coordinate of
    the records and ``level`` = ``s_l`` their typical level
    (:func:`typical_scale`). With ``c_1 = 1``, ``R_1`` is the typical norm
    of a ``[profile, w level]`` row. It scales with the data: log2,
    natural-log and log1p-CPM input get the same relative noise.
    """
    return gene_mean_bound(n_genes, scales[0], level)


def _log2_histogram(a: np.ndarray) -> np.ndarray:
    t = np.log2(np.maximum(a, 2.0 ** (SCALE_BINS[0] - 1)))
    idx = np.clip(np.searchsorted(SCALE_BINS, t, side="right") - 1, 0, len(SCALE_BINS) - 2)
    return np.bincount(idx, minlength=len(SCALE_BINS) - 1).astype(float)


def scale_histogram(V: np.ndarray) -> np.ndarray:
    """Counts of the records' ``log2(||v_i|| / sqrt(D))``, then of ``log2 |l_i|``, each in :data:`SCALE_BINS`.

    One count per record in each half, so removing a record changes two
    counts by one: L2 sensitivity ``sqrt(2)``.
    """
    rms = np.sqrt(np.einsum("ij,ij->i", V, V) / V.shape[1])
    return np.concatenate([_log2_histogram(rms), _log2_histogram(np.abs(V[:, -1]))])


def level_weight(s_v: float, s_l: float | None, n_coords: int) -> float:
    """``w``: the weight of the level in the gene-mean release (module doc, release 3).

    ``w = c_l s_v sqrt(D) / s_l`` (``c_l`` = :data:`LEVEL_SHARE`), so a
    typical record's weighted level ``w |l|`` is ``c_l`` times its whole
    norm ``s_v sqrt(D)``: the level's mean gets ``w`` times less noise than
    a profile coordinate's, for a clip ``sqrt(1 + c_l^2)`` times larger.
    Kept within ``[1, sqrt(D)]``: never less than unweighted, and never
    below ``1 / sqrt(D)`` of a profile coordinate's noise. 1 when the level
    histogram did not clear its noise (``s_l`` is None).
    """
    if s_l is None or s_l <= 0:
        return 1.0
    return float(min(max(LEVEL_SHARE * s_v * math.sqrt(n_coords) / s_l, 1.0), math.sqrt(n_coords)))


def gene_mean_bound(n_genes: int, s_v: float, s_l: float | None) -> float:
    """``R_1 = c_1 sqrt(D s_v^2 + (w^2 - 1) s_l^2)``: the typical norm of a record with its level weighted by ``w``.

    ``||W_l v||^2 = ||v||^2 + (w^2 - 1) l^2``; unweighted (``w = 1``) it is
    ``c_1 s_v sqrt(D)``.
    """
    D = n_genes + 1
    w = level_weight(s_v, s_l, D)
    extra = (w**2 - 1.0) * s_l**2 if w > 1.0 else 0.0
    return GENE_MEAN_CLIP * math.sqrt(D * s_v**2 + extra)


def typical_scale(hist: np.ndarray, noise_sd: float) -> float | None:
    """The typical r.m.s. per coordinate from a released :func:`scale_histogram` (post-processing).

    A scan over windows of adjacent bins, widest first (:data:`SCALE_WINDOWS`):
    the first width whose largest window count exceeds ``z`` times its noise
    s.d. (``sqrt(width)`` times the per-bin ``noise_sd``) places the peak;
    the scale is the count-weighted mean of the centres (in ``log2``) of the
    3 bins around it, ``2^t``. ``z`` is the standard normal's ``1 -``
    :data:`SCALE_FALSE_PEAK` ``/ (n W)`` quantile over the ``W`` windows of
    each of the ``n`` widths (4.8 for 3 widths of 48 bins; Bonferroni), so a
    histogram of pure noise yields a scale in about 0.01% of draws. A false
    peak makes every clip wrong by its factor; where the real peak is within
    noise (50 genes, about 200 records, epsilon 1) a false window can also
    outrank it. The narrower windows find records that crowd into one bin
    (single cells: 82% of pbmc's in one quarter octave), whose peak a
    3-bin window's noise can hide at small budgets. ``None`` when no width
    clears; the caller uses :data:`FALLBACK_SCALES` instead.
    """
    h = np.asarray(hist, dtype=float)
    z = NormalDist().inv_cdf(1.0 - SCALE_FALSE_PEAK / (len(SCALE_WINDOWS) * len(h)))
    for width in SCALE_WINDOWS:
        window = np.convolve(h, np.ones(width), mode="same")
        j = int(np.argmax(window))
        if window[j] <= max(z * noise_sd * math.sqrt(width), 0.0):
            continue
        if width == 2 and j > 0 and h[j - 1] > h[j]:  # a 2-bin window is bins j - 1 and j: centre on the larger
            j -= 1
        lo, hi = max(j - 1, 0), min(j + 2, len(h))
        w = np.maximum(h[lo:hi], 0.0)
        return float(2.0 ** (w @ ((SCALE_BINS[:-1] + SCALE_BINS[1:])[lo:hi] / 2.0) / w.sum())) if w.sum() > 0 else None
    return None


def budget_split(input_kind: str, n_genes: int, n_total: int, n_classes: int,
                 factor: float = 1.0) -> dict[str, float]:
    """Release name -> budget weight, in release order (without a selection the gene variances, then
    residuals from the class means, come after the class means).

    With ``f`` = :func:`skipped_fraction` (``1 - g / D``, 0 without a
    selection), each release of :data:`SELECTION_DEPENDENT` gets ``f``
    times its weight more, taken from the class means: the more coordinates
    the class means skip, the more the selection is worth and the more of
    the data only the gene means measure. The weights always sum alike (the
    record count's share, fixed before ``N`` is known, stays as planned).
    """
    f = skipped_fraction(n_genes + 1, n_total, n_classes, factor)
    split = {}
    for name, share in BUDGET_SPLIT.items():
        if name == "class means":
            share -= sum(SELECTION_DEPENDENT.values()) * f
        split[name] = share + SELECTION_DEPENDENT.get(name, 0.0) * f
    if f == 0:
        split["gene variances"] = split.pop("gene variances")
        split["block moments"] = split.pop("block moments")
    if input_kind == "counts":
        split.update({spec.name: spec.share for spec in library_size.specs(*COUNTS_SPLIT)})
    return split


def to_profile_level(X: np.ndarray) -> np.ndarray:
    """``v = [x - l(x), l(x)]``, one row per record (local, free)."""
    level = X.mean(axis=1, keepdims=True)
    V = np.empty((X.shape[0], X.shape[1] + 1))
    np.subtract(X, level, out=V[:, :-1])
    V[:, -1:] = level
    return V


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
        ``W`` (``r' <= r`` components survive the noise; zero outside the block).
    residual_variance : ndarray, shape (D,)
        ``diag(Psi)``, positive.
    block : ndarray of int, shape (p,)
        The coordinates whose second moments were released.
    block_covariance : ndarray, shape (p, p)
        The released (noisy, symmetrised) within-class covariance of the
        block, which ``W`` came from; kept for inspection and tests.
    """

    def __init__(self, cfg: GaussianConfig, class_means, loadings, residual_variance, block, block_covariance):
        self.cfg = cfg
        self.class_means = np.asarray(class_means, dtype=float)
        self.loadings = np.asarray(loadings, dtype=float).reshape(len(self.class_means[0]), -1)
        self.residual_variance = np.asarray(residual_variance, dtype=float)
        self.block = np.asarray(block, dtype=np.int64)
        self.block_covariance = np.asarray(block_covariance, dtype=float)

    _STATE = ("class_means", "loadings", "residual_variance", "block", "block_covariance")

    def state_dict(self) -> dict:
        return {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))) for name in self._STATE}

    @classmethod
    def from_blob(cls, blob: dict) -> "GaussianModel":
        cfg = GaussianConfig(**blob["config"])
        st = dict(blob["state_dict"])
        if "covariance" in st:  # a model file from before issue 12: the whole covariance was released
            cov = st.pop("covariance")
            st["block"], st["block_covariance"] = torch.arange(cov.shape[0]), cov
        return cls(cfg, *(st[k].numpy() for k in cls._STATE))

    def model_covariance(self) -> np.ndarray:
        """``W W^T + Psi`` in ``v`` coordinates (``D x D``: small panels only)."""
        return self.loadings @ self.loadings.T + np.diag(self.residual_variance)

    def expression_means(self) -> np.ndarray:
        """Class means of ``x``: ``A mu_k``, shape (K, G)."""
        return from_profile_level(self.class_means)

    def expression_covariance(self) -> np.ndarray:
        """Within-class covariance of ``x``: ``A (W W^T + Psi) A^T``, shape (G, G) (small panels only)."""
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


# ------------------------------------------------------------- sizes
def selection_factor(epsilon: float | None, delta: float) -> float:
    """``F = sqrt(rho / rho_ref)``: how many times ``N / K`` coordinates the class means are released in.

    ``rho = (sqrt(log(1/delta) + epsilon) - sqrt(log(1/delta)))^2`` is the
    zCDP budget that ``(epsilon, delta)`` allows, and a Gaussian mechanism's
    noise s.d. at a fixed share is ``~ 1 / sqrt(rho)``; so ``F`` is inverse
    to the noise level, 1 at :data:`SELECTION_REFERENCE` (epsilon 1, delta
    1e-5; 0.51 / 1.96 / 3.78 at epsilon 0.5 / 2 / 4). Without DP (``None``)
    it is infinite (every coordinate).
    """
    if epsilon is None:
        return math.inf
    L = math.log(1.0 / delta)
    return float((math.sqrt(L + epsilon) - math.sqrt(L)) / math.sqrt(SELECTION_REFERENCE))


def selected_coordinates(n_coords: int, n_total: int, n_classes: int, factor: float = 1.0) -> int:
    """``g``: how many coordinates the class means are released in.

    ``g = ceil(F N / K)`` (``F`` records per class, :func:`selection_factor`)
    when that is at most half of ``D``, else ``g = D`` (no selection). The
    class-mean release's noise s.d. per coordinate grows as ``sqrt(g)``
    (its clip is ``c_s s_r sqrt(g)``) and falls as ``1 / F``: ``g`` grows
    with ``F`` so that less noise buys more coordinates, which is right
    when the ranked class signal decays about as ``1 / j``. A selection is
    worth the coordinates it drops only when it at least halves the noise
    variance (:data:`SELECTION_MIN_RATIO`). ``g`` also caps
    the block of second moments (:func:`block_size`).
    """
    if not math.isfinite(factor):
        return int(n_coords)
    g = max(1, math.ceil(factor * n_total / max(n_classes, 1)))
    return int(g) if n_coords >= SELECTION_MIN_RATIO * g else int(n_coords)


def skipped_fraction(n_coords: int, n_total: int, n_classes: int, factor: float = 1.0) -> float:
    """``f = 1 - g / D``, the share of the coordinates the class means skip (0 without a selection).

    Scales the weights of :data:`SELECTION_DEPENDENT` (:func:`budget_split`):
    the more coordinates the selection drops, the more it is worth, and the
    more coordinates only the gene means measure.
    """
    return 1.0 - selected_coordinates(n_coords, n_total, n_classes, factor) / n_coords


def block_size(n_coords: int, n_total: int, n_classes: int, components: int, private: bool = True,
               factor: float = 1.0) -> int:
    """``p = min(g, P)``, ``P`` the largest with ``P (P + 1) / 2 <= D (K + r)``: side of the block of second moments.

    With DP, ``g`` = :func:`selected_coordinates` (no more coordinates than
    a class has records), and the block's ``p (p + 1) / 2`` released values
    stay below ``D (K + r)``, the size of the other releases, so bytes and
    time grow linearly in ``G``. Without DP nothing is noised and the block
    is as large as memory allows, ``p = min(D, max(P, NO_DP_BLOCK))`` (the
    whole covariance up to 2,000 coordinates).
    """
    cap = int((math.isqrt(1 + 8 * n_coords * (n_classes + components)) - 1) // 2)
    if not private:
        return int(max(1, min(n_coords, max(cap, NO_DP_BLOCK))))
    return int(max(1, min(selected_coordinates(n_coords, n_total, n_classes, factor), cap)))


def variance_bound(s_r: float, err_var: np.ndarray) -> float:
    """``c_v sqrt(sum_j (s_r^2 + e_j^2)^2)``: the typical norm of a record's squared residuals ``r_i^2``.

    ``r_i = v_i - mu_{y_i}`` carries the known error of ``mu`` (variance
    ``e_j^2`` = ``err_var``) besides the record's own spread ``~ s_r``; without
    it (``e = 0``) the bound is ``c_v s_r^2 sqrt(D)``. Where ``mu``'s error is
    comparable to ``s_r`` (many genes, few records), a clip at ``s_r^2`` alone
    would shrink every squared residual, and subtracting ``e_j^2`` afterwards
    would leave almost nothing.
    """
    return float(VARIANCE_CLIP * np.sqrt(((s_r**2 + np.asarray(err_var, dtype=float)) ** 2).sum()))


def centred_scale(s_v: float, m: np.ndarray, noise_var: float) -> float:
    """``s_r``: the typical r.m.s. per coordinate of ``v - m``, from ``s_v`` and the released means (post-processing).

    ``E ||v - m||^2 / D = E ||v||^2 / D - ||m||^2 / D`` (``s_v^2`` standing for
    the first), and the released ``m_hat`` has ``E ||m_hat||^2 = ||m||^2 + D s^2``
    with ``s^2`` = ``noise_var`` per coordinate; floored at ``s_v / 4``
    (when the level dominates and the difference is within noise).
    """
    D = len(m)
    ms = max(float(m @ m) / D - noise_var, 0.0)
    return float(math.sqrt(max(s_v**2 - ms, (s_v / 4.0) ** 2)))


def clip_factor(bound: float, mean_square_norm: float) -> float:
    """``a = min(1, R / sqrt(E ||u||^2))``: the share of a typical row's length that a clip at ``R`` keeps.

    A clipped sum ``sum_i u_i min(1, R / ||u_i||)`` is about ``a sum_i u_i``
    when the rows' norms concentrate near ``sqrt(E ||u||^2)`` (many
    coordinates), so its mean is shrunk towards 0 by ``a``; dividing the
    released sum by ``a`` (post-processing) removes that shrink, and its noise
    with it, and leaves the signal-to-noise ratio as it was. ``E ||u||^2``
    comes from released values only (the scales and the known error of the
    gene means).
    """
    if not (math.isfinite(bound) and mean_square_norm > 0):
        return 1.0
    return float(min(1.0, bound / math.sqrt(mean_square_norm)))


def release_bounds(n_genes: int, n_total: int, n_classes: int, components: int,
                   scales: tuple[float, float] = FALLBACK_SCALES, factor: float = 1.0,
                   level: float | None = None) -> dict[str, float]:
    """Declared L2 sensitivity of each release.

    Public: ``G``, the released ``N``, ``K``, ``r``, the released
    ``scales`` ``(s_v, s_r)`` and ``level`` ``s_l`` (:func:`clip_bounds`);
    the plan is made with :data:`FALLBACK_SCALES` and each bound is set
    again from the released scales before its release
    (:meth:`~fedsynth.privacy.release.Releaser.bound`). The gene variances'
    bound here is the one without ``m``'s error; the release uses
    :func:`variance_bound` with that error, known by then.
    """
    D = n_genes + 1
    r1 = clip_bounds(n_genes, scales, level)
    s_r = scales[1]
    g = selected_coordinates(D, n_total, n_classes, factor)
    p = block_size(D, n_total, n_classes, components, factor=factor)
    return {"class counts": 1.0, "record scale": math.sqrt(2.0), "gene means": r1,
            "gene variances": variance_bound(s_r, np.zeros(D)), "class means": SELECTED_CLIP * s_r * math.sqrt(g),
            "block moments": (RESIDUAL_CLIP * s_r * math.sqrt(p)) ** 2}


# ------------------------------------------------------------- releases
def _upper(M: np.ndarray) -> np.ndarray:
    return M[np.triu_indices(M.shape[0])]


def _symmetric(upper: np.ndarray, D: int) -> np.ndarray:
    M = np.zeros((D, D))
    M[np.triu_indices(D)] = upper
    return M + np.triu(M, 1).T


def _scaled_clip(U: np.ndarray, bound: float, declared: float) -> tuple[np.ndarray, float]:
    """Rows of ``U`` clipped at ``bound`` and scaled by ``declared / bound`` (norm <= ``declared``)."""
    if not math.isfinite(declared):
        return U, 1.0
    scale = declared / bound
    return scale * clip_rows(U, bound), scale


def shrink_towards_mean(x: np.ndarray, noise_var: float) -> tuple[np.ndarray, float]:
    """Linear empirical Bayes: ``xbar + a (x - xbar)``, ``a = max(0, 1 - s^2 / var(x))``.

    Returns the shrunk values and their expected squared error ``a s^2``
    (post-processing of a release with known noise variance ``s^2``).
    """
    if noise_var <= 0 or len(x) < 3:
        return x, 0.0
    spread = float(x.var())
    a = max(0.0, 1.0 - noise_var / spread) if spread > 0 else 0.0
    return x.mean() + a * (x - x.mean()), a * noise_var


def spread_prior_weights(dev: np.ndarray, noise_var: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, dict]:
    """Posterior-mean weights for noisy class deviations (K x g) under a prior set by the genes' spreads.

    Model: ``dev_kj = theta_kj + e_kj``, ``e_kj ~ N(0, s_k^2)`` (``s_k^2``
    the known ``noise_var``); gene ``j`` carries class signal with
    probability ``pi``, and then ``theta_kj ~ N(0, tau_j^2)`` with

    ``tau_j^2 = kappa (q_j / qbar)^gamma``,

    ``q_j`` the gene's released spread (total variance, ``spread``), ``qbar``
    its mean; otherwise ``theta_.j = 0``. ``(kappa, pi)`` maximise the
    marginal likelihood ``prod_j [pi prod_k N(dev_kj; 0, tau_j^2 + s_k^2) +
    (1 - pi) prod_k N(dev_kj; 0, s_k^2)]`` at each ``gamma`` of
    :data:`SPREAD_PRIOR_POWERS`, and the ``gamma`` of the largest one is
    kept. Three numbers fitted to ``K g`` values, where a per-gene moment
    estimate fits ``g`` numbers to ``K`` values each; ``gamma = 0`` is the
    case where the spread says nothing about the class signal (nuisance
    variation), and a large ``gamma`` the case where the genes that vary
    most are the ones that differ between classes, as in real panels.

    The weight of entry ``(k, j)`` is the posterior mean's factor,
    ``r_j tau_j^2 / (tau_j^2 + s_k^2)``, with ``r_j`` the posterior
    probability that gene ``j`` carries signal. Post-processing of released
    values only (free). Returns the weights and the fitted prior
    (``power``, ``signal_share``, ``scale`` ``kappa``).
    """
    from scipy.optimize import minimize

    K, g = dev.shape
    nv = np.asarray(noise_var, dtype=float)
    if g < 3 or not np.all(nv > 0):
        return np.ones_like(dev), {"power": None, "signal_share": None, "scale": None}
    q = np.asarray(spread, dtype=float)
    pos = q[q > 0]
    q = np.maximum(q, pos.min() if len(pos) else 1.0)
    lq = np.log(q / q.mean())
    d2 = dev**2
    # log-likelihood of each gene without signal (constant terms dropped: they cancel in r_j)
    l0 = -0.5 * (np.log(nv)[:, None] + d2 / nv[:, None]).sum(0)

    def gene_loglik(log_kappa, gamma):
        tau2 = np.exp(log_kappa + gamma * lq)
        t = tau2[None, :] + nv[:, None]
        return tau2, t, -0.5 * (np.log(t) + d2 / t).sum(0)

    def nll(x, gamma):
        _, _, l1 = gene_loglik(x[0], gamma)
        log_pi, log_1pi = -np.logaddexp(0.0, -x[1]), -np.logaddexp(0.0, x[1])
        return -float(np.logaddexp(log_pi + l1, log_1pi + l0).sum())

    start = [math.log(max(float((d2 - nv[:, None]).mean()), 1e-3 * float(nv.mean()))), 0.0]
    best = None
    for gamma in SPREAD_PRIOR_POWERS:
        opt = minimize(nll, start, args=(gamma,), method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000})
        if best is None or opt.fun < best[0]:
            best = (opt.fun, float(gamma), opt.x)
    _, gamma, (log_kappa, logit_pi) = best
    tau2, t, l1 = gene_loglik(log_kappa, gamma)
    # r_j = pi L1 / (pi L1 + (1 - pi) L0), in logs
    r = 1.0 / (1.0 + np.exp(np.clip(l0 - l1 - logit_pi, -700.0, 700.0)))
    prior = {"power": gamma, "signal_share": float(1.0 / (1.0 + math.exp(-logit_pi))),
             "scale": float(math.exp(log_kappa))}
    return r[None, :] * tau2[None, :] / t, prior


def denoise_deviations(dev: np.ndarray, noise_var: np.ndarray,
                       prior_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shrink noisy class deviations (K x g) towards 0 by their known noise (post-processing, free).

    Two empirical-Bayes weights, the larger one kept per entry:

    * per coordinate ``j``, across classes: ``prior_weight`` where given
      (:func:`spread_prior_weights`), else the linear weight
      ``tau_j^2 / (tau_j^2 + s_k^2)`` with signal variance
      ``tau_j^2 = max(mean_k (dev_kj^2 - s_k^2), 0)`` (a gene with no class
      signal goes to 0);
    * per class ``k``, across coordinates: positive-part James-Stein,
      ``a_k = max(0, 1 - g s_k^2 / ||dev_k||^2)`` (a class whose deviation
      stands out of the noise as a whole keeps it).

    ``s_k^2`` (``noise_var``) is the per-coordinate noise variance of class
    ``k``'s deviation. Returns the shrunk deviations and the weights; without
    noise they come back unchanged.
    """
    K, g = dev.shape
    if g == 0 or not np.any(noise_var > 0):
        return dev, np.ones_like(dev)
    nv = noise_var[:, None]
    if prior_weight is not None:
        w = np.asarray(prior_weight, dtype=float)
    else:
        tau2 = np.maximum((dev**2 - nv).mean(0), 0.0)
        w = tau2 / (tau2 + nv)
    if g >= 3:
        js = np.clip(1.0 - g * noise_var / np.maximum((dev**2).sum(1), 1e-12), 0.0, 1.0)
        w = np.maximum(w, js[:, None])
    return w * dev, w


def level_deviations(dev: np.ndarray, noise_var: np.ndarray, selecting: bool) -> tuple[np.ndarray, np.ndarray]:
    """The classes' level deviations (K x 1) and their weights: 0 with a selection, else de-noised alone.

    A class's level error moves all ``G`` of its genes, so it costs ``G``
    times a profile coordinate's. With a selection (``g < D``: many genes
    for the records per class) the level's between-class s.d. is far
    below the class-mean release's noise s.d. (0.002-0.04 log units on the
    765-5,000-gene development sets, 0.18 at 50 genes, against 0.1-4.5 per
    class), and the per-coordinate empirical-Bayes weight, fitted to ``K``
    values, lets pure noise through whenever their mean square exceeds its
    noise variance (about ``P(chi^2_K > K)``, 42% at ``K = 5``): a shift of every
    gene of a class, which the classifier then reads as the class
    (BENCHMARKS.md, sixteenth session). So there each class keeps the
    pooled level, as an unselected coordinate keeps ``m``; the pooled level
    is still corrected by the release (:func:`_combine`). Without a
    selection (few genes, or a large budget) the level is de-noised by
    :func:`denoise_deviations` alone. Post-processing (free).
    """
    if selecting:
        return np.zeros_like(dev), np.zeros_like(dev)
    return denoise_deviations(dev, noise_var)


def _class_scores(S: np.ndarray, noise_sd: float, c_eff: np.ndarray, n_total: float) -> np.ndarray:
    """Per coordinate, its between-class signal: a score to rank the block's coordinates by.

    ``dev_kj = S_kj / c_k - sum_k S_kj / N`` (deviation from the pooled mean,
    which also cancels the gene-mean error; ``N`` the released record count,
    not the sum of the noisy class counts, whose error would leave a share of
    the gene-mean error in every class's deviation); with noise s.d. ``s`` per sum,
    the score is ``sum_k ((c_k dev_kj / s)^2 - 1)`` (a centred chi-square statistic);
    without noise, the between-class sum of squares.
    """
    dev = S / c_eff[:, None] - S.sum(0) / float(n_total)
    nv = (noise_sd / c_eff) ** 2
    score = ((dev**2 / nv[:, None]) - 1.0).sum(0) if noise_sd > 0 else (c_eff[:, None] * dev**2).sum(0)
    score[-1] = np.inf  # the level: its error would shift every gene of every class
    return score


def within_from_spreads(Q: np.ndarray, n_total: float, err_var: np.ndarray, props: np.ndarray,
                        mu: np.ndarray) -> np.ndarray:
    r"""Within-class variances from the released spreads (post-processing).

    ``sum_i (v_i - m)^2 = sum_i (v_i - mu_{y_i})^2 + sum_k c_k (mu_k - m)^2``
    for ``m`` the pooled mean and ``mu_k`` the class means; with the
    released ``Q_j = sum_i (v_ij - m_j)^2`` around an ``m`` with known error
    variance ``e_j^2`` (``err_var``), ``c_k = N pi_k`` and the class means'
    spread taken around their pooled mean ``mubar = pi^T mu``,

    .. math::

        \sigma^2_j = \frac{Q_j - N e_j^2 - \sum_k N \pi_k (\mu_{kj} - \bar\mu_j)^2}{N - K}.

    Exact without noise or clipping.
    """
    K = len(mu)
    mbar = props @ mu
    return (Q - n_total * err_var - (props * n_total) @ (mu - mbar) ** 2) / max(n_total - K, 1)


def _variance_release(release, V: np.ndarray, centres: np.ndarray, idx: np.ndarray, err_var: np.ndarray,
                      bounds: dict, s_r: float, clip: bool):
    """The gene-variance release: per coordinate, ``sum_i clip((v_i - c_i)^2, variance_bound(s_r, err_var))``.

    ``c_i = centres[idx[i]]``: ``m`` for every record, or ``mu_{y_i}``;
    ``err_var`` the centres' known error variance, which the squared
    deviations carry.
    """
    if clip:  # the bound as the deviations are: with the centre's known error
        bounds["gene variances"] = variance_bound(s_r, err_var)
        release.bound("gene variances", bounds["gene variances"])
    return release("gene variances", _row_chunks(len(V), lambda rows: clip_rows(
        (V[rows] - centres[idx[rows]]) ** 2, bounds["gene variances"]).sum(0)))


def _row_chunks(n_rows: int, part) -> np.ndarray:
    """``sum`` of ``part(rows)`` over consecutive slices of :data:`ROW_CHUNK` rows.

    A release that is a sum over records, computed a slice of records at a
    time, so that no ``n x D`` intermediate is formed (memory only: the
    result is the same sum).
    """
    total = None
    for start in range(0, n_rows, ROW_CHUNK):
        x = part(slice(start, start + ROW_CHUNK))
        total = x if total is None else total + x
    return total if total is not None else part(slice(0, 0))


def _combine(err_var: np.ndarray, delta: np.ndarray, var_delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance combination of ``m`` (error variance ``err_var``) with a measured correction ``delta``.

    ``delta`` measures ``m``'s error with noise variance ``var_delta``; returns
    the weighted correction ``w delta``, ``w = err_var / (err_var + var_delta)``
    (1 without noise), and the combined error variance ``w var_delta``.
    """
    w = err_var / (err_var + var_delta) if var_delta > 0 else np.ones(len(delta))
    return w * delta, w * var_delta


def release_moments(release, X: np.ndarray, y: np.ndarray, n_classes: int, n_total: int, *,
                    components: int = 4, clip: bool = True, library_sizes: np.ndarray | None = None,
                    factor: float = 1.0) -> dict:
    """The releases of the module doc, each one ``release(name, values)``; then their post-processing.

    Parameters
    ----------
    release : :class:`~fedsynth.privacy.release.Releaser`
        This site's values in, the noisy sum over all sites out (a
        :class:`~fedsynth.privacy.release.Measurement` with its noise s.d.).
    X, y
        This site's log-expression (samples x genes) and class indices.
    n_total
        ``N``, the released total record count.
    components
        ``r``, which sizes the block of second moments (:func:`block_size`).
    factor
        ``F`` of :func:`selected_coordinates` (:func:`selection_factor`).
    clip
        False only without DP: nothing clipped.
    library_sizes
        This site's library sizes, for counts input.
    """
    G = X.shape[1]
    D = G + 1
    K = n_classes
    p_max = block_size(D, n_total, K, components, private=clip, factor=factor)
    onehot = np.eye(K)[y]
    V = to_profile_level(X)

    def set_bounds(scales, level):
        """The bounds at the released scales; each release not yet made is told its bound."""
        if not clip:
            return dict.fromkeys(CLIPPED, math.inf)
        b = release_bounds(G, n_total, K, components, scales, factor, level)
        for name in CLIPPED:
            if name in release.plan.specs and name not in release.rounds:
                release.bound(name, b[name])
        return b

    # 1. class counts
    counts_m = release("class counts", onehot.sum(0))
    counts = counts_m.value
    kept = np.maximum(counts, 1.0)
    c_eff = np.maximum(kept, COUNT_SHRINK * counts_m.noise_sd)

    # 2. the records' typical scale and level, then the gene means clipped at that scale with the
    # level weighted (profile coordinates shrunk by their known noise; the level kept)
    hv = release("record scale", scale_histogram(V))
    nb = len(SCALE_BINS) - 1
    s_v = typical_scale(hv.value[:nb], hv.noise_sd)
    s_l = typical_scale(hv.value[nb:], hv.noise_sd)
    if s_v is None:
        s_v = FALLBACK_SCALES[0]
        log.info("record scale: the norm histogram does not clear its noise; clips at the fallback scales %s",
                 FALLBACK_SCALES)
    else:
        log.info("record scale: typical r.m.s. per coordinate %.3g", s_v)
    w_l = level_weight(s_v, s_l, D) if clip else 1.0
    log.info("record level: typical |level| %s, weight %.3g in the gene means",
             "not clear of its noise" if s_l is None else f"{s_l:.3g}", w_l)
    bounds = set_bounds((s_v, FALLBACK_SCALES[1]), s_l)
    level_w = np.ones(D)
    level_w[-1] = w_l
    gm = release("gene means", clipped_sum(V, bounds["gene means"], level_w))
    m = gm.value / n_total
    m[-1] /= w_l
    err_var = np.zeros(D)
    m_raw = m.copy()
    m[:-1], err_var[:-1] = shrink_towards_mean(m[:-1], (gm.noise_sd / n_total) ** 2)
    err_var[-1] = (gm.noise_sd / n_total / w_l) ** 2

    # 2b. the typical scale of the records' deviations from m, which sizes every later clip:
    # E ||v - m||^2 = E ||v||^2 - ||m||^2, and ||m_hat||^2 carries D times m's known noise variance
    s_r = centred_scale(s_v, m_raw, (gm.noise_sd / n_total) ** 2)
    bounds = set_bounds((s_v, s_r), s_l)

    # 3. where the class means cannot cover every coordinate (g < D), the gene variances come first, as
    # spreads: per coordinate, the sum of the records' squared deviations from m (their total variance),
    # which selects the coordinates worth releasing and, less the class means' part, gives the
    # within-class variances (5.)
    g = selected_coordinates(D, n_total, K, factor) if clip else D
    selecting = g < D
    if selecting:
        err_m = err_var.copy()
        Q = _variance_release(release, V, m[None], np.zeros(len(V), dtype=np.int64), err_m, bounds, s_r, clip)
        spread = Q.value / n_total - err_m
        spread[-1] = np.inf  # the level: its error would shift every gene of every class
        order = np.argsort(-spread, kind="stable")
        sel = np.sort(order[:g])
    else:
        sel = np.arange(D)
    assert sel[-1] == D - 1  # the level is always selected

    # 4. class means on the selected coordinates, de-noised (elsewhere mu_k = m)
    R_s = SELECTED_CLIP * s_r * math.sqrt(g)
    U1, scale1 = _scaled_clip(V[:, sel] - m[sel], R_s, bounds["class means"])
    S1 = release("class means", onehot.T @ U1)
    # the clip shrinks a typical record's centred selected coordinates (spread s_r, and m's known error) by
    # a1 = R_s / sqrt(g s_r^2 + sum e_j^2); the sums are divided by it, so that the class deviations and the
    # correction of m are not pulled towards m (post-processing)
    a1 = clip_factor(R_s, g * s_r**2 + float(err_var[sel].sum())) if clip else 1.0
    scale1 *= a1
    sums = S1.value / scale1
    nv1 = (S1.noise_sd / scale1 / c_eff) ** 2
    # the pooled mean of the sums: over all N records (the released count, far more precise than the sum of
    # the K noisy class counts, which clamping at 1 also biases upwards)
    centre = sums.sum(0) / float(n_total)
    # the profile coordinates' deviations are de-noised together (with a selection, by a prior whose
    # variance follows the released spreads). The level (always selected, the last) is apart: a class's
    # level error shifts all G of its genes. Without a selection it is de-noised alone, by its own
    # empirical-Bayes weight; with one, each class keeps the pooled level (level_deviations)
    raw = sums / c_eff[:, None] - centre
    prior_w, prior = (spread_prior_weights(raw[:, :-1], nv1, spread[sel][:-1]) if selecting
                      else (None, None))
    (dev, w1), (dev_lv, w1_lv) = denoise_deviations(raw[:, :-1], nv1, prior_w), level_deviations(raw[:, -1:], nv1,
                                                                                                 selecting)
    dev, w1 = np.hstack([dev, dev_lv]), np.hstack([w1, w1_lv])
    # the pooled mean of the sums measures m's error there, with noise variance K (s_1 / N)^2: combined
    # with m by inverse variances (the level's m is often the better of the two)
    correction, err_c = _combine(err_var[sel], centre, K * (S1.noise_sd / scale1 / float(n_total)) ** 2)
    mu = np.tile(m, (K, 1))
    mu[:, sel] += correction + dev
    props = kept / kept.sum()
    err_var[sel] = err_c + props @ (w1**2 * nv1[:, None])
    if not selecting:
        score = _class_scores(S1.value / scale1, S1.noise_sd / scale1, c_eff, n_total)
        order = np.argsort(-score, kind="stable")

    # 5. within-class variances: with a selection, from the spreads (post-processing) less m's known
    # error and the class means' part, sum_i (v_i - m)^2 = sum_i (v_i - mu_{y_i})^2 + sum_k c_k (mu_k -
    # m)^2, the class means' spread taken around their pooled mean; without one, released as the sums of
    # the squared residuals from mu, less mu's known error
    dof = max(n_total - K, 1)
    if selecting:
        var = within_from_spreads(Q.value, n_total, err_m, props, mu)
    else:
        Q = _variance_release(release, V, mu, y, err_var, bounds, s_r, clip)
        var = Q.value / dof - err_var
    var_noise = Q.noise_sd / dof

    # 6. second moments of the block of the p highest-ranked coordinates (DP-PCA)
    blk = np.sort(order[:min(p_max, g)])
    p = len(blk)
    U2, scale2 = _scaled_clip(V[:, blk] - mu[:, blk][y], RESIDUAL_CLIP * s_r * math.sqrt(p),
                              math.sqrt(bounds["block moments"]))
    B = release("block moments", _upper(U2.T @ U2))
    stats = {
        "class_counts": counts.tolist(),
        "class_proportions": props.tolist(),
        "gene_means": m.tolist(),
        "class_means": mu,
        "selected": sel.tolist(),
        "variances": var,
        "variances_noise_sd": var_noise,
        "block": blk,
        "block_covariance": _symmetric(B.value, p) / scale2**2 / dof,
        "block_noise_sd": B.noise_sd / scale2**2 / dof,
        # the bounds of the releases made, as used (set from the released scales)
        "clip_bounds": {k: bounds[k] for k in CLIPPED if k in release.plan.specs} if clip else None,
        "scales": {"record": s_v, "centred": s_r, "level": s_l, "level_weight": w_l, "class_mean_clip_factor": a1},
        "selection_factor": factor if clip else None,
        # the de-noiser's prior for the class deviations, fitted to the released values (with a selection)
        "class_mean_prior": prior,
        # the per-gene releases as revealed (noisy sums, before any post-processing): what an auditor
        # or a user checking the record needs, and no more than was released
        "released": {"record scale": hv.value.tolist(), "gene means": gm.value.tolist(),
                     "gene variances": Q.value.tolist()},
        # what the gene-variance sums are of: clip((v_i - c_i)^2), c_i = gene_means or class_means[y_i]
        "variances_centre": "gene means" if selecting else "class means",
    }
    if library_sizes is not None:
        stats["log_library_size"] = library_size.release(release, library_sizes, n_total)
    return stats


def fit(stats: dict, components: int, n_genes: int) -> GaussianModel:
    """DP-PCA of the block and the diagonal residual from the released moments (module doc, "Fitting")."""
    Sigma = np.asarray(stats["block_covariance"], dtype=float)
    blk = np.asarray(stats["block"], dtype=int)
    s = float(stats["block_noise_sd"])
    d = np.asarray(stats["variances"], dtype=float).copy()
    D = len(d)
    private = stats.get("clip_bounds") is not None
    if private and d.mean() <= 0:
        # the variance release left nothing (a cohort so small that mu's known error and the noise swamp
        # it): every coordinate gets the records' released centred scale, an upper value, not ~0
        s_r = float(stats["scales"]["centred"])
        log.info("gene variances: their mean is not above zero; every variance set to the centred scale^2 %.3g",
                 s_r**2)
        d = np.full(D, s_r**2)
    avg = max(float(d.mean()), 1e-6)
    d, _ = shrink_towards_mean(d, float(stats["variances_noise_sd"]) ** 2)
    p = len(blk)
    r = min(components, p)
    W = np.zeros((D, 0))
    if r > 0:
        lam, U = np.linalg.eigh(Sigma)
        lam, U = lam[::-1][:r], U[:, ::-1][:, :r]
        if s > 0:
            edge = 2.0 * s * math.sqrt(p)
            keep = lam > edge
            lam, U = lam[keep], U[:, keep]
            lam = (lam + np.sqrt(np.maximum(lam**2 - 4.0 * s**2 * p, 0.0))) / 2.0
        else:
            keep = lam > 0
            lam, U = lam[keep], U[:, keep]
        # a deterministic sign per component, so every site's file is byte-identical
        signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
        W = np.zeros((D, U.shape[1]))
        W[blk] = U * signs * np.sqrt(lam)
    psi = np.maximum(d - (W**2).sum(1), (VARIANCE_FLOOR if private else VARIANCE_FLOOR_NO_DP) * avg)
    cfg = GaussianConfig(n_genes=n_genes, n_classes=len(stats["class_means"]), components=components)
    return GaussianModel(cfg, stats["class_means"], W, psi, blk, Sigma)


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

    @property
    def factor(self) -> float:
        """``F`` of :func:`selected_coordinates`, from the run's budget (:func:`selection_factor`)."""
        return selection_factor(self.context.epsilon, self.context.delta)

    def releases(self, schema) -> list[ReleaseSpec]:
        G, K = len(schema.genes), len(schema.classes)
        # before the count is released (the lifetime pre-check) N is unknown: size as if each class had one record
        n = schema.n_total if schema.n_total is not None else K * (G + 1)
        sens = release_bounds(G, n, K, self.config.components, factor=self.factor)
        split = budget_split(schema.input_kind, G, n, K, self.factor)
        lib = {spec.name: spec for spec in library_size.specs(*COUNTS_SPLIT)}
        return [lib[name] if name in lib else ReleaseSpec(name, sens[name], share) for name, share in split.items()]

    def fit(self, release, cohort, schema) -> None:
        t1 = time.monotonic()
        private = release.plan.private
        stats = release_moments(release, cohort.X, schema.label_index(cohort.labels), len(schema.classes),
                                schema.n_total, components=self.config.components, clip=private,
                                library_sizes=cohort.library_sizes if schema.input_kind == "counts" else None,
                                factor=self.factor)
        self.timings["statistics"] = time.monotonic() - t1
        t2 = time.monotonic()
        self.model = fit(stats, self.config.components, len(schema.genes))
        self.timings["fit"] = time.monotonic() - t2
        self.statistics = {k: v for k, v in stats.items()
                           if k not in ("class_means", "variances", "block", "block_covariance")}
        self._split = budget_split(schema.input_kind, len(schema.genes), schema.n_total, len(schema.classes),
                                   self.factor)

    def dp_extra(self) -> dict:
        return {"budget_split": self._split, "clip_bounds": self.statistics["clip_bounds"]}

    def params(self) -> dict:
        private = self.statistics.get("clip_bounds") is not None
        return {"components": self.config.components, "components_kept": int(self.model.loadings.shape[1]),
                "gene_mean_clip": GENE_MEAN_CLIP, "residual_clip": RESIDUAL_CLIP,
                "selected_clip": SELECTED_CLIP, "variance_clip": VARIANCE_CLIP, "level_share": LEVEL_SHARE,
                "selected_coordinates": len(self.statistics.get("selected", [])),
                "selection_factor": self.statistics.get("selection_factor"),
                "scales": self.statistics.get("scales"),
                "variance_floor": VARIANCE_FLOOR if private else VARIANCE_FLOOR_NO_DP}

    @classmethod
    def from_state(cls, blob: dict) -> "GaussianGenerator":
        return cls.restored(cls.Config(components=blob["config"]["components"]), GaussianModel.from_blob(blob), blob)
