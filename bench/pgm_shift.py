"""Why ``--generator pgm`` values are shifted at epsilon 1, and the posterior bin geometry that fixes it.

In-process reproduction of the federated pgm run on the 3 largest sites of
data/brca_pam50_sites.csv (50 PAM50 genes). SecureSum is exact, so the pooled
tables plus Gaussian noise of the protocol's std (``pgm.plan``; sensitivity
``sqrt(G)`` for the edges and label x gene releases, ``sqrt(G - 1)`` for the
tree pairs) have the same distribution as the federation's releases. Scored
as bench does: :func:`fedsynth.evaluation.tstr` (StandardScaler fitted on the
synthetic data + LogisticRegression), on the sites' stratified holdouts.

Bin geometries compared (release 1 is the same noisy histogram ``H~``):

* ``dp``: :func:`fedsynth.generators.pgm.bin_geometry` (isotonic noisy CDF, quantiles).
* ``posterior``: per gene the posterior mean of a clipped, discretised normal
  ``N(mu, sd^2)`` given ``H~_g``, with the release's exact Gaussian likelihood
  ``log p(H~_g | mu, sd) = -||H~_g - n pi(mu, sd)||^2 / (2 s^2)`` (``s`` the
  known noise std, ``pi_j`` the probability of cell ``j``, end cells taking
  the tails), prior on ``mu`` the pooled histogram ``sum_g H~_g`` clipped at
  0 (spread uniformly within its cells) and flat on ``log sd`` in
  ``[0.5, 4]``. Edges and medians are the normal quantiles at ``k / (2b)``,
  end bins bounded symmetrically around their medians as in ``pgm``. Only a
  function of the released histogram and of public constants: no new
  release, no extra privacy loss.
* ``oracle``: non-private empirical quantiles (upper bound).

Usage (one core; ~20 s per Private-PGM fit)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/pgm_shift.py --seeds 100-105
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from _common import largest_sites, read_table, site_holdout  # noqa: E402
from fedsynth.generators import pgm  # noqa: E402
from fedsynth.evaluation import tstr  # noqa: E402


def end_bounds(edges, medians, lo, hi):
    """Bin value bounds ``(G, b+1)``: the edges, end bins symmetric around their medians (as pgm)."""
    lower = np.clip(2 * medians[:, :1] - edges[:, :1], lo, hi)
    upper = np.clip(2 * medians[:, -1:] - edges[:, -1:], lo, hi)
    return np.concatenate([np.minimum(lower, edges[:, :1]), edges, np.maximum(upper, edges[:, -1:])], axis=1)


def oracle_geometry(X, b, lo, hi):
    """Non-private: the data's own quantiles at ``k / (2b)``."""
    q = np.quantile(X, np.arange(1, 2 * b) / (2 * b), axis=0).T
    return {"edges": q[:, 1::2], "medians": q[:, 0::2], "bounds": end_bounds(q[:, 1::2], q[:, 0::2], lo, hi)}


