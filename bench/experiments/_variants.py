"""Shared by the diagnostics that score post-processed variants of one fitted gaussian (levers, off-selection).

``args`` reads ``DATASET EPSILON [FIRST-LAST]`` (split seeds, both included); ``fits`` fits the
default gaussian once per split seed (``inproc.run_one``, noise draw 0: rng ``[seed, 0, 12]``);
``score`` draws a synthetic cohort from a model (labels by the given proportions, rng seed 7, so
every variant of one fit sees the same draws) and scores it with the pinned TSTR protocol
(:func:`fedsynth.evaluation.tstr`, as ``inproc.run_one``); ``summarise`` prints each variant's
medians and its mean paired difference from ``default`` over the split seeds.
"""
import numpy as np

import inproc
from fedsynth.evaluation import tstr


def args(argv, seeds):
    """``(dataset, epsilon, range of split seeds)`` from ``argv``; ``seeds`` (``FIRST-LAST``) by default."""
    first, last = (argv[3] if len(argv) > 3 else seeds).split("-")
    return argv[1], float(argv[2]), range(int(first), int(last) + 1)


def fits(dataset, epsilon, seeds):
    """Per split seed: ``s``, the split ``(X, y, Xte, yte, classes)`` and the default's fit (``run_one``'s result)."""
    for s in seeds:
        split = inproc.load(dataset, s)
        yield s, split, inproc.run_one("gaussian", *split, epsilon, np.random.default_rng([s, 0, 12]))


def score(model, props, n, classes, Xte, yte, seed=7):
    """(accuracy, macro-F1) of the pinned TSTR on ``n`` records sampled from ``model``."""
    rng = np.random.default_rng(seed)
    ys = rng.choice(len(classes), size=n, p=props)
    Xs = model.sample(ys, rng)
    sc = tstr(Xs, np.asarray(classes)[ys], Xte, yte, models=("logreg",))["tstr"]["logreg"]
    return sc["accuracy"], sc["macro_f1"]


def summarise(R, base="default"):
    """Per variant: median accuracy and macro-F1, and the mean paired difference from ``base`` (+- s.e.)."""
    b = np.array(R[base])
    for k, v in R.items():
        d = np.array(v) - b
        print("%-10s acc %.3f f1 %.3f   paired d acc %+.3f d f1 %+.3f +- %.3f" % (
            k, *np.median(v, 0), d[:, 0].mean(), d[:, 1].mean(), d[:, 1].std(ddof=1) / np.sqrt(len(d))))
