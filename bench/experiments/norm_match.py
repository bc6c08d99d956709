"""Each class's de-noised deviation rescaled to the unbiased length of the real one, paired (15th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/norm_match.py pbmc 4 100-108 0,1,2,3

``sqrt(max(||d_k||^2 - g s_k^2, 0))`` is the unbiased length of class ``k``'s real deviation; the
posterior mean leaves small classes shorter than that (closer to the pooled mean than the real
class). Modes: 0 the default, 1 lengthened only, 2 set to it, 3 half-way (square root of the
factor) and only lengthened. Wraps ``denoise_deviations`` (same releases and noise draws, 2 per
split seed).
"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT / "bench/experiments")); sys.path.insert(2, str(ROOT))
import inproc
from paired_report import report
from fedsynth.generators import gaussian as ga
orig = ga.denoise_deviations
MODE = [0]
def dn(dev, nv, prior_weight=None):
    out, w = orig(dev, nv, prior_weight)
    K, g = dev.shape
    if MODE[0] == 0 or g < 3 or not np.any(nv > 0):
        return out, w
    d2 = (dev ** 2).sum(1)
    target = np.sqrt(np.maximum(d2 - g * nv, 0.0))   # unbiased length of the real deviation
    cur = np.sqrt((out ** 2).sum(1))
    f = np.where(cur > 0, target / np.maximum(cur, 1e-300), 1.0)
    if MODE[0] == 1: f = np.maximum(f, 1.0)
    if MODE[0] == 3: f = np.maximum(np.sqrt(f), 1.0)
    return out * f[:, None], w * f[:, None]
ga.denoise_deviations = dn
ds, eps = sys.argv[1], float(sys.argv[2]); first, end = map(int, sys.argv[3].split("-"))
modes = [int(m) for m in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
runs = {m: [] for m in modes}
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(2):
        for v in modes:
            MODE[0] = v
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
            runs[v].append((r["accuracy"], r["macro_f1"], r["gene_mean_r"]))
for m in modes[1:]:
    report(f"{ds} eps {eps:g} norm mode {m}", runs[modes[0]], runs[m])
