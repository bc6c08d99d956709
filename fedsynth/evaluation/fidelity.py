"""How useful and how faithful a synthetic data set is, on real data.

Everything ``fedsynth evaluate`` measures, except the privacy attacks
(:mod:`fedsynth.privacy_attacks`) and the HTML (:mod:`fedsynth.report`).
The public surface:

:func:`check_compatible`
    Refuse a synthetic/real pair whose genes or labels do not match.
:func:`tstr`
    Utility: train on synthetic, test on real (beside train on real),
    logistic regression and random forest; accuracy, macro-F1, AUROC,
    average precision, per class; majority-class baseline.
:func:`fidelity`
    Per-gene mean/variance agreement, gene-gene correlation similarity, MMD
    (:func:`mmd_rbf`), discriminator AUROC (:func:`discriminator_auroc`),
    per-gene Wasserstein distances.
:func:`de_recovery`, :func:`coexpression_recovery`
    Biology: each class's top differentially expressed genes and the
    co-expression network recovered.
:func:`evaluate`
    All of the above plus the privacy attacks, a real-vs-real reference for
    every fidelity and biology metric, and the :func:`verdict`.
:func:`evaluate_files`
    The same from files; writes ``metrics.json`` and ``report.html``
    (the ``fedsynth evaluate`` command).

All functions take plain numpy arrays: expression matrices are
``samples x genes`` floats, labels are 1-D arrays of ``str``. User-caused
problems raise :class:`~fedsynth.errors.InputError` (bad data) or
:class:`~fedsynth.errors.ParameterError` (bad parameter). Every classifier
runs single-threaded (``n_jobs=1``).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
from scipy import stats
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fedsynth.data.preprocess import as_labels as _as_labels
from fedsynth.errors import InputError, ParameterError

__all__ = [
    "check_compatible", "coexpression_recovery", "de_recovery", "discriminator_auroc", "evaluate",
    "evaluate_files", "fidelity", "mmd_rbf", "tstr", "verdict",
]

MODELS = ("logreg", "rf")
"""Classifier names accepted by :func:`tstr`."""

_N_EXAMPLES = 5  # how many offending names an error message lists


# ---------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------


def _examples(items, n=_N_EXAMPLES):
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _unique_in_order(items, exclude):
    seen = set()
    out = []
    for x in items:
        if x not in exclude and x not in seen:
            seen.add(x)
            out.append(x)
    return out


def check_compatible(genes_syn, genes_real, labels_syn, labels_real, *,
                     syn_name, real_name):
    """Check that a synthetic and a real data set can be compared.

    Parameters
    ----------
    genes_syn, genes_real : sequence of str
        Gene (column) names of the synthetic and the real matrix. They must
        be identical, in the same order.
    labels_syn, labels_real : sequence of str
        Per-sample labels of the two data sets.
    syn_name, real_name : str
        Names of the two inputs (usually file paths), used in messages.

    Returns
    -------
    list of str
        Warnings, one sentence each: currently only real labels that no
        synthetic sample carries (a TSTR classifier can never predict them).

    Raises
    ------
    InputError
        If the gene lists differ (the message gives how many genes differ and
        examples from each side) or if the synthetic data has labels that the
        real data has not.
    """
    gs = [str(g) for g in genes_syn]
    gr = [str(g) for g in genes_real]
    if gs != gr:
        only_syn = _unique_in_order(gs, set(gr))
        only_real = _unique_in_order(gr, set(gs))
        if only_syn or only_real:
            parts = []
            if only_syn:
                parts.append(f"{len(only_syn)} only in {syn_name} "
                             f"(e.g. {_examples(only_syn)})")
            if only_real:
                parts.append(f"{len(only_real)} only in {real_name} "
                             f"(e.g. {_examples(only_real)})")
            raise InputError(
                f"{syn_name} and {real_name} have different genes: "
                f"{len(only_syn) + len(only_real)} genes differ, "
                + "; ".join(parts))
        if len(gs) != len(gr):
            raise InputError(
                f"{syn_name} has {len(gs)} gene columns and {real_name} has "
                f"{len(gr)}: the same gene names, but some are duplicated")
        pos = next(i for i, (a, b) in enumerate(zip(gs, gr)) if a != b)
        n_moved = sum(a != b for a, b in zip(gs, gr))
        raise InputError(
            f"{syn_name} and {real_name} have the same {len(gs)} genes but "
            f"in a different order: {n_moved} genes differ in position "
            f"(first at column {pos + 1}: {gs[pos]!r} in {syn_name}, "
            f"{gr[pos]!r} in {real_name})")

    ls = set(str(x) for x in labels_syn)
    lr = set(str(x) for x in labels_real)
    extra = sorted(ls - lr)
    if extra:
        raise InputError(
            f"{syn_name} has {len(extra)} label(s) that {real_name} has not: "
            f"{_examples(extra)}")
    warnings = []
    missing = sorted(lr - ls)
    if missing:
        warnings.append(
            f"{len(missing)} label(s) of {real_name} never occur in "
            f"{syn_name}: {_examples(missing)}; a classifier trained on "
            f"{syn_name} cannot predict them")
    return warnings


def _as_matrix(X, what):
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} is not a numeric matrix: {e}") from None
    if X.ndim != 2:
        raise InputError(f"{what} must be a samples x genes matrix, "
                         f"got an array with {X.ndim} dimension(s)")
    if X.shape[0] == 0:
        raise InputError(f"{what} has no samples")
    if X.shape[1] == 0:
        raise InputError(f"{what} has no genes")
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X)))
        raise InputError(f"{what} has {bad} missing or non-finite value(s)")
    return X


# ---------------------------------------------------------------------------
# train on synthetic, test on real
# ---------------------------------------------------------------------------


def _make_model(name, seed):
    if name == "logreg":
        return Pipeline([("scale", StandardScaler()),
                         ("clf", LogisticRegression(max_iter=2000))])
    return RandomForestClassifier(n_estimators=100, random_state=seed,
                                  n_jobs=1)


def _proba_for(classes, proba, c, n):
    col = {k: i for i, k in enumerate(classes)}
    return proba[:, col[c]] if c in col else np.zeros(n)


def _auroc(y_test, classes, proba):
    """One-vs-rest macro AUROC over the classes present in ``y_test``.

    ``proba[:, k]`` is the score of ``classes[k]``; classes the model never
    saw have score 0. ``None`` if ``y_test`` has fewer than two classes.
    """
    present = np.unique(y_test)
    if present.size < 2:
        return None
    aucs = [roc_auc_score(y_test == c, _proba_for(classes, proba, c, len(y_test)))
            for c in present]
    return float(np.mean(aucs))


def _per_class(y_test, pred, classes, proba):
    present = np.unique(y_test)
    prec, rec, f1, sup = precision_recall_fscore_support(
        y_test, pred, labels=present, zero_division=0)
    out = {}
    for i, c in enumerate(present):
        score = _proba_for(classes, proba, c, len(y_test))
        two = present.size >= 2
        out[str(c)] = {
            "precision": float(prec[i]), "recall": float(rec[i]),
            "f1": float(f1[i]), "support": int(sup[i]),
            "auroc": float(roc_auc_score(y_test == c, score)) if two else None,
            "average_precision": (float(average_precision_score(y_test == c, score))
                                  if two else None),
        }
    return out


def _scores(y_test, pred, classes, proba):
    per_class = _per_class(y_test, pred, classes, proba)
    aps = [v["average_precision"] for v in per_class.values()]
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro",
                                   zero_division=0)),
        "auroc": _auroc(y_test, classes, proba),
        "average_precision": (None if any(a is None for a in aps)
                              else float(np.mean(aps))),
        "per_class": per_class,
    }


def _constant_scores(y_test, label):
    pred = np.full(len(y_test), label)
    return _scores(y_test, pred, np.array([label]),
                   np.ones((len(y_test), 1)))


def _fit_and_score(models, seed, X_train, y_train, X_test, y_test):
    classes = np.unique(y_train)
    if classes.size < 2:
        # Nothing to learn: every model predicts the one class it has seen.
        return {m: _constant_scores(y_test, classes[0]) for m in models}, True
    out = {}
    for m in models:
        model = _make_model(m, seed).fit(X_train, y_train)
        out[m] = _scores(y_test, model.predict(X_test), model.classes_,
                         model.predict_proba(X_test))
    return out, False


def _majority_label(y):
    counts = Counter(y.tolist())
    top = max(counts.values())
    return min(c for c, k in counts.items() if k == top)


def tstr(X_syn, y_syn, X_real_test, y_real_test, *, X_real_train=None,
         y_real_train=None, models=MODELS, seed=0):
    """Classification utility: train on synthetic, test on real (TSTR).

    Each model is trained on the synthetic samples and scored on the real
    test samples. If real training data is given, the same models are also
    trained on it and scored on the same test set (TRTR), the reference the
    synthetic data should come close to.

    Models: ``"logreg"`` is ``LogisticRegression(max_iter=2000)`` after a
    ``StandardScaler`` fitted on the training side (the synthetic data for
    TSTR); ``"rf"`` is ``RandomForestClassifier(n_estimators=100,
    random_state=seed, n_jobs=1)``.

    Parameters
    ----------
    X_syn : ndarray, shape (n_syn, n_genes)
        Synthetic expression matrix.
    y_syn : ndarray of str, shape (n_syn,)
        Synthetic labels.
    X_real_test : ndarray, shape (n_test, n_genes)
        Real held-out expression matrix.
    y_real_test : ndarray of str, shape (n_test,)
        Real held-out labels.
    X_real_train, y_real_train : ndarray, optional
        Real training data; both or neither. Enables TRTR.
    models : sequence of {"logreg", "rf"}, default ("logreg", "rf")
        Classifiers to evaluate.
    seed : int, default 0
        Seed of the random forest.

    Returns
    -------
    dict
        ``{"tstr": {model: scores}, "trtr": {model: scores} or None,
        "majority": {"label", "accuracy", "macro_f1"}, "single_class": bool,
        "single_class_real": bool or None, "n_train_synthetic": int,
        "n_train_real": int or None, "n_test": int,
        "relative_macro_f1": {model: float or None}}``, where ``scores`` is
        ``{"accuracy", "macro_f1", "auroc", "average_precision",
        "per_class"}``.

        * ``accuracy`` -- fraction of test samples predicted correctly.
        * ``macro_f1`` -- unweighted mean F1 over the classes occurring in
          the test labels or the predictions (scikit-learn's default; a class
          with no true or predicted samples scores 0).
        * ``auroc`` -- one-vs-rest AUROC of the predicted class
          probabilities, averaged over the classes present in the test set;
          a class the model never saw in training has probability 0.
          ``None`` if the test set has fewer than two classes.
        * ``average_precision`` -- one-vs-rest average precision (area under
          the precision-recall curve), averaged over the classes present in
          the test set; ``None`` with fewer than two test classes.
        * ``per_class`` -- ``{class: {"precision", "recall", "f1",
          "support", "auroc", "average_precision"}}`` for every class of the
          test set (one-vs-rest; AUROC/AP ``None`` with one test class).
        * ``relative_macro_f1`` -- TSTR macro-F1 divided by TRTR macro-F1
          per model (the CAMDA challenge's "relative F1"); ``None`` without
          TRTR or when TRTR macro-F1 is 0.
        * ``majority`` -- always predicting the most frequent synthetic
          (training-side) label, ties broken alphabetically.
        * ``single_class`` -- the synthetic data has one class only; no
          classifier is trained and every model's scores are those of
          predicting that class (constant scores, so AUROC is 0.5).
          ``single_class_real`` is the same for the real training data
          (``None`` without TRTR).

    Raises
    ------
    InputError
        If a matrix is empty, not 2-D, has non-finite values, the gene counts
        differ, or a label array does not match its matrix.
    ParameterError
        If ``models`` is empty or names an unknown model, or only one of
        ``X_real_train`` / ``y_real_train`` is given.
    """
    if isinstance(models, str):
        models = (models,)
    models = tuple(models)
    if not models:
        raise ParameterError("models must name at least one model")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ParameterError(
            f"models: unknown model(s) {_examples(unknown)}; "
            f"choose from {', '.join(MODELS)}")
    if (X_real_train is None) != (y_real_train is None):
        raise ParameterError(
            "X_real_train and y_real_train must be given together")

    X_syn = _as_matrix(X_syn, "synthetic matrix")
    y_syn = _as_labels(y_syn, X_syn.shape[0], "synthetic labels")
    X_test = _as_matrix(X_real_test, "real test matrix")
    y_test = _as_labels(y_real_test, X_test.shape[0], "real test labels")
    _same_genes(X_syn, X_test, "synthetic matrix", "real test matrix")

    result = {}
    result["tstr"], single = _fit_and_score(models, seed, X_syn, y_syn,
                                            X_test, y_test)
    if X_real_train is not None:
        X_tr = _as_matrix(X_real_train, "real training matrix")
        y_tr = _as_labels(y_real_train, X_tr.shape[0], "real training labels")
        _same_genes(X_tr, X_test, "real training matrix", "real test matrix")
        result["trtr"], single_real = _fit_and_score(models, seed, X_tr, y_tr,
                                                     X_test, y_test)
        n_train_real = int(X_tr.shape[0])
    else:
        result["trtr"], single_real, n_train_real = None, None, None

    label = _majority_label(y_syn)
    base = _constant_scores(y_test, label)
    result["majority"] = {"label": label, "accuracy": base["accuracy"],
                          "macro_f1": base["macro_f1"]}
    result["single_class"] = single
    result["single_class_real"] = single_real
    result["n_train_synthetic"] = int(X_syn.shape[0])
    result["n_train_real"] = n_train_real
    result["n_test"] = int(X_test.shape[0])
    result["relative_macro_f1"] = {
        m: (result["tstr"][m]["macro_f1"] / result["trtr"][m]["macro_f1"]
            if result["trtr"] and result["trtr"][m]["macro_f1"] > 0 else None)
        for m in models}
    return result


def _same_genes(A, B, a_name, b_name):
    if A.shape[1] != B.shape[1]:
        raise InputError(f"{a_name} has {A.shape[1]} genes and {b_name} has "
                         f"{B.shape[1]}")


# ---------------------------------------------------------------------------
# fidelity
# ---------------------------------------------------------------------------


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
    forest with random split points, as good a detector and several times
    faster), the trees on the first 50 principal components of the real
    records when there are more genes (for speed; the logistic regression
    sees every gene).

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
    k = int(min(n_splits, n, n_groups))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for m in models:
        if m == "logreg":
            clf, Xm = Pipeline([("scale", StandardScaler()),
                                ("clf", LogisticRegression(max_iter=1000))]), X
        else:
            clf = ExtraTreesClassifier(n_estimators=100, random_state=seed, n_jobs=1)
            Xm = X
            if X.shape[1] > _TREE_PCS:  # trees on the real data's leading axes
                from .attacks import leading_axes

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


# ---------------------------------------------------------------------------
# biology: differential expression and co-expression
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# everything together
# ---------------------------------------------------------------------------

_DP_KEYS = ("generator", "private", "epsilon", "epsilon_spent", "delta", "max_colluders", "k", "sigma",
            "stat_sigma", "noise_multipliers", "budget_split", "sample_rate", "clip_norm", "steps", "epochs",
            "accountant", "sites")


def _json_safe(v):
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    return v


def dp_summary(dp):
    """The DP record fields a report shows (``None`` without a record)."""
    if dp is None:
        return None
    return _json_safe({k: dp[k] for k in _DP_KEYS if dp.get(k) is not None})


# Verdict thresholds (documented in the report's "How to read" section).
UTILITY_GOOD, UTILITY_FAIR = 0.9, 0.7  # TSTR / TRTR macro-F1
DISCRIMINATOR_GOOD, DISCRIMINATOR_FAIR = 0.6, 0.8  # discriminator AUROC
MIA_SIGNAL, MIA_LEAK = 0.55, 0.6  # worst membership-inference AUROC
EPSILON_STRONG, EPSILON_WEAK = 1.0, 10.0


def _g(x):
    return "?" if x is None else f"{x:g}"


def _f(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def verdict(metrics, *, model="logreg"):
    """Three traffic lights for the top of the report: useful? realistic? private?

    Each is ``{"level": "good" | "fair" | "poor" | "unknown", "question",
    "headline", "detail"}``:

    * utility (``model``'s TSTR macro-F1 over its TRTR macro-F1): good at
      >= 0.9, fair at >= 0.7 if also 0.1 above the majority-class baseline;
    * fidelity (the discriminator AUROC, read as max(AUROC, 0.5)): good at
      <= 0.6, fair at <= 0.8;
    * privacy: poor if the model is not differentially private, if any
      synthetic record copies a training record, or if the worst
      membership-inference AUROC is >= 0.6 with its 95% interval (widened
      for the number of attacks, Bonferroni) above 0.5; fair if that AUROC
      is >= 0.55 with that interval above 0.5, if epsilon is above 10, or
      if there is no DP record; good otherwise.
    """
    out = {}
    u = metrics["utility"]
    t = u["tstr"].get(model) or next(iter(u["tstr"].values()))
    r = (u["trtr"] or {}).get(model)
    maj = u["majority"]["macro_f1"]
    ratio = t["macro_f1"] / r["macro_f1"] if r and r["macro_f1"] > 0 else None
    if ratio is None:
        level = "unknown"
    elif ratio >= UTILITY_GOOD:
        level = "good"
    elif ratio >= UTILITY_FAIR and t["macro_f1"] > maj + 0.1:
        level = "fair"
    else:
        level = "poor"
    out["utility"] = {
        "level": level, "question": "Useful?",
        "headline": (f"macro-F1 {_f(t['macro_f1'])} trained on synthetic vs {_f(r['macro_f1'] if r else None)} "
                     f"trained on real" + (f" ({ratio:.0%})" if ratio is not None else "")),
        "detail": (f"{model}, tested on the real holdout; always predicting the most frequent class: "
                   f"{_f(maj)}; accuracy {_f(t['accuracy'])} vs {_f(r['accuracy'] if r else None)}"),
    }

    f = metrics["fidelity"]
    d = f.get("discriminator_auroc")
    ref = (metrics.get("fidelity_reference") or {}).get("discriminator_auroc")
    if d is None:
        level = "unknown"
    else:
        dd = max(d, 0.5)
        level = "good" if dd <= DISCRIMINATOR_GOOD else "fair" if dd <= DISCRIMINATOR_FAIR else "poor"
    out["fidelity"] = {
        "level": level, "question": "Realistic?",
        "headline": f"a classifier tells synthetic from real with AUROC {_f(d)} (0.5 = indistinguishable)",
        "detail": (f"real holdout vs real training: {_f(ref) if ref is None or ref >= 0.5 else 'below 0.5 (noise)'}; "
                   f"per-gene means r = {_f(f['mean_pearson'], 3)}, "
                   f"variances r = {_f(f['var_pearson'], 3)}, gene-gene correlations r = "
                   f"{_f(f['corr_matrix_pearson'], 3)}"),
    }

    p = metrics["privacy"]
    dp = p.get("dp")
    worst = (p.get("membership_inference") or {}).get("worst")
    dcr = p.get("dcr") or {}
    copies = dcr.get("exact_copies", 0)
    auc = worst["auroc"] if worst else None
    ci_key = "auroc_ci95_adjusted" if worst and worst.get("auroc_ci95_adjusted") else "auroc_ci95"
    low = worst[ci_key][0] if worst and worst.get(ci_key) else None
    leak = copies > 0 or (auc is not None and auc >= MIA_LEAK and low is not None and low > 0.5)
    signal = auc is not None and auc >= MIA_SIGNAL and low is not None and low > 0.5
    if dp is None:
        formal = "no DP record (pass the model file to see epsilon)"
    elif not dp.get("private", True):
        formal = "NOT differentially private (trained with --no-dp)"
    else:
        t = dp.get("max_colluders") or 0
        formal = (f"(epsilon {_g(dp.get('epsilon'))}, delta {_g(dp.get('delta'))})-DP, "
                  + (f"assuming at most {t} colluding site(s)" if t else "assuming no colluding sites"))
    eps = dp.get("epsilon") if dp else None
    if leak or (dp is not None and not dp.get("private", True)):
        level = "poor"
    elif signal or dp is None or eps is None or eps > EPSILON_WEAK:
        level = "fair"
    else:
        level = "good"
    attack = f" ({worst['attack']})" if worst else ""
    ci = (f", 95% CI {_f(worst[ci_key][0])}-{_f(worst[ci_key][1])} allowing for "
          f"{len([a for a in p['membership_inference']['attacks'].values() if a.get('auroc') is not None])} "
          "attacks" if worst and worst.get(ci_key) else "")
    out["privacy"] = {
        "level": level, "question": "Private?",
        "headline": f"{formal}; strongest membership attack AUROC {_f(auc)}{attack}{ci} (0.5 = guessing)",
        "detail": (f"{copies} synthetic record(s) copy a training record; median distance from a synthetic "
                   f"record to the closest training record {_f(dcr.get('median_to_train_matched'))} vs closest "
                   f"holdout record {_f(dcr.get('median_to_holdout'))} (equally many of each; equal = no "
                   f"memorisation)"),
    }
    return out


def evaluate(X_syn, y_syn, X_train, y_train, X_holdout, y_holdout, *, genes=None, dp=None, seed=0,
             top_k=None, return_artifacts=False):
    """Every metric of the report, from arrays.

    Parameters
    ----------
    X_syn, y_syn : synthetic matrix (samples x genes) and labels.
    X_train, y_train : the real records the generator was trained on (at a
        site: that site's own training records).
    X_holdout, y_holdout : real records from the same population the
        generator never saw (at least 4).
    genes : sequence of str, optional
        Gene names (for lists of genes in the report).
    dp : dict, optional
        The model's DP record (``model.pt``'s ``"dp"``).
    seed : int
        Seed of classifiers, subsamples and attacks.
    top_k : int, optional
        k of the DE recovery (default :func:`default_top_k`).
    return_artifacts : bool
        Also return the arrays the report's plots need.

    Returns
    -------
    dict
        ``{"verdict", "utility" (:func:`tstr`), "fidelity" (:func:`fidelity`,
        synthetic vs real training), "fidelity_reference" (the same for the
        real holdout vs the real training data: what two real samples look
        like), "biology": {"de" (:func:`de_recovery`), "coexpression"
        (:func:`coexpression_recovery`), "de_reference",
        "coexpression_reference"}, "privacy": {"dp" (:func:`dp_summary`),
        "dcr" (:func:`~fedsynth.privacy_attacks.distance_to_closest_record`),
        "membership_inference"
        (:func:`~fedsynth.privacy_attacks.membership_inference`)}, "n",
        "seconds"}``; with ``return_artifacts`` also a dict of arrays.
    """
    from .attacks import distance_to_closest_record, membership_inference

    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_train = _as_matrix(X_train, "real training matrix")
    X_holdout = _as_matrix(X_holdout, "real holdout matrix")
    y_syn = _as_labels(y_syn, len(X_syn), "synthetic labels")
    y_train = _as_labels(y_train, len(X_train), "real training labels")
    y_holdout = _as_labels(y_holdout, len(X_holdout), "real holdout labels")
    _same_genes(X_syn, X_train, "synthetic matrix", "real training matrix")
    _same_genes(X_holdout, X_train, "real holdout matrix", "real training matrix")
    genes = [str(g) for g in genes] if genes is not None else [f"gene{j + 1}" for j in range(X_train.shape[1])]
    if len(genes) != X_train.shape[1]:
        raise InputError(f"{len(genes)} gene names for {X_train.shape[1]} genes")
    secs = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        secs[name] = round(time.perf_counter() - t0, 3)
        return r

    m = {}
    m["utility"] = timed("utility", tstr, X_syn, y_syn, X_holdout, y_holdout, X_real_train=X_train,
                         y_real_train=y_train, seed=seed)
    m["fidelity"] = timed("fidelity", fidelity, X_syn, X_train, genes=genes, seed=seed)
    m["fidelity_reference"] = timed("fidelity_reference", fidelity, X_holdout, X_train, genes=genes, seed=seed)
    m["fidelity_reference"].pop("worst_genes")
    t0 = time.perf_counter()
    m["biology"] = {
        "de": de_recovery(X_syn, y_syn, X_train, y_train, genes=genes, k=top_k),
        "coexpression": coexpression_recovery(X_syn, y_syn, X_train, y_train),
        "de_reference": de_recovery(X_holdout, y_holdout, X_train, y_train, genes=genes, k=top_k),
        "coexpression_reference": coexpression_recovery(X_holdout, y_holdout, X_train, y_train),
    }
    secs["biology"] = round(time.perf_counter() - t0, 3)
    dcr, dists = timed("dcr", distance_to_closest_record, X_syn, X_train, X_holdout, seed=seed,
                       return_distances=True)
    mia, scores = timed("membership_inference", membership_inference, X_syn, X_train, X_holdout, seed=seed,
                        return_scores=True)
    m["privacy"] = {"dp": dp_summary(dp), "dcr": dcr, "membership_inference": mia}
    m["n"] = {"synthetic": int(len(X_syn)), "train": int(len(X_train)), "holdout": int(len(X_holdout)),
              "genes": int(X_train.shape[1])}
    m["seconds"] = secs
    m = _json_safe(m)
    m = {"verdict": verdict(m), **m}
    if not return_artifacts:
        return m
    art = {"X_syn": X_syn, "y_syn": y_syn, "X_train": X_train, "y_train": y_train, "X_holdout": X_holdout,
           "y_holdout": y_holdout, "genes": genes, "dcr_distances": dists, "mia_scores": scores}
    return m, art


def _load(path, label_column, meta_columns, input_kind, *, role):
    """Read and validate one input. The synthetic file need not carry the
    real data's metadata columns: any it has are set aside, any it lacks are
    ignored."""
    from fedsynth.data.io import read_expression
    from fedsynth.data.preprocess import validate_and_normalise

    synthetic = role == "synthetic"
    try:
        raw = read_expression(path, label_column=label_column,
                              meta_columns=() if synthetic else tuple(meta_columns))
    except InputError as e:
        if f"'{label_column}' not found" in str(e):
            opt = "--synthetic-label-column" if synthetic else "--label-column"
            raise InputError(f"{e} (the {role} data's label column; set it with {opt})") from None
        raise
    if synthetic:
        drop = [c for c in meta_columns if c in raw.expr.columns]
        if drop:
            raw.meta = raw.meta.join(raw.expr[drop])
            raw.expr = raw.expr.drop(columns=drop)
    return validate_and_normalise(raw, input_kind=input_kind, label_column=label_column)


def evaluate_files(synthetic, train, holdout, *, outdir, label_column="label", synthetic_label_column="label",
                   meta_columns=(), input_kind="log", model=None, overwrite=False, seed=0, top_k=None,
                   title=None, report=True) -> dict:
    """Score a synthetic matrix against this site's real training and holdout data.

    Reads the three matrices (CSV/TSV/h5ad), checks they share genes and
    labels, runs :func:`evaluate` and writes ``outdir/metrics.json`` and
    (unless ``report=False``) ``outdir/report.html``, one self-contained
    file with every plot embedded. Counts are compared on the log1p-CPM
    scale the model learns. The real data never leaves this function's
    machine. Returns the metrics.

    Synthetic samples of a class that this site's real data (training and
    holdout) lacks are left out of the scores, with a warning in
    ``metrics["warnings"]``: a shared cohort may carry a rare subtype that
    only other hospitals hold.

    Parameters beyond the files: ``model`` (model.pt, for its DP record),
    ``seed``, ``top_k`` (DE recovery; default 20, at most a fifth of the
    genes), ``title`` (report title), ``overwrite``.

    Raises
    ------
    InputError
        Unreadable files; different genes (the message names both files);
        no synthetic sample of a class the real data has; too few holdout records; existing outputs without
        ``overwrite``.
    """
    from pathlib import Path

    from fedsynth.data.io import atomic_write_json, atomic_write_text

    meta_columns = tuple(meta_columns)
    syn = _load(synthetic, synthetic_label_column, meta_columns, input_kind, role="synthetic")
    tr = _load(train, label_column, meta_columns, input_kind, role="training")
    te = _load(holdout, label_column, meta_columns, input_kind, role="holdout")
    warnings = []
    if syn.genes != tr.genes and sorted(syn.genes) == sorted(tr.genes) and len(set(tr.genes)) == len(tr.genes):
        syn = syn.subset_genes(tr.genes)
        warnings.append(f"{synthetic} lists the genes of {train} in another order; reordered to match")
    if te.genes != tr.genes and sorted(te.genes) == sorted(tr.genes) and len(set(tr.genes)) == len(tr.genes):
        te = te.subset_genes(tr.genes)
        warnings.append(f"{holdout} lists the genes of {train} in another order; reordered to match")
    check_compatible(syn.genes, tr.genes, [], [], syn_name=str(synthetic), real_name=str(train))
    check_compatible(te.genes, tr.genes, [], [], syn_name=str(holdout), real_name=str(train))
    # labels: a shared cohort may hold classes this site has not (a rare
    # subtype elsewhere); score only the site's own classes and say so
    real_classes = set(tr.labels.tolist()) | set(te.labels.tolist())
    foreign = ~np.isin(syn.labels, sorted(real_classes))
    if foreign.all():
        raise InputError(f"{synthetic}: none of its {syn.n_samples} samples has a class of the real data "
                         f"({train}, {holdout}: {_examples(sorted(real_classes))})")
    if foreign.any():
        dropped = Counter(syn.labels[foreign].tolist())
        syn = syn.subset_samples(~foreign)
        warnings.append(f"{synthetic}: scored {syn.n_samples} of {syn.n_samples + int(foreign.sum())} samples; "
                        "dropped " + ", ".join(f"{n} of {c}" for c, n in sorted(dropped.items()))
                        + " (class absent from this site's training and holdout data)")
    # (a rare class may be missing from a small holdout, which is fine)
    warnings += check_compatible(syn.genes, tr.genes, syn.labels, np.r_[tr.labels, te.labels],
                                 syn_name=str(synthetic), real_name=f"the real data ({train}, {holdout})")
    gone = sorted(set(tr.labels.tolist()) - set(te.labels.tolist()))
    if gone:
        warnings.append(f"{holdout} has no sample of {len(gone)} class(es) of {train}: {_examples(gone)}; "
                        "per-class scores cannot cover them")
    if te.n_samples < 4:
        raise InputError(f"{holdout}: only {te.n_samples} holdout samples; at least 4 are needed")
    out = Path(outdir)
    names = ["metrics.json"] + (["report.html"] if report else [])
    for name in names:
        if (out / name).exists() and not overwrite:
            raise InputError(f"{out / name}: file exists; refusing to overwrite it (pass --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    dp = None
    if model is not None:
        from fedsynth.model import load_model

        _, blob = load_model(model)
        dp = blob.get("dp")
        if dp is not None:
            dp = {"generator": blob.get("generator", "cvae"), **dp}
    metrics, art = evaluate(syn.X, syn.labels, tr.X, tr.labels, te.X, te.labels, genes=tr.genes, dp=dp,
                            seed=seed, top_k=top_k, return_artifacts=True)
    metrics["warnings"] = warnings
    metrics["inputs"] = {"synthetic": str(synthetic), "train": str(train), "holdout": str(holdout),
                         "model": None if model is None else str(model), "input_kind": input_kind,
                         "label_column": label_column, "seed": seed}
    if report:
        from .report import render_report

        t0 = time.perf_counter()
        html = render_report(metrics, art, title=title)
        metrics["seconds"]["report"] = round(time.perf_counter() - t0, 3)
        atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
