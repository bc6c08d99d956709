"""Clipping: how a record's contribution to a sum is bounded (its sensitivity)."""

from __future__ import annotations

import numpy as np


def clip_rows(x: np.ndarray, bound: float) -> np.ndarray:
    """Scale each row to L2 norm at most ``bound``: ``u min(1, bound / ||u||)``.

    A sum of clipped rows changes by at most ``bound`` (L2) when one record
    is added or removed: that is the sensitivity a release of it declares.
    """
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, 1e-12))
