"""Utility: train on synthetic, test on real (TSTR), beside train on real (TRTR).

:func:`tstr` trains logistic regression and a random forest on the synthetic
data and scores them on the real holdout: accuracy, macro-F1, AUROC, average
precision, per class, and a majority-class baseline. Every classifier runs
single-threaded (``n_jobs=1``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fedsynth.errors import ParameterError

from ._inputs import _as_labels, _as_matrix, _examples, _same_genes

__all__ = ["MODELS", "tstr"]

MODELS = ("logreg", "rf")
"""Classifier names accepted by :func:`tstr`."""


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
