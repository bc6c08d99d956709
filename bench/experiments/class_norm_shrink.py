"""Each class's de-noised deviation capped at its James-Stein norm ``a_k ||d_k||``, paired (13th session; seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/class_norm_shrink.py hard1000 1 100-108

``a_k ||d_k|| = max(||d_k||^2 - g s_k^2, 0) / ||d_k||`` is, in expectation, the length of the real
deviation projected on the noisy one's direction; the default's per-entry weight (the larger of the
per-gene and the per-class one) can leave a noisy class farther out. Wraps ``denoise_deviations``
(same releases and noise draws, 2 draws per split seed).
"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT / "bench/experiments"))
sys.path.insert(2, str(ROOT))
import inproc
from paired_report import report
from fedsynth.generators import gaussian as ga
orig = ga.denoise_deviations
MODE = [0]
def dn(dev, nv):
    out, w = orig(dev, nv)
    K, g = dev.shape
    if MODE[0] == 0 or g < 3 or not np.any(nv > 0):
        return out, w
    d2 = (dev ** 2).sum(1)
    target = np.maximum(d2 - g * nv, 0.0) / np.sqrt(np.maximum(d2, 1e-300))  # a_k ||d_k||: the real class's projection
    cur = np.sqrt((out ** 2).sum(1))
    f = np.where(cur > 0, np.minimum(1.0, target / np.maximum(cur, 1e-300)), 1.0)
    return out * f[:, None], w * f[:, None]
ga.denoise_deviations = dn
ds, eps = sys.argv[1], float(sys.argv[2]); first, end = map(int, sys.argv[3].split("-"))
runs = {0: [], 1: []}
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(2):
        for v in (0, 1):
            MODE[0] = v
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
            runs[v].append((r["accuracy"], r["macro_f1"], r["gene_mean_r"]))
report(f"{ds} eps {eps:g} each class's de-noised deviation at most a_k ||d_k||", runs[0], runs[1])
