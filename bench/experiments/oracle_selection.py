"""Oracles of the gaussian's class means on and off its selection (issue 12, twelfth session; seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/oracle_selection.py pbmc 4

Fits the default in process (:mod:`bench/inproc.py`, split seeds 100-105, one noise draw each), then
samples (2 synthetic draws, the pinned TSTR) with its class means replaced: by the real ones on the
selected coordinates only, everywhere, and off the selection only (the model's kept on it). Prints
median accuracy and macro-F1.
"""
import copy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(1, str(ROOT))
import inproc  # noqa: E402
from fedsynth.evaluation.utility import tstr  # noqa: E402

ds, eps = sys.argv[1], float(sys.argv[2])
res = {}
for s in range(100, 106):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, 0, 12]))
    gen = r["gen"]; M = gen.model
    mu_t, yi = inproc.real_class_means(X, y, classes)
    sel = np.asarray(gen.statistics["selected"])
    props = np.asarray(gen.statistics["class_proportions"])
    def score(cm):
        M2 = copy.copy(M); M2.class_means = cm
        rng = np.random.default_rng(7); out = []
        for _ in range(2):
            ys = rng.choice(len(classes), size=len(X), p=props / props.sum())
            t = tstr(M2.sample(ys, rng), np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]
            out.append((t["accuracy"], t["macro_f1"]))
        return np.mean(out, 0)
    cm0 = M.class_means.copy()
    cm_sel = cm0.copy(); cm_sel[:, sel] = mu_t[:, sel]
    cm_all = mu_t.copy()
    cm_rest = mu_t.copy(); cm_rest[:, sel] = cm0[:, sel]
    for name, cm in [("default", cm0), ("real on selected", cm_sel), ("real everywhere", cm_all), ("model on selected, real elsewhere", cm_rest)]:
        res.setdefault(name, []).append(score(cm))
for k, v in res.items():
    print(ds, eps, k, np.round(np.median(v, 0), 3))
