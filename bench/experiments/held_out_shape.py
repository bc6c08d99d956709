"""Diagnostics of the default gaussian on the held-out-shaped data sets (issue 12, ninth session; seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/held_out_shape.py oracles sparse1000 1 100,101,102,103
    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/held_out_shape.py screen sparse1000 1 100,101,102,103
    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/held_out_shape.py nsyn pbmc 4 100,101,102,103

``oracles``: fit the default in process (:mod:`bench/inproc.py`, one noise draw per split seed), then
replace parts of the fitted model before sampling (2 synthetic draws each, the pinned TSTR): every class
at the pooled mean; the class means from the real data; the covariance from the real data (the top 10
within-class principal axes as loadings plus the rest of the diagonal); both. ``screen``: how many of
the 100 coordinates with the largest real F statistic the screen selects, and the default's score when
the screen is told the real F statistic instead (2 draws per seed; the class screen was replaced by the
released spreads in the twelfth session: run ``screen`` from a checkout at 2b8cb12 or earlier). ``nsyn``: the same model sampled at
1, 3 and 10 times the training size.
"""
import copy
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT))
import inproc  # noqa: E402
from fedsynth.evaluation.utility import tstr  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402

mode, ds, eps = sys.argv[1], sys.argv[2], float(sys.argv[3])
seeds = [int(s) for s in sys.argv[4].split(",")]


def truth(X, y, classes):
    V = ga.to_profile_level(X)
    yi = np.searchsorted(classes, y)
    mu = np.array([V[yi == k].mean(0) for k in range(len(classes))])
    R = V - mu[yi]
    dof = len(V) - len(classes)
    within = (R**2).sum(0) / dof
    between = (np.bincount(yi)[:, None] * (mu - V.mean(0)) ** 2).sum(0) / (len(classes) - 1)
    return V, yi, mu, R, dof, within, between / np.maximum(within, 1e-12)


def score(M, props, classes, n, Xte, yte, rng, reps=2):
    out = []
    for _ in range(reps):
        ys = rng.choice(len(classes), size=n, p=props)
        t = tstr(M.sample(ys, rng), np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]
        out.append((t["accuracy"], t["macro_f1"]))
    return tuple(np.round(np.mean(out, 0), 3))


rows = {}
if mode == "screen":
    if not hasattr(ga, "_screen_scores"):
        raise SystemExit("screen: this gaussian selects by the released spreads, not a class screen; "
                         "run from a checkout at 2b8cb12 or earlier")
    F = {}
    scores = ga._screen_scores

    def told(S, noise_sd, c_eff, n_total):
        s, th = scores(S, noise_sd, c_eff, n_total)
        if "oracle" in F:
            s = F["oracle"].copy()
            s[-1] = np.inf
        return s, th
    ga._screen_scores = told
for s in seeds:
    X, y, Xte, yte, classes = inproc.load(ds, s)
    V, yi, mu_true, R, dof, within, Fstat = truth(X, y, classes)
    if mode == "screen":
        top = set(np.argsort(-Fstat[:-1])[:100])
        for use in ("default", "oracle"):
            F.pop("oracle", None)
            if use == "oracle":
                F["oracle"] = Fstat
            for d in range(2):
                r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
                sel = set(r["gen"].statistics["selected"]) - {V.shape[1] - 1}
                rows.setdefault(use, []).append((r["accuracy"], r["macro_f1"]))
                print(f"{ds} split {s} draw {d} {use}: g={len(sel)}, top-100 by real F selected {len(top & sel)}; "
                      f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}", flush=True)
        continue
    rng = np.random.default_rng([s, 0, 12])
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, rng)
    M = r["gen"].model
    props = np.asarray(r["gen"].statistics["class_proportions"], float)
    props /= props.sum()
    out = {"default": (round(r["accuracy"], 3), round(r["macro_f1"], 3))}
    if mode == "nsyn":
        for mult in (1, 3, 10):
            out[f"x{mult}"] = score(M, props, classes, mult * len(X), Xte, yte, rng, reps=1)
    else:
        _, S, Vt = np.linalg.svd(R / math.sqrt(dof), full_matrices=False)
        W = Vt[:10].T * S[:10]
        psi = np.maximum(within - (W**2).sum(1), 1e-3 * within.mean())
        pooled = props @ M.class_means
        for name, mu, cov in (("pooled mean for every class", np.tile(pooled, (len(classes), 1)), None),
                              ("real class means", mu_true, None), ("real covariance", None, (W, psi)),
                              ("both", mu_true, (W, psi))):
            M2 = copy.copy(M)
            if mu is not None:
                M2.class_means = mu
            if cov is not None:
                M2.loadings, M2.residual_variance = cov
            out[name] = score(M2, props, classes, len(X), Xte, yte, rng)
        out["model factors"] = M.loadings.shape[1]
    print(ds, eps, s, out, flush=True)
    for k, v in out.items():
        rows.setdefault(k, []).append(v)
print("MEDIAN", ds, eps, {k: tuple(np.round(np.median(np.array(v, float), 0), 3)) if np.ndim(v[0]) else
                          float(np.median(v)) for k, v in rows.items()})
