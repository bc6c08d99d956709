"""Private-PGM over secure sums (``--generator pgm``).

Every statistic this generator releases is a contingency table, i.e. a sum
of one-hot records, so each site computes its own table and the sites add
them with :class:`~fedsynth.federation.secure_sum.SecureSum` plus Gaussian
noise; the tables are fitted with Private-PGM (the ``mbi`` package) and the
fitted graphical model is sampled. With ``G`` genes, ``C`` classes and
``b`` bins per gene, a run makes three releases:

1. **Bin edges.** Each gene ``g`` is histogrammed over a public range
   ``[lo, hi]`` in ``m`` equal cells (values outside are clipped into the end
   cells): ``H[g, j] = #{records with x_g in cell j}``. A record adds one to
   each of the ``G`` histograms, so the L2 sensitivity is ``sqrt(G)`` and the
   release is ``H + N(0, (z_1 sqrt(G))^2 I)``. The noisy CDF at the cell
   boundary ``t_j = lo + j (hi - lo) / m`` is the minimum-variance mix of the
   prefix sum (variance ``j s^2``) and ``n`` minus the suffix sum (variance
   ``(m - j) s^2``),

   .. math::

       \\hat F_j = \\frac{m - j}{m} \\sum_{i<j} \\tilde H_i
                 + \\frac{j}{m} \\Big(n - \\sum_{i \\ge j} \\tilde H_i\\Big),

   made monotone by isotonic regression and clipped to ``[0, n]``. Its
   quantiles at the levels ``k / (2b)`` give the ``b - 1`` edges (even
   ``k``) and each bin's median (odd ``k``), by linear interpolation.
2. **Label x gene marginals.** For every gene the ``C x b`` table
   ``M_g[c, k] = #{y = c, bin_g(x) = k}``; again one record adds one to each
   of ``G`` tables: sensitivity ``sqrt(G)``, noise ``z_2 sqrt(G)``.
3. **Gene pairs on a tree.** A spanning tree ``T`` over the genes is chosen
   from release 2 alone (post-processing, no budget): genes whose noisy
   class-conditional mean bins ``mu_g(c) = sum_k k M_g[c, k] / sum_k M_g[c, k]``
   move together across classes (largest ``|cos|`` of the class-weighted,
   centred vectors) are joined, as a maximum spanning tree, as MST does with
   its own measured pairs. Then for each of the ``G - 1`` edges the ``b x b``
   table of the two genes' bins is released: sensitivity ``sqrt(G - 1)``,
   noise ``z_3 sqrt(G - 1)``. With more genes than ``B`` (``--pgm-block``)
   the tree is replaced by ``m = ceil(G / B)`` chains of equal length
   (+-1), chosen from the same similarity (:func:`choose_chains`, also
   post-processing); only their ``G - m`` consecutive pairs are released,
   sensitivity ``sqrt(G - m)``, noise ``z_3 sqrt(G - m)``.

The multipliers ``z_i`` come from
:class:`~fedsynth.privacy.release.ReleasePlan` before any data is touched
(shares of the privacy loss ``rho_i = 1 / (2 z_i^2)`` in the proportions of
``--pgm-split``) and are composed in the one accountant. For counts
input, the library-size model is released (:mod:`fedsynth.privacy.library_size`).

**Fit.** Private-PGM's mirror descent finds the graphical model ``p`` over
``(y, bin_1, ..., bin_G)`` minimising
``sum_r ||M_r(p) - \\tilde M_r||^2 / sigma_r^2`` over the marginal polytope
(total ``N``, public). Its cliques are ``{y, g}`` and ``{g_i, g_j}`` for the
tree edges, so the model is a "cone" over ``T``: given ``y`` and the parent
``g_p`` of ``g_c``, ``g_c`` is independent of every gene outside its subtree.

**Cost of the fit, and blocks.** ``mbi`` traces the whole junction tree
(``G - 1`` cliques ``{y, g_p, g_c}``) into one XLA program per mirror-descent
scan, and XLA's compile time grows faster than linearly in its size while
the iterations themselves are cheap (measured, one core, 1,000 iterations:
compile ~20 s at 50 and 100 genes, 58 s at 200, 183 s at 400, against
0.4 / 1 / 4 / 6 s of iterations). So up to ``B = --pgm-block`` genes
(default 50) the model is the one fit above; beyond, the genes are cut into
``m`` chains and the model is a cone over that forest, fitted block by block
(:func:`fit_blocks`): the blocks are conditionally independent given ``y``,
each is one ``mbi`` fit of its own tables under local names, and chains of
one length share one compiled program (at most two lengths). Exact: every
block's ``P(x_K | y)`` is its Private-PGM fit; approximate: ``P(y)`` is the
mean of the blocks' fitted label marginals, where one joint fit would make
them agree (see :func:`fit_blocks`).

**Sampling** (:func:`sample`) is therefore exact ancestral sampling from the
fitted clique marginals ``P(y, g_p, g_c)``: ``y ~ P(y)`` (or the user's
proportions), each root gene (one per tree or chain) from ``P(g_r | y)``, then each gene from
``P(g_c | y, g_p)`` in breadth-first order, with a seeded numpy generator
(``mbi``'s own ``synthetic_data`` draws from numpy's global state and cannot
fix the labels). A bin maps back to an expression value uniformly within its
DP edges; the end bins are bounded symmetrically around their DP median,
``[2 m_0 - e_1, e_1]`` and ``[e_{b-1}, 2 m_{b-1} - e_{b-1}]``, within ``[lo, hi]``.

Everything here after the releases is post-processing: it costs no privacy.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.preprocess import PUBLIC_RANGE
from ..errors import ParameterError
from ..privacy import library_size
from ..privacy.accounting import plan_release_split
from ..privacy.release import ReleaseSpec
from .base import Generator, option

log = logging.getLogger("fedsynth")

#: Share of the privacy loss for the counts-only library-size releases.
LIBSIZE_SHARE = 0.05

RELEASES = ("bin edges", "label x gene marginals", "gene pair marginals")


def _format_range(v) -> str:
    return "" if v is None else f"{v[0]!r},{v[1]!r}"


@dataclass
class PGMConfig:
    """Parameters of the ``pgm`` generator (``--pgm-*`` options).

    Attributes
    ----------
    bins
        ``b``: bins per gene (2..16).
    fine_bins
        ``m``: cells of the public-range histogram the edges come from.
    value_range
        ``(lo, hi)``; ``None`` uses :data:`~fedsynth.data.preprocess.PUBLIC_RANGE` of the input kind.
    iters
        Mirror-descent iterations of the Private-PGM fit.
    tree
        Release the gene-pair marginals on a spanning tree (else only label x gene).
    split
        Relative shares of the privacy loss for the three releases
        (edges, label x gene, pairs).
    block
        ``B``: the most genes one Private-PGM fit takes. With ``G <= B`` the
        model is one fit over the spanning tree; with ``G > B`` the genes
        are cut into ``ceil(G / B)`` chains of equal length (+-1) fitted one
        by one (see :func:`choose_chains`, :func:`fit_blocks`).

    The defaults are measured (BENCHMARKS.md, "PGM: how the defaults were chosen").
    """

    bins: int = option(3, "pgm: bins per gene (DP quantile bins, 2..16).", name="pgm_bins", minimum=2, maximum=16,
                       label="Bins per gene")
    fine_bins: int = option(12, "pgm: cells of the public-range histogram the DP bin edges come from "
                            "(at least twice the bins).", name="pgm_fine_bins", minimum=4, maximum=4096,
                            label="Histogram cells for the DP bin edges")
    value_range: tuple[float, float] | None = option(
        None, "pgm: public value range of the genes, LO,HI; values outside are clipped into it; it must not "
        "depend on the data (default: 0,20 for log input, 0,14 for counts).", name="pgm_range", metavar="LO,HI",
        parse=lambda text: parse_range(text), format=_format_range, label="Public value range LO,HI",
        pattern=r"^\s*-?[0-9.eE+-]+\s*,\s*-?[0-9.eE+-]+\s*$", pattern_help="two numbers LO,HI, e.g. 0,20")
    iters: int = option(1000, "pgm: mirror-descent iterations of the Private-PGM fit.", name="pgm_iters", minimum=1,
                        label="Mirror-descent iterations")
    tree: bool = option(True, "pgm: also release gene-pair marginals on a spanning tree (mst), or only "
                        "label x gene (none).", name="pgm_tree", choices=("mst", "none"),
                        parse=lambda text: text != "none", format=lambda v: "mst" if v else "none",
                        label="Gene pairs")
    split: tuple[float, float, float] = option(
        (0.3, 0.6, 0.1), "pgm: relative shares of epsilon for the bin edges, label x gene and gene-pair releases.",
        name="pgm_split", metavar="EDGES,MARGINALS,PAIRS", parse=lambda text: parse_split(text),
        format=lambda v: ",".join(repr(float(x)) for x in v), label="Shares of epsilon: bin edges, label x gene, gene pairs",
        pattern=r"^\s*[0-9.eE+-]+\s*,\s*[0-9.eE+-]+\s*,\s*[0-9.eE+-]+\s*$",
        pattern_help="three shares EDGES,MARGINALS,PAIRS, e.g. 0.3,0.6,0.1")
    block: int = option(50, "pgm: most genes per Private-PGM fit; more genes are cut into chains of at most this "
                        "many, fitted one by one.", name="pgm_block", minimum=2, label="Most genes per Private-PGM fit")

    def validate(self) -> None:
        if not 2 <= self.bins <= 16:
            raise ParameterError(f"--pgm-bins must be in 2..16 (got {self.bins})")
        if not 2 * self.bins <= self.fine_bins <= 4096:
            raise ParameterError(f"--pgm-fine-bins must be in {2 * self.bins}..4096 for {self.bins} bins "
                                 f"(got {self.fine_bins})")
        if self.block < 2:
            raise ParameterError(f"--pgm-block must be >= 2 (got {self.block})")
        if self.iters < 1:
            raise ParameterError(f"--pgm-iters must be >= 1 (got {self.iters})")
        if self.value_range is not None:
            lo, hi = self.value_range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ParameterError(f"--pgm-range must be LO,HI with finite LO < HI (got {lo:g},{hi:g})")
        if len(self.split) != 3 or not all(math.isfinite(s) and s >= 0 for s in self.split):
            raise ParameterError(f"--pgm-split must be three shares >= 0 (got {','.join(map(str, self.split))})")
        if self.split[0] <= 0 or self.split[1] <= 0 or (self.tree and self.split[2] <= 0):
            raise ParameterError("--pgm-split: the edges and label x gene shares (and the pairs share, "
                                 f"unless --pgm-tree none) must be > 0 (got {','.join(map(str, self.split))})")

    def range_for(self, input_kind: str) -> tuple[float, float]:
        return tuple(self.value_range) if self.value_range is not None else PUBLIC_RANGE[input_kind]


def parse_range(text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` -> ``(lo, hi)``; one-line error naming ``--pgm-range``."""
    if text in (None, ""):
        return None
    parts = str(text).split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ParameterError(f"--pgm-range must be LO,HI (two numbers; got {text!r})") from None
    return lo, hi


