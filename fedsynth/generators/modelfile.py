"""The released model file: one ``torch.save``\\ d dict, any generator.

Keys: ``format``, ``generator`` (its registry name), ``config`` (the
model's shape), ``state_dict`` (tensors), and the metadata of
:func:`~fedsynth.generators.protocol.fit_at_site`: ``genes``, ``classes``,
``input_kind``, ``statistics`` (public, post-processed: class proportions,
library-size model, ...), ``dp`` (the DP record), ``generator_params``,
``train_config``. Files written before generators had a name are ``cvae``.
"""

from __future__ import annotations

import torch

from ..data.io import atomic_path
from ..errors import InputError
from . import registry
from .base import Generator

MODEL_FORMAT = "fedsynth-model-v1"


def save_model(path, generator: Generator, meta: dict) -> None:
    """Write the model file atomically (tensors + sampling info + DP record)."""
    blob = {
        "format": MODEL_FORMAT,
        "generator": generator.name,
        "config": generator.model_config(),
        "state_dict": {k: v.detach().clone() for k, v in generator.state_dict().items()},
        **meta,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def read_model(path) -> dict:
    """The model file's content; InputError if it is not a fedsynth model."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such model file") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: not a readable fedsynth model ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a fedsynth model file (expected format {MODEL_FORMAT})")
    return blob


def load_model(path) -> tuple[Generator, dict]:
    """The fitted generator in a model file, and the file's content."""
    blob = read_model(path)
    name = blob.get("generator", "cvae")
    if name not in registry.GENERATORS:
        raise InputError(f"{path}: written by unknown generator {name!r}; upgrade fedsynth")
    return registry.get(name).from_state(blob), blob
