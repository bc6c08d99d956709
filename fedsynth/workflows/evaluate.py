"""``fedsynth evaluate``: score a synthetic cohort on this site's own real data.

The model file is read here only for its DP record, and the site's train
``run.json`` (``--run-record``) only for its lifetime budget; the report
shows both beside the attacks. The scoring itself is :mod:`fedsynth.evaluation`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError
from ..evaluation import evaluate_files
from ..generators.modelfile import read_model

#: the entries of run.json's ``lifetime`` (what :meth:`LifetimeLedger.begin` returns) the report needs
_LIFETIME_NUMBERS = ("spent_before", "spent_after", "limit", "remaining")


def read_run_lifetime(path) -> dict:
    """The ``lifetime`` entry of this site's ``run.json`` (written by ``fedsynth train``).

    Parameters
    ----------
    path : str or Path
        The run record of the train run that produced the model.

    Returns
    -------
    dict
        ``{"ledger", "unbounded", "spent_before", "spent_after", "limit",
        "remaining"}``: the site's lifetime spend before and after that run,
        its ``--lifetime-epsilon`` cap and what remains (``None`` where
        unbounded or without a cap).

    Raises
    ------
    InputError
        A missing or unreadable file, not JSON, or a record without a
        ``lifetime`` entry (one line naming the file and ``--run-record``).
    """
    where = f"{path} (--run-record)"
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not JSON ({e.msg}, line {e.lineno})") from None
    lifetime = record.get("lifetime") if isinstance(record, dict) else None
    if not isinstance(lifetime, dict):
        hint = (" (simulate's run.json holds one per site, under site_lifetime)"
                if isinstance(record, dict) and "site_lifetime" in record else "")
        raise InputError(f"{where}: no 'lifetime' entry; give the run.json that `fedsynth train` wrote "
                         f"for this site{hint}")
    bad = [k for k in _LIFETIME_NUMBERS if k not in lifetime or not _number_or_none(lifetime[k])]
    if bad:
        raise InputError(f"{where}: its 'lifetime' entry is malformed ({', '.join(bad)}: "
                         "missing or not a finite number or null)")
    if not isinstance(lifetime.get("unbounded"), bool):
        raise InputError(f"{where}: its 'lifetime' entry is malformed (unbounded: missing or not true/false)")
    return {"ledger": lifetime.get("ledger"), "unbounded": lifetime["unbounded"],
            **{k: lifetime[k] for k in _LIFETIME_NUMBERS}}


def _number_or_none(v) -> bool:
    """A finite number (not a bool) or ``None``."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def evaluate_site(synthetic, train, holdout, *, model=None, run_record=None, outdir, **kw) -> dict:
    """Score synthetic data on this site's real data, with the model's DP record and the site's lifetime budget.

    Parameters
    ----------
    synthetic, train, holdout : str or Path
        The synthetic matrix and this site's real training and holdout data.
    model : str or Path, optional
        A model.pt, for its DP record.
    run_record : str or Path, optional
        This site's train ``run.json``, for its lifetime budget
        (:func:`read_run_lifetime`).
    outdir : str or Path
        Where metrics.json and report.html go.
    **kw
        The rest of :func:`fedsynth.evaluation.evaluate_files`'s parameters.

    Returns
    -------
    dict
        The metrics (:func:`fedsynth.evaluation.evaluate_files`).

    Raises
    ------
    InputError
        Any bad input, before anything is written.
    """
    lifetime = read_run_lifetime(run_record) if run_record else None
    blob = read_model(model) if model else None
    dp = {"generator": blob.get("generator", "cvae"), **blob["dp"]} if blob and blob.get("dp") is not None else None
    return evaluate_files(synthetic, train, holdout, outdir=outdir, dp=dp, lifetime=lifetime, **kw)
