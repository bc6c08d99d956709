"""Shared by the diagnostics that score post-processed variants of one fitted gaussian (levers, off-selection).

``score`` draws a synthetic cohort from a model (labels by the given proportions, rng seed 7, so
every variant of one fit sees the same draws) and scores it with the pinned TSTR protocol
(:func:`fedsynth.evaluation.tstr`, as ``inproc.run_one``); ``summarise`` prints each variant's
medians and its mean paired difference from ``default`` over the split seeds.
"""
import numpy as np

from fedsynth.evaluation import tstr


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
