"""The interface every generator implements.

A generator is a class with a config dataclass of its own (``Config``, its
fields declared with :func:`option`, which is also how they reach the CLI,
Nextflow and Galaxy) and four steps:

1. :meth:`Generator.releases` -- declare every noisy release up front
   (:class:`~fedsynth.privacy.release.ReleaseSpec`), from the public
   schema only; the protocol calibrates them before any data is touched;
2. :meth:`Generator.fit` -- make those releases through the one call
   ``release(name, values) -> Measurement`` and fit the model on the noisy
   values (everything after a release is post-processing);
3. :meth:`Generator.sample` -- log-expression for given class indices;
4. :meth:`Generator.state_dict` / :meth:`Generator.from_state` -- the model
   file's tensors, and the model rebuilt from the file.

Generators never see the session, never size noise and never draw it.
:mod:`fedsynth.generators.protocol` runs the steps at a site.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np

from ..federation.schema import Schema
from ..privacy.release import Releaser, ReleaseSpec


@dataclass(frozen=True)
class OptionInfo:
    """How one config field is offered to users (CLI flag, Nextflow param, Galaxy param).

    ``name`` is the option's name everywhere (``--pgm-bins``, ``params.pgm_bins``,
    Galaxy ``pgm_bins``); ``parse`` turns the CLI's text into the field's
    value and ``format`` back (for values that are not plain numbers,
    strings or flags); ``pattern`` (a regular expression) and
    ``pattern_help`` check text values in the pipeline's schema and in the
    Galaxy form; ``group`` places a shared option in those forms
    (``privacy`` or ``federation``; a generator's own options go with it).
    """

    help: str
    name: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    parse: Callable[[str], Any] | None = None
    format: Callable[[Any], str] | None = None
    label: str | None = None
    pattern: str | None = None
    pattern_help: str | None = None
    group: str | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    #: the pipeline's message for a value its schema refuses (default: the schema checker's own)
    error: str | None = None


def option(default, help: str, **info) -> Any:
    """A config field that is also a user-facing option (see :class:`OptionInfo`)."""
    return field(default=default, metadata={"option": OptionInfo(help=help, **info)})


def option_fields(config_cls) -> list[tuple[str, OptionInfo, Any]]:
    """``(field name, OptionInfo, default)`` of every option field of a config dataclass."""
    out = []
    for f in fields(config_cls):
        info = f.metadata.get("option")
        if info is not None:
            out.append((f.name, info, None if f.default is MISSING else f.default))
    return out


@dataclass(frozen=True)
class FitContext:
    """What a site knows besides its data: name, progress display, seeds.

    ``seed`` is the user's ``--seed`` (``None``: fresh OS randomness);
    ``shared_seed`` is public randomness every site of the session agreed
    on (identical initial weights without ``--seed``).
    """

    site: str = "site"
    progress: bool = False
    seed: int | None = None
    shared_seed: int = 0
    #: the run's budget, public like every option (``None``: ``--no-dp``); a generator may size its
    #: releases by it (never their noise: the plan calibrates that)
    epsilon: float | None = 1.0
    delta: float = 1e-5


class Generator(ABC):
    """Base class of a generator (module doc). Subclasses set the class attributes.

    Attributes
    ----------
    name, summary
        Registry name and the one-line description ``--help`` shows.
    Config
        Dataclass of the generator's own options (fields from :func:`option`).
    stream
        Salt of the sampling random stream (``np.random.default_rng([seed, stream])``).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    stream: ClassVar[int] = 0

    def __init__(self, config=None, context: FitContext | None = None):
        self.config = config if config is not None else self.Config()
        self.context = context or FitContext()
        #: public, post-processed statistics written into the model file (class proportions, ...)
        self.statistics: dict = {}
        #: wall seconds of fit's phases
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------- protocol
    @classmethod
    def validate(cls, config) -> None:
        """Raise :class:`~fedsynth.errors.ParameterError` for a bad option (before any session)."""

    def one_shot_fraction(self) -> float:
        """Share of epsilon for releases with a budget share when one release takes the rest."""
        return 1.0

    @abstractmethod
    def releases(self, schema: Schema) -> list[ReleaseSpec]:
        """Every release :meth:`fit` will make, from public facts only."""

    @abstractmethod
    def fit(self, release: Releaser, cohort, schema: Schema) -> None:
        """Release through ``release(name, values)`` and fit on the noisy values."""

    def check_plan(self, plan) -> None:
        """Look at the calibrated plan before fitting (e.g. warn that the noise is large)."""

    def dp_extra(self) -> dict:
        """Generator-specific entries for the model's ``dp`` record (clip bounds, budget split)."""
        return {}

    def params(self) -> dict:
        """The model file's ``generator_params``: options and what the fit chose."""
        return asdict(self.config)

    # ----------------------------------------------------------- the model
    # Defaults for a generator whose fitted model is ``self.model``: an object with a
    # ``cfg`` dataclass (its shape), ``state_dict()`` (tensors) and ``sample(y, rng)``.
    def sample(self, y: np.ndarray, rng) -> np.ndarray:
        """Log-expression (samples x genes) for class indices ``y``, drawn with ``rng``."""
        return self.model.sample(y, rng)

    @classmethod
    def make_rng(cls, seed: int, n: int):
        """The random source :meth:`sample` draws ``n`` samples with, for ``--seed``."""
        del n
        return np.random.default_rng([int(seed), cls.stream])

    def model_config(self) -> dict:
        """The model's shape (the model file's ``config``)."""
        return asdict(self.model.cfg)

    def state_dict(self) -> dict:
        """The fitted parameters as tensors (the model file's ``state_dict``)."""
        return self.model.state_dict()

    @classmethod
    @abstractmethod
    def from_state(cls, blob: dict) -> "Generator":
        """Rebuild a fitted generator from a model file's content (``config``, ``state_dict``, ``statistics``)."""

    @classmethod
    def restored(cls, config, model, blob: dict) -> "Generator":
        """A fitted generator with ``config`` and ``model``, and the model file's public statistics."""
        gen = cls(config)
        gen.model = model
        gen.statistics = blob.get("statistics", {})
        return gen
