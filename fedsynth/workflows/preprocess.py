"""``fedsynth preprocess``: validate a matrix, optionally hold out a share, write it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.io import write_table
from ..data.preprocess import expression_as_validated, split_holdout
from ..errors import InputError, ParameterError
from .common import load_cohort


def preprocess_file(data, data_kw: dict, *, out, holdout: float = 0.0, holdout_out=None, seed: int = 0,
                    overwrite: bool = False) -> str:
    """Validate ``data``; write it (and a stratified holdout) atomically; returns the summary line."""
    if not 0 <= holdout < 1:
        raise ParameterError(f"--holdout must be in [0, 1) (got {holdout})")
    if (holdout > 0) != (holdout_out is not None):
        raise ParameterError("--holdout and --holdout-out go together")
    cohort, raw = load_cohort(data, data_kw)
    for path in [out] + ([holdout_out] if holdout_out else []):
        if Path(path).exists() and not overwrite:
            raise InputError(f"{path}: file exists; refusing to overwrite it (pass --overwrite)")
    expr = expression_as_validated(raw, cohort.input_kind).loc[cohort.sample_ids, cohort.genes]
    var = None if raw.gene_annotation is None else raw.gene_annotation.reindex(cohort.genes)
    labels = pd.Series(cohort.labels, index=expr.index)
    parts = [(out, np.arange(cohort.n_samples))]
    if holdout > 0:
        train_idx, test_idx = split_holdout(cohort.n_samples, cohort.labels, fraction=holdout, seed=seed)
        parts = [(out, train_idx), (holdout_out, test_idx)]
    uns = {"fedsynth": {"input_kind": cohort.input_kind, "source": str(data), "notes": list(cohort.notes)}}
    for path, rows in parts:
        write_table(expr.iloc[rows], labels.iloc[rows], path, overwrite=overwrite, uns=uns, var=var)
    split = f" ({len(parts[0][1])} kept, {len(parts[1][1])} held out -> {holdout_out})" if holdout > 0 else ""
    return (f"fedsynth preprocess: {cohort.n_samples} samples x {cohort.n_genes} genes, "
            f"{len(set(cohort.labels))} labels, input kind {cohort.input_kind}{split} -> {out}")
