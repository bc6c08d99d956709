"""A deliberately broken build for bench/audit.py (never part of fedsynth).

bench/audit.py puts this folder on PYTHONPATH of one ``fedsynth simulate``
(and so of its site processes, which inherit the environment) and sets
``FEDSYNTH_AUDIT_BREAK=noise10``. Python imports ``sitecustomize`` at
start-up; this one then arranges that, once
``fedsynth.federation.secure_sum`` is imported (from wherever ``python -m
fedsynth`` finds it: not imported here, so the working tree's fedsynth is
the one patched), the ``noise_std`` every site passes to
:meth:`fedsynth.federation.secure_sum.SecureSum.sum` is divided by 10,
while the accountant, the model file and run.json still claim the
configured epsilon. Any other value of the variable (or none) leaves the
product untouched.
"""

import os
import sys

TARGET = "fedsynth.federation.secure_sum"


def _patch(module) -> None:
    orig = module.SecureSum.sum

    def broken_sum(self, x, *, noise_std=0.0, step):
        return orig(self, x, noise_std=noise_std / 10.0, step=step)

    module.SecureSum.sum = broken_sum
    if "train" in sys.argv:
        print(f"AUDIT BROKEN BUILD: SecureSum.sum noise_std / 10 in this site process ({module.__file__})",
              file=sys.stderr, flush=True)


class _Hook:
    """A meta-path finder that patches TARGET right after it is executed."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        orig_exec = loader.exec_module

        def exec_module(module):
            orig_exec(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


if os.environ.get("FEDSYNTH_AUDIT_BREAK") == "noise10":
    sys.meta_path.insert(0, _Hook())
