"""How much class signal the gaussian's selected coordinates hold (issue 12, twelfth session; seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/selection_capture.py pbmc 1 100,101,102 [--root DIR]

Fits the default in process (:mod:`bench/inproc.py`, one noise draw per split seed) and prints, per
split, the share of the real between-class sum of squares ``sum_k n_k (mean_k - mean)^2`` (training
records, profile coordinates) that its ``g`` selected coordinates hold, beside the share held by the
``g`` coordinates of largest real total variance, by the best ``g`` (the true top), and by chance
(``g / G``); and how many of the true top ``g`` it selected. ``--root`` runs another checkout's
``fedsynth`` (e.g. a worktree of 2b8cb12, whose class screen selected).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset")
ap.add_argument("epsilon", type=float)
ap.add_argument("seeds", help="comma-separated split seeds")
ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]))
a = ap.parse_args()
sys.path.insert(0, a.root + "/bench")
sys.path.insert(1, a.root)
import inproc  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402

for s in (int(v) for v in a.seeds.split(",")):
    X, y, Xte, yte, classes = inproc.load(a.dataset, s)
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, a.epsilon, np.random.default_rng([s, 0, 12]))
    V = ga.to_profile_level(X)[:, :-1]
    m = V.mean(0)
    present = [c for c in classes if (y == c).any()]
    bss = sum((y == c).sum() * (V[y == c].mean(0) - m) ** 2 for c in present)
    sel = np.asarray(r["gen"].statistics["selected"])
    sel = sel[sel < V.shape[1]]
    g = len(sel)

    def held(idx):
        return float(bss[idx].sum() / bss.sum())
    top = np.argsort(-bss)[:g]
    print(f"{a.dataset} eps {a.epsilon:g} split {s}: g = {g} of {V.shape[1]}; between-class SS held by the "
          f"selection {held(sel):.2f}, by the top-g real variances {held(np.argsort(-V.var(0))[:g]):.2f}, "
          f"best {held(top):.2f}, chance {g / V.shape[1]:.2f}; true top g selected {len(set(sel) & set(top))}; "
          f"TSTR {r['accuracy']:.3f} / {r['macro_f1']:.3f}", flush=True)
