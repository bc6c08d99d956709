"""In-process tuning harness for the one-shot generators (issue 12): the product's fit, no sockets.

``fedsynth simulate`` runs every site as a process and sums over CrypTen;
for a one-shot generator the released values only depend on the pooled
sums and the total noise, so tuning can run in one process: the same data
reading, site split and per-site holdout as ``simulate``
(:func:`fedsynth.workflows.simulate.run_simulation`), the product's
:func:`~fedsynth.generators.protocol.plan_releases` and
:class:`~fedsynth.privacy.release.Releaser`, and a stand-in secure sum that
adds the revealed noise of ``k`` sites with the colluder default
(``sqrt(k / (k - t))`` times the planned s.d., as
:meth:`SecureSum.released_noise_std` says). Scored by the pinned TSTR
protocol (:func:`fedsynth.evaluation.utility.tstr`).

For choosing methods only: tune on split seeds >= 100; the figures of
BENCHMARKS.md come from real ``simulate`` runs (bench/high_dim.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/inproc.py --datasets pbmc brca gen1000 --epsilons 1 4 \\
        --seeds 100 101 102 --draws 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from fedsynth.data.io import read_expression  # noqa: E402
from fedsynth.data.preprocess import split_holdout, split_sites, validate_and_normalise  # noqa: E402
from fedsynth.evaluation.utility import tstr  # noqa: E402
from fedsynth.federation.schema import Schema  # noqa: E402
from fedsynth.generators import registry  # noqa: E402
from fedsynth.generators.base import FitContext  # noqa: E402
from fedsynth.generators.protocol import TrainConfig, plan_releases  # noqa: E402
from fedsynth.privacy.release import RECORD_COUNT, Releaser, released_count  # noqa: E402

import high_dim  # noqa: E402


class LocalSum:
    """Stand-in for :class:`~fedsynth.federation.secure_sum.SecureSum`: pooled values plus the revealed noise."""

    def __init__(self, rng, k=3, t=1):
        self.rng, self.k, self.t = rng, k, t

    def released_noise_std(self, total_std):
        return total_std * math.sqrt(self.k / (self.k - self.t)) if total_std > 0 else 0.0

    def sum(self, x, *, noise_std=0.0, step=""):
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
        sd = self.released_noise_std(noise_std)
        return torch.from_numpy(x + (self.rng.normal(0.0, sd, x.shape) if sd > 0 else 0.0))


class Pooled:
    """What ``fit`` reads of a cohort."""

    def __init__(self, X, labels):
        self.X, self.labels, self.n_samples = X, labels, len(X)
        self.library_sizes = None


def load(name, split_seed):
    """(X_train, y_train, X_test, y_test, classes) exactly as ``simulate`` splits ``name``."""
    ds = high_dim.dataset(name)
    raw = read_expression(ds["path"], label_column=ds["label"], meta_columns=tuple(ds["meta"]))
    validate_and_normalise(raw, input_kind="log", label_column=ds["label"])
    labels = raw.labels.astype(str).to_numpy()
    args = ds["args"]
    site_values = raw.meta["site"].astype(str) if "--site-column" in args else None
    sites = int(args[args.index("--sites") + 1])
    mode = "column" if site_values is not None else "dirichlet"
    alpha = float(args[args.index("--alpha") + 1]) if "--alpha" in args else 0.5
    parts = split_sites(raw.expr, labels, mode=mode, n_sites=sites, site_values=site_values, alpha=alpha,
                        seed=split_seed, min_per_site=4)
    tr_all, te_all = [], []
    for _, rows in parts:
        tr, te = split_holdout(len(rows), labels[rows], fraction=0.2, seed=split_seed)
        tr_all.append(rows[tr])
        te_all.append(rows[te])
    tr, te = np.concatenate(tr_all), np.concatenate(te_all)
    X = raw.expr.to_numpy(float)
    return X[tr], labels[tr], X[te], labels[te], sorted(set(labels))


def real_class_means(X, y, classes):
    """The real class means in the gaussian's profile-and-level coordinates (for oracles), and ``y`` as indices.

    A class with no training record gets the pooled mean.
    """
    from fedsynth.generators.gaussian import to_profile_level

    V = to_profile_level(X)
    yi = np.searchsorted(classes, y)
    return np.array([V[yi == k].mean(0) if (yi == k).any() else V.mean(0) for k in range(len(classes))]), yi


def run_one(gen_name, X, y, Xte, yte, classes, eps, rng, n_syn=None, options=None):
    cfg = TrainConfig(generator=gen_name, epsilon=eps or 1.0, no_dp=eps is None, classes=tuple(classes),
                      options=options)
    schema = Schema(genes=[f"g{j}" for j in range(X.shape[1])], classes=list(classes), input_kind="log",
                    site_names=["a", "b", "c"])
    seed = int(rng.integers(1 << 30))
    try:
        ctx = FitContext(seed=seed, epsilon=eps, delta=cfg.delta)
    except TypeError:  # the context of a checkout from before the budget-dependent selection (against_checkout.py)
        ctx = FitContext(seed=seed)
    gen = registry.create(gen_name, cfg.options, ctx)
    from dataclasses import replace

    plan = plan_releases(gen, replace(schema, n_total=len(X)), cfg, final=False)
    rel = Releaser(LocalSum(rng), plan, gen_name)
    count = rel(RECORD_COUNT, [float(len(X))])
    schema = replace(schema, n_total=released_count(count, len(classes)), n_total_sd=count.noise_sd)
    rel.replan(plan_releases(gen, schema, cfg))
    t0 = time.monotonic()
    gen.fit(rel, Pooled(X, y), schema)
    fit_s = time.monotonic() - t0
    props = np.asarray(gen.statistics["class_proportions"], float)
    n = n_syn or len(X)
    ys = rng.choice(len(classes), size=n, p=props / props.sum())
    Xs = gen.sample(ys, rng)
    r = tstr(Xs, np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]
    mean_r = float(np.corrcoef(Xs.mean(0), X.mean(0))[0, 1])  # synthetic vs real training gene means
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "gene_mean_r": mean_r, "fit_s": fit_s, "gen": gen,
            "n_total": schema.n_total}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["pbmc", "brca", "gen1000"])
    ap.add_argument("--generator", default="gaussian")
    ap.add_argument("--epsilons", nargs="+", default=["1"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--draws", type=int, default=2)
    a = ap.parse_args(argv)
    for ds in a.datasets:
        for e in a.epsilons:
            eps = None if e == "nodp" else float(e)
            accs, f1s, mrs = [], [], []
            for s in a.seeds:
                X, y, Xte, yte, classes = load(ds, s)
                for d in range(a.draws):
                    r = run_one(a.generator, X, y, Xte, yte, classes, eps, np.random.default_rng([s, d, 12]))
                    accs.append(r["accuracy"])
                    f1s.append(r["macro_f1"])
                    mrs.append(r["gene_mean_r"])
            print(f"{ds:8s} eps {e:>4s} {a.generator}: acc {np.median(accs):.3f} ({min(accs):.2f}-{max(accs):.2f}) "
                  f"F1 {np.median(f1s):.3f} ({min(f1s):.2f}-{max(f1s):.2f}) gene mean r {np.median(mrs):.3f}  "
                  f"[{len(accs)} runs]", flush=True)


if __name__ == "__main__":
    main()
