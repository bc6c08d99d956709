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
  label ``canary``. Its centred deviation has norm ~A, above the class-mean
  and residual clip bounds, so in the released class-mean sums it adds
  ``s_i R_2`` on coordinate ``i`` and in the second moments ``R_3^2`` on
  diagonal entry ``(i, i)``; it also adds ``s_i A`` to the gene-mean sum.
  Score: the noise-weighted sum of the three (the likelihood-ratio
  statistic for Gaussian noise), the class-mean term corrected for the
  other canaries' reaction to the gene-mean noise (:func:`score_sparse`).
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
    """Per canary: noise-weighted evidence from gene means, class means (and for gaussian the diagonal)."""
    import numpy as np

    Xb, _, _ = background("sparse")
    _, s = canaries("sparse")
    dp = _dp(blob)
    sd = dp["noise_std"]
    classes = list(blob["classes"])
    c = classes.index("canary")
    st = blob["statistics"]
    n_in_hat = max(float(st["class_counts"][c]), 1.0)
    gi = np.arange(M) % G
    # background mean in the generator's coordinates (row-centred profile; level = row mean)
    prof_b = Xb - Xb.mean(1, keepdims=True)
    vbar = prof_b.mean(0)
    if gen_name == "gaussian":
        m_vec = np.asarray(st["gene_means"], float)[:G]
        mu = blob["state_dict"]["class_means"].numpy()[c, :G]
        r1, r2, r3 = st["clip_bounds"]
        count_div = max(n_in_hat, 2.0 * sd["class counts"])
        S = (mu - m_vec) * count_div
        cov = blob["state_dict"]["covariance"].numpy()
        n_total = float(sum(x for x in st["class_counts"]))
        dof = max(n_total - len(classes), 1.0)
        diag = np.diag(cov)[:G] * dof
    else:  # cvae
        m_vec = np.asarray(st["mean_profile"], float)
        anchors = np.asarray(st["class_anchors"], float)[c]
        r1, r2 = st["clip_bounds"]
        count_div = max(n_in_hat, 2.0 * sd["class counts"])
        S = (anchors - m_vec) * count_div
        diag = None
    n_total = float(sum(st["class_counts"]))
    # gene-mean sum minus its background part: s_i A in_i + noise (coordinate g_i)
    T0 = s * (n_total * (m_vec[gi] - vbar[gi]))
    # class-mean sum, corrected for the other canaries' deviation (vbar - m) scaled by R2 / A
    T1 = s * (S[gi] + n_in_hat * r2 / SPIKE * (m_vec[gi] - vbar[gi]))
    parts = {"gene means": (T0, SPIKE * (1 - 1 / G), sd["gene means"]),
             "class means": (T1, r2, sd["class means"])}
    if diag is not None:
        parts["second moments"] = (diag[gi] - np.median(diag[gi]), r3**2, sd["second moments"])
    score = sum(sig / nsd**2 * T for T, sig, nsd in parts.values())
    return score, {k: {"signal": sig, "noise_sd": nsd, "snr": sig / nsd} for k, (T, sig, nsd) in parts.items()}


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
    now = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
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
           "scoring": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12], "M": M, "G": G}
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
