"""Generator names -> classes, imported only when asked for.

Adding a generator is one module (a :class:`~fedsynth.generators.base.Generator`
subclass) and one line in :data:`GENERATORS`.
"""

from __future__ import annotations

import importlib

from ..errors import ParameterError

#: name -> (module, class, one-line summary); the first is the default.
GENERATORS: dict[str, tuple[str, str, str]] = {
    "gaussian": ("fedsynth.generators.gaussian", "GaussianGenerator",
                 "class-conditional Gaussian: de-noised class means on the genes of largest DP spread, "
                 "low-rank + diagonal covariance"),
    "cvae": ("fedsynth.generators.cvae", "CVAEGenerator",
             "conditional VAE trained with DP-SGD around DP class anchors"),
    "pgm": ("fedsynth.generators.pgm", "PGMGenerator",
            "Private-PGM on noisy marginals of binned genes and the label"),
    "marginals": ("fedsynth.generators.marginals", "MarginalsGenerator",
                  "independent genes given the class: DP class x gene histograms (a floor for benchmarks)"),
}

DEFAULT = "gaussian"


def names() -> list[str]:
    """The registered generator names, the default first."""
    return list(GENERATORS)


def summary(name: str) -> str:
    """The one-line description of generator ``name``."""
    return GENERATORS[name][2]


def check_name(name: str) -> None:
    """ParameterError unless ``name`` is a registered generator."""
    if name not in GENERATORS:
        raise ParameterError(f"--generator must be one of {', '.join(GENERATORS)} (got {name!r})")


def get(name: str) -> type:
    """The generator class ``name``; ParameterError if unknown or not installed."""
    check_name(name)
    module, cls, _ = GENERATORS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ParameterError(f"--generator {name} is not available in this fedsynth version ({module} is "
                             f"missing); use {', '.join(n for n in GENERATORS if n != name)}") from None
    return getattr(mod, cls)


def create(name: str, config=None, context=None):
    """A new, unfitted generator ``name`` (Opacus' ``create_accountant``)."""
    return get(name)(config, context)
