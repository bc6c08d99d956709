"""The default against another checkout's gaussian, in process, paired by split (issue 12; split seeds >= 100).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/against_checkout.py /tmp/prev brca 1 100-120

``/tmp/prev`` is a worktree of an older commit (e.g. ``git worktree add
/tmp/prev 0d3dfb1``, the previous gaussian of issue 12's baseline). Each
side runs in its own process with this checkout's harness
(:mod:`bench/inproc.py`: the same data reading, site split and holdout,
the same stand-in secure sum, the pinned TSTR) and its own ``fedsynth``:
the other side's through a temporary root with a copy of this
checkout's ``bench/`` and links to its ``data/`` and generated matrices,
beside the other ``fedsynth/``. Both see the same
splits and rng seeds ``[seed, draw, 12]``; their releases differ in
shape, so the noise draws are not the same, and the runs are paired by
split (the mean over draws of each split seed). Prints, per metric, both
medians and the mean paired difference (this checkout minus the other)
with its standard error.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[2]
RUN = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1] + "/bench")
import inproc
import fedsynth
assert fedsynth.__file__.startswith(sys.argv[1]), fedsynth.__file__
ds, eps, (first, end), draws = sys.argv[2], float(sys.argv[3]), map(int, sys.argv[4].split("-")), int(sys.argv[5])
rows = []
for s in range(first, end):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    for d in range(draws):
        r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
        rows.append([s, d, r["accuracy"], r["macro_f1"], r["gene_mean_r"]])
print(json.dumps(rows))
"""


def side(root, a):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", RUN, str(root), a.dataset, str(a.epsilon), a.seeds, str(a.draws)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return {(s, d): v for s, d, *v in json.loads(out.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="a checkout (worktree) of another commit")
    ap.add_argument("dataset")
    ap.add_argument("epsilon", type=float)
    ap.add_argument("seeds", help="split seeds, FIRST-END (end excluded)")
    ap.add_argument("--draws", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "fedsynth").symlink_to(Path(a.other).resolve() / "fedsynth")
        # a copy, not a link: the harness puts its own resolved parent's parent first on the path
        shutil.copytree(HERE / "bench", root / "bench", ignore=shutil.ignore_patterns("out", "__pycache__"))
        (root / "bench" / "out" / "high_dim").mkdir(parents=True)
        (root / "bench" / "out" / "high_dim" / "data").symlink_to(HERE / "bench" / "out" / "high_dim" / "data")
        (root / "data").symlink_to(HERE / "data")
        other = side(root, a)
    this = side(HERE, a)
    seeds = sorted({s for s, _ in this})
    print(f"{a.dataset} eps {a.epsilon:g}, {len(seeds)} splits x {a.draws} draws: this checkout against {a.other}")
    for j, name in enumerate(("accuracy", "macro-F1", "gene-mean r")):
        mine = np.array([np.mean([this[(s, d)][j] for d in range(a.draws)]) for s in seeds])
        theirs = np.array([np.mean([other[(s, d)][j] for d in range(a.draws)]) for s in seeds])
        diff = mine - theirs
        print(f"  {name}: medians {np.median([v[j] for v in other.values()]):.3f} (other) "
              f"{np.median([v[j] for v in this.values()]):.3f} (this); paired by split {diff.mean():+.3f} +- "
              f"{diff.std() / np.sqrt(len(diff)):.3f}, up / down in {int((diff > 0).sum())} / {int((diff < 0).sum())}")


if __name__ == "__main__":
    main()
