"""The record scale's window scan against the 3-bin window alone, paired (thirteenth session; split seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/scale_windows.py pbmc 0.5 100-116 2

Runs the default in process (:mod:`bench/inproc.py`) twice on the same noise draws: with
:func:`fedsynth.generators.gaussian.typical_scale` as it is, and with the 3-bin window alone (as
before 38fc4f0, re-stated here). Prints each run's scales, then the median accuracy / macro-F1 /
gene-mean r, the mean paired difference with its standard error, and the lowest gene-mean r.
"""
import sys, math
from pathlib import Path
from statistics import NormalDist
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
from paired_report import report
from fedsynth.generators import gaussian as ga
new = ga.typical_scale
def old(hist, noise_sd):
    h = np.asarray(hist, dtype=float)
    window = np.convolve(h, np.ones(3), mode="same")
    j = int(np.argmax(window))
    z = NormalDist().inv_cdf(1.0 - ga.SCALE_FALSE_PEAK / len(h))
    if window[j] <= max(z * noise_sd * math.sqrt(3.0), 0.0):
        return None
    lo, hi = max(j - 1, 0), min(j + 2, len(h))
    w = np.maximum(h[lo:hi], 0.0)
    centres = (ga.SCALE_BINS[:-1] + ga.SCALE_BINS[1:])[lo:hi] / 2.0
    return float(2.0 ** (w @ centres / w.sum())) if w.sum() > 0 else None
ds, eps = sys.argv[1], float(sys.argv[2]); first, end = map(int, sys.argv[3].split("-")); draws = int(sys.argv[4])
runs = {"old": [], "new": []}; changed = 0
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(draws):
        sc = {}
        for name, f in (("old", old), ("new", new)):
            ga.typical_scale = f
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
            runs[name].append((r["accuracy"], r["macro_f1"], r["gene_mean_r"]))
            sc[name] = (r["gen"].statistics["scales"]["record"], r["gen"].statistics["scales"]["level"])
        changed += sc["old"] != sc["new"]
        print(s, d, sc, runs["old"][-1], runs["new"][-1], flush=True)
report(f"{ds} eps {eps:g} new against old ({changed} runs with other scales)", runs["old"], runs["new"])
