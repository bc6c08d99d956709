"""Workflows: what each ``fedsynth`` command does, composed from the layers below.

The command line (:mod:`fedsynth.cli`), the Nextflow modules and the Galaxy
tools are thin shells over these functions; the errors they raise are the
one-line user errors of :mod:`fedsynth.errors`, re-exported here for the shells.
"""

from ..errors import FedsynthError, InputError, ParameterError, SessionError

__all__ = ["FedsynthError", "InputError", "ParameterError", "SessionError"]
