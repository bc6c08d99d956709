"""Oracles for the gaussian's class means (issue 12, seventh session; split seeds >= 100 only).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/oracle_class_means.py pbmc 4 100,101,102,103,104

Fits the default in process (:mod:`bench/inproc.py`), then replaces one part of
the fitted model before sampling and scores each by the pinned TSTR (2 synthetic
draws each): the class means from the real data (``oracle_mu``), the class
deviations rescaled (by the measured shrink ``1/a_k``, its median, 1.5, 2), the
within-class variances from the real data (diagonal; or the model's scaled to
their mean). ``a_k`` is the slope of the model's class deviation on the true one.
``DRAWS=n`` noise draws per split seed; ``FSROOT`` another checkout.
"""
import sys, os, math, copy, numpy as np
R = os.environ.get("FSROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))); sys.path.insert(0, R + "/bench"); sys.path.insert(1, R)
import inproc
from fedsynth.generators import gaussian as ga
from fedsynth.evaluation.utility import tstr
ds, eps = sys.argv[1], float(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")]
allout = {}
for s in seeds:
  for d in range(int(os.environ.get("DRAWS", 1))):
    X, y, Xte, yte, classes = inproc.load(ds, s)
    rng = np.random.default_rng([s, d, 12])
    r = inproc.run_one("gaussian", X, y, Xte, yte, classes, eps, rng)
    gen = r["gen"]; M = gen.model
    props = np.asarray(gen.statistics["class_proportions"]); props /= props.sum()
    V = ga.to_profile_level(X); yi = np.searchsorted(classes, y)
    m_true = V.mean(0)
    mu_true = np.vstack([V[yi == k].mean(0) if (yi == k).any() else m_true for k in range(len(classes))])
    pooled = props @ M.class_means
    dv = M.class_means - pooled; tv = mu_true - m_true
    a = np.array([dv[k] @ tv[k] / max(tv[k] @ tv[k], 1e-12) for k in range(len(classes))])
    out = {"base": (round(r["accuracy"], 3), round(r["macro_f1"], 3))}
    def score(name, mu=None, psi=None, W=None):
        M2 = copy.copy(M)
        if mu is not None: M2.class_means = mu
        if psi is not None: M2.residual_variance = psi
        if W is not None: M2.loadings = W
        accs = []
        for rep in range(2):
            ys = rng.choice(len(classes), size=len(X), p=props)
            Xs = M2.sample(ys, rng)
            t = tstr(Xs, np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]
            accs.append((t["accuracy"], t["macro_f1"]))
        out[name] = tuple(np.round(np.mean(accs, 0), 3))
    score("base2")
    score("rescale_k", mu=pooled + dv / np.maximum(a, 0.05)[:, None])
    am = float(np.median(a)); score("rescale_med", mu=pooled + dv / max(am, 0.05))
    score("x1.5", mu=pooled + dv * 1.5)
    score("x2", mu=pooled + dv * 2)
    Rr = V - mu_true[yi]; tvar = (Rr**2).sum(0) / (len(V) - len(classes))
    cur = M.residual_variance + (M.loadings**2).sum(1)
    score("true_var_diag", psi=tvar, W=M.loadings[:, :0])
    score("model_var_diag", psi=cur, W=M.loadings[:, :0])
    score("true_var_scaled", psi=M.residual_variance * tvar.mean() / cur.mean(), W=M.loadings * math.sqrt(tvar.mean() / cur.mean()))
    score("x1.5_truevar", mu=pooled + dv * 1.5, psi=tvar, W=M.loadings[:, :0])
    score("oracle_mu", mu=mu_true)
    print(ds, eps, s, d, "a", np.round(a, 2), "var model/true %.2f" % (cur.mean() / tvar.mean()), out, flush=True)
    for k, v in out.items(): allout.setdefault(k, []).append(v)
print("MEDIAN", {k: tuple(np.round(np.median(np.array(v), 0), 3)) for k, v in allout.items()})
