"""Draw a synthetic cohort from a released model: no other party needed.

Sampling only post-processes the released model, so it costs no privacy.
For ``n`` samples with class proportions ``pi`` (the model's DP estimate,
or the user's):

* labels ``y ~ Categorical(pi)`` (exact counts by largest remainder, in an
  order permuted with ``--seed``),
* log-expression from the model's generator
  (:meth:`~fedsynth.generators.base.Generator.sample`),
* for a model trained on counts, library sizes ``L ~ LogNormal(m, s)`` from
  the DP library-size model (:mod:`fedsynth.privacy.library_size`) and
  counts ``~ Poisson(L * expm1(x) / 1e6)``, the inverse of the log1p-CPM
  normalisation.

For a counts model :func:`synthesize_to` also writes the cohort the way
nf-core/rnaseq and nf-core/differentialabundance exchange it:
``synthetic.gene_counts.tsv`` (``gene_id``, the input's annotation columns
such as ``gene_name``, one column per synthetic sample) and
``synthetic.samplesheet.csv`` (``sample``, the label column under the
input's name, ``synthetic=true``); the ``.h5ad`` holds the counts in
``layers["counts"]`` too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.io import atomic_path, read_gene_annotation, write_table
from ..data.preprocess import LOG1P_CPM_MAX
from ..errors import ParameterError
from ..generators.modelfile import load_model
from ..privacy import library_size


def parse_proportions(text: str | None, classes: list[str]) -> np.ndarray | None:
    """``"LumA=0.5,Basal=0.5"`` -> a probability vector over ``classes``."""
    if not text:
        return None
    props = np.zeros(len(classes))
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in classes:
            raise ParameterError(
                f"--class-proportions: unknown class {name!r}; the model has {', '.join(classes)}"
            )
        try:
            props[classes.index(name)] = float(value)
        except ValueError:
            raise ParameterError(f"--class-proportions: {part!r} is not CLASS=NUMBER") from None
    if (props < 0).any() or props.sum() <= 0:
        raise ParameterError("--class-proportions: proportions must be >= 0 and not all 0")
    return props / props.sum()


def class_counts(n: int, props: np.ndarray) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``props`` (largest remainder)."""
    raw = props * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    return counts


def synthesize(model_path, n: int, *, class_proportions: str | None = None, seed: int = 0):
    """Sample ``n`` synthetic records.

    Returns
    -------
    expr : pandas.DataFrame
        Samples x genes (log-expression, or integer counts for counts models).
    labels : pandas.Series
    meta : dict
        The model file's metadata (genes, classes, DP record, ...).
    """
    if n < 1:
        raise ParameterError(f"--n must be >= 1 (got {n})")
    generator, meta = load_model(model_path)
    classes = list(meta["classes"])
    props = parse_proportions(class_proportions, classes)
    if props is None:
        props = np.asarray(meta["statistics"]["class_proportions"], dtype=float)
    y = np.repeat(np.arange(len(classes)), class_counts(n, props))
    y = y[torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()]
    x = generator.sample(y, type(generator).make_rng(int(seed), n))
    if meta["input_kind"] == "counts":
        rng = np.random.default_rng(int(seed))
        sizes = library_size.sample(meta["statistics"]["log_library_size"], n, rng)
        cpm = np.expm1(np.clip(x, 0.0, LOG1P_CPM_MAX))  # log1p(CPM): no gene above 1e6 CPM
        cpm = cpm / np.maximum(cpm.sum(1, keepdims=True), 1e-12) * 1e6
        x = rng.poisson(cpm * sizes[:, None] / 1e6)
    ids = [f"synthetic_{i + 1:05d}" for i in range(n)]
    expr = pd.DataFrame(x, index=pd.Index(ids, name="sample_id"), columns=meta["genes"])
    labels = pd.Series(np.asarray(classes, dtype=object)[y], index=expr.index, name="label")
    return expr, labels, meta


#: The files :func:`synthesize_to` may write (the last two for counts models only).
OUTPUTS = ("synthetic.csv", "synthetic.h5ad", "synthetic.gene_counts.tsv", "synthetic.samplesheet.csv")


