"""The one place that maps ``--generator`` to code.

Each generator is a module with three functions:

* ``train(session, cohort, cfg, *, progress) -> TrainResult``: this site's
  part of a run (schema agreement, budget plan, secure sums, fit);
  ``TrainResult.model`` has ``.cfg`` (a dataclass) and ``.state_dict()``
  (tensors), and ``TrainResult.meta`` the sampling info and DP record;
* ``load(blob) -> model``: rebuild the model from a model file's content;
* ``sample(model, meta, y, gen, seed) -> ndarray``: log-expression
  (samples x genes) for class indices ``y``; ``gen`` is the
  ``torch.Generator`` :mod:`fedsynth.synthesize` seeded with ``seed`` and
  drew the label order from (use either); counts models' counts are drawn
  from it by :mod:`fedsynth.synthesize`.

To add one, write the module and add a line to :data:`GENERATORS` (the
function names default to ``train``, ``load``, ``sample``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from .errors import InputError, ParameterError


@dataclass(frozen=True)
class Generator:
    name: str
    module: str
    summary: str
    train: str = "train"
    load: str = "load"
    sample: str = "sample"


GENERATORS = {
    "cvae": Generator("cvae", "fedsynth.generators", "conditional VAE trained with DP-SGD around DP class "
                      "anchors", train="train_cvae", load="load_cvae", sample="sample_cvae"),
    "gaussian": Generator("gaussian", "fedsynth.gaussian", "class-conditional Gaussian, low-rank + diagonal "
                          "covariance from DP-PCA (--components)", train="train_gaussian"),
    "pgm": Generator("pgm", "fedsynth.pgm", "Private-PGM on noisy marginals of binned genes and the label"),
}

HELP = "Generator: " + "; ".join(f"{g.name}: {g.summary}" for g in GENERATORS.values()) + "."


def check_name(name: str) -> None:
    if name not in GENERATORS:
        raise ParameterError(f"--generator must be one of {', '.join(GENERATORS)} (got {name!r})")


def module(name: str):
    """The module implementing generator ``name``; ParameterError if unknown or not installed."""
    check_name(name)
    spec = GENERATORS[name]
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as e:
        if e.name != spec.module:
            raise
        raise ParameterError(f"--generator {name} is not available in this fedsynth version "
                             f"({spec.module} is missing); use {', '.join(n for n in GENERATORS if n != name)}") from None


def train(session, cohort, cfg, *, progress: bool = True):
    """Run this site's part of the protocol of ``cfg.generator``."""
    mod = module(cfg.generator)
    return getattr(mod, GENERATORS[cfg.generator].train)(session, cohort, cfg, progress=progress)


def kind(blob: dict) -> str:
    """The generator a model file was written by (files before generators existed: cvae)."""
    return blob.get("generator", "cvae")


def load(blob: dict, path="model"):
    name = kind(blob)
    if name not in GENERATORS:
        raise InputError(f"{path}: written by unknown generator {name!r}; upgrade fedsynth")
    return getattr(module(name), GENERATORS[name].load)(blob)


def sample(model, meta: dict, y: np.ndarray, gen, seed: int) -> np.ndarray:
    """Log-expression samples for class indices ``y`` from any generator's model."""
    name = kind(meta)
    return getattr(module(name), GENERATORS[name].sample)(model, meta, y, gen, seed)


# ------------------------------------------------------------ cvae adapter
def train_cvae(session, cohort, cfg, *, progress: bool = True):
    from .train import train_site

    result = train_site(session, cohort, cfg, progress=progress)
    result.meta = {"generator": "cvae",
                   "generator_params": {"latent_dim": cfg.latent_dim, "hidden_dim": cfg.hidden_dim,
                                        "stats_fraction": cfg.stats_fraction},
                   **result.meta}
    return result


def load_cvae(blob: dict):
    from .model import CVAE, CVAEConfig

    model = CVAE(CVAEConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model


def sample_cvae(model, meta: dict, y: np.ndarray, gen, seed: int) -> np.ndarray:
    """``x = l + a_y + f(z, y) + exp(v(y)/2) e`` (see :mod:`fedsynth.synthesize`)."""
    import torch

    onehot = torch.nn.functional.one_hot(torch.tensor(y), len(meta["classes"])).float()
    u = model.sample(onehot, gen).double().numpy()
    st = meta["statistics"]
    return np.asarray(st["class_anchors"])[y] + u + st["mean_level"]

