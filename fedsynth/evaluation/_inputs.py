"""Input checks shared by the evaluation modules.

Expression matrices are ``samples x genes`` float arrays, labels 1-D arrays
of ``str``; a problem raises :class:`~fedsynth.errors.InputError` naming the
input. :func:`_as_labels` is :func:`fedsynth.data.preprocess.as_labels` (one
definition, beside ``split_holdout``, which needs it too).
"""

from __future__ import annotations

import math

import numpy as np

from fedsynth.data.preprocess import as_labels as _as_labels  # noqa: F401 (for the sibling modules)
from fedsynth.errors import InputError

__all__ = ["check_compatible"]

_N_EXAMPLES = 5  # how many offending names an error message lists


def _examples(items, n=_N_EXAMPLES):
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _unique_in_order(items, exclude):
    seen = set()
    out = []
    for x in items:
        if x not in exclude and x not in seen:
            seen.add(x)
            out.append(x)
    return out


def check_compatible(genes_syn, genes_real, labels_syn, labels_real, *,
                     syn_name, real_name):
    """Check that a synthetic and a real data set can be compared.

    Parameters
    ----------
    genes_syn, genes_real : sequence of str
        Gene (column) names of the synthetic and the real matrix. They must
        be identical, in the same order.
    labels_syn, labels_real : sequence of str
        Per-sample labels of the two data sets.
    syn_name, real_name : str
        Names of the two inputs (usually file paths), used in messages.

    Returns
    -------
    list of str
        Warnings, one sentence each: currently only real labels that no
        synthetic sample carries (a TSTR classifier can never predict them).

    Raises
    ------
    InputError
        If the gene lists differ (the message gives how many genes differ and
        examples from each side) or if the synthetic data has labels that the
        real data has not.
    """
    gs = [str(g) for g in genes_syn]
    gr = [str(g) for g in genes_real]
    if gs != gr:
        only_syn = _unique_in_order(gs, set(gr))
        only_real = _unique_in_order(gr, set(gs))
        if only_syn or only_real:
            parts = []
            if only_syn:
                parts.append(f"{len(only_syn)} only in {syn_name} "
                             f"(e.g. {_examples(only_syn)})")
            if only_real:
                parts.append(f"{len(only_real)} only in {real_name} "
                             f"(e.g. {_examples(only_real)})")
            raise InputError(
                f"{syn_name} and {real_name} have different genes: "
                f"{len(only_syn) + len(only_real)} genes differ, "
                + "; ".join(parts))
        if len(gs) != len(gr):
            raise InputError(
                f"{syn_name} has {len(gs)} gene columns and {real_name} has "
                f"{len(gr)}: the same gene names, but some are duplicated")
        pos = next(i for i, (a, b) in enumerate(zip(gs, gr)) if a != b)
        n_moved = sum(a != b for a, b in zip(gs, gr))
        raise InputError(
            f"{syn_name} and {real_name} have the same {len(gs)} genes but "
            f"in a different order: {n_moved} genes differ in position "
            f"(first at column {pos + 1}: {gs[pos]!r} in {syn_name}, "
            f"{gr[pos]!r} in {real_name})")

    ls = set(str(x) for x in labels_syn)
    lr = set(str(x) for x in labels_real)
    extra = sorted(ls - lr)
    if extra:
        raise InputError(
            f"{syn_name} has {len(extra)} label(s) that {real_name} has not: "
            f"{_examples(extra)}")
    warnings = []
    missing = sorted(lr - ls)
    if missing:
        warnings.append(
            f"{len(missing)} label(s) of {real_name} never occur in "
            f"{syn_name}: {_examples(missing)}; a classifier trained on "
            f"{syn_name} cannot predict them")
    return warnings


def _as_matrix(X, what):
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} is not a numeric matrix: {e}") from None
    if X.ndim != 2:
        raise InputError(f"{what} must be a samples x genes matrix, "
                         f"got an array with {X.ndim} dimension(s)")
    if X.shape[0] == 0:
        raise InputError(f"{what} has no samples")
    if X.shape[1] == 0:
        raise InputError(f"{what} has no genes")
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X)))
        raise InputError(f"{what} has {bad} missing or non-finite value(s)")
    return X


def _same_genes(A, B, a_name, b_name):
    if A.shape[1] != B.shape[1]:
        raise InputError(f"{a_name} has {A.shape[1]} genes and {b_name} has "
                         f"{B.shape[1]}")


def _json_safe(v):
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    return v
