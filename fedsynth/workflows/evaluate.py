"""``fedsynth evaluate``: score a synthetic cohort on this site's own real data.

The model file is read here only for its DP record, which the report shows
beside the attacks; the scoring itself is :mod:`fedsynth.evaluation`.
"""

from __future__ import annotations

from ..evaluation import evaluate_files
from ..generators.modelfile import read_model


def evaluate_site(synthetic, train, holdout, *, model=None, outdir, **kw) -> dict:
    """:func:`fedsynth.evaluation.evaluate_files` with the DP record of ``model`` (a model.pt path, optional)."""
    blob = read_model(model) if model else None
    dp = {"generator": blob.get("generator", "cvae"), **blob["dp"]} if blob and blob.get("dp") is not None else None
    return evaluate_files(synthetic, train, holdout, outdir=outdir, dp=dp, **kw)
