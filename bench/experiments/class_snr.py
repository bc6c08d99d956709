"""Per class, the real deviation on the selected coordinates against the class-mean release's noise (13th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/class_snr.py pbmc 4

Fits the default in process (split seeds 100-101, one draw), catches the raw class deviations and
their noise variance where the de-noiser gets them, and prints per class: its training records, the
noise s.d. per coordinate of its deviation, its five largest real deviations (from the pooled mean,
on the selection) in noise s.d., and its real squared norm over the noise's (``g s_k^2``).
"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
from fedsynth.generators import gaussian as ga
cap = {}
orig = ga.denoise_deviations
def spy(dev, nv):
    if dev.shape[1] > 1: cap["raw"], cap["nv"] = dev.copy(), nv.copy()
    return orig(dev, nv)
ga.denoise_deviations = spy
ds, eps = sys.argv[1], float(sys.argv[2])
for s in (100, 101):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, 0, 12]))
    gen = r["gen"]; st = gen.statistics
    sel = np.asarray(st["selected"])[:-1]
    a1 = st["scales"]["class_mean_clip_factor"]
    mu_t, yi = inproc.real_class_means(X, y, classes)
    K = len(classes)
    props = np.bincount(yi, minlength=K) / len(yi)
    dt = (mu_t - props @ mu_t)[:, sel]
    sd = np.sqrt(cap["nv"])
    for k in range(K):
        z = np.sort(np.abs(dt[k]) / sd[k])[::-1]
        print(s, classes[k][:22].ljust(22), "n", (yi == k).sum(), "noise sd %.3f" % sd[k],
              "top |true dev| / sd", np.round(z[:5], 2),
              "||true||^2 / (g sd^2) %.3f" % ((dt[k] ** 2).sum() / (len(sel) * sd[k] ** 2)))
