"""Paired in-process comparison of module-constant settings of the gaussian (issue 12; split seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/paired.py brca 1 100-120 DEBIAS_MEANS=0,2 \\
        --root /tmp/exp [--draws 2] [OTHER=value ...]

Every setting of the first ``NAME=v1,v2,...`` runs on the same split and
the same noise draws (:func:`bench/inproc.py`'s ``run_one`` with the rng
``[seed, draw, 12]``), so the differences are paired: the grid's own noise
(0.04-0.05 between two sets of 20 runs of the same code) mostly cancels.
Prints, for each later value against the first, the medians of accuracy,
macro-F1 and the per-gene mean correlation, the mean paired difference
with its standard error, and how many runs the macro-F1 rose / fell in.
Further ``NAME=value`` arguments are held fixed for all settings.
``--root DIR`` runs the fedsynth of another checkout (e.g. one with an
experiment patch applied, whose toggles are module constants).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset")
ap.add_argument("epsilon", type=float)
ap.add_argument("seeds", help="split seeds, FIRST-END (end excluded)")
ap.add_argument("compare", help="NAME=v1,v2,...: the settings compared (v1 the baseline)")
ap.add_argument("fixed", nargs="*", help="NAME=value: held fixed for every setting")
ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
ap.add_argument("--draws", type=int, default=2)
a = ap.parse_intermixed_args()
sys.path.insert(0, a.root + "/bench")
sys.path.insert(1, a.root)
import inproc  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402
from paired_report import report  # noqa: E402

for kv in a.fixed:
    k, v = kv.split("=")
    setattr(ga, k, float(v))
name, values = a.compare.split("=")
values = [float(v) for v in values.split(",")]
first, end = (int(s) for s in a.seeds.split("-"))
runs = {v: [] for v in values}
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(a.dataset, s)
    for d in range(a.draws):
        for v in values:
            setattr(ga, name, v)
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, a.epsilon, np.random.default_rng([s, d, 12]))
            runs[v].append((r["accuracy"], r["macro_f1"], r["gene_mean_r"]))
for v in values[1:]:
    report(f"{a.dataset} eps {a.epsilon:g} {a.fixed} {name}={v:g} against {values[0]:g}", runs[values[0]], runs[v])
