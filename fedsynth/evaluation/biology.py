"""Biology: differential expression and co-expression recovered.

:func:`de_recovery` compares each class's top differentially expressed genes
(one-vs-rest Welch t-tests, :func:`welch_t`, with Benjamini-Hochberg
q-values, :func:`bh_qvalues`) between the real and the synthetic data;
:func:`coexpression_recovery` compares their co-expression networks.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ._inputs import _as_labels, _as_matrix, _same_genes
from .fidelity import _corr, _corr_matrix_similarity

__all__ = ["bh_qvalues", "coexpression_genes", "coexpression_recovery", "de_recovery", "default_top_k", "welch_t"]


def welch_t(X, in_group):
    """Welch's t-test of every gene, group vs the rest.

    Returns ``(t, p)`` arrays over genes (two-sided p). A gene with zero
    variance in both groups has t = 0 and p = 1. Needs at least two samples
    in the group and two outside it (else ``ValueError``).
    """
    in_group = np.asarray(in_group, bool)
    a, b = X[in_group], X[~in_group]
    n1, n0 = len(a), len(b)
    if n1 < 2 or n0 < 2:
        raise ValueError("Welch's t-test needs >= 2 samples on each side")
    v1, v0 = a.var(axis=0, ddof=1) / n1, b.var(axis=0, ddof=1) / n0
    se2 = v1 + v0
    ok = se2 > 0
    t = np.zeros(X.shape[1])
    t[ok] = (a.mean(axis=0) - b.mean(axis=0))[ok] / np.sqrt(se2[ok])
    denom = v1 * v1 / (n1 - 1) + v0 * v0 / (n0 - 1)
    df = np.full(X.shape[1], float(n1 + n0 - 2))
    df[denom > 0] = (se2 * se2)[denom > 0] / denom[denom > 0]
    p = np.ones(X.shape[1])
    p[ok] = 2 * stats.t.sf(np.abs(t[ok]), df[ok])
    return t, p


def bh_qvalues(p):
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    p = np.asarray(p, float)
    n = p.size
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def default_top_k(n_genes):
    """Top-k for DE recovery: 20, but at most a fifth of the genes (>= 1)."""
    return int(max(1, min(20, n_genes // 5)))


def _top(t, q, k, alpha):
    """Indices of the k genes with the largest |t| among those with q < alpha."""
    sig = np.flatnonzero(q < alpha)
    return sig[np.argsort(-np.abs(t[sig]), kind="stable")][:k]


def de_recovery(X_syn, y_syn, X_real, y_real, *, genes=None, k=None, alpha=0.05):
    """Are each class's top differentially expressed genes recovered?

    For every class of the real data, each gene is tested one-vs-rest with
    Welch's t-test, separately in the real and in the synthetic data, and
    q-values come from Benjamini-Hochberg. A side's *top-k* are the ``k``
    genes with the largest ``|t|`` among its genes with ``q < alpha``. A
    real top-k gene is *recovered* if it is also a synthetic top-k gene with
    the same direction (sign of t).

    Returns
    -------
    dict
        * ``k``, ``alpha``;
        * ``per_class`` -- ``{class: {...}}`` with ``precision_at_k``
          (recovered / synthetic top-k: are the genes the synthetic data
          call DE really DE?), ``recall_at_k`` (recovered / real top-k: are
          the real DE genes found?), ``overlap_at_k`` (overlap of the plain
          top-k by |t|, no significance filter, / k; chance level
          ``overlap_chance`` = k / genes), ``t_spearman`` (rank correlation
          of all genes' t statistics), ``n_de_real``, ``n_de_synthetic``
          (genes with q < alpha), ``top_real``, ``top_synthetic``,
          ``recovered`` (gene names). ``precision_at_k`` is ``None`` when
          the synthetic side has no significant gene, ``recall_at_k`` when
          the real side has none. A class with fewer than 2 samples in or out
          of it on either side has ``skipped`` set instead.
        * ``mean_precision_at_k``, ``mean_recall_at_k``,
          ``mean_overlap_at_k``, ``mean_t_spearman`` -- means over classes
          where defined (``None`` if none).

        Identical data give precision and recall 1.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")
    y_syn = _as_labels(y_syn, len(X_syn), "synthetic labels")
    y_real = _as_labels(y_real, len(X_real), "real labels")
    G = X_real.shape[1]
    genes = [str(g) for g in genes] if genes is not None else [f"gene{j + 1}" for j in range(G)]
    k = default_top_k(G) if k is None else int(min(max(1, k), G))
    per = {}
    for c in np.unique(y_real):
        ir, is_ = y_real == c, y_syn == c
        if min(ir.sum(), (~ir).sum(), is_.sum(), (~is_).sum()) < 2:
            per[str(c)] = {"skipped": "fewer than 2 samples in or outside the class on one side"}
            continue
        t_r, p_r = welch_t(X_real, ir)
        t_s, p_s = welch_t(X_syn, is_)
        q_r, q_s = bh_qvalues(p_r), bh_qvalues(p_s)
        R, S = _top(t_r, q_r, k, alpha), _top(t_s, q_s, k, alpha)
        S_set = set(S.tolist())
        rec = [j for j in R if j in S_set and np.sign(t_r[j]) == np.sign(t_s[j])]
        plain_r = set(np.argsort(-np.abs(t_r), kind="stable")[:k].tolist())
        plain_s = set(np.argsort(-np.abs(t_s), kind="stable")[:k].tolist())
        per[str(c)] = {
            "precision_at_k": len(rec) / len(S) if len(S) else None,
            "recall_at_k": len(rec) / len(R) if len(R) else None,
            "overlap_at_k": len(plain_r & plain_s) / k,
            "overlap_chance": k / G,
            "t_spearman": _corr("spearman", t_r, t_s),
            "n_de_real": int(np.sum(q_r < alpha)),
            "n_de_synthetic": int(np.sum(q_s < alpha)),
            "top_real": [genes[j] for j in R],
            "top_synthetic": [genes[j] for j in S],
            "recovered": [genes[j] for j in rec],
        }

    def mean_of(key):
        v = [d[key] for d in per.values() if d.get(key) is not None]
        return float(np.mean(v)) if v else None

    return {"k": k, "alpha": alpha, "per_class": per,
            "mean_precision_at_k": mean_of("precision_at_k"),
            "mean_recall_at_k": mean_of("recall_at_k"),
            "mean_overlap_at_k": mean_of("overlap_at_k"),
            "mean_t_spearman": mean_of("t_spearman")}


def coexpression_genes(X_real, X_syn, max_genes=1000):
    """Indices of the genes used for co-expression: non-constant on both
    sides, the ``max_genes`` most variable in the real data."""
    keep = np.flatnonzero((np.ptp(X_real, axis=0) > 0) & (np.ptp(X_syn, axis=0) > 0))
    if keep.size > max_genes:
        v = X_real[:, keep].var(axis=0)
        keep = np.sort(keep[np.argsort(-v, kind="stable")[:max_genes]])
    return keep


def coexpression_recovery(X_syn, y_syn, X_real, y_real, *, max_genes=1000, n_edges=None):
    """Is the real co-expression network recovered?

    On the (at most ``max_genes`` most variable) genes that vary on both
    sides, the real *network* is the ``n_edges`` gene pairs with the largest
    absolute Pearson correlation in the real data (default: 5% of all
    pairs, at least 10 and at most 1,000); the synthetic network likewise.

    Returns
    -------
    dict
        * ``edge_recovery`` -- share of real edges that are synthetic edges
          of the same sign (1 for identical data; chance is about
          ``n_edges / n_pairs``);
        * ``within_class_corr_similarity`` -- mean over classes (with at
          least 5 samples on each side) of the similarity of the two
          within-class gene-gene correlation matrices (Pearson correlation of
          their upper triangles): co-expression that is not merely driven by
          class differences; ``per_class`` gives each class's value;
        * ``n_edges``, ``n_pairs``, ``n_genes``.
        Values are ``None`` with fewer than 3 usable genes.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")
    y_syn = _as_labels(y_syn, len(X_syn), "synthetic labels")
    y_real = _as_labels(y_real, len(X_real), "real labels")
    keep = coexpression_genes(X_real, X_syn, max_genes)
    g = keep.size
    out = {"edge_recovery": None, "within_class_corr_similarity": None, "per_class": {},
           "n_edges": 0, "n_pairs": g * (g - 1) // 2, "n_genes": int(g)}
    if g < 3:
        return out
    iu = np.triu_indices(g, 1)
    cr = np.corrcoef(X_real[:, keep].T)[iu]
    cs = np.corrcoef(X_syn[:, keep].T)[iu]
    cr, cs = np.nan_to_num(cr), np.nan_to_num(cs)
    n_pairs = cr.size
    m = n_edges or int(min(1000, max(10, round(0.05 * n_pairs))))
    m = int(min(m, n_pairs))
    er = np.argsort(-np.abs(cr), kind="stable")[:m]
    es = set(np.argsort(-np.abs(cs), kind="stable")[:m].tolist())
    rec = sum(1 for e in er if e in es and np.sign(cr[e]) == np.sign(cs[e]))
    out.update(edge_recovery=rec / m, n_edges=m, n_pairs=int(n_pairs))
    vals = []
    for c in np.unique(y_real):
        a, b = X_syn[y_syn == c][:, keep], X_real[y_real == c][:, keep]
        if len(a) < 5 or len(b) < 5:
            continue
        r, _ = _corr_matrix_similarity(a, b)
        out["per_class"][str(c)] = r
        if r is not None:
            vals.append(r)
    out["within_class_corr_similarity"] = float(np.mean(vals)) if vals else None
    return out