def _annotation_columns(annotation: pd.DataFrame | None, genes: list[str]) -> pd.DataFrame:
    """``gene_id`` (as the input wrote it) and the annotation columns, one row per model gene."""
    frame = pd.DataFrame({"gene_id": genes}, index=pd.Index(genes, dtype=object))
    if annotation is None:
        return frame
    known = annotation.reindex(genes)
    if "input_id" in known.columns:
        frame["gene_id"] = [i if isinstance(i, str) else g for i, g in zip(known["input_id"], genes)]
    for col in known.columns:
        if col != "input_id":
            frame[col] = [v if isinstance(v, str) else "" for v in known[col]]
    return frame


def _check_sheet_label(label_column: str) -> None:
    if label_column in ("sample", "synthetic"):
        raise ParameterError(f"--label-column {label_column!r} is a column synthetic.samplesheet.csv already has; "
                             "choose another name")


def write_gene_counts(expr: pd.DataFrame, labels: pd.Series, out, *, annotation: pd.DataFrame | None = None,
                      label_column: str = "label", overwrite: bool = False) -> tuple:
    """Write ``synthetic.gene_counts.tsv`` and ``synthetic.samplesheet.csv`` (module doc) atomically.

    Parameters
    ----------
    expr : pandas.DataFrame
        Synthetic counts, samples x genes (the model's gene IDs).
    labels : pandas.Series
        One label per sample.
    out : pathlib.Path
        The output folder.
    annotation : pandas.DataFrame, optional
        Gene annotation indexed by gene ID (:func:`fedsynth.data.io.read_gene_annotation`);
        its ``input_id`` column, where present, is written as ``gene_id``.
    label_column : str
        The samplesheet's label column (the input's own name for it).
    """
    _check_sheet_label(label_column)
    table = _annotation_columns(annotation, [str(g) for g in expr.columns])
    counts = pd.DataFrame(np.asarray(expr.to_numpy(), dtype=np.int64).T, columns=[str(i) for i in expr.index])
    matrix = pd.concat([table.reset_index(drop=True), counts], axis=1)
    sheet = pd.DataFrame({"sample": [str(i) for i in expr.index], label_column: [str(v) for v in labels],
                          "synthetic": "true"})
    paths = (out / OUTPUTS[2], out / OUTPUTS[3])
    with atomic_path(paths[0], overwrite=overwrite) as tmp_m, atomic_path(paths[1], overwrite=overwrite) as tmp_s:
        matrix.to_csv(tmp_m, sep="\t", index=False)
        sheet.to_csv(tmp_s, index=False)
    return paths


def synthesize_to(out, model_path, n: int, *, class_proportions: str | None = None, seed: int = 0,
                  label_column: str = "label", overwrite: bool = False, annotation: pd.DataFrame | None = None,
                  annotation_from=None):
    """Sample and write ``OUT/synthetic.csv``, ``OUT/synthetic.h5ad`` and, for counts models, the nf-core pair.

    ``annotation`` (gene annotation by gene ID, e.g. from the site's matrix)
    adds ``gene_name`` and the like to ``synthetic.gene_counts.tsv`` and the
    ``.h5ad``'s ``var``; ``annotation_from`` reads it from a matrix file
    (:func:`~fedsynth.data.io.read_gene_annotation`). Returns what :func:`synthesize` does.
    """
    if annotation_from is not None:
        annotation = read_gene_annotation(annotation_from)
    expr, labels, meta = synthesize(model_path, n, class_proportions=class_proportions, seed=seed)
    dp = meta["dp"]
    # "seed" is synthesize's own --seed, not train's: drawing from a released model is post-processing,
    # so knowing it costs no privacy. Train's --seed is written to no output (TrainConfig.to_dict).
    uns = {"fedsynth": {"private": bool(dp["private"]), "epsilon": float(dp["epsilon"] or -1),
                        "delta": float(dp["delta"]), "max_colluders": int(dp["max_colluders"]),
                        "input_kind": meta["input_kind"], "seed": int(seed)}}
    counts = meta["input_kind"] == "counts"
    if counts:
        _check_sheet_label(label_column)  # before anything is written
    var = None
    if annotation is not None:
        var = _annotation_columns(annotation, [str(g) for g in expr.columns]).rename(columns={"gene_id": "input_id"})
    write_table(expr, labels, out / "synthetic.csv", label_column=label_column, overwrite=overwrite)
    write_table(expr, labels, out / "synthetic.h5ad", label_column=label_column, overwrite=overwrite, uns=uns,
                var=var, layers={"counts": expr.to_numpy(dtype=np.int64)} if counts else None)
    if counts:
        write_gene_counts(expr, labels, out, annotation=annotation, label_column=label_column, overwrite=overwrite)
    return expr, labels, meta
