"""Per-class TSTR F1: the default, and its class means replaced by the real ones on the selection (13th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/per_class_tstr.py pbmc 4

Split seeds 100-103, one noise draw each, one synthetic draw (the pinned protocol: StandardScaler on
the synthetic data, LogisticRegression(max_iter=2000)). Also prints, per class, the cosine and the
norm ratio of the model's deviation from the pooled mean against the real one on the selected
coordinates, and the class sizes.
"""
import copy, sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT))
import inproc
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
ds, eps = sys.argv[1], float(sys.argv[2])
F = {}
for s in range(100, 104):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, np.random.default_rng([s, 0, 12]))
    gen = r["gen"]; M = gen.model
    mu_t, yi = inproc.real_class_means(X, y, classes)
    yti = np.searchsorted(classes, yte)
    K = len(classes)
    sel = np.asarray(gen.statistics["selected"])
    props = np.asarray(gen.statistics["class_proportions"])
    nk = np.bincount(yi, minlength=K)
    cm0 = M.class_means.copy()
    cm_sel = cm0.copy(); cm_sel[:, sel] = mu_t[:, sel]
    # deviation quality on selection
    d_m = cm0[:, sel[:-1]] - cm0[:, sel[:-1]].mean(0); d_t = mu_t[:, sel[:-1]] - (props @ mu_t[:, sel[:-1]])
    dm = cm0[:, sel[:-1]] - props @ cm0[:, sel[:-1]]
    for name, cm in [("default", cm0), ("realsel", cm_sel)]:
        M2 = copy.copy(M); M2.class_means = cm
        rng = np.random.default_rng(7)
        ys = rng.choice(K, size=len(X), p=props / props.sum())
        Xs = M2.sample(ys, rng)
        sc = StandardScaler().fit(Xs); clf = LogisticRegression(max_iter=2000).fit(sc.transform(Xs), ys)
        pr = clf.predict(sc.transform(Xte))
        f = f1_score(yti, pr, labels=range(K), average=None, zero_division=0)
        F.setdefault(name, []).append(f)
        print(s, name, "acc %.3f f1 %.3f" % ((pr == yti).mean(), f.mean()), np.round(f, 2))
    cos = [float(dm[k] @ d_t[k] / (np.linalg.norm(dm[k]) * np.linalg.norm(d_t[k]) + 1e-12)) for k in range(K)]
    rat = [float(np.linalg.norm(dm[k]) / (np.linalg.norm(d_t[k]) + 1e-12)) for k in range(K)]
    print(s, "g", len(sel), "nk", nk, "test nk", np.bincount(yti, minlength=K))
    print(s, "cos", np.round(cos, 2)); print(s, "norm ratio", np.round(rat, 2))
for k, v in F.items(): print(k, np.round(np.median(v, 0), 2))
print(classes)
