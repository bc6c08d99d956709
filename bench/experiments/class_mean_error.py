"""Where the gaussian's class means go wrong (issue 12, eighth session; split seeds >= 100 only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/class_mean_error.py brca 1 100 106 [CONST=value ...]

Fits the default in process (:mod:`bench/inproc.py`, one noise draw per split
seed) and compares the model with the real training data on the selected
profile coordinates: per class, the true deviation's squared norm, the model's,
the slope ``a_k`` of the model's deviation on the true one and the squared
residual; the pooled mean's error; the gene means' slope on the true profile
means before (``m_raw``) and after the empirical-Bayes shrink. ``FSROOT``
another checkout (e.g. one with ``denoiser_variants.patch`` applied); module
constants as in ``variant.py``.
"""
import os
import sys

import numpy as np

R = os.environ.get("FSROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, R + "/bench")
sys.path.insert(1, R)
import inproc  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402

ds, eps = sys.argv[1], float(sys.argv[2])
for kv in sys.argv[5:]:
    k, v = kv.split("=")
    setattr(ga, k, float(v))
for s in range(int(sys.argv[3]), int(sys.argv[4])):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    V = ga.to_profile_level(X)
    yi = np.searchsorted(classes, y)
    K = len(classes)
    cnt = np.bincount(yi, minlength=K)
    m_true = V.mean(0)
    mu_true = np.vstack([V[yi == k].mean(0) if cnt[k] else m_true for k in range(K)])
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, 0, 12]))
    st = r["gen"].statistics
    mu = np.asarray(r["gen"].model.class_means)
    sel = np.asarray(st["selected"])[:-1]
    props = np.asarray(st["class_proportions"])
    props = props / props.sum()
    pooled, tp = props @ mu, (cnt / cnt.sum()) @ mu_true
    dv, tv = (mu - pooled)[:, sel], (mu_true - tp)[:, sel]
    a = np.array([dv[k] @ tv[k] / max(tv[k] @ tv[k], 1e-12) for k in range(K)])
    t0 = tp[sel]

    def slope(est):
        return (est - t0) @ t0 / (t0 @ t0)

    m = np.asarray(st["gene_means"])[sel]
    # the released gene-mean sums over the released record count (the profile coordinates are not level-weighted)
    m_raw = np.asarray(st["released"]["gene means"])[sel] / float(r["n_total"])
    print(f"split {s}: n {cnt.tolist()} acc {r['accuracy']:.3f} F1 {r['macro_f1']:.3f}\n"
          f"  |true dev|^2 {np.round((tv**2).sum(1), 1).tolist()}  |model dev|^2 {np.round((dv**2).sum(1), 1).tolist()}\n"
          f"  slope a_k {np.round(a, 2).tolist()}  residual {np.round(((dv - a[:, None] * tv)**2).sum(1), 1).tolist()}\n"
          f"  pooled mean: squared error {((pooled - tp)[sel]**2).sum():.1f}, slope {slope(pooled[sel]):.3f};"
          f" gene means m: squared error {((m - t0)**2).sum():.1f}, slope {slope(m):.3f}"
          f" (before the shrink, slope {slope(m_raw):.3f})", flush=True)