def parse_split(text) -> tuple[float, float, float]:
    """``"0.15,0.6,0.25"`` -> shares; one-line error naming ``--pgm-split``."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).split(",")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise ParameterError(f"--pgm-split must be EDGES,MARGINALS,PAIRS (three numbers; got {text!r})") from None
    if len(vals) != 3:
        raise ParameterError(f"--pgm-split must be EDGES,MARGINALS,PAIRS (three numbers; got {text!r})")
    return vals


# ------------------------------------------------------------ local tables
def fine_histograms(X: np.ndarray, lo: float, hi: float, m: int) -> np.ndarray:
    """``H[g, j]``: records whose gene ``g`` falls in cell ``j`` of ``m`` over ``[lo, hi]`` (clipped)."""
    n, g = X.shape
    cell = np.clip(np.floor((X - lo) / (hi - lo) * m), 0, m - 1).astype(np.int64)
    flat = (np.arange(g)[None, :] * m + cell).ravel()
    return np.bincount(flat, minlength=g * m).reshape(g, m).astype(np.float64)


def discretise(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin codes ``0..b-1`` per gene: ``bin_g(x) = #{edges_g <= x_g}``."""
    codes = np.empty(X.shape, dtype=np.int64)
    for g in range(X.shape[1]):
        codes[:, g] = np.searchsorted(edges[g], X[:, g], side="right")
    return codes


