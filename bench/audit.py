"""Empirical privacy audit: one-run canary auditing of every generator (issue 11).

Method: Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
Training Run" (NeurIPS 2023, arXiv:2305.08846), Algorithm 1 and Theorem 3.1.
``m`` canary records are drawn; each is included independently with
probability 1/2, all at site ``s0``; one ``fedsynth simulate`` runs on the
background records plus the included canaries (3 real site processes,
``--max-colluders 0`` so the released noise is exactly the accountant's
``sigma``). Afterwards every canary is scored from what the run releases
(the model file's statistics and released tables, read with
:func:`fedsynth.generators.modelfile.load_model`), the auditor guesses "in"
for the ``k`` highest and "out" for the ``k`` lowest scores, and counts the
correct guesses ``v`` of ``r = 2k``. If the run is ``(eps, delta)``-DP, then
(Theorem 3.1)

    P[v correct or more] <= f(v) + 2 m delta max_{i = 1..v} (f(v - i) - f(v)) / i,
    f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v],

so the largest ``eps`` whose bound is still <= ``beta`` is a lower bound
on the run's epsilon at confidence ``1 - beta``
(:func:`eps_lower_bound`). ``k`` is not chosen after looking: the audit
tries the fixed values :data:`K_GUESSES` and Bonferroni-corrects
(``beta = 0.05 / len(K_GUESSES)``), so the reported bound holds at 95%.

Canaries (chosen so that a released statistic moves by a whole clip bound
when a canary is in; see BENCHMARKS.md section 6):

* ``sparse`` (gaussian, cvae): canary ``i`` is the background mean profile
  plus ``+-A`` on its own gene ``i`` (``A = 43``, random sign ``s_i``),
  label ``canary``. It adds ``s_i A`` to the gene-mean sum. CVAE: its
  centred deviation (norm ~A) is above the class-anchor clip bound, so it
  adds ``s_i R_2`` on coordinate ``i`` of the released class sums; score:
  the noise-weighted sum of the two, the class term corrected for the
  other canaries' reaction to the gene-mean noise (:func:`score_sparse`).
  Gaussian: it moves, each by about a whole clip bound, the gene means,
  the canary class's row of the class screen (model files from before
  the spreads replaced it), the gene variances (all kept as released in
  the model file's ``statistics["released"]``),
  the class means (only if gene ``i`` is among the ``g`` selected
  coordinates) and the block moments' diagonal (only if gene ``i`` is in
  the block); score: the Gaussian log likelihood ratio "in" vs "out"
  summed over these releases, the public background's exact part
  subtracted (:func:`score_gaussian`).
* ``dense`` (marginals, pgm): canary ``i`` takes, on every gene, one of
  7 (marginals) or 10 (pgm) values spread over the public range [0, 20]
  (uniformly at random, independently per gene), label ``canary``; the
  background lies in [5.05, 6.95], in a bin or cell no canary uses. A
  canary adds 1 to one cell of each of the ``G`` class x gene tables (and
  of pgm's fine histograms and pair tables): the score sums, per release,
  the released cells the canary would fill, each centred by what a random
  canary pattern would pick there, weighted by 1 / noise variance
  (:func:`score_dense`).

The broken build divides the noise every site adds by 10
(bench/_broken_site/sitecustomize.py, loaded through PYTHONPATH only for
those runs); fedsynth itself is unchanged.

    OMP_NUM_THREADS=1 .venv/bin/python bench/audit.py                    # the whole table
    OMP_NUM_THREADS=1 .venv/bin/python bench/audit.py --only gaussian    # one generator
    OMP_NUM_THREADS=1 .venv/bin/python bench/audit.py --render           # table from the cache

Cells are cached in bench/out/audit/ (keyed by the command, fedsynth's
code hash and the broken-build patch); writes bench/out/audit.md and .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
#: hash of this file as imported (not as on disk later: a cell scored by this code is keyed by it)
SCORING = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
sys.path.insert(0, str(BENCH))

#: numbers of "in" guesses (and as many "out" guesses) tried; Bonferroni over them
K_GUESSES = (10, 25, 50, 100, 250, 500)
CONFIDENCE = 0.95
DELTA = 1e-5


# ------------------------------------------------------------ the bound (Steinke et al. 2023, Thm 3.1)
def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Upper bound on P[>= v of r guesses correct] for an (eps, delta)-DP run with m canaries (Thm 3.1).

    ``f(v) + 2 m delta max_{i=1..v} (f(v - i) - f(v)) / i`` with
    ``f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]``.
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m (got v={v}, r={r}, m={m})")
    q = 1.0 / (1.0 + math.exp(-eps))
    f_v = float(binom.sf(v - 1, r, q))  # P[Bin >= v]
    alpha = 0.0
    if delta > 0 and v > 0:
        import numpy as np

        i = np.arange(1, v + 1)
        gaps = np.cumsum(binom.pmf(v - i, r, q))  # f(v - i) - f(v) = P[v - i <= Bin < v]
        alpha = float(np.max(gaps / i))
    return min(1.0, f_v + 2.0 * m * delta * alpha)


def eps_lower_bound(m: int, r: int, v: int, *, delta: float = DELTA, beta: float = 0.05) -> float:
    """The largest eps with ``p_value(m, r, v, eps, delta) <= beta`` (0 if none): a lower bound at 1 - beta."""
    if r == 0 or p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) <= beta:  # p_value rises with eps
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


def audit_guesses(scores, included, ks=K_GUESSES, *, delta: float = DELTA, confidence: float = CONFIDENCE) -> dict:
    """Guess in for the top k and out for the bottom k scores, for each k; Bonferroni-corrected bound."""
    import numpy as np

    scores = np.asarray(scores, float)
    inc = np.asarray(included, bool)
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    beta = (1 - confidence) / len(ks)
    rows = []
    for k in ks:
        k = min(k, m // 2)
        top, bottom = order[:k], order[m - k:]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        rows.append({"k": k, "r": 2 * k, "v": v, "eps_lb": eps_lower_bound(m, 2 * k, v, delta=delta, beta=beta)})
    best = max(rows, key=lambda x: (x["eps_lb"], x["v"] / x["r"]))
    return {"m": m, "beta_each": beta, "per_k": rows, "best": best}


# ------------------------------------------------------------ data
G = 1000          # genes
M = 1000          # canaries
N_BG = 1000       # background records (3 classes, 3 sites)
SPIKE = 43.0      # sparse canary: +-SPIKE on its own gene (log values must stay <= 50)
#: dense canaries: per gene one of these values (uniformly); none shares a marginals bin (8 over [0, 20]) or a pgm
#: fine cell (12 over [0, 20]) with the background, which lies in [5.05, 6.95]
DENSE_LEVELS = {"dense8": [1.25, 3.75, 8.75, 11.25, 13.75, 16.25, 18.75],
                "dense12": [0.83, 2.5, 4.17, 9.17, 10.83, 12.5, 14.17, 15.83, 17.5, 19.17]}
DESIGN = {"cvae": "sparse", "gaussian": "sparse", "marginals": "dense8", "pgm": "dense12"}
GENERATORS = ("gaussian", "marginals", "pgm", "cvae")
EPSILONS = (1.0, 4.0)
BUILDS = ("correct", "noise/10")
WORK = BENCH / "out" / "audit"
LINE = "OMP_NUM_THREADS=1 .venv/bin/python bench/audit.py"


def background(design: str, seed: int = 0):
    """(X, labels, sites) of the background: N_BG records x G genes, classes A/B/C, sites s0/s1/s2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=N_BG, p=[0.4, 0.35, 0.25])
    sites = np.repeat(["s0", "s1", "s2"], [N_BG * 4 // 10, N_BG * 3 // 10, N_BG - N_BG * 7 // 10])
    if design == "sparse":
        centres = rng.normal(0, 0.5, size=(3, G))
        X = 6 + centres[y] + rng.normal(0, 0.5, size=(N_BG, G))
    else:  # every background value in [5, 7]: bin 2 of marginals' 8 bins, cell 3 of pgm's 12 fine cells
        centres = rng.normal(0, 0.2, size=(3, G))
        X = np.clip(6 + centres[y] + rng.normal(0, 0.3, size=(N_BG, G)), 5.05, 6.95)
    return np.round(X, 4), np.array([f"class{c}" for c in "ABC"])[y], sites


def canaries(design: str, seed: int = 1):
    """(Xc, signs): M canary records and the random signs that define them (M x G for dense, M for sparse)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    Xb, _, _ = background(design)
    if design == "sparse":
        s = rng.choice([-1.0, 1.0], size=M)
        base = Xb.mean(0)
        Xc = np.tile(base, (M, 1))
        Xc[np.arange(M), np.arange(M) % G] += SPIKE * s
        return np.round(Xc, 4), s
    levels = np.asarray(DENSE_LEVELS[design])
    s = rng.integers(len(levels), size=(M, G))
    return levels[s], s


def inclusion(seed: int):
    import numpy as np

    return np.random.default_rng(1000 + seed).random(M) < 0.5


def cell_csv(design: str, seed: int) -> Path:
    """Background + the included canaries (all at site s0, label 'canary') as one CSV."""
    import numpy as np
    import pandas as pd

    path = WORK / f"data_{design}_seed{seed}.csv"
    if path.is_file():
        return path
    Xb, yb, sb = background(design)
    Xc, _ = canaries(design)
    inc = inclusion(seed)
    X = np.vstack([Xb, Xc[inc]])
    n_in = int(inc.sum())
    df = pd.DataFrame(X, columns=[f"g{j:04d}" for j in range(G)])
    df.insert(0, "label", list(yb) + ["canary"] * n_in)
    df.insert(0, "site", list(sb) + ["s0"] * n_in)
    df.insert(0, "sample_id", [f"b{i:04d}" for i in range(N_BG)] + [f"c{i:04d}" for i in np.flatnonzero(inc)])
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------ scoring
def _dp(blob):
    return blob.get("dp") or {}


def score_sparse(blob, gen_name: str):
    """Per canary: noise-weighted evidence from the gene means and class anchors (cvae; gaussian: :func:`score_gaussian`)."""
    import numpy as np

    if gen_name == "gaussian":
        return score_gaussian(blob)
    Xb, _, _ = background("sparse")
    _, s = canaries("sparse")
    sd = _dp(blob)["noise_std"]
    c = list(blob["classes"]).index("canary")
    st = blob["statistics"]
    n_in_hat = max(float(st["class_counts"][c]), 1.0)
    gi = np.arange(M) % G
    vbar = (Xb - Xb.mean(1, keepdims=True)).mean(0)  # background mean of the row-centred profile
    m_vec = np.asarray(st["mean_profile"], float)
    anchors = np.asarray(st["class_anchors"], float)[c]
    r1, r2 = st["clip_bounds"]
    S = (anchors - m_vec) * max(n_in_hat, 2.0 * sd["class counts"])
    n_total = float(sum(st["class_counts"]))
    # gene-mean sum minus its background part: s_i A in_i + noise (coordinate g_i)
    T0 = s * (n_total * (m_vec[gi] - vbar[gi]))
    # class-mean sum, corrected for the other canaries' deviation (vbar - m) scaled by R2 / A
    T1 = s * (S[gi] + n_in_hat * r2 / SPIKE * (m_vec[gi] - vbar[gi]))
    parts = {"gene means": (T0, SPIKE * (1 - 1 / G), sd["gene means"]),
             "class means": (T1, r2, sd["class means"])}
    score = sum(sig / nsd**2 * T for T, sig, nsd in parts.values())
    return score, {k: {"signal": sig, "noise_sd": nsd, "snr": sig / nsd} for k, (T, sig, nsd) in parts.items()}


def _unshrink(x, noise_var: float):
    """Undo ``fedsynth.generators.gaussian.shrink_towards_mean``: ``(raw x, a)``; ``(None, 0)`` if ``a = 0``.

    The shrunk values are ``xbar + a (x - xbar)`` with ``a = 1 - s^2 / V``,
    ``V`` the raw spread; their spread is ``a^2 V``, so ``sqrt(V)`` is the
    positive root of ``t^2 - sqrt(var_shrunk) t - s^2``. With ``a = 0``
    (every value replaced by the average) nothing is left to recover.
    """
    import numpy as np

    x = np.asarray(x, float)
    t = (math.sqrt(x.var()) + math.sqrt(x.var() + 4 * noise_var)) / 2
    a = 1 - noise_var / t**2 if t > 0 else 0.0
    if a < 1e-6:
        return None, 0.0
    return x.mean() + (x - x.mean()) / a, a


def _class_sums(dmu, n_total, c_eff, noise_var, wc=1.0, iters: int = 50):
    """Undo ``fedsynth.generators.gaussian.denoise_deviations``: the released class sums (K x g) from ``mu - m``.

    The model holds ``X_k = mu_k - m = w_c centre + w_k d_k`` on the selected
    coordinates (``w_c`` = ``wc``, the weight ``_combine`` gave the pooled
    mean against ``m``'s own error, per coordinate),
    ``d_k = S_k / c'_k - centre`` the released deviations,
    ``sum_k c'_k d_k = (N - sum_k c'_k) centre`` (``centre = sum_k S_k / N``) and ``w_kj =
    max(tau_j^2 / (tau_j^2 + s_k^2), a_k)`` (``tau_j^2 = max(mean_k(d_kj^2
    - s_k^2), 0)``, ``a_k`` the James-Stein factor of class ``k``). Given
    ``tau^2`` and ``a`` the rest is linear (where ``w_kj = 0``, ``X_kj`` is
    ``centre_j`` itself and ``d_kj`` follows from the sum). Per coordinate,
    ``tau_j^2`` is a root of ``tau^2 = max(mean_k(d_kj(tau^2)^2 - s_k^2), 0)``
    (found on a grid); the ``a_k`` are iterated. Returns the sums, ``w`` and
    a mask of the entries with ``w > 0`` (elsewhere the release was
    shrunk away and its value is only what the sum constraint implies).
    """
    import numpy as np

    K, g = dmu.shape
    nv = noise_var[:, None, None]
    grid = np.concatenate([[0.0], np.logspace(-8, 2, 600)])[None, :, None]  # tau^2 candidates
    X = dmu[:, None, :]
    js = np.zeros(K)
    extra = c_eff.sum() - n_total
    for _ in range(iters):
        w = np.broadcast_to(np.maximum(grid / (grid + nv), js[:, None, None]), (K, grid.shape[1], g))
        pos = w > 1e-12
        wi = np.where(pos, 1.0 / np.where(pos, w, 1.0), 0.0)
        zero = ~pos
        # centre: from any w = 0 entry directly, else from sum_k c'_k (X_k - centre) / w_k = extra * centre
        a = c_eff[:, None, None] * wi
        centre = np.where(zero.any(0), (X * zero).sum(0) / np.maximum(zero.sum(0), 1) / np.maximum(wc, 1e-12),
                          (a * X).sum(0) / np.maximum(wc * a.sum(0) - extra, 1e-300))
        dev = (X - wc * centre) * wi
        rest = (extra * centre - (c_eff[:, None, None] * dev).sum(0)) / np.maximum((c_eff[:, None, None] * zero).sum(0), 1e-300)
        dev = np.where(zero, rest, dev)
        h = np.maximum((dev**2 - nv).mean(0), 0.0) - grid[0]  # (grid, g): zero at the consistent tau^2
        spread = np.where(zero, X, -np.inf).max(0) - np.where(zero, X, np.inf).min(0)
        h[(zero.sum(0) > 1) & (spread > 1e-9)] = np.inf  # classes shrunk to centre must agree
        idx = np.argmin(np.abs(h), axis=0)
        cols = np.arange(g)
        d = dev[:, idx, cols]
        js_new = np.clip(1.0 - g * noise_var / np.maximum((d**2).sum(1), 1e-12), 0.0, 1.0)
        done = np.max(np.abs(js_new - js)) < 1e-9
        js = js_new
        if done:
            break
    return (centre[idx, cols] + d) * c_eff[:, None], w[:, idx, cols], pos[:, idx, cols]


def score_gaussian(blob):
    """Per canary ``i``: the log likelihood ratio "in" vs "out" from every release the model file shows.

    Canary ``i`` (background mean profile plus ``s_i A`` on gene ``g_i``,
    class ``canary``) moves release ``j`` by a known ``Delta_ij`` (its own
    clipped row at coordinate ``g_i``, computed from the public canary and
    the model's ``m``, ``mu``). For each release the auditor reads a value
    ``T_ij = Delta_ij in_i + E_ij + noise`` (noise s.d. ``sigma_j``, the DP
    record's ``noise_std``: at ``--max-colluders 0`` exactly the released
    noise); ``E_ij``, the background's and the other canaries' part, is
    known: the background is public and exact, the canaries' common part
    counts with the released canary count ``n_in`` and every other canary's
    own part with its inclusion rate ``n_in / M``. The score is the log
    likelihood ratio of independent Gaussian noises,

        ``sum_j (Delta_ij (T_ij - E_ij) - Delta_ij^2 / 2) / sigma_j^2``,

    so each release's evidence ``T - E`` is weighted by signal / noise
    variance. The releases (model files with ``statistics["released"]``,
    the per-gene noisy sums exactly as revealed, before post-processing):

    * **gene means** (all canaries): the released sum of ``clip(v_i, R_1)``
      at ``g_i``; ``Delta`` = the canary's own part there, about ``A``;
    * **class screen** (model files from before the spreads replaced it;
      all canaries, selected or not: the screen covers every coordinate):
      the canary class's row of the released class sums
      of ``clip(v_i - m, R_2)`` at ``g_i``, ``m`` the model's gene means
      (those the screen was centred by); ``Delta`` about ``R_2`` (the
      canary's deviation, norm about ``A``, is clipped); no background
      record is in the canary class, so ``E`` is the other canaries only;
    * **gene variances** (all canaries): the released sum of
      ``clip(r_i^2, c_v sqrt(D))``, ``r_i = v_i - m`` with the model's gene
      means where the model selected coordinates by these spreads
      (``statistics["variances_centre"]``), else ``v_i - mu_{y_i}`` with its
      class means; ``Delta`` about the whole bound;
    * **class means** (only canaries whose gene was selected): the canary
      class's released sum at ``g_i``, ``Delta`` = the canary's clipped
      ``(v_i - m)_sel`` there (about the whole bound ``c_s sqrt(g)``),
      rebuilt by undoing the de-noising (:func:`_class_sums`); nothing where
      the de-noising set the canary class's deviation to 0;
    * **block moments** (canaries whose gene is in the block): the released
      diagonal entry ``(g_i, g_i)`` of ``sum u u^T`` (``Delta = ||u_i||^2``
      on it, about the whole bound), minus the background's exact part.

    Older model files (no ``statistics["released"]``, no class screen): the
    gene means and gene variances are rebuilt by undoing the generator's
    shrinkage (:func:`_unshrink`, :func:`_rebuilt_variances`), nothing if a
    release was shrunk to its average. Each ``T - E`` has mean ``Delta in``
    and s.d. ``sigma`` (checked against runs with known noise).
    ``score_gaussian.parts`` keeps ``(T - E, Delta, sigma)`` per release for
    diagnosis.
    """
    import numpy as np

    from fedsynth.generators.gaussian import VARIANCE_FLOOR, shrink_towards_mean, to_profile_level
    from fedsynth.privacy.clip import clip_rows

    Xb, yb, _ = background("sparse")
    Xc, s = canaries("sparse")
    dp = _dp(blob)
    sd, bounds = dp["noise_std"], dp["clip_bounds"]
    classes = list(blob["classes"])
    c = classes.index("canary")
    K = len(classes)
    st, sdict = blob["statistics"], blob["state_dict"]
    N = float(dp["n_total"])
    dof = max(N - K, 1.0)
    counts = np.asarray(st["class_counts"], float)
    kept = np.maximum(counts, 1.0)
    c_eff = np.maximum(kept, 2.0 * sd["class counts"])
    p_in = min(max(counts[c], 0.0) / M, 1.0)
    gi = np.arange(M) % G
    m = np.asarray(st["gene_means"], float)
    mu = sdict["class_means"].numpy()
    sel = np.asarray(st["selected"], int)
    Vb, Vc = to_profile_level(Xb), to_profile_level(Xc)
    yb = np.array([classes.index(x) for x in yb])
    parts = {}

    def part(name, T, E, delta, has):
        """T - E = delta in_i + noise, for the canaries with ``has``."""
        parts[name] = (np.where(has, T - E, 0.0), np.where(has, delta, 0.0), sd[name])

    def released_part(name, T, Cb, Cc):
        """A raw per-gene sum ``T = sum_b Cb_b + sum_j in_j Cc_j + noise``, read at each canary's gene.

        ``Cb`` (the background's clipped rows, summed) is known exactly; each
        canary's clipped row is split into the canaries' common part and its
        own, ``Cc_j = base + own_j``: the common part counts with the released
        canary count, every other canary's own part with its inclusion rate.
        """
        base = Cc.mean(0)
        own = Cc - base
        mine = own[np.arange(M), gi]
        E = Cb[gi] + counts[c] * base[gi] + p_in * (own[:, gi].sum(0) - mine)
        part(name, np.asarray(T, float)[gi], E, mine, True)

    rel = st.get("released")
    a_m = a_v = None
    if rel is not None:
        # the per-gene releases as revealed (statistics["released"]): no post-processing to undo
        r1 = bounds["gene means"]
        released_part("gene means", rel["gene means"], clip_rows(Vb, r1).sum(0), clip_rows(Vc, r1))
        if "class screen" in rel:  # the canary class's row: sums of clip(v_i - m, R_2), m the model's gene means
            r2 = bounds["class screen"]
            released_part("class screen", np.asarray(rel["class screen"], float)[c], np.zeros(G + 1),
                          clip_rows(Vc - m, r2))
        # sums of clip(r_i^2): r_i = v_i - m (the spreads, where the class means cover a selection) or
        # v_i - mu_{y_i} (residuals from the model's class means)
        bv = bounds["gene variances"]
        if st.get("variances_centre") == "gene means":
            rb, rc = Vb - m, Vc - m
        else:
            rb, rc = Vb - mu[yb], Vc - mu[c]
        released_part("gene variances", rel["gene variances"], clip_rows(rb**2, bv).sum(0), clip_rows(rc**2, bv))
    else:
        # an older model file: N m = sum of the v rows + noise; a canary adds v_i = vbar_all + s_i A (e_gi - 1/G, 1/G)
        raw, a_m = _unshrink(m[:-1], (sd["gene means"] / N) ** 2)
        if raw is not None:
            own = Vc - Vb.mean(0)  # each canary's part beyond the background mean
            E = Vb.sum(0)[gi] + counts[c] * Vb.mean(0)[gi] + p_in * (own[:, gi].sum(0) - own[np.arange(M), gi])
            part("gene means", N * raw[gi], E, own[np.arange(M), gi], True)
    # class means: the canary class's sum of clip((v - m)_sel) on the selected coordinates
    col = np.full(G + 1, -1)
    col[sel] = np.arange(len(sel))
    has = col[gi] >= 0
    U = clip_rows((Vc - m)[:, sel], bounds["class means"])
    # the generator divides the sums by the clip's share a (8e10e89; 1 in older model files): rebuilt / a, times a
    a = float((st.get("scales") or {}).get("class_mean_clip_factor", 1.0))
    wc = 1.0
    if rel is not None:  # the pooled mean's weight against m's known error (the generator's _combine), as it ran
        s2 = (sd["gene means"] / N) ** 2
        err_m = np.full(G + 1, shrink_towards_mean(np.asarray(rel["gene means"], float)[:-1] / N, s2)[1])
        err_m[-1] = s2 / float(st["scales"]["level_weight"]) ** 2
        var_c = K * (sd["class means"] / a / N) ** 2
        wc = err_m[sel] / (err_m[sel] + var_c)
    sums, w, pos = _class_sums(mu[:, sel] - m[sel], N, c_eff, (sd["class means"] / a / c_eff) ** 2, wc)
    sums = sums * a
    j = np.where(has, col[gi], 0)
    has &= pos[c, j]  # where the de-noising set the canary class's deviation to 0, nothing is left
    own = U[np.arange(M), j]
    part("class means", sums[c, j], p_in * (U[:, j].sum(0) - own), own, has)
    # block moments: diagonal of sum_i u_i u_i^T, u_i = clip(r_i[B]), r_i = v_i - mu_{y_i}
    blk = sdict["block"].numpy()
    bcol = np.full(G + 1, -1)
    bcol[blk] = np.arange(len(blk))
    has_b = bcol[gi] >= 0
    jb = np.where(has_b, bcol[gi], 0)
    Ub = clip_rows((Vc - mu[c])[:, blk], math.sqrt(bounds["block moments"])) ** 2
    Bb = clip_rows((Vb - mu[yb])[:, blk], math.sqrt(bounds["block moments"])) ** 2
    diag = np.diag(sdict["block_covariance"].numpy()) * dof
    own = Ub[np.arange(M), jb]
    part("block moments", diag[jb], Bb.sum(0)[jb] + p_in * (Ub[:, jb].sum(0) - own), own, has_b)
    # older model file: gene variances rebuilt; Q / dof = var + err_var; var shrunk, then floored in Psi
    if rel is None:
        a_v = _rebuilt_variances(part, sdict, st, sd, bounds, Vb, Vc, mu, yb, c, sel, w, kept, c_eff, p_in, a_m, gi,
                                 dof, K, N)
    score = sum((dl * T - dl**2 / 2) / nsd**2 for T, dl, nsd in parts.values())
    info = {k: {"canaries": int((dl != 0).sum()), "mean_abs_signal": float(np.abs(dl[dl != 0]).mean()) if dl.any() else 0.0,
                "noise_sd": nsd, "mean_mu": float(np.abs(dl[dl != 0]).mean() / nsd) if dl.any() else 0.0}
            for k, (T, dl, nsd) in parts.items()}
    info["source"] = "released" if rel is not None else "rebuilt"
    info["shrink"] = {"gene means": a_m, "gene variances": a_v}
    score_gaussian.parts = parts
    return score, info


def _rebuilt_variances(part, sdict, st, sd, bounds, Vb, Vc, mu, yb, c, sel, w, kept, c_eff, p_in, a_m, gi, dof, K, N):
    """Older model files (no ``statistics["released"]``): the gene-variance sums rebuilt from ``Psi`` and ``W``.

    ``diag(Psi) + diag(W W^T)`` is the released variance shrunk (:func:`_unshrink`) and floored;
    un-floored coordinates only, the known error variance of ``mu`` added back. Returns the
    variances' shrinkage weight (``part`` is called only if it is not 0).
    """
    import numpy as np

    from fedsynth.generators.gaussian import VARIANCE_FLOOR
    from fedsynth.privacy.clip import clip_rows

    psi = sdict["residual_variance"].numpy()
    W = sdict["loadings"].numpy()
    d = psi + (W**2).sum(1)
    floored = np.isclose(psi, psi.min(), rtol=1e-9, atol=0)
    if floored.sum() > 1:  # the floor gives mean(var), so the floored values' sum (not their spread)
        d[floored] = ((G + 1) * psi.min() / VARIANCE_FLOOR - d[~floored].sum()) / floored.sum()
    else:
        floored[:] = False
    raw, a_v = _unshrink(d, float(st["variances_noise_sd"]) ** 2)
    if raw is not None:
        err = np.full(G + 1, a_m * (sd["gene means"] / N) ** 2)
        err[-1] = (sd["gene means"] / N) ** 2
        props = kept / kept.sum()
        err[sel] = K * (sd["class means"] / N) ** 2 + props @ (w**2 * ((sd["class means"] / c_eff) ** 2)[:, None])
        Q = (raw + err) * dof
        bound = bounds["gene variances"]
        Qc = clip_rows((Vc - mu[c]) ** 2, bound)
        Qb = clip_rows((Vb - mu[yb]) ** 2, bound).sum(0)
        own = Qc[np.arange(M), gi]
        part("gene variances", Q[gi], Qb[gi] + p_in * (Qc[:, gi].sum(0) - own), own, ~floored[gi])
    return a_v


def _centred_cells(table, codes):
    """Per canary, ``sum_g (table[g, code_ig] - p_g,code_ig * n_g)``: its cells minus what they hold anyway.

    ``p_gk`` is the share of all canaries with code ``k`` at gene ``g`` and
    ``n_g`` the released total of the cells canaries use at ``g``: under
    "out", a canary's cell holds about ``p_gk n_g`` (the other included
    canaries); "in" adds its own 1. Centring cell by cell removes what every
    canary shares, leaving the canary's own +1 per gene, the noise and the
    cross-talk of the patterns.
    """
    import numpy as np

    n_genes, b = table.shape
    gidx = np.arange(n_genes)
    p = np.zeros((n_genes, b))
    for k in range(b):
        p[:, k] = (codes == k).mean(0)
    used = (p > 0) * table
    expect = p * used.sum(1, keepdims=True)
    return (table[gidx[None, :], codes] - expect[gidx[None, :], codes]).sum(1)


def score_dense(model, blob, gen_name: str):
    """Per canary: the released cells it would fill, centred (:func:`_centred_cells`), weighted by 1 / noise variance."""
    import numpy as np

    Xc, _ = canaries(DESIGN[gen_name])
    classes = list(blob["classes"])
    c = classes.index("canary")
    sd = _dp(blob)["noise_std"]
    info = {}
    if gen_name == "marginals":
        probs = np.asarray(model.probs)  # (G, K, b) = max(T, 0) normalised per (gene, class)
        lo, hi, b = model.shape.lo, model.shape.hi, model.shape.bins
        codes = np.clip(((Xc - lo) / (hi - lo) * b).astype(np.int64), 0, b - 1)
        score = _centred_cells(probs[:, c, :], codes)
        info["class x gene histograms"] = {"noise_sd": sd["class x gene histograms"]}
        return score, info
    from fedsynth.generators import pgm as P

    stt = {k: v.numpy() for k, v in blob["state_dict"].items()}
    gp = blob.get("generator_params") if isinstance(blob.get("generator_params"), dict) else {}
    lo, hi = gp.get("range", [0.0, 20.0])
    H = stt["released_histograms"]  # (G, fine cells) over [lo, hi]
    mf = H.shape[1]
    cell = np.clip(np.floor((Xc - lo) / (hi - lo) * mf), 0, mf - 1).astype(np.int64)
    codes = P.discretise(Xc, stt["edges"])
    LG = stt["released_label_gene"]  # (G, C, b)
    names = P.RELEASES
    s_h, s_lg, s_p = sd[names[0]], sd[names[1]], sd[names[2]]
    parts = {names[0]: (H, cell, s_h), names[1]: (LG[:, c, :], codes, s_lg)}
    tree = stt["tree"]
    PT = stt["released_pairs"]
    if len(tree) and len(PT) == len(tree) and s_p > 0:
        b = PT.shape[1]
        parts[names[2]] = (PT.reshape(len(tree), b * b), codes[:, tree[:, 0]] * b + codes[:, tree[:, 1]], s_p)
    # weights: expected own signal / variance of the component across canaries (noise + cross-talk of the
    # patterns, less the signal's own share; the in/out labels are not used). pgm's label x gene codes are nearly binary (its 3 bins have
    # DP quantile edges inside the background), so their cross-talk is far above their noise.
    score = np.zeros(M)
    for name, (table, cd, nsd) in parts.items():
        comp = _centred_cells(table, cd)
        signal = _own_signal(cd, table.shape[1])
        spread = float(comp.std())
        # the spread also holds the signal itself (+signal for the half that is in): variance signal^2 / 4
        resid = math.sqrt(max(spread**2 - signal**2 / 4, (spread / 10) ** 2))
        score = score + signal / resid**2 * comp
        info[name] = {"noise_sd": nsd, "signal": signal, "spread": spread, "noise_and_crosstalk_sd": resid,
                      "weight": signal / resid**2}
    return score, info


def _own_signal(codes, b: int) -> float:
    """Mean over canaries of ``sum_g (1 - p_g,code)``: what one canary adds to its centred score."""
    import numpy as np

    p = np.stack([(codes == k).mean(0) for k in range(b)], axis=1)  # (G, b)
    gidx = np.arange(codes.shape[1])
    return float((1 - p[gidx[None, :], codes]).sum(1).mean())


def score_cell(model_path: Path, gen_name: str):
    from fedsynth.generators.modelfile import load_model

    model, blob = load_model(model_path)
    if DESIGN[gen_name] == "sparse":
        return score_sparse(blob, gen_name)
    return score_dense(model, blob, gen_name)


# ------------------------------------------------------------ runs
def patch_hash() -> str:
    return hashlib.sha256((BENCH / "_broken_site" / "sitecustomize.py").read_bytes()).hexdigest()[:12]


def cell_tag(gen: str, eps: float, build: str, seed: int) -> str:
    return f"{gen}_eps{eps:g}_{'broken' if build != 'correct' else 'correct'}_seed{seed}"


def rescore_cached(r: dict, gen: str, seed: int) -> dict:
    """A cached cell, rescored if the scoring code changed since (the run itself is kept)."""
    outdir = WORK / cell_tag(gen, r["epsilon"], r["build"], seed)
    now = SCORING
    if r.get("key", {}).get("scoring") != now and (outdir / "model.pt").is_file():
        r = score_and_record(r, gen, outdir, seed, dict(r["key"], scoring=now))
    return r


def run_cell(gen: str, eps: float, build: str, seed: int = 0, fresh: bool = False) -> dict:
    from _common import GENERATOR_FILES, code_hash, env1, git_state, shell, write_json

    design = DESIGN[gen]
    data = cell_csv(design, seed)
    tag = cell_tag(gen, eps, build, seed)
    outdir = WORK / tag
    res_path = outdir / "audit.json"
    args = ["--data", data, "--site-column", "site", "--sites", "3", "--label-column", "label",
            "--input-kind", "log", "--holdout", "0", "--split-seed", str(seed), "--epsilon", f"{eps:g}",
            "--delta", f"{DELTA:g}", "--max-colluders", "0", "--generator", gen, "--n-synthetic", "50"]
    cmd = [Path(sys.executable), "-m", "fedsynth", "simulate", *map(str, args), "--outdir", outdir, "--overwrite"]
    env = env1()
    prefix = ""
    if build != "correct":
        env["FEDSYNTH_AUDIT_BREAK"] = "noise10"
        env["PYTHONPATH"] = str(BENCH / "_broken_site") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        prefix = "FEDSYNTH_AUDIT_BREAK=noise10 PYTHONPATH=bench/_broken_site "
    line = prefix + shell(cmd)
    key = {"line": line, "code": code_hash(GENERATOR_FILES[gen]), "patch": patch_hash() if build != "correct" else None,
           "scoring": SCORING, "M": M, "G": G}
    if not fresh and res_path.is_file():
        r = json.loads(res_path.read_text())
        if r.get("key", {}).get("line") == line and r["key"].get("code") == key["code"] and \
                r["key"].get("patch") == key["patch"]:
            if r["key"].get("scoring") != key["scoring"] and (outdir / "model.pt").is_file():
                r = score_and_record(r, gen, outdir, seed, key)  # rescore the cached run
            r["cached"] = True
            return r
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(outdir.parent / f"{tag}.log", "w") as logf:
        proc = subprocess.run([str(x) for x in cmd], cwd=BENCH.parent, env=env, stdout=logf,
                              stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t0
    log_text = (outdir.parent / f"{tag}.log").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"simulate failed ({proc.returncode}): {line}\n" + "\n".join(log_text.splitlines()[-15:]))
    marks = log_text.count("AUDIT BROKEN BUILD")
    if build != "correct" and marks < 3:
        raise RuntimeError(f"broken build not active in all 3 sites ({marks} markers): {line}")
    if build == "correct" and marks:
        raise RuntimeError("a correct-build run saw the broken patch")
    run = json.loads((outdir / "run.json").read_text())
    r = {"generator": gen, "epsilon": eps, "build": build, "seed": seed, "command": line, "wall_seconds": round(wall, 1),
         "broken_markers": marks, "git": git_state(GENERATOR_FILES[gen]),
         "run_dp": {k: (run.get("dp") or {}).get(k) for k in ("epsilon", "epsilon_spent", "epsilon_vs_site", "delta",
                                                              "noise_multipliers", "noise_std")},
         "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": os.getloadavg()}
    r = score_and_record(r, gen, outdir, seed, key)
    write_json(res_path, r)
    return r


def score_and_record(r: dict, gen: str, outdir: Path, seed: int, key: dict) -> dict:
    from _common import write_json

    score, info = score_cell(outdir / "model.pt", gen)
    inc = inclusion(seed)
    r["audit"] = audit_guesses(score, inc)
    r["score_info"] = info
    import numpy as np

    from sklearn.metrics import roc_auc_score

    r["score_auroc"] = float(roc_auc_score(inc, score)) if np.all(np.isfinite(score)) else None
    r["key"] = key
    write_json(outdir / "audit.json", r)
    return r


# ------------------------------------------------------------ report
def render(results: list[dict]) -> str:
    from _common import md_table

    rows = []
    for r in results:
        a = r["audit"]
        b = a["best"]
        claim = r["epsilon"]
        lb = b["eps_lb"]
        flag = ""
        if lb > claim:
            flag = " **above the claim**" if r["build"] == "correct" else " (caught)"
        elif r["build"] != "correct":
            flag = " (not caught)"
        rows.append([r["generator"], f"{claim:g}", r["build"], r["seed"], a["m"], f"{b['r']} (k={b['k']})", b["v"],
                     f"{lb:.2f}{flag}", f"{r['score_auroc']:.3f}" if r.get("score_auroc") is not None else "n/a",
                     f"{r['wall_seconds']:.0f}"])
    hdr = ["generator", "claimed epsilon", "build", "inclusion seed", "m canaries", "guesses r", "correct v",
           "empirical epsilon lower bound (95%)", "score AUROC (in vs out)", "wall s"]
    return md_table(hdr, rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=GENERATORS)
    ap.add_argument("--epsilons", default=",".join(f"{e:g}" for e in EPSILONS))
    ap.add_argument("--builds", default=",".join(BUILDS))
    ap.add_argument("--seeds", default="0", help="inclusion seeds (each a fresh draw of which canaries are in)")
    ap.add_argument("--render", action="store_true", help="run nothing; render every cached cell")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    from _common import OUT, Progress, write_json

    gens = args.only or list(GENERATORS)
    eps_list = [float(e) for e in args.epsilons.split(",")]
    builds = args.builds.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    # per seed, the broken rows first (they show the audit has power), then the correct ones
    todo = [(s, g, b, e) for s in seeds for g in gens for b in builds[::-1] for e in eps_list]
    results = []
    if args.render:
        for s in range(10):
            for g in GENERATORS:
                for b in BUILDS:
                    for e in EPSILONS:
                        res = WORK / cell_tag(g, e, b, s) / "audit.json"
                        if res.is_file():
                            r = json.loads(res.read_text())
                            results.append(rescore_cached(r, g, s))
        todo = []
    prog = Progress(len(todo))
    for s, g, b, e in todo:
        prog.start(f"{g} epsilon={e:g} build={b} inclusion seed={s}")
        try:
            r = run_cell(g, e, b, seed=s, fresh=args.fresh)
        except Exception as ex:  # noqa: BLE001 -- keep going; the table says what is missing
            prog.finish(f"FAILED: {str(ex)[:400]}")
            continue
        results.append(r)
        bst = r["audit"]["best"]
        prog.finish(f"lower bound {bst['eps_lb']:.2f} (claim {e:g}); v={bst['v']}/{bst['r']}; "
                    f"AUROC {r.get('score_auroc')}; {r['wall_seconds']} s{' [cached]' if r.get('cached') else ''}")
        write_json(OUT / "audit_partial.json", {"results": results})
    results.sort(key=lambda r: (r["seed"], GENERATORS.index(r["generator"]), r["epsilon"], r["build"]))
    md = render(results)
    (OUT / "audit.md").write_text(md + "\n")
    write_json(OUT / "audit.json", {"results": results, "command": LINE, "k_guesses": K_GUESSES,
                                    "confidence": CONFIDENCE, "delta": DELTA, "M": M, "G": G, "N_BG": N_BG})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
