"""Utility and fidelity metrics for synthetic expression data.

This module is where every evaluation of a synthetic data set lives; later
additions (the HTML report, membership-inference and other privacy attacks)
belong here too. The public surface is small:

:func:`check_compatible`
    Refuse a synthetic/real pair whose genes or labels do not match.
:func:`split_holdout`
    A deterministic, stratified train/test split of the real data.
:func:`tstr`
    Train-on-synthetic/test-on-real (and train-on-real/test-on-real)
    classification utility, with a majority-class baseline.
:func:`fidelity`
    Marginal and gene-gene correlation agreement between the two matrices.

All functions take plain numpy arrays: expression matrices are
``samples x genes`` floats, labels are 1-D arrays of ``str``. User-caused
problems raise :class:`~fedsynth.errors.InputError` (bad data) or
:class:`~fedsynth.errors.ParameterError` (bad parameter).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fedsynth.errors import InputError, ParameterError

__all__ = ["check_compatible", "evaluate_files", "fidelity", "split_holdout", "tstr"]

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


def _as_labels(y, n, what):
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"{what} must be a 1-D array of labels")
    if y.shape[0] != n:
        raise InputError(f"{what} has {y.shape[0]} labels for {n} samples")
    return y.astype(str)


# ---------------------------------------------------------------------------
# holdout split
# ---------------------------------------------------------------------------


def split_holdout(n, labels, *, fraction=0.2, seed=0):
    """Split ``n`` samples into a training and a held-out test part.

    Stratified by label (:class:`sklearn.model_selection.StratifiedShuffleSplit`)
    when every class has at least two members and the test and training parts
    are each large enough to hold one sample of every class; otherwise a plain
    random split. The same arguments always give the same split.

    Parameters
    ----------
    n : int
        Number of samples.
    labels : sequence of str, length ``n``
        Label of each sample.
    fraction : float, default 0.2
        Fraction of samples held out for testing, ``0 < fraction < 1``. The
        test part has ``ceil(fraction * n)`` samples (at least one, and at
        least one sample is left for training).
    seed : int, default 0
        Random seed.

    Returns
    -------
    train_idx, test_idx : ndarray of int
        Sorted, disjoint sample indices whose union is ``range(n)``.

    Raises
    ------
    ParameterError
        If ``fraction`` is not strictly between 0 and 1, or ``n`` < 2.
    InputError
        If ``labels`` does not have ``n`` entries.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ParameterError(f"n must be an integer, got {n!r}")
    n = int(n)
    if n < 2:
        raise ParameterError(f"n must be at least 2 to split, got {n}")
    if not (isinstance(fraction, (int, float, np.floating))
            and 0.0 < float(fraction) < 1.0):
        raise ParameterError(
            f"fraction must be strictly between 0 and 1, got {fraction!r}")
    y = _as_labels(labels, n, "labels")
    n_test = min(max(1, math.ceil(float(fraction) * n)), n - 1)
    counts = Counter(y.tolist())
    n_classes = len(counts)
    stratify = (min(counts.values()) >= 2 and n_test >= n_classes
                and n - n_test >= n_classes)
    if stratify:
        sss = StratifiedShuffleSplit(n_splits=1, test_size=n_test,
                                     random_state=seed)
        train_idx, test_idx = next(sss.split(np.zeros((n, 1)), y))
    else:
        perm = np.random.default_rng(seed).permutation(n)
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    return (np.sort(train_idx).astype(np.int64),
            np.sort(test_idx).astype(np.int64))


# ---------------------------------------------------------------------------
# train on synthetic, test on real
# ---------------------------------------------------------------------------


def _make_model(name, seed):
    if name == "logreg":
        return Pipeline([("scale", StandardScaler()),
                         ("clf", LogisticRegression(max_iter=2000))])
    return RandomForestClassifier(n_estimators=200, random_state=seed,
                                  n_jobs=1)


def _auroc(y_test, classes, proba):
    """One-vs-rest macro AUROC over the classes present in ``y_test``.

    ``proba[:, k]`` is the score of ``classes[k]``; classes the model never
    saw have score 0. ``None`` if ``y_test`` has fewer than two classes.
    """
    present = np.unique(y_test)
    if present.size < 2:
        return None
    col = {c: k for k, c in enumerate(classes)}
    aucs = []
    for c in present:
        score = proba[:, col[c]] if c in col else np.zeros(len(y_test))
        aucs.append(roc_auc_score(y_test == c, score))
    return float(np.mean(aucs))


def _scores(y_test, pred, classes, proba):
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro",
                                   zero_division=0)),
        "auroc": _auroc(y_test, classes, proba),
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
    TSTR); ``"rf"`` is ``RandomForestClassifier(n_estimators=200,
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
        "n_train_real": int or None, "n_test": int}``, where ``scores`` is
        ``{"accuracy", "macro_f1", "auroc"}``.

        * ``accuracy`` -- fraction of test samples predicted correctly.
        * ``macro_f1`` -- unweighted mean F1 over the classes occurring in
          the test labels or the predictions (scikit-learn's default; a class
          with no true or predicted samples scores 0).
        * ``auroc`` -- one-vs-rest AUROC of the predicted class
          probabilities, averaged over the classes present in the test set;
          a class the model never saw in training has probability 0.
          ``None`` if the test set has fewer than two classes.
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


