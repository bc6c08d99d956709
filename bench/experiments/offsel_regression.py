"""Oracle: the class means off the selection imputed by regression on the selection (15th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/offsel_regression.py pbmc 4 100-105

One fit of the default per split seed; off the selected coordinates its class means are the gene
means. Variants (post-processing of the fitted model, scored by the pinned TSTR): ``regress``, each
unselected coordinate's class means from its regression (on the real training records, an oracle)
on the records' scores along the span ``P`` of the model's class deviations on the selection,
``m_off + B P^T (mu_k,sel - mubar_sel)``; ``regress_t`` the same along the real deviations' span;
``realoff`` the real class means off the selection.
"""
import copy, sys
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT / "bench/experiments")); sys.path.insert(2, str(ROOT))
import inproc
from _variants import args, fits, score, summarise
from fedsynth.generators.gaussian import to_profile_level
ds, eps, seeds = args(sys.argv, "100-105")
R = {}
for s, (X, y, Xte, yte, classes), r in fits(ds, eps, seeds):
    gen = r["gen"]; M = gen.model
    sel = np.asarray(gen.statistics["selected"]); D = M.class_means.shape[1]
    off = np.setdiff1d(np.arange(D), sel)
    mu_t, yi = inproc.real_class_means(X, y, classes)
    V = to_profile_level(X)
    K = len(classes)
    props = np.asarray(gen.statistics["class_proportions"]); props = props / props.sum()
    pm = props @ M.class_means
    dsel = (M.class_means - pm)[:, sel[:-1]]
    U, S, Wt = np.linalg.svd(dsel, full_matrices=False)
    P = Wt[S > 1e-9 * S[0]].T          # g x q, the span of the model's deviations
    Vs = V[:, sel[:-1]] - V[:, sel[:-1]].mean(0)
    Vo = V[:, off] - V[:, off].mean(0)
    Z = Vs @ P
    B = np.linalg.solve(Z.T @ Z, Z.T @ Vo).T   # off x q
    # the same with the real deviation span (oracle basis)
    dt = (mu_t - props @ mu_t)[:, sel[:-1]]
    _, St, Wtt = np.linalg.svd(dt, full_matrices=False); Pt = Wtt[St > 1e-9 * St[0]].T
    Zt = Vs @ Pt; Bt = np.linalg.solve(Zt.T @ Zt, Zt.T @ Vo).T
    def variant(name):
        M2 = copy.copy(M); cm = M.class_means.copy()
        if name == "regress":
            cm[:, off] = pm[off] + (dsel @ P) @ B.T
        elif name == "regress_t":
            cm[:, off] = pm[off] + (dsel @ Pt) @ Bt.T
        elif name == "realoff":
            cm[:, off] = mu_t[:, off]
        M2.class_means = cm
        return M2
    for name in ["default", "regress", "regress_t", "realoff"]:
        R.setdefault(name, []).append(score(variant(name), props, len(X), classes, Xte, yte))
    print(s, len(off), P.shape, " ".join("%s %.3f/%.3f" % (k, *v[-1]) for k, v in R.items()), flush=True)
summarise(R)
