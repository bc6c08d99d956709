"""The one library-size release (counts input), shared by every generator.

Synthetic counts are drawn back from log-expression with a log-normal
library size ``L ~ LogNormal(m, s)``; ``m`` and ``s`` come from two noisy
sums over all records.

**Mean.** Each record's log library size is clipped to the public range
``[0, B]`` (``B = LOG_LIBSIZE_BOUND``; ``e^25`` reads is far above any
sequencing depth) and centred on ``B/2``: ``u_i = clip(log L_i, 0, B) - B/2``
lies in ``[-B/2, B/2]``. Adding or removing one record changes
``S = sum_i u_i`` by at most ``B/2``, so the L2 sensitivity is

.. math::

    \\Delta_m = B / 2, \\qquad \\hat m = B/2 + \\tilde S / N .

(Releasing ``sum_i clip(log L_i, 0, B)`` uncentred would need ``Delta = B``:
twice the noise for the same budget.)

**Spread.** With the released ``hat m`` (post-processing), each record adds
``w_i = min((log L_i - hat m)^2, B_s)`` in ``[0, B_s]``
(``B_s = LOG_LIBSIZE_SPREAD_BOUND``), so ``Delta_s = B_s`` and
``hat s^2 = clip(tilde W / N, 0.01, B_s)``.

**Public range.** ``hat m`` is clipped to ``[0, B]``, the range every record
was clipped to (post-processing). With few records the noise of ``tilde S / N``
can be far larger than ``B``: an unclipped ``hat m`` of 90 would ask for
``e^90`` reads. :func:`sample` draws log library sizes inside the same range,
so that model files written before the clip sample too.
"""

from __future__ import annotations

import math

import numpy as np

from .release import Releaser, ReleaseSpec

#: Public upper bound ``B`` of the log library size.
LOG_LIBSIZE_BOUND = 25.0
#: Public bound ``B_s`` of one record's squared deviation from the mean log library size.
LOG_LIBSIZE_SPREAD_BOUND = 4.0
MEAN, SPREAD = "log library size mean", "log library size spread"


def specs(mean_share: float, spread_share: float) -> list[ReleaseSpec]:
    """The two releases, with the caller's budget shares."""
    return [ReleaseSpec(MEAN, LOG_LIBSIZE_BOUND / 2.0, mean_share),
            ReleaseSpec(SPREAD, LOG_LIBSIZE_SPREAD_BOUND, spread_share)]


def release(release: Releaser, library_sizes: np.ndarray, n_total: int) -> dict:
    """``{"mean": hat m, "sd": hat s}`` of the log library size over all sites (module doc)."""
    half = LOG_LIBSIZE_BOUND / 2.0
    ll = np.clip(np.log(library_sizes), 0.0, LOG_LIBSIZE_BOUND)
    m = half + float(release(MEAN, [(ll - half).sum()]).value[0]) / n_total
    m = min(max(m, 0.0), LOG_LIBSIZE_BOUND)
    sq = np.clip((ll - m) ** 2, 0.0, LOG_LIBSIZE_SPREAD_BOUND)
    v = float(release(SPREAD, [sq.sum()]).value[0]) / n_total
    return {"mean": m, "sd": math.sqrt(min(max(v, 0.01), LOG_LIBSIZE_SPREAD_BOUND))}


def sample(lib: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` library sizes ``exp(clip(N(hat m, hat s^2), 0, B))`` from a released ``{"mean", "sd"}``."""
    return np.exp(np.clip(rng.normal(lib["mean"], lib["sd"], size=n), 0.0, LOG_LIBSIZE_BOUND))