def posterior_geometry(hist, n, lo, hi, b, noise_std, mu_step=0.05, sd_range=(0.5, 4.0), n_sd=30):
    """Posterior-mean normal per gene from the noisy histograms ``(G, m)`` (see the module docstring)."""
    g, m = hist.shape
    t = np.linspace(lo, hi, m + 1)
    t[0], t[-1] = -np.inf, np.inf  # values outside [lo, hi] are clipped into the end cells
    mus = np.arange(lo + mu_step / 2, hi, mu_step)
    sds = np.exp(np.linspace(math.log(sd_range[0]), math.log(sd_range[1]), n_sd))
    MU, SD = (a.ravel() for a in np.meshgrid(mus, sds, indexing="ij"))
    E = n * np.diff(norm.cdf((t[None, :] - MU[:, None]) / SD[:, None]), axis=1)  # (K, m) expected counts
    sse = (hist ** 2).sum(1)[:, None] - 2 * hist @ E.T + (E ** 2).sum(1)[None, :]
    pooled = np.clip(hist.sum(0), 0.0, None) + 1e-9
    cell = np.clip(np.floor((MU - lo) / (hi - lo) * m), 0, m - 1).astype(int)
    logp = -sse / (2 * noise_std ** 2) + np.log(pooled / pooled.sum())[cell][None, :]
    w = np.exp(logp - logp.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    mu, sd = w @ MU, np.exp(w @ np.log(SD))
    q = np.clip(mu[:, None] + sd[:, None] * norm.ppf(np.arange(1, 2 * b) / (2 * b))[None, :], lo, hi)
    return {"edges": q[:, 1::2], "medians": q[:, 0::2], "bounds": end_bounds(q[:, 1::2], q[:, 0::2], lo, hi)}


def run_one(Xtr, ytr, Xte, yte, classes, cfg, z, geometry, hist, rng, seed):
    """Releases 2-3 (pooled + protocol noise), Private-PGM fit, sampling, uniform decode; TSTR logreg."""
    g, b, c = Xtr.shape[1], cfg.bins, len(classes)
    codes = pgm.discretise(Xtr, geometry["edges"])
    sd_marg = z[pgm.RELEASES[1]] * math.sqrt(g)
    marg = pgm.label_gene_tables(codes, ytr, c, b) + rng.normal(0.0, sd_marg, (g, c, b))
    pairs = pgm.choose_tree(marg)
    sd_pair = z[pgm.RELEASES[2]] * math.sqrt(len(pairs))
    ptabs = pgm.pair_tables(codes, pairs, b) + rng.normal(0.0, sd_pair, (len(pairs), b, b))
    f = pgm.fit(marg, sd_marg, pairs, ptabs, sd_pair, len(ytr), cfg.iters)
    state = {"phi": f["phi"], "psi": f["psi"], "tree": np.asarray(pairs, dtype=np.int64).reshape(-1, 2)}
    p_y = pgm.conditionals(state["phi"], state["psi"], state["tree"])["label"]
    srng = np.random.default_rng([seed, 11])
    ys = srng.choice(c, size=len(ytr), p=p_y)
    Xs = pgm.decode(pgm.sample_codes(state, ys, srng), geometry["bounds"], srng)
    names = np.asarray(classes)
    t = tstr(Xs, names[ys], Xte, names[yte], models=("logreg",), seed=seed)["tstr"]["logreg"]
    shift = np.abs(Xs.mean(0) - Xtr.mean(0))
    return {"macro_f1": t["macro_f1"], "accuracy": t["accuracy"], "median_shift": float(np.median(shift)),
            "max_shift": float(shift.max())}


def parse_seeds(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="100-105", help="split seeds, e.g. 100-105 or 100,101")
    ap.add_argument("--draws", type=int, default=1, help="noise draws per split seed")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--fine-bins", type=int, default=12, help="m for the posterior geometry (dp uses pgm's default)")
    ap.add_argument("--geometries", default="dp,posterior,oracle")
    args = ap.parse_args(argv)
    raw = read_table()
    names = largest_sites(raw, 3)
    X = raw.expr.to_numpy().astype(np.float64)
    lab = raw.labels.astype(str).to_numpy()
    classes = sorted(set(lab))
    y = np.array([classes.index(v) for v in lab])
    lo, hi = pgm.PUBLIC_RANGE["log"]
    rows = {}
    for seed in parse_seeds(args.seeds):
        tr, te = site_holdout(raw, names, seed)
        Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
        for d in range(args.draws):
            for geo_name in args.geometries.split(","):
                cfg = pgm.PGMConfig(fine_bins=args.fine_bins if geo_name == "posterior" else pgm.PGMConfig.fine_bins)
                z = pgm.plan(cfg, args.epsilon, 1e-5, "log")
                rng = np.random.default_rng([seed, d, cfg.fine_bins])
                s = z[pgm.RELEASES[0]] * math.sqrt(X.shape[1])
                hist = pgm.fine_histograms(Xtr, lo, hi, cfg.fine_bins) + rng.normal(0.0, s, (X.shape[1], cfg.fine_bins))
                geo = {"dp": lambda: pgm.bin_geometry(hist, len(ytr), lo, hi, cfg.bins),
                       "posterior": lambda: posterior_geometry(hist, len(ytr), lo, hi, cfg.bins, s),
                       "oracle": lambda: oracle_geometry(Xtr, cfg.bins, lo, hi)}[geo_name]()
                r = run_one(Xtr, ytr, Xte, yte, classes, cfg, z, geo, hist, rng, seed)
                rows.setdefault(geo_name, []).append(r)
                print(f"seed {seed} draw {d} {geo_name:9s} m={cfg.fine_bins:2d} macro-F1 {r['macro_f1']:.3f} "
                      f"acc {r['accuracy']:.3f} |shift| median {r['median_shift']:.2f} max {r['max_shift']:.2f}",
                      flush=True)
    print("\ngeometry   runs  macro-F1 mean (sd)   accuracy mean (sd)   |shift| median / max (medians)")
    for k, v in rows.items():
        f = np.array([r["macro_f1"] for r in v])
        a = np.array([r["accuracy"] for r in v])
        print(f"{k:9s} {len(v):5d}  {f.mean():.3f} ({f.std():.3f})       {a.mean():.3f} ({a.std():.3f})"
              f"        {np.median([r['median_shift'] for r in v]):.2f} / {np.median([r['max_shift'] for r in v]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
