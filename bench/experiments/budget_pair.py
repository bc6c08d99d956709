"""Paired in-process comparison of budget weights of the gaussian (13th session; split seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/budget_pair.py hard1000 1 100-108 "BUD:class counts=0.05,0.1"
    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/budget_pair.py pbmc 4 100-108 "SEL:gene means=0.2,0.1,0"

``BUD:name=v1,v2,...`` sets ``BUDGET_SPLIT[name]`` and moves the difference to or from the class
means; ``SEL:name=...`` sets ``SELECTION_DEPENDENT[name]``. Every setting runs on the same splits and
noise draws (``[seed, draw, 12]``, 2 draws unless a fifth argument says otherwise), as ``paired.py``.
"""
import sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
from paired_report import report
from fedsynth.generators import gaussian as ga
ds, eps = sys.argv[1], float(sys.argv[2]); first, end = map(int, sys.argv[3].split("-"))
spec = sys.argv[4]; draws = int(sys.argv[5]) if len(sys.argv) > 5 else 2
dname, rest = spec.split(":"); key, vals = rest.split("="); vals = [float(v) for v in vals.split(",")]
D = {"SEL": ga.SELECTION_DEPENDENT, "BUD": ga.BUDGET_SPLIT}[dname]
base_bud = dict(ga.BUDGET_SPLIT)
runs = {v: [] for v in vals}
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(draws):
        for v in vals:
            if dname == "BUD":  # move the difference to/from the class means
                ga.BUDGET_SPLIT.clear(); ga.BUDGET_SPLIT.update(base_bud)
                ga.BUDGET_SPLIT["class means"] += base_bud[key] - v
            D[key] = v
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
            runs[v].append((r["accuracy"], r["macro_f1"], r["gene_mean_r"]))
for v in vals[1:]:
    report(f"{ds} eps {eps:g} {dname}[{key}]={v:g} against {vals[0]:g}", runs[vals[0]], runs[v])
