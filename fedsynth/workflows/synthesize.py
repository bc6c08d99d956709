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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.io import write_table
from ..errors import ParameterError
from ..generators.modelfile import load_model


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
        lib = meta["statistics"]["log_library_size"]
        sizes = np.exp(rng.normal(lib["mean"], lib["sd"], size=n))
        cpm = np.clip(np.expm1(x), 0.0, None)
        cpm = cpm / np.maximum(cpm.sum(1, keepdims=True), 1e-12) * 1e6
        x = rng.poisson(cpm * sizes[:, None] / 1e6)
    ids = [f"synthetic_{i + 1:05d}" for i in range(n)]
    expr = pd.DataFrame(x, index=pd.Index(ids, name="sample_id"), columns=meta["genes"])
    labels = pd.Series(np.asarray(classes, dtype=object)[y], index=expr.index, name="label")
    return expr, labels, meta


def synthesize_to(out, model_path, n: int, *, class_proportions: str | None = None, seed: int = 0,
                  label_column: str = "label", overwrite: bool = False):
    """Sample and write ``OUT/synthetic.csv`` and ``OUT/synthetic.h5ad``; returns what :func:`synthesize` does."""
    expr, labels, meta = synthesize(model_path, n, class_proportions=class_proportions, seed=seed)
    dp = meta["dp"]
    # "seed" is synthesize's own --seed, not train's: drawing from a released model is post-processing,
    # so knowing it costs no privacy. Train's --seed is written to no output (TrainConfig.to_dict).
    uns = {"fedsynth": {"private": bool(dp["private"]), "epsilon": float(dp["epsilon"] or -1),
                        "delta": float(dp["delta"]), "max_colluders": int(dp["max_colluders"]),
                        "input_kind": meta["input_kind"], "seed": int(seed)}}
    write_table(expr, labels, out / "synthetic.csv", label_column=label_column, overwrite=overwrite)
    write_table(expr, labels, out / "synthetic.h5ad", label_column=label_column, overwrite=overwrite, uns=uns)
    return expr, labels, meta
