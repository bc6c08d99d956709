"""How much the noise of the released spreads costs the selection (16th session; split seeds >= 100).

    git worktree add /tmp/orc aa41a32 && git -C /tmp/orc apply "$PWD/bench/experiments/selection_and_level_variants.patch"
    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/oracle_ranking.py pbmc 4 100-105 --root /tmp/orc

Runs the gaussian of the patched checkout (``--root``) in process (``inproc.run_one``, noise draws
0 and 1 per split seed) three ways that differ only in how the selected coordinates are ranked: by
the released spreads (the default), by each coordinate's real between-class variance
(``between``), and by its real total variance (``truespread``; the spreads without noise or clip).
Everything else, the noise included, is the default's. Prints medians and the paired differences.
"""
import argparse
import sys

import numpy as np

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("dataset")
ap.add_argument("epsilon", type=float)
ap.add_argument("seeds", help="split seeds, FIRST-LAST (both included)")
ap.add_argument("--root", required=True, help="a checkout with selection_and_level_variants.patch applied")
a = ap.parse_args()
sys.path.insert(0, a.root + "/bench"); sys.path.insert(1, a.root)
import inproc  # noqa: E402
from fedsynth.generators import gaussian as ga  # noqa: E402

first, last = map(int, a.seeds.split("-"))
R = {}
for s in range(first, last + 1):
    X, y, Xte, yte, classes = inproc.load(a.dataset, s)
    mu_t, yi = inproc.real_class_means(X, y, classes)
    props = np.bincount(yi, minlength=len(classes)) / len(yi)
    oracles = {"default": None, "between": props @ (mu_t - props @ mu_t) ** 2,
               "truespread": ga.to_profile_level(X).var(0)}
    for d in range(2):
        for name, score in oracles.items():
            ga.ORACLE = score
            r = inproc.run_one("gaussian", X, y, Xte, yte, classes, a.epsilon, np.random.default_rng([s, d, 12]))
            R.setdefault(name, []).append((r["accuracy"], r["macro_f1"]))
        print(s, d, " ".join("%s %.3f/%.3f" % (k, *v[-1]) for k, v in R.items()), flush=True)
base = np.array(R["default"])
for k, v in R.items():
    dd = np.array(v) - base
    print("%-10s median %.3f / %.3f; paired d accuracy %+.3f, macro-F1 %+.3f +- %.3f" % (
        k, *np.median(v, 0), dd[:, 0].mean(), dd[:, 1].mean(), dd[:, 1].std(ddof=1) / np.sqrt(len(dd))))