def fidelity(X_syn, X_real):
    """How closely the synthetic matrix reproduces the real one, gene-wise.

    Parameters
    ----------
    X_syn : ndarray, shape (n_syn, n_genes)
        Synthetic expression matrix.
    X_real : ndarray, shape (n_real, n_genes)
        Real expression matrix, same genes in the same order. The sample
        counts may differ.

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
          (:func:`scipy.stats.wasserstein_distance`), in expression units.
        * ``n_genes`` -- number of genes.

        A correlation that is undefined (fewer than two genes -- three for
        ``corr_matrix_pearson`` -- or a constant vector) is ``None``. 1.0
        is perfect agreement; ``wasserstein_mean`` is 0 for identical
        distributions.

    Raises
    ------
    InputError
        If a matrix is empty, not 2-D, has non-finite values, or the gene
        counts differ.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_real = _as_matrix(X_real, "real matrix")
    _same_genes(X_syn, X_real, "synthetic matrix", "real matrix")

    mean_s, mean_r = X_syn.mean(axis=0), X_real.mean(axis=0)
    var_s, var_r = X_syn.var(axis=0), X_real.var(axis=0)
    corr_r, n_corr = _corr_matrix_similarity(X_syn, X_real)
    wd = [stats.wasserstein_distance(X_syn[:, j], X_real[:, j])
          for j in range(X_syn.shape[1])]
    return {
        "mean_pearson": _corr("pearson", mean_s, mean_r),
        "mean_spearman": _corr("spearman", mean_s, mean_r),
        "var_pearson": _corr("pearson", var_s, var_r),
        "var_spearman": _corr("spearman", var_s, var_r),
        "corr_matrix_pearson": corr_r,
        "n_genes_corr": n_corr,
        "wasserstein_mean": float(np.mean(wd)),
        "n_genes": int(X_syn.shape[1]),
    }


def evaluate_files(synthetic, train, holdout, *, outdir, label_column="label", synthetic_label_column="label",
                   meta_columns=(), input_kind="log", model=None, overwrite=False, seed=0) -> dict:
    """Score a synthetic matrix against this site's real training and holdout data.

    Reads the three matrices (CSV/TSV/h5ad), checks they share genes and
    labels, and writes ``outdir/metrics.json`` and ``outdir/report.html``.
    Counts are compared on the log1p-CPM scale the model learns. The real
    data never leaves this function's machine. Returns the metrics.
    """
    import json
    from pathlib import Path

    from .io import atomic_write_json, atomic_write_text, read_expression
    from .preprocess import validate_and_normalise

    def load(path, col):
        raw = read_expression(path, label_column=col, meta_columns=tuple(meta_columns))
        return validate_and_normalise(raw, input_kind=input_kind, label_column=col)

    syn = load(synthetic, synthetic_label_column)
    tr = load(train, label_column)
    te = load(holdout, label_column)
    warnings = check_compatible(syn.genes, tr.genes, syn.labels, tr.labels, syn_name=str(synthetic),
                                real_name=str(train))
    warnings += check_compatible(syn.genes, te.genes, syn.labels, te.labels, syn_name=str(synthetic),
                                 real_name=str(holdout))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.json", "report.html"):
        if (out / name).exists() and not overwrite:
            raise InputError(f"{out / name}: file exists; refusing to overwrite it (pass --overwrite)")
    metrics = {
        "utility": tstr(syn.X, syn.labels, te.X, te.labels, X_real_train=tr.X, y_real_train=tr.labels, seed=seed),
        "fidelity": fidelity(syn.X, tr.X),
        "n": {"synthetic": syn.n_samples, "train": tr.n_samples, "holdout": te.n_samples, "genes": syn.n_genes},
        "warnings": warnings,
    }
    if model is not None:
        from .model import load_model

        _, blob = load_model(model)
        dp = blob["dp"]
        metrics["privacy"] = {k: dp.get(k) for k in ("private", "epsilon", "epsilon_spent", "delta",
                                                      "max_colluders", "k", "sites")}
    atomic_write_json(out / "metrics.json", metrics)
    u = metrics["utility"]
    rows = "".join(
        f"<tr><td>{m}</td><td>{u['tstr'][m]['accuracy']:.3f}</td><td>{u['tstr'][m]['macro_f1']:.3f}</td>"
        f"<td>{u['trtr'][m]['accuracy']:.3f}</td><td>{u['trtr'][m]['macro_f1']:.3f}</td></tr>"
        for m in u["tstr"])
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>fedsynth evaluation</title></head><body>"
            f"<h1>fedsynth evaluation</h1><h2>Utility</h2><table border='1'><tr><th>model</th><th>TSTR accuracy</th>"
            f"<th>TSTR macro-F1</th><th>TRTR accuracy</th><th>TRTR macro-F1</th></tr>{rows}</table>"
            f"<h2>Fidelity</h2><pre>{json.dumps(metrics['fidelity'], indent=2)}</pre>"
            f"<h2>Privacy</h2><pre>{json.dumps(metrics.get('privacy'), indent=2)}</pre></body></html>")
    atomic_write_text(out / "report.html", html)
    return metrics
