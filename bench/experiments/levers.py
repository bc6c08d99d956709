"""Which post-processing lever moves TSTR at a data set and budget (14th session diagnostic).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/levers.py pbmc 4 [100-107]

For each split seed (one noise draw), fits the default gaussian once and scores the pinned TSTR
protocol (:func:`fedsynth.evaluation.tstr`, as ``inproc.run_one``) on synthetic data drawn from variants of the fitted model (post-processing only):
residual variance replaced by the real within-class variance or scaled, the class proportions,
the class means' deviations scaled, and the real class means (oracles, for scale).
"""
import copy, sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT / "bench/experiments")); sys.path.insert(2, str(ROOT))
import inproc
from _variants import args, fits, score, summarise
from fedsynth.generators.gaussian import to_profile_level
ds, eps, seeds = args(sys.argv, "100-107")
R = {}
for s, (X, y, Xte, yte, classes), r in fits(ds, eps, seeds):
    M = r["gen"].model
    mu_t, yi = inproc.real_class_means(X, y, classes)
    V = to_profile_level(X)
    wvar = ((V - mu_t[yi]) ** 2).mean(0)
    K = len(classes)
    props = np.asarray(r["gen"].statistics["class_proportions"]); props = props / props.sum()
    pm = props @ M.class_means
    def variant(name):
        M2 = copy.copy(M); p = props; n = len(X)
        if name == "realvar":
            M2.residual_variance = np.maximum(wvar - (M.loadings ** 2).sum(1), 1e-3)
        elif name.startswith("var*"):
            M2.residual_variance = M.residual_variance * float(name[4:])
        elif name.startswith("dev*"):
            M2.class_means = pm + (M.class_means - pm) * float(name[4:])
        elif name == "uniform":
            p = np.full(K, 1.0 / K)
        elif name.startswith("n*"):
            n = int(n * float(name[2:]))
        elif name == "realmeans":
            M2.class_means = mu_t
        return M2, p, n
    for name in ["default", "realvar", "var*0.5", "var*2", "dev*0.7", "dev*1.4", "uniform", "n*5", "realmeans"]:
        M2, p, n = variant(name)
        R.setdefault(name, []).append(score(M2, p, n, classes, Xte, yte))  # the pinned TSTR
    print(s, " ".join("%s %.3f/%.3f" % (k, *v[-1]) for k, v in R.items()), flush=True)
summarise(R)
