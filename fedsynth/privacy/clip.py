"""Clipping: how a record's contribution to a sum is bounded (its sensitivity)."""

from __future__ import annotations

import numpy as np


def clip_rows(x: np.ndarray, bound: float) -> np.ndarray:
    """Scale each row to L2 norm at most ``bound``: ``u min(1, bound / ||u||)``.

    A sum of clipped rows changes by at most ``bound`` (L2) when one record
    is added or removed: that is the sensitivity a release of it declares.
    """
    return x * _factors(np.linalg.norm(x, axis=1, keepdims=True), bound)


def _factors(norms: np.ndarray, bound: float) -> np.ndarray:
    """``min(1, bound / ||u||)`` per row: the one place a row's clip factor is computed."""
    return np.minimum(1.0, bound / np.maximum(norms, 1e-12))


def clipped_sum(x: np.ndarray, bound: float, col_weights: np.ndarray | None = None) -> np.ndarray:
    """``sum_i clip(x_i * w, bound)``: the sum of clipped rows, each row weighted by ``w`` per column first.

    Equal to ``clip_rows(x * w, bound).sum(0)``, with the same sensitivity
    ``bound``, but without forming the weighted or the clipped rows (no
    ``n x D`` copy): row norms come from ``sum_j w_j^2 x_ij^2`` and the sum is
    ``(f @ x) * w`` with ``f_i = min(1, bound / ||x_i * w||)``.
    """
    if col_weights is None:
        sq = np.einsum("ij,ij->i", x, x)
        w = 1.0
    else:
        w = np.asarray(col_weights, dtype=float)
        sq = np.einsum("ij,ij,j->i", x, x, w * w)
    return (_factors(np.sqrt(sq), bound) @ x) * w
