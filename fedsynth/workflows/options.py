"""The training options, declared once.

Every option lives as a field of a config dataclass, declared with
:func:`fedsynth.generators.base.option`: the options all generators share
in :class:`~fedsynth.generators.protocol.TrainConfig`, each generator's own
in its ``Config``. :func:`train_options` reads them into one table, from
which come

* the ``fedsynth train`` / ``simulate`` command-line options (:mod:`fedsynth.cli`),
* :class:`~fedsynth.generators.protocol.TrainConfig` (:func:`train_config`)
  and the arguments ``simulate`` hands each site process (:func:`to_args`),
* the run record's ``options`` (:func:`record`),
* the parts of ``nextflow_schema.json``, ``nextflow.config``,
  ``conf/modules.config`` and the Galaxy ``macros.xml`` that list options or
  generators (:mod:`fedsynth.workflows.surfaces`, checked by a test).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import ParameterError
from ..generators import registry
from ..generators.base import OptionInfo, option_fields
from ..generators.protocol import TrainConfig


@dataclass(frozen=True)
class Option:
    """One row of the table: a config field offered to users.

    ``kind`` is ``"int"``, ``"float"``, ``"str"`` (text, parsed by
    ``info.parse`` when set) or ``"flag"`` (a boolean switch).
    """

    name: str
    field: str
    owner: str | None
    kind: str
    default: Any
    info: OptionInfo

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def help(self) -> str:
        return self.info.help

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self.info.choices

    def text(self, value) -> str | None:
        """``value`` as the command line writes it (None: leave the option out)."""
        if value is None:
            return None
        if self.info.format is not None:
            return self.info.format(value)
        return str(value)

    def parse(self, value):
        """The field's value from the command line's (text, or already typed)."""
        if self.info.parse is not None and isinstance(value, str):
            return self.info.parse(value)
        return value


def _kind(hint, info: OptionInfo) -> str:
    if info.parse is not None:
        return "str"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    return {bool: "flag", int: "int", float: "float", str: "str"}.get(base, "str")


def _rows(config_cls, owner: str | None) -> list[Option]:
    hints = typing.get_type_hints(config_cls)
    return [Option(info.name or name, name, owner, _kind(hints[name], info), default, info)
            for name, info, default in option_fields(config_cls)]


@lru_cache(maxsize=1)
def train_options() -> tuple[Option, ...]:
    """Every training option: the shared ones, then each generator's, in registry order."""
    rows = _rows(TrainConfig, None)
    for name in registry.names():
        rows += _rows(registry.get(name).Config, name)
    seen: dict[str, Option] = {}
    for row in rows:
        if row.name in seen:
            raise RuntimeError(f"option {row.name!r} declared twice ({seen[row.name].owner} and {row.owner})")
        seen[row.name] = row
    return tuple(rows)


def by_name() -> dict[str, Option]:
    """The table as a dict by option name."""
    return {o.name: o for o in train_options()}


def train_config(values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from option values by name (text or typed; ``None``: the default)."""
    table = by_name()
    parsed = {}
    for name, value in values.items():
        if name in table and value is not None:
            parsed[name] = table[name].parse(value)
    if "generator" in parsed:
        registry.check_name(parsed["generator"])
    try:
        return TrainConfig.from_options(parsed)
    except (TypeError, ValueError) as e:  # a value of the wrong shape that parse let through
        raise ParameterError(f"training options: {e}") from None


def to_args(cfg: TrainConfig) -> list[str]:
    """The ``fedsynth train`` arguments that carry ``cfg`` (shared options and the chosen generator's)."""
    args: list[str] = []
    for opt in train_options():
        if opt.owner not in (None, cfg.generator):
            continue
        value = getattr(cfg if opt.owner is None else cfg.options, opt.field)
        if opt.kind == "flag":
            if value:
                args.append(opt.flag)
            continue
        text = opt.text(value)
        if text is not None and text != "":
            args += [opt.flag, text]
    return args


#: options whose value no output records (only whether one was given: ``<name>_given``)
UNRECORDED = ("seed",)


def record(cfg: TrainConfig) -> dict:
    """The run record's ``options``: every shared option and the generator's own, by name.

    ``--seed`` is left out (``seed_given`` says whether there was one), as in
    the model file (:meth:`TrainConfig.to_dict`); so are site-local settings
    (the lifetime ledger's folder: run.json's ``lifetime`` reports the spend).
    """
    out = {}
    for opt in train_options():
        if opt.info.group == "site":
            continue
        if opt.owner in (None, cfg.generator):
            value = getattr(cfg if opt.owner is None else cfg.options, opt.field)
            if opt.name in UNRECORDED:
                out[f"{opt.name}_given"] = value is not None
                continue
            out[opt.name] = list(value) if isinstance(value, tuple) else value
    return out
