"""Registers the shared fixtures of :mod:`testkit` for every test under tests/.

The helpers live in ``tests/testkit.py`` (imported by name from the test
modules), not here: ``tests/pipeline/conftest.py`` is also a module named
``conftest``, so ``from conftest import ...`` would be ambiguous.
"""

from testkit import *  # noqa: F401,F403  (fixtures)
from testkit import _kill_leftover_processes  # noqa: F401  (autouse fixture)
from testkit import pytest_runtest_call, pytest_runtest_setup  # noqa: F401  (marker check)
