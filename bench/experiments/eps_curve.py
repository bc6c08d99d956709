"""The default's median TSTR over a range of epsilons, in process (15th session; split seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/eps_curve.py pbmc 4,6,8,12,16,32 100-108

One noise draw per split seed (rng ``[seed, 0, 12]``); prints the median accuracy and macro-F1 and
the macro-F1 range per epsilon. Where a target is reached tells how far a budget is from it.
"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
ds = sys.argv[1]; epss = [float(e) for e in sys.argv[2].split(",")]; a, b = map(int, sys.argv[3].split("-"))
R = {e: [] for e in epss}
for s in range(a, b):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for e in epss:
        r = inproc.run_one("gaussian", X, y, Xte, yte, classes, e, np.random.default_rng([s, 0, 12]))
        R[e].append((r["accuracy"], r["macro_f1"]))
for e in epss:
    v = np.array(R[e]); print(ds, e, "median acc %.3f f1 %.3f  (f1 %.3f-%.3f)" % (*np.median(v, 0), v[:, 1].min(), v[:, 1].max()))
