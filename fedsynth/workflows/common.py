"""What every workflow needs: read one matrix with the data options, prepare an output folder."""

from __future__ import annotations

from pathlib import Path

from ..data.io import read_expression
from ..data.preprocess import validate_and_normalise
from ..errors import InputError, ParameterError


def read_options(data_kw: dict) -> dict:
    """The :func:`~fedsynth.data.io.read_expression` keywords from the data options."""
    if not data_kw.get("label_column") and not data_kw.get("labels_file"):
        raise ParameterError("give --label-column (with --samplesheet: its column) or --labels-file")
    meta = data_kw.get("meta_columns") or ()
    if isinstance(meta, str):
        meta = tuple(c for c in meta.split(",") if c)
    return {"label_column": data_kw.get("label_column"), "labels_file": data_kw.get("labels_file"),
            "samplesheet": data_kw.get("samplesheet"), "layer": data_kw.get("layer"),
            "orientation": data_kw.get("orientation", "auto"), "meta_columns": tuple(meta),
            "sample_id_column": data_kw.get("sample_id_column")}


def load_cohort(path, data_kw: dict, *, min_samples: int = 2):
    """Read and validate one matrix with the data options; returns ``(cohort, raw table)``."""
    raw = read_expression(path, **read_options(data_kw))
    return validate_and_normalise(raw, input_kind=data_kw.get("input_kind", "log"),
                                  label_column=data_kw.get("label_column") or "label", min_samples=min_samples), raw


def prepare_outdir(outdir, names, overwrite: bool) -> Path:
    """Create ``outdir``; refuse to overwrite existing outputs unless asked."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [n for n in names if (out / n).exists()]
        if clash:
            raise InputError(f"{out}: already holds {', '.join(clash)}; choose another --outdir or pass --overwrite")
    return out
