"""Fidelity: how closely the synthetic matrix reproduces the real one.

Per-gene means and variances, gene-gene correlation similarity, per-gene
Wasserstein distances (:func:`fidelity`), the maximum mean discrepancy
(:func:`mmd_rbf`) and how well a classifier tells real from synthetic
records (:func:`discriminator_auroc`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ._inputs import _as_matrix, _same_genes
from .attacks import leading_axes

__all__ = ["DISCRIMINATORS", "discriminator_auroc", "fidelity", "mmd_rbf"]


def _corr(kind, a, b):
    """Pearson or Spearman correlation, ``None`` where it is undefined."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    r = (stats.pearsonr if kind == "pearson" else stats.spearmanr)(a, b)[0]
    r = float(r)
    return None if math.isnan(r) else min(1.0, max(-1.0, r))


def _standardize(X):
    Z = X - X.mean(axis=0)
    Z /= np.sqrt(np.mean(Z * Z, axis=0))
    return Z


def _corr_matrix_similarity(X_syn, X_real, block_bytes=64 * 2**20):
    """Pearson correlation of the upper triangles of the gene-gene
    correlation matrices, over genes not constant in either set.

    Computed block-row by block-row (never holding a genes x genes matrix),
    merging per-block moments with Chan et al.'s parallel update.
    Returns ``(r or None, n_genes_used)``.
    """
    keep = (np.ptp(X_syn, axis=0) > 0) & (np.ptp(X_real, axis=0) > 0)
    g = int(keep.sum())
    if g < 3:
        return None, g
    Zs = _standardize(X_syn[:, keep])
    Zr = _standardize(X_real[:, keep])
    ns, nr = Zs.shape[0], Zr.shape[0]
    step = max(1, block_bytes // (8 * g))
    cnt, ma, mb, m2a, m2b, cab = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    for i0 in range(0, g - 1, step):
        i1 = min(g - 1, i0 + step)
        Cs = Zs[:, i0:i1].T @ Zs / ns
        Cr = Zr[:, i0:i1].T @ Zr / nr
        # strictly upper triangle: column j > row index i0 + r
        mask = np.arange(g)[None, :] > np.arange(i0, i1)[:, None]
        a, b = Cs[mask], Cr[mask]
        k = a.size
        bma, bmb = a.mean(), b.mean()
        da, db = a - bma, b - bmb
        bm2a, bm2b, bcab = da @ da, db @ db, da @ db
        tot = cnt + k
        dA, dB = bma - ma, bmb - mb
        m2a += bm2a + dA * dA * cnt * k / tot
        m2b += bm2b + dB * dB * cnt * k / tot
        cab += bcab + dA * dB * cnt * k / tot
        ma += dA * k / tot
        mb += dB * k / tot
        cnt = tot
    if m2a <= 0 or m2b <= 0:
        return None, g
    r = cab / math.sqrt(m2a * m2b)
    return min(1.0, max(-1.0, float(r))), g


_MAX_KERNEL = 1000  # samples per side used by MMD and the discriminator
_N_WORST_GENES = 10  # genes listed as worst reproduced
_TREE_PCS = 50  # principal components the tree discriminator works on


def _real_scale(X_real):
    """Mean and standard deviation of the real data (floored, so a constant
    gene does not divide by zero)."""
    mu = X_real.mean(axis=0)
    sd = X_real.std(axis=0)
    pos = sd[sd > 0]
    return mu, np.maximum(sd, 1e-3 * float(np.median(pos)) if pos.size else 1.0)


def _sub(X, cap, rng):
    return X if len(X) <= cap else X[np.sort(rng.choice(len(X), cap, replace=False))]


def mmd_rbf(X_syn, X_real, *, max_samples=_MAX_KERNEL, seed=0):
    """Maximum mean discrepancy with a Gaussian (RBF) kernel.

    Genes are z-scored by the real data. The kernel is
    ``exp(-||x - y||^2 / (2 h^2))`` with the bandwidth ``h`` set by the median
    heuristic: the median distance between records of the pooled sample.
    At most ``max_samples`` records per side are used (a random subsample).

    Returns
    -------
    dict
        ``mmd2`` -- the biased (V-statistic) estimate of MMD^2: 0 for
        identical samples, never negative; ``mmd2_unbiased`` -- the unbiased
        U-statistic (about 0, possibly slightly negative, for two samples of
        one distribution; it does not grow as samples shrink); ``bandwidth``
        -- ``h``; ``n_synthetic``, ``n_real`` -- records used.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")
    rng = np.random.default_rng(seed)
    mu, sd = _real_scale(X_real)
    A = (_sub(X_syn, max_samples, rng) - mu) / sd
    B = (_sub(X_real, max_samples, rng) - mu) / sd
    P = np.vstack([A, B])
    P = _sub(P, 500, rng)
    d = np.sqrt(euclidean_distances(P, P, squared=True)[np.triu_indices(len(P), 1)])
    d = d[d > 0]
    h = float(np.median(d)) if d.size else 1.0
    g = 1.0 / (2 * h * h)
    Kaa = np.exp(-g * euclidean_distances(A, A, squared=True))
    Kbb = np.exp(-g * euclidean_distances(B, B, squared=True))
    Kab = np.exp(-g * euclidean_distances(A, B, squared=True))
    n, m = len(A), len(B)
    biased = Kaa.mean() + Kbb.mean() - 2 * Kab.mean()
    unbiased = None
    if n > 1 and m > 1:
        unbiased = float((Kaa.sum() - np.trace(Kaa)) / (n * (n - 1))
                         + (Kbb.sum() - np.trace(Kbb)) / (m * (m - 1)) - 2 * Kab.mean())
    return {"mmd2": max(0.0, float(biased)), "mmd2_unbiased": unbiased,
            "bandwidth": h, "n_synthetic": n, "n_real": m}


def _row_groups(X):
    """Group id per row: identical rows (to 6 decimals) share an id."""
    keys = {}
    R = np.round(X, 6) + 0.0
    return np.array([keys.setdefault(r.tobytes(), len(keys)) for r in R])


DISCRIMINATORS = ("logreg", "extra_trees")
"""Classifiers of :func:`discriminator_auroc`."""


def discriminator_auroc(X_syn, X_real, *, models=DISCRIMINATORS, n_splits=5,
                        max_samples=_MAX_KERNEL, seed=0):
    """How well a classifier tells real from synthetic records.

    Equally many synthetic and real records (the smaller count, at most
    ``max_samples``) are pooled, genes z-scored by the real data, and each
    classifier's out-of-fold probability of "synthetic" is scored by AUROC
    (stratified ``n_splits``-fold cross-validation). Identical records are
    kept in one fold: a record and its copy on the other side could not be
    told apart, and splitting them would push the AUROC below 0.5.

    Classifiers: ``"logreg"`` (logistic regression on standardised genes)
    and ``"extra_trees"`` (extremely randomised trees, 100 trees: a random
    forest with random split points), the trees on the first 50 principal
    components of the real records when there are more genes (for speed; the
    logistic regression sees every gene).
    Why not a random forest: BENCHMARKS.md, "Evaluation: measured choices".

    Returns
    -------
    dict
        ``{model: auroc}`` for each model, ``"max"`` (the larger; 0.5 means
        indistinguishable, 1.0 perfectly separable), ``"n_per_class"`` and
        ``"n_splits"``. AUROCs are ``None`` with fewer than 2 records per side.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")
    rng = np.random.default_rng(seed)
    n = min(len(X_syn), len(X_real), max_samples)
    out = {m: None for m in models}
    out.update(max=None, n_per_class=int(n), n_splits=None)
    if n < 2:
        return out
    mu, sd = _real_scale(X_real)
    A = (_sub(X_syn, n, rng) - mu) / sd
    B = (_sub(X_real, n, rng) - mu) / sd
    X = np.vstack([A, B])
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    groups = _row_groups(X)
    n_groups = int(groups.max()) + 1
    if n_groups < 2:  # every record the same on both sides: indistinguishable
        out.update({m: 0.5 for m in models}, max=0.5)
        return out
    side = [set(groups[y == c].tolist()) for c in (0, 1)]
    if min(len(side[0]), len(side[1])) < 2:
        # one side is one record repeated (a degenerate synthetic cohort): it cannot be both trained on and
        # held out; told apart by identity (1) unless the other side shows the same record (0.5)
        v = 0.5 if side[0] & side[1] else 1.0
        out.update({m: v for m in models}, max=v, n_splits=0)
        return out
    k = int(min(n_splits, n, len(side[0]), len(side[1])))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for m in models:
        if m == "logreg":
            clf, Xm = Pipeline([("scale", StandardScaler()),
                                ("clf", LogisticRegression(max_iter=1000))]), X
        else:
            clf = ExtraTreesClassifier(n_estimators=100, random_state=seed, n_jobs=1)
            Xm = X
            if X.shape[1] > _TREE_PCS:  # trees on the real data's leading axes
                mean, vt, _ = leading_axes(B, _TREE_PCS, seed)
                Xm = (X - mean) @ vt.T
        proba = cross_val_predict(clf, Xm, y, cv=cv, groups=groups, method="predict_proba")[:, 1]
        out[m] = float(roc_auc_score(y, proba))
    out["max"] = max(out[m] for m in models)
    out["n_splits"] = k
    return out


def fidelity(X_syn, X_real, *, genes=None, seed=0, mmd=True, discriminator=True):
    """How closely the synthetic matrix reproduces the real one.

    Parameters
    ----------
    X_syn : ndarray, shape (n_syn, n_genes)
        Synthetic expression matrix.
    X_real : ndarray, shape (n_real, n_genes)
        Real expression matrix, same genes in the same order. The sample
        counts may differ.
    genes : sequence of str, optional
        Gene names, used to list the worst reproduced genes.
    seed : int
        Seed of subsamples and classifiers.
    mmd, discriminator : bool
        Compute :func:`mmd_rbf` and :func:`discriminator_auroc` (the slower
        parts).

    Returns
    -------
    dict
        * ``mean_pearson``, ``mean_spearman`` -- correlation, across genes,
          between the per-gene means of the two matrices.
        * ``var_pearson``, ``var_spearman`` -- the same for per-gene
          variances.
        * ``corr_matrix_pearson`` -- Pearson correlation between the upper
          triangles (diagonal excluded) of the two gene-gene Pearson
          correlation matrices, over the genes that are not constant in
          either matrix.
        * ``n_genes_corr`` -- number of genes used for
          ``corr_matrix_pearson``.
        * ``wasserstein_mean`` -- mean over genes of the 1-Wasserstein
          distance between the synthetic and real values of the gene
          (:func:`scipy.stats.wasserstein_distance`), in expression units;
          ``wasserstein_std_mean``, ``wasserstein_std_max`` -- the same
          distances divided by the gene's real standard deviation (unit-free),
          mean and maximum over genes.
        * ``worst_genes`` -- up to 10 genes with the largest standardised
          Wasserstein distance: ``{"gene", "wasserstein_std", "mean_real",
          "mean_synthetic", "sd_real", "sd_synthetic"}``.
        * ``mmd2``, ``mmd2_unbiased``, ``mmd_bandwidth`` -- see
          :func:`mmd_rbf` (``None`` if not computed).
        * ``discriminator_auroc`` -- the larger of the classifiers' AUROCs,
          ``discriminator`` -- all of :func:`discriminator_auroc`'s output
          (``None`` if not computed).
        * ``n_genes`` -- number of genes.

        A correlation that is undefined (fewer than two genes -- three for
        ``corr_matrix_pearson`` -- or a constant vector) is ``None``. 1.0
        is perfect agreement; Wasserstein and MMD are 0 for identical data.

    Raises
    ------
    InputError
        If a matrix is empty, not 2-D, has non-finite values, or the gene
        counts differ.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")
    genes = [str(g) for g in genes] if genes is not None else [
        f"gene{j + 1}" for j in range(X_real.shape[1])]

    mean_s, mean_r = X_syn.mean(axis=0), X_real.mean(axis=0)
    var_s, var_r = X_syn.var(axis=0), X_real.var(axis=0)
    corr_r, n_corr = _corr_matrix_similarity(X_syn, X_real)
    wd = np.array([stats.wasserstein_distance(X_syn[:, j], X_real[:, j])
                   for j in range(X_syn.shape[1])])
    _, sd = _real_scale(X_real)
    wstd = wd / sd
    worst = [
        {"gene": genes[j], "wasserstein_std": float(wstd[j]),
         "mean_real": float(mean_r[j]), "mean_synthetic": float(mean_s[j]),
         "sd_real": float(np.sqrt(var_r[j])), "sd_synthetic": float(np.sqrt(var_s[j]))}
        for j in np.argsort(-wstd, kind="stable")[:_N_WORST_GENES]]
    out = {
        "mean_pearson": _corr("pearson", mean_s, mean_r),
        "mean_spearman": _corr("spearman", mean_s, mean_r),
        "var_pearson": _corr("pearson", var_s, var_r),
        "var_spearman": _corr("spearman", var_s, var_r),
        "corr_matrix_pearson": corr_r,
        "n_genes_corr": n_corr,
        "wasserstein_mean": float(np.mean(wd)),
        "wasserstein_std_mean": float(np.mean(wstd)),
        "wasserstein_std_max": float(np.max(wstd)),
        "worst_genes": worst,
        "mmd2": None, "mmd2_unbiased": None, "mmd_bandwidth": None,
        "discriminator_auroc": None, "discriminator": None,
        "n_genes": int(X_syn.shape[1]),
    }
    if mmd:
        m = mmd_rbf(X_syn, X_real, seed=seed)
        out.update(mmd2=m["mmd2"], mmd2_unbiased=m["mmd2_unbiased"], mmd_bandwidth=m["bandwidth"])
    if discriminator:
        d = discriminator_auroc(X_syn, X_real, seed=seed)
        out.update(discriminator_auroc=d["max"], discriminator=d)
    return out