def label_gene_tables(codes: np.ndarray, y: np.ndarray, n_classes: int, b: int) -> np.ndarray:
    """``M[g, c, k] = #{records with y = c and bin_g = k}``, shape ``(G, C, b)``."""
    n, g = codes.shape
    flat = (np.arange(g)[None, :] * (n_classes * b) + y[:, None] * b + codes).ravel()
    return np.bincount(flat, minlength=g * n_classes * b).reshape(g, n_classes, b).astype(np.float64)


def pair_tables(codes: np.ndarray, pairs: list[tuple[int, int]], b: int) -> np.ndarray:
    """``P[e, k, l] = #{records with bin_i = k, bin_j = l}`` for each pair ``e = (i, j)``."""
    out = np.zeros((len(pairs), b, b))
    for e, (i, j) in enumerate(pairs):
        out[e] = np.bincount(codes[:, i] * b + codes[:, j], minlength=b * b).reshape(b, b)
    return out


# ------------------------------------------------------ post-processing
def noisy_cdf(hist: np.ndarray, n: float) -> np.ndarray:
    """Monotone CDF counts at the ``m + 1`` cell boundaries from noisy histograms ``(G, m)``.

    Mixes the prefix sum and ``n`` minus the suffix sum with inverse-variance
    weights ``(m - j) / m`` and ``j / m``, then isotonic regression, clipped to
    ``[0, n]`` with ``F_0 = 0`` and ``F_m = n``.
    """
    from sklearn.isotonic import isotonic_regression

    g, m = hist.shape
    prefix = np.concatenate([np.zeros((g, 1)), np.cumsum(hist, axis=1)], axis=1)  # sum_{i<j}
    suffix = prefix[:, -1:] - prefix  # sum_{i>=j}
    j = np.arange(m + 1)[None, :]
    mixed = (m - j) / m * prefix + j / m * (n - suffix)
    out = np.empty_like(mixed)
    for r in range(g):
        out[r] = isotonic_regression(mixed[r], y_min=0.0, y_max=float(n))
    out[:, 0], out[:, -1] = 0.0, float(n)
    return out


def quantiles(cdf: np.ndarray, n: float, lo: float, hi: float, levels: np.ndarray) -> np.ndarray:
    """Values at which each gene's CDF reaches ``levels * n`` (linear within a cell)."""
    g, m1 = cdf.shape
    grid = np.linspace(lo, hi, m1)
    ramp = np.arange(m1) * 1e-9 * max(n, 1.0)  # strictly increasing for np.interp on flat stretches
    return np.stack([np.interp(levels * n, cdf[r] + ramp, grid) for r in range(g)])


