"""The regression of ``offsel_regression.py`` from a noisy release of its cross-moments (15th session).

    OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/offsel_regression_noisy.py pbmc 4 100-107 0.1,0.3,1

The release it would need: ``C = sum_i clip(v_i,off - m_off) clip(z_i)^T`` (``z_i = P^T (v_i,sel -
mubar_sel)``, the records' scores on the span of the model's class deviations), clipped at the
model's typical norms, divided by the clips' median shares, with Gaussian noise at the multiplier
that a share of the run's budget would give (zCDP, colluder default ``sqrt(3/2)``), each
coefficient column shrunk by its noise (linear empirical Bayes over genes). The shares are extra
(not taken from any release): an upper bound on what the release could give. ``Z^T Z`` is taken
exact.
"""
import copy, sys, math
from pathlib import Path
import numpy as np
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench")); sys.path.insert(1, str(ROOT / "bench/experiments")); sys.path.insert(2, str(ROOT))
from _variants import args, fits, score, summarise
from fedsynth.generators.gaussian import to_profile_level
from fedsynth.privacy.clip import clip_rows
ds, eps, seeds = args(sys.argv, "100-105")
shares = [float(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "0.1,0.2").split(",")]
L = math.log(1e5); rho = (math.sqrt(L + eps) - math.sqrt(L)) ** 2
R = {}
for s, (X, y, Xte, yte, classes), r in fits(ds, eps, seeds):
    gen = r["gen"]; M = gen.model; st = gen.statistics
    sel = np.asarray(st["selected"]); D = M.class_means.shape[1]
    off = np.setdiff1d(np.arange(D), sel)
    K = len(classes); N = len(X)
    props = np.asarray(st["class_proportions"]); props = props / props.sum()
    pm = props @ M.class_means
    m = np.asarray(st["gene_means"])
    dsel = (M.class_means - pm)[:, sel[:-1]]
    U, S, Wt = np.linalg.svd(dsel, full_matrices=False)
    P = Wt[S > 1e-9 * S[0]].T
    V = to_profile_level(X)
    Vs = V[:, sel[:-1]] - pm[sel[:-1]]
    Vo = V[:, off] - m[off]
    Z = Vs @ P
    # clip levels from public quantities: the model's variance along P and off-selection
    var_model = M.residual_variance + (M.loadings ** 2).sum(1)
    Rz = math.sqrt(float((props[:, None] * (dsel @ P) ** 2).sum()) + float(((P ** 2) * var_model[sel[:-1], None]).sum()))
    Ro = math.sqrt(float(var_model[off].sum()))
    Zc = clip_rows(Z, Rz); Voc = clip_rows(Vo, Ro)
    az = np.median(np.minimum(1, Rz / np.linalg.norm(Z, axis=1))); ao = np.median(np.minimum(1, Ro / np.linalg.norm(Vo, axis=1)))
    C = Voc.T @ Zc
    ZZ = Z.T @ Z
    rng = np.random.default_rng([s, 99])
    def variant(name):
        M2 = copy.copy(M); cm = M.class_means.copy()
        if name == "oracle":
            B = np.linalg.solve(ZZ, Z.T @ Vo).T
        elif name.startswith("noisy"):
            sh = float(name[5:])
            zmult = 1 / math.sqrt(2 * rho * sh) * math.sqrt(1.5)
            Cn = C + rng.normal(0, zmult * Ro * Rz, C.shape)
            Cn = Cn / (az * ao)
            B = np.linalg.solve(ZZ, Cn.T).T
            # de-noise: each coefficient column shrunk by its noise (linear EB over genes)
            nv = (zmult * Ro * Rz / (az * ao)) ** 2 * np.diag(np.linalg.inv(ZZ) @ np.linalg.inv(ZZ).T)
            for q in range(B.shape[1]):
                t2 = max(B[:, q].var() - nv[q], 0); B[:, q] *= t2 / (t2 + nv[q])
        if name != "default":
            cm[:, off] = pm[off] + (dsel @ P) @ B.T
        M2.class_means = cm
        return M2
    for name in ["default", "oracle"] + [f"noisy{x}" for x in shares]:
        R.setdefault(name, []).append(score(variant(name), props, len(X), classes, Xte, yte))
    print(s, "az %.2f ao %.2f" % (az, ao), " ".join("%s %.3f/%.3f" % (k, *v[-1]) for k, v in R.items()), flush=True)
summarise(R)
