"""What the sampled cohort lacks at a data set and budget: floor, covariance and class-mean oracles (16th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/sample_oracles.py pbmc 4 [100-105 [SYNTHETIC_DRAWS]]

For each split seed (one noise draw), fits the default gaussian once (``_variants.fits``) and scores
the pinned TSTR protocol (:func:`fedsynth.evaluation.tstr`; ``SYNTHETIC_DRAWS`` synthetic cohorts
per split, 1 by default, each the same for every variant, their scores averaged) on synthetic data from variants of the fitted model
(post-processing, or oracles that are not DP):

* ``floor0``: the samples clipped below at 0 (log1p input is never negative);
* ``cov_pc4`` / ``cov_full``: the model's class means, with the within-class covariance replaced by the
  real pooled one (its top 4 principal components plus the diagonal rest, or all of it);
* ``realmeans``: the real class means with the model's covariance;
* ``realmeans_cov_full``: the real class means and the real pooled covariance.

Prints each variant's medians and paired differences, then, for ``default``, ``realmeans``,
``realmeans_cov_full`` and the classifier trained on the real records, the confusion matrix summed
over the splits (first synthetic draw) at the default's three largest off-diagonal entries (which true
class goes to which predicted one, and how often).
"""
import copy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT / "bench/experiments")); sys.path.insert(2, str(ROOT))
import inproc  # noqa: E402
from _variants import args, fits, summarise  # noqa: E402
from fedsynth.evaluation import tstr  # noqa: E402
from fedsynth.generators.gaussian import to_profile_level  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

ds, eps, seeds = args(sys.argv, "100-105")
n_draws = int(sys.argv[4]) if len(sys.argv) > 4 else 1
R, C = {}, {}
for s, (X, y, Xte, yte, classes), r in fits(ds, eps, seeds):
    M = r["gen"].model
    K = len(classes)
    mu_t, yi = inproc.real_class_means(X, y, classes)
    res = to_profile_level(X) - mu_t[yi]
    pooled = res.T @ res / len(res)
    lam, U = np.linalg.eigh(pooled)
    lam, U = np.maximum(lam[::-1], 0.0), U[:, ::-1]
    props = np.asarray(r["gen"].statistics["class_proportions"]); props = props / props.sum()

    def with_cov(model, q):
        m2 = copy.copy(model)
        m2.loadings = U[:, :q] * np.sqrt(lam[:q])
        m2.residual_variance = np.maximum(np.diag(pooled) - (m2.loadings**2).sum(1), 1e-6)
        return m2

    real = copy.copy(M); real.class_means = mu_t
    variants = {"default": (M, False), "floor0": (M, True), "cov_pc4": (with_cov(M, 4), False),
                "cov_full": (with_cov(M, len(lam)), False), "realmeans": (real, False),
                "realmeans_cov_full": (with_cov(real, len(lam)), False)}
    for name, (model, floor) in variants.items():
        scores = []
        for t in range(n_draws):
            rng = np.random.default_rng([7, t])
            ys = rng.choice(K, size=len(X), p=props)
            Xs = model.sample(ys, np.random.default_rng([8, t]))
            if floor:
                Xs = np.maximum(Xs, 0.0)
            sc = tstr(Xs, np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]  # the pinned TSTR
            scores.append((sc["accuracy"], sc["macro_f1"]))
            if t == 0 and name in ("default", "realmeans", "realmeans_cov_full"):
                st = StandardScaler().fit(Xs)
                pred = LogisticRegression(max_iter=2000).fit(st.transform(Xs), ys).predict(st.transform(Xte))
                C[name] = C.get(name, 0) + confusion_matrix(np.searchsorted(classes, yte), pred, labels=range(K))
        R.setdefault(name, []).append(tuple(np.mean(scores, 0)))
    st = StandardScaler().fit(X)  # the same classifier trained on the real records, for the confusion
    pred = LogisticRegression(max_iter=2000).fit(st.transform(X), np.searchsorted(classes, y)).predict(st.transform(Xte))
    C["real records"] = C.get("real records", 0) + confusion_matrix(np.searchsorted(classes, yte), pred, labels=range(K))
    print(s, " ".join("%s %.3f/%.3f" % (k, *v[-1]) for k, v in R.items()), flush=True)
summarise(R)
off = C["default"] - np.diag(np.diag(C["default"]))
top = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:3], off.shape))[0]
for name, cm in C.items():
    print(f"{name}: accuracy {np.trace(cm) / cm.sum():.3f}; " + "; ".join(
        f"{classes[i]} -> {classes[j]} {cm[i, j]} of {cm[i].sum()}" for i, j in top))
