"""Draw a synthetic cohort from a released model: no other party needed.

Sampling only post-processes the released model, so it costs no privacy.
For ``n`` samples with class proportions ``pi`` (the model's DP estimate,
or the user's):

* labels ``y ~ Categorical(pi)`` (exact counts by largest remainder),
* log-expression from the model's generator (:mod:`fedsynth.generators`);
  for the CVAE ``x = l + a_y + f(z, y) + exp(v(y)/2) * e``, ``z, e ~ N(0, I)``:
  the DP mean level ``l``, the DP class anchor ``a_y`` and the CVAE's
  residual (see :mod:`fedsynth.train`); for the Gaussian
  ``x = A (mu_y + W z + Psi^{1/2} e)`` (see :mod:`fedsynth.gaussian`);
* for a model trained on counts, library sizes ``L ~ LogNormal(m, s)`` from
  the DP library-size statistics and counts ``~ Poisson(L * expm1(x) / 1e6)``,
  the inverse of the log1p-CPM normalisation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .errors import ParameterError
from .generators import sample
from .model import load_model


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
    model, meta = load_model(model_path)
    classes = list(meta["classes"])
    props = parse_proportions(class_proportions, classes)
    if props is None:
        props = np.asarray(meta["statistics"]["class_proportions"], dtype=float)
    counts = class_counts(n, props)
    y = np.repeat(np.arange(len(classes)), counts)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).numpy()
    y = y[perm]
    x = sample(model, meta, y, gen, int(seed))
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