def bin_geometry(hist: np.ndarray, n: float, lo: float, hi: float, b: int) -> dict:
    """Edges ``(G, b-1)``, medians ``(G, b)`` and value bounds ``(G, b+1)`` from noisy histograms."""
    levels = np.arange(1, 2 * b) / (2 * b)
    q = quantiles(noisy_cdf(hist, n), n, lo, hi, levels)
    edges, medians = q[:, 1::2], q[:, 0::2]
    lower = np.clip(2 * medians[:, :1] - edges[:, :1], lo, hi)
    upper = np.clip(2 * medians[:, -1:] - edges[:, -1:], lo, hi)
    bounds = np.concatenate([np.minimum(lower, edges[:, :1]), edges, np.maximum(upper, edges[:, -1:])], axis=1)
    return {"edges": edges, "medians": medians, "bounds": bounds}


def _similarity(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|cos|`` of the genes' noisy class profiles ``(G, G)`` and the profile norms ``(G,)``.

    ``mu_g(c)``: gene ``g``'s mean bin in class ``c`` under the noisy table
    clipped at 0; centred with the class weights ``w_c`` (noisy class sizes),
    ``v_g = sqrt(w) (mu_g - sum_c w_c mu_g(c))``; similarity
    ``|v_g . v_h| / (|v_g| |v_h|)``.
    """
    g, c, b = tables.shape
    t = np.clip(tables, 0.0, None)
    w = np.clip(tables.sum(axis=(0, 2)) / g, 1e-9, None)
    w = w / w.sum()
    mass = t.sum(axis=2)
    mu = (t * np.arange(b)[None, None, :]).sum(axis=2) / np.maximum(mass, 1e-9)
    mu = np.where(mass > 0, mu, (b - 1) / 2)
    v = np.sqrt(w)[None, :] * (mu - (mu * w[None, :]).sum(axis=1, keepdims=True))
    norm = np.linalg.norm(v, axis=1)
    unit = v / np.maximum(norm, 1e-12)[:, None]
    return np.abs(unit @ unit.T), norm


def choose_tree(tables: np.ndarray) -> list[tuple[int, int]]:
    """Maximum spanning tree of genes by ``|cos|`` of their noisy class profiles (post-processing).

    Similarity as in :func:`_similarity`. Returns the tree edges
    ``(parent, child)`` in breadth-first order from the gene with the largest
    class signal.
    """
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    g = tables.shape[0]
    if g < 2:
        return []
    sim, norm = _similarity(tables)
    dist = 2.0 - np.clip(sim, 0.0, 1.0)  # in [1, 2]: every pair is an edge (csgraph drops zeros)
    np.fill_diagonal(dist, 0.0)
    mst = minimum_spanning_tree(dist)
    sym = mst + mst.T
    root = int(np.argmax(norm))
    order, pred = breadth_first_order(sym, root, directed=False, return_predecessors=True)
    return [(int(pred[ch]), int(ch)) for ch in order[1:]]


def gene_blocks(g: int, block: int) -> list[np.ndarray]:
    """Positions ``0..g-1`` cut into ``ceil(g / block)`` consecutive runs of equal length (+-1)."""
    return [np.asarray(a, dtype=np.int64) for a in np.array_split(np.arange(g), math.ceil(g / block))]


def choose_chains(tables: np.ndarray, block: int) -> list[np.ndarray]:
    """Genes in chains of at most ``block`` (post-processing of release 2), for ``G > block``.

    A greedy maximum-weight Hamiltonian path by the similarity of
    :func:`_similarity`: pairs in decreasing ``|cos|`` (ties by index) join two
    path ends of different paths, until one path covers all genes (on the
    complete graph the greedy path cover always ends with one path); it is
    walked from its lower-index end and cut into ``ceil(G / block)`` runs of
    equal length (+-1). Each run is a chain ``h_0 - h_1 - ... - h_{s-1}``;
    its ``s - 1`` consecutive pairs are the pairs released. Runs of the same
    length have the same shape, so one compiled fit serves them all
    (:func:`fit_blocks`); a spanning tree cut into subtrees would give every
    block its own shape and its own XLA compilation.

    Returns the runs (arrays of gene indices, in chain order).
    """
    from scipy.cluster.hierarchy import DisjointSet

    g = tables.shape[0]
    sim, _ = _similarity(tables)
    iu, ju = np.triu_indices(g, 1)
    order = np.argsort(-sim[iu, ju], kind="stable")
    paths = DisjointSet(range(g))
    deg = np.zeros(g, dtype=np.int64)
    nbr = [[] for _ in range(g)]
    added = 0
    for k in order:
        if added == g - 1:
            break
        i, j = int(iu[k]), int(ju[k])
        if deg[i] >= 2 or deg[j] >= 2:
            continue
        if paths.connected(i, j):
            continue
        paths.merge(i, j)
        deg[i] += 1
        deg[j] += 1
        nbr[i].append(j)
        nbr[j].append(i)
        added += 1
    start = int(np.flatnonzero(deg <= 1)[0])
    path, prev = [start], -1
    while len(path) < g:
        cur = path[-1]
        nxt = [v for v in nbr[cur] if v != prev][0]
        prev = cur
        path.append(nxt)
    path = np.asarray(path, dtype=np.int64)
    return [path[run] for run in gene_blocks(g, block)]


def chain_pairs(chains: list[np.ndarray]) -> list[tuple[int, int]]:
    """The consecutive pairs ``(h_i, h_{i+1})`` of every chain (parent before child)."""
    return [(int(c[i]), int(c[i + 1])) for c in chains for i in range(len(c) - 1)]


# ------------------------------------------------------------------- fit
def _import_mbi():
    """Import jax/mbi single-threaded, in float64, without a compilation cache."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import warnings

    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mbi
    return mbi


def gene_attr(g: int) -> str:
    """The attribute name of gene ``g`` in the ``mbi`` domain."""
    return f"g{g}"


def fit(label_tables: np.ndarray, sigma_marg: float, pairs: list[tuple[int, int]], pair_tabs: np.ndarray | None,
        sigma_pair: float, n_total: float, iters: int) -> dict:
    """Fit Private-PGM (``mbi``'s mirror descent) to the noisy tables.

    Minimises ``sum_r ||M_r(p) - tilde M_r||^2 / sigma_r^2`` over graphical
    models ``p(y, g_1..g_G) propto exp(sum_g phi_g(y, g) + sum_e psi_e(g_i, g_j))``
    with total ``n_total`` (public).

    Parameters
    ----------
    label_tables
        ``(G, C, b)`` noisy label x gene tables, noise std ``sigma_marg``.
    pairs, pair_tabs
        Tree edges ``(parent, child)`` and their ``(G-1, b, b)`` noisy tables,
        noise std ``sigma_pair``.

    Returns
    -------
    dict
        The fitted log-potentials ``phi`` ``(G, C, b)`` and ``psi``
        ``(G-1, b, b)``, and the fitted label x gene marginals
        ``label_gene`` ``(G, C, b)`` (counts summing to ``n_total``).
    """
    mbi = _import_mbi()
    from mbi.estimation import MirrorDescent

    g, c, b = label_tables.shape
    attrs = ["label"] + [gene_attr(i) for i in range(g)]
    domain = mbi.Domain(attrs, [c] + [b] * g)
    meas = [mbi.LinearMeasurement(np.asarray(label_tables[i], dtype=np.float64).ravel(), ("label", gene_attr(i)),
                                  stddev=float(sigma_marg)) for i in range(g)]
    for e, (i, j) in enumerate(pairs):
        meas.append(mbi.LinearMeasurement(np.asarray(pair_tabs[e], dtype=np.float64).ravel(),
                                          (gene_attr(i), gene_attr(j)), stddev=float(sigma_pair)))
    model = MirrorDescent().estimate(domain, meas, known_total=float(n_total), iters=int(iters))

    def values(vector, clique):
        f = vector[clique] if clique in vector.cliques else None
        if f is None:
            return np.zeros(domain.project(clique).shape)
        return np.asarray(f.transpose(clique).values if tuple(f.domain.attributes) != clique else f.values,
                          dtype=np.float64)

    phi = np.stack([values(model.potentials, ("label", gene_attr(i))) for i in range(g)])
    psi = np.stack([values(model.potentials, (gene_attr(i), gene_attr(j))) for i, j in pairs]) if pairs \
        else np.zeros((0, b, b))
    label_gene = np.stack([values(model.marginals, ("label", gene_attr(i))) for i in range(g)])
    return {"phi": phi, "psi": psi, "label_gene": label_gene}


def fit_blocks(label_tables: np.ndarray, sigma_marg: float, chains: list[np.ndarray],
               pair_tabs: np.ndarray | None, sigma_pair: float, n_total: float, iters: int) -> dict:
    """Fit Private-PGM block by block: one :func:`fit` per chain of genes (``G > B``).

    The model is a cone over a forest of chains ``K_1, ..., K_m``:
    ``log p = sum_g phi_g(y, g) + sum_{e in chains} psi_e(g_i, g_j)``, so
    given ``y`` the blocks are independent,
    ``p(y, x) = P(y) prod_k P_k(x_{K_k} | y)``, and the loss
    ``sum_r ||M_r(p) - tilde M_r||^2 / sigma_r^2`` is a sum over blocks of
    terms that each involve only that block's cliques. Each block is fitted
    by :func:`fit` on its own (genes renamed ``g0..g{s-1}`` in chain order,
    cliques ``{y, g_i}`` and ``{g_i, g_{i+1}}``), giving ``phi^k``, ``psi^k``
    and its own label marginal ``P_k(y) propto Z_k(y)``,
    ``Z_k(y) = sum_{x_K} exp(sum phi^k + sum psi^k)``. Blocks of one length
    have the same attribute names, shapes and cliques, so JAX compiles mbi's
    mirror descent once per length (at most two lengths).

    **Exact**: each block's conditional ``P_k(x_K | y)`` is the Private-PGM
    fit to that block's tables, and with noiseless tables of a distribution
    in this family every block recovers it and the same ``P(y)``.
    **Approximate**: the joint fit would also force the blocks to agree on
    ``P(y)``; here they are fitted apart and combined as
    ``P(y) = (1/m) sum_k P_k(y)`` (the user's proportions replace it at
    sampling when given). The combined potentials are
    ``phi_r^k(y, .) - log Z_k(y)`` at each block's first gene ``r`` (then
    every block sums to one for each ``y``) plus ``log P(y)`` at the first
    block's first gene, so :func:`conditionals` and :func:`sample_codes`
    work on the result unchanged.

    Parameters
    ----------
    chains
        The blocks' genes in chain order (:func:`choose_chains` or, without
        pairs, :func:`gene_blocks`).
    pair_tabs
        The ``(sum_k (s_k - 1), b, b)`` noisy pair tables in
        :func:`chain_pairs` order, or ``None`` (label x gene only).

    Returns
    -------
    dict
        ``phi`` ``(G, C, b)``, ``psi`` (one per chain pair) and the blocks'
        fitted label x gene marginals ``label_gene`` ``(G, C, b)``.
    """
    g, c, b = label_tables.shape
    phi = np.zeros((g, c, b))
    label_gene = np.zeros((g, c, b))
    psis, log_z = [], []
    e0 = 0
    for chain in chains:
        s = len(chain)
        local = [(i, i + 1) for i in range(s - 1)] if pair_tabs is not None else []
        tabs = pair_tabs[e0:e0 + len(local)] if local else None
        e0 += len(local)
        f = fit(label_tables[chain], sigma_marg, local, tabs, sigma_pair, n_total, iters)
        _, _, lz = _upward(f["phi"], f["psi"], np.asarray(local, dtype=np.int64).reshape(-1, 2))
        f["phi"][0] -= lz[:, None]  # the chain's root: this block now sums to 1 for each y
        phi[chain] = f["phi"]
        label_gene[chain] = f["label_gene"]
        psis.append(f["psi"])
        log_z.append(lz)
    p_y = np.mean([_softmax(lz) for lz in log_z], axis=0)
    phi[chains[0][0]] += np.log(np.clip(p_y, 1e-300, None))[:, None]
    psi = np.concatenate(psis) if psis else np.zeros((0, b, b))
    return {"phi": phi, "psi": psi, "label_gene": label_gene}


# -------------------------------------------------------------- sampling
def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def _softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conditionals(phi: np.ndarray, psi: np.ndarray, tree: np.ndarray) -> dict:
    """Exact conditionals of the fitted model by one upward pass of message passing.

    With ``ch(c)`` the children of gene ``c`` in the tree, the message from
    ``c`` to its parent ``p`` is
    ``mu_c(y, g_p) = log sum_{g_c} exp(phi_c(y, g_c) + psi_e(g_p, g_c) + sum_{k in ch(c)} mu_k(y, g_c))``,
    and

    * ``P(g_c | y, g_p) propto exp(phi_c(y, g_c) + psi_e(g_p, g_c) + sum_k mu_k(y, g_c))``,
    * for each root ``r`` (the tree's root, or every gene without a tree)
      ``beta_r(y, g) = phi_r(y, g) + sum_k mu_k(y, g)``,
      ``P(g_r | y) propto exp(beta_r(y, g_r))`` and
      ``P(y) propto exp(sum_r log sum_g exp beta_r(y, g))``.

    Returns ``label`` ``(C,)``, ``root`` ``(G, C, b)`` (rows of non-roots unused)
    and ``child`` ``(G-1, C, b, b)`` indexed ``[e, y, g_p, g_c]``.
    """
    child, beta, log_py = _upward(phi, psi, tree)
    return {"label": _softmax(log_py), "root": _softmax(beta, axis=2), "child": child}


def _upward(phi: np.ndarray, psi: np.ndarray, tree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The upward pass of :func:`conditionals` (messages from the leaves to the roots).

    Returns ``child`` ``(G-1, C, b, b)`` (normalised over ``g_c``), ``beta``
    ``(G, C, b)`` and ``log Z(y) = sum_r log sum_g exp beta_r(y, g)`` ``(C,)``,
    the unnormalised ``log P(y)``.
    """
    pairs = [tuple(map(int, p)) for p in np.asarray(tree).reshape(-1, 2)]
    g, c, b = phi.shape
    msg = np.zeros_like(phi)
    child = np.zeros((len(pairs), c, b, b))
    for e in reversed(range(len(pairs))):  # children before parents (reverse breadth-first order)
        par, ch = pairs[e]
        joint = (phi[ch] + msg[ch])[:, None, :] + psi[e][None, :, :]  # (y, g_p, g_c)
        child[e] = _softmax(joint, axis=2)
        msg[par] += _logsumexp(joint, axis=2)
    children = {ch for _, ch in pairs}
    beta = phi + msg
    log_py = sum(_logsumexp(beta[r], axis=1) for r in range(g) if r not in children)
    return child, beta, log_py


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (normalised rows)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1)


def sample_codes(state: dict, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bin codes ``(n, G)`` for labels ``y``: ancestral sampling of the fitted model."""
    cond = conditionals(state["phi"], state["psi"], state["tree"])
    g = state["phi"].shape[0]
    pairs = [tuple(map(int, p)) for p in np.asarray(state["tree"]).reshape(-1, 2)]
    codes = np.empty((len(y), g), dtype=np.int64)
    children = {ch for _, ch in pairs}
    for i in range(g):
        if i not in children:
            codes[:, i] = _draw(rng, cond["root"][i][y])
    for e, (par, ch) in enumerate(pairs):  # breadth-first: the parent is drawn before the child
        codes[:, ch] = _draw(rng, cond["child"][e][y, codes[:, par]])
    return codes


def decode(codes: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expression values: uniform within each drawn bin's DP bounds."""
    g = codes.shape[1]
    cols = np.arange(g)[None, :]
    low, high = bounds[cols, codes], bounds[cols, codes + 1]
    return low + rng.random(codes.shape) * (high - low)


# --------------------------------------------------------------- release
@dataclass
class PGMRelease:
    """What the ``pgm`` protocol reveals and fits (identical at every site)."""

    state: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)


def release_weights(cfg: PGMConfig, input_kind: str) -> dict[str, float]:
    """Privacy-loss share of each release (``--pgm-split``; library sizes for counts input)."""
    weights = {RELEASES[0]: cfg.split[0], RELEASES[1]: cfg.split[1]}
    if cfg.tree:
        weights[RELEASES[2]] = cfg.split[2]
    if input_kind == "counts":
        total = sum(weights.values())
        weights.update({spec.name: spec.share for spec in library_size.specs(LIBSIZE_SHARE * total,
                                                                             LIBSIZE_SHARE * total)})
    return weights


def n_pairs(g: int, cfg: PGMConfig) -> int:
    """Gene pairs released: ``G - 1`` tree edges, or ``G - m`` chain links above ``B`` genes (0 without a tree)."""
    if not cfg.tree:
        return 0
    return g - len(gene_blocks(g, cfg.block)) if g > cfg.block else g - 1


def release_specs(cfg: PGMConfig, g: int, input_kind: str) -> list[ReleaseSpec]:
    """The releases of :func:`release_and_fit` (module doc): sensitivities ``sqrt(G)``, ``sqrt(G)``, ``sqrt(#pairs)``."""
    sens = {RELEASES[0]: math.sqrt(g), RELEASES[1]: math.sqrt(g), RELEASES[2]: math.sqrt(max(n_pairs(g, cfg), 1))}
    lib = {spec.name: spec for spec in library_size.specs(1.0, 1.0)}
    return [ReleaseSpec(name, sens[name] if name in sens else lib[name].sensitivity, w)
            for name, w in release_weights(cfg, input_kind).items()]


def plan(cfg: PGMConfig, epsilon: float, delta: float, input_kind: str) -> dict[str, float]:
    """Noise multiplier per release if pgm's releases alone shared ``epsilon`` (a run also releases the
    record count first: :func:`fedsynth.privacy.release.with_record_count`)."""
    return plan_release_split(epsilon, delta, release_weights(cfg, input_kind))


def release_and_fit(release, X: np.ndarray, y: np.ndarray, n_classes: int, n_total: int, cfg: PGMConfig,
                    input_kind: str, *, library_sizes=None) -> PGMRelease:
    """This site's part of the ``pgm`` protocol: three secure noisy releases, then the fit.

    ``release`` is the run's :class:`~fedsynth.privacy.release.Releaser`.
    Every site calls this in lock step and ends with the same state.
    """
    g = X.shape[1]
    b, m = cfg.bins, cfg.fine_bins
    lo, hi = cfg.range_for(input_kind)
    timings = {}

    t = time.monotonic()
    hist_m = release(RELEASES[0], fine_histograms(X, lo, hi, m))
    hist = hist_m.value
    geo = bin_geometry(hist, n_total, lo, hi, b)
    timings["edges"] = time.monotonic() - t

    t = time.monotonic()
    codes = discretise(X, geo["edges"])
    marg_m = release(RELEASES[1], label_gene_tables(codes, y, n_classes, b))
    marg, sd_marg = marg_m.value, marg_m.noise_sd
    timings["marginals"] = time.monotonic() - t

    t = time.monotonic()
    chains: list[np.ndarray] | None = None  # blocks fitted one by one when G > B
    if g > cfg.block:
        chains = choose_chains(marg, cfg.block) if cfg.tree else gene_blocks(g, cfg.block)
        pairs = chain_pairs(chains) if cfg.tree else []
    else:
        pairs = choose_tree(marg) if cfg.tree else []
    ptabs, sd_pair = None, 0.0
    if pairs:
        pair_m = release(RELEASES[2], pair_tables(codes, pairs, b))
        ptabs, sd_pair = pair_m.value, pair_m.noise_sd
    timings["pairs"] = time.monotonic() - t

    libsize = library_size.release(release, library_sizes, n_total) if input_kind == "counts" else None

    t = time.monotonic()
    if chains is not None:
        fitted = fit_blocks(marg, sd_marg or 1.0, chains, ptabs, sd_pair or 1.0, n_total, cfg.iters)
    else:
        fitted = fit(marg, sd_marg or 1.0, pairs, ptabs, sd_pair or 1.0, n_total, cfg.iters)
    timings["fit"] = time.monotonic() - t
    state = {
        "phi": fitted["phi"],
        "psi": fitted["psi"],
        "label_gene": fitted["label_gene"],
        "tree": np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        "bounds": geo["bounds"],
        "edges": geo["edges"],
        "medians": geo["medians"],
        # the released (noisy) tables themselves: DP already, kept for audit and tests
        "released_histograms": hist,
        "released_label_gene": marg,
        "released_pairs": ptabs if ptabs is not None else np.zeros((0, b, b)),
    }
    info = {"bins": b, "fine_bins": m, "range": [lo, hi], "iters": cfg.iters, "tree": cfg.tree,
            "block": cfg.block, "fit_blocks": len(chains) if chains is not None else 1,
            "split": list(cfg.split), "noise_std": {RELEASES[0]: hist_m.noise_sd, RELEASES[1]: sd_marg,
                                                     RELEASES[2]: sd_pair},
            "timings": timings, "log_library_size": libsize}
    return PGMRelease(state, info)


# ------------------------------------------------------------ generator
NAME = "pgm"


@dataclass
class PGMModelConfig:
    """Shape of a fitted model (the model file's ``config``)."""

    n_genes: int
    n_classes: int
    bins: int
    generator: str = NAME


#: Tensors of a fitted model, in the model file's ``state_dict``.
STATE_KEYS = ("phi", "psi", "tree", "bounds", "edges", "medians", "label_gene",
              "released_histograms", "released_label_gene", "released_pairs")


class PGMModel:
    """A fitted Private-PGM model: potentials, tree and the DP bin geometry.

    Attributes (all numpy arrays; ``G`` genes, ``C`` classes, ``b`` bins)
    ----------------------------------------------------------------------
    phi : (G, C, b)
        Log-potentials of the label x gene cliques.
    psi : (G-1, b, b)
        Log-potentials of the gene pairs ``tree[e] = (parent, child)``.
    tree : (G-1, 2) int
        The spanning tree in breadth-first order (empty without a tree); with
        ``G > B`` the ``G - m`` pairs of the ``m`` chains, each in chain order.
    bounds : (G, b+1)
        Value range of each bin (DP edges; end bins around their DP median).
    edges, medians
        DP bin edges ``(G, b-1)`` and bin medians ``(G, b)``.
    label_gene : (G, C, b)
        The fitted label x gene marginals (counts; with blocks, each block's
        own fit, whose label margins may differ slightly between blocks).
    released_*
        The released noisy tables (already DP; for audit and tests).
    """

    def __init__(self, cfg: PGMModelConfig, state: dict):
        self.cfg = cfg
        self.state = {k: np.asarray(state[k]) for k in STATE_KEYS}

    def state_dict(self) -> dict:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}

    @classmethod
    def from_blob(cls, blob: dict) -> "PGMModel":
        return cls(PGMModelConfig(**blob["config"]), {k: blob["state_dict"][k].numpy() for k in STATE_KEYS})

    def class_proportions(self) -> np.ndarray:
        """``P(y)`` of the fitted model."""
        return conditionals(self.state["phi"], self.state["psi"], self.state["tree"])["label"]

    def sample(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Log-expression for labels ``y``: ancestral bin sampling, then uniform within the bins."""
        return decode(sample_codes(self.state, np.asarray(y, dtype=np.int64), rng), self.state["bounds"], rng)


class PGMGenerator(Generator):
    """Private-PGM on noisy label x gene and gene-pair tables (module doc)."""

    name = NAME
    summary = "Private-PGM on noisy marginals of binned genes and the label"
    Config = PGMConfig
    stream = 0x9A3

    @classmethod
    def validate(cls, config) -> None:
        config.validate()

    def releases(self, schema) -> list[ReleaseSpec]:
        return release_specs(self.config, len(schema.genes), schema.input_kind)

    def fit(self, release, cohort, schema) -> None:
        rel = release_and_fit(release, cohort.X, schema.label_index(cohort.labels), len(schema.classes),
                              schema.n_total, self.config, schema.input_kind, library_sizes=cohort.library_sizes)
        self.timings.update(rel.info.pop("timings"))
        self.model = PGMModel(PGMModelConfig(len(schema.genes), len(schema.classes), self.config.bins), rel.state)
        props = self.model.class_proportions()
        self.statistics = {"class_proportions": props.tolist(), "class_counts": (props * schema.n_total).tolist()}
        if rel.info.get("log_library_size"):
            self.statistics["log_library_size"] = rel.info["log_library_size"]
        self._info = rel.info

    def dp_extra(self) -> dict:
        """PGM's own entries: none beyond the ledger's (its fit uses each Measurement's ``noise_sd``,
        recorded as ``released_noise_std``)."""
        return {}

    def params(self) -> dict:
        params = {key: self._info[key] for key in ("bins", "fine_bins", "range", "iters", "tree", "split", "block",
                                                   "fit_blocks")}
        params["tree_edges"] = int(len(self.model.state["tree"]))
        return params

    @classmethod
    def from_state(cls, blob: dict) -> "PGMGenerator":
        return cls.restored(PGMConfig(bins=blob["config"]["bins"]), PGMModel.from_blob(blob), blob)
