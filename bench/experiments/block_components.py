"""The block's components: the default, none, and a stricter keep threshold, paired (13th session; seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/block_components.py brca 1 100-110 2

Wraps :func:`fedsynth.generators.gaussian.fit` (the same releases and noise draws): mode 0 as it is,
mode 1 with no component kept, mode 2 with the block's noise s.d. raised by ``1 + 1.01 p^(-2/3)``,
which moves the keep threshold to about ``s (2 sqrt(p) + 2.02 p^(-1/6))`` (Tracy-Widom's 0.99
quantile; the patch ``edge_quantile.patch`` does it exactly). Prints how many runs kept a component
and the paired differences.
"""
import sys, math
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
from fedsynth.generators import gaussian as ga
orig = ga.fit
MODE = [0]
KEPT = []
def fit(stats, components, n_genes):
    if MODE[0] == 1:
        m = orig(stats, 0, n_genes)
    elif MODE[0] == 2:
        st = dict(stats); p = len(stats["block"])
        st["block_noise_sd"] = float(stats["block_noise_sd"]) * (1 + 1.01 * 1.0 * p ** (-2 / 3))  # TW ~99%
        m = orig(st, components, n_genes)
    else:
        m = orig(stats, components, n_genes)
    KEPT.append(m.loadings.shape[1])
    return m
ga.fit = fit
ds, eps = sys.argv[1], float(sys.argv[2]); first, end = map(int, sys.argv[3].split("-")); draws = int(sys.argv[4])
modes = [0, 1, 2]
runs = {v: [] for v in modes}; kept = {v: [] for v in modes}
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(draws):
        for v in modes:
            MODE[0] = v
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
            runs[v].append((r["accuracy"], r["macro_f1"])); kept[v].append(KEPT[-1])
b = np.array(runs[0])
k0 = np.array(kept[0])
print(ds, eps, "default kept components in", (k0 > 0).sum(), "of", len(k0),
      "runs; F1 median with / without components:",
      np.median(b[k0 > 0, 1]) if (k0 > 0).any() else None, np.median(b[k0 == 0, 1]) if (k0 == 0).any() else None)
for v in (1, 2):
    n = np.array(runs[v])
    diff = n - b
    se = diff.std(0) / np.sqrt(len(diff))
    ch = (np.array(kept[v]) != k0).sum()
    print(f"  mode {v} ({['', 'no components', 'TW 99% threshold'][v]}) against the default ({len(diff)} runs, "
          f"{ch} with other components): acc {diff[:, 0].mean():+.3f} +- {se[0]:.3f}, "
          f"F1 {diff[:, 1].mean():+.3f} +- {se[1]:.3f}", flush=True)
