"""Exceptions that fedsynth turns into one-line user errors.

Every error a user can cause (a bad file, a bad parameter, a refused
session) is one of these; the CLI prints ``fedsynth: error: <message>``
on one line and exits non-zero. Anything else is a bug and keeps its
traceback.
"""


class FedsynthError(Exception):
    """Base class: a problem the user can fix, reported on one line."""

    exit_code = 1


class InputError(FedsynthError):
    """A bad input file or value. The message names the file and the problem."""

    exit_code = 2


class ParameterError(FedsynthError):
    """A bad parameter. The message names the parameter."""

    exit_code = 2


class BudgetError(FedsynthError):
    """The requested privacy budget cannot be met; the run refuses to start."""

    exit_code = 3


class SessionError(FedsynthError):
    """The MPC session failed: refused, timed out, or a party went away.

    The message names the protocol step and the rank(s) responsible;
    ``ranks`` holds those ranks (the only detail of it other sites are told).
    """

    exit_code = 4

    def __init__(self, message: str = "", ranks=()):
        super().__init__(message)
        self.ranks = tuple(int(r) for r in ranks)
