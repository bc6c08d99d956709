"""Run the gaussian in process with module constants changed (issue 12 tuning; split seeds >= 100 only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/variant.py brca 1 100-120 [CONST=value ...]

Each split seed gets 2 noise draws through :func:`bench/inproc.py`'s ``run_one``;
prints the median and mean TSTR accuracy and macro-F1. ``--root DIR`` runs the
fedsynth of another checkout (e.g. one with ``class_mean_subspace.patch``
applied, whose toggles are module constants).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset")
ap.add_argument("epsilon", help="a number, or nodp")
ap.add_argument("seeds", help="split seeds, FIRST-END (end excluded)")
ap.add_argument("constants", nargs="*", help="NAME=value: module constants of fedsynth.generators.gaussian")
ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
ap.add_argument("--draws", type=int, default=2)
a = ap.parse_intermixed_args()  # constants before or after --root
sys.path.insert(0, a.root + "/bench")
sys.path.insert(1, a.root)
import inproc  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402

for kv in a.constants:
    k, v = kv.split("=")
    setattr(ga, k, float(v))
eps = None if a.epsilon == "nodp" else float(a.epsilon)
first, end = (int(s) for s in a.seeds.split("-"))
acc, f1 = [], []
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(a.dataset, s)
    for d in range(a.draws):
        r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
        acc.append(r["accuracy"])
        f1.append(r["macro_f1"])
acc, f1 = np.array(acc), np.array(f1)
print(f"{a.dataset} eps {a.epsilon} {a.constants}: acc {np.median(acc):.3f} mean {acc.mean():.3f} "
      f"({acc.min():.2f}-{acc.max():.2f}) F1 {np.median(f1):.3f} mean {f1.mean():.3f} [{len(acc)} runs]")
