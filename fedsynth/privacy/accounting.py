r"""Privacy accounting: one accountant (Opacus RDP, exact for full-batch Gaussians) for everything a run reveals.

Every revealed value is a Gaussian mechanism: a sum over records, each
record's contribution bounded in L2 norm by a sensitivity ``Delta``, with
total noise ``N(0, (z * Delta)^2)``. A mechanism is recorded as
``(noise_multiplier z, sample_rate q, steps)``:

* a one-shot statistic (class counts, gene means, library sizes) is
  ``(z_stat, 1.0, 1)``;
* DP-SGD is ``(z_sgd, q, T)`` with Poisson sampling at rate ``q``.

All of them are composed in one accountant, :func:`compose`: Opacus'
:class:`~opacus.accountants.RDPAccountant`, whose Renyi-DP bound
``eps(alpha) = sum_j eps_j(alpha)`` is converted to ``(epsilon, delta)``;
and where every mechanism is a full-batch Gaussian (``q = 1``: the one-shot
generators' releases, and every run of them in the lifetime ledger), the
exact composition instead. A Gaussian mechanism with multiplier ``z`` is
``1/z``-Gaussian-DP, adaptive composition of ``mu_j``-GDP mechanisms is
exactly ``sqrt(sum_j mu_j^2)``-GDP, and ``mu``-GDP is ``(epsilon,
delta(epsilon))``-DP with

.. math::

    \delta(\epsilon) = \Phi\left(-\frac{\epsilon}{\mu} + \frac{\mu}{2}\right)
        - e^{\epsilon} \Phi\left(-\frac{\epsilon}{\mu} - \frac{\mu}{2}\right)

(Dong, Roth and Su 2022, Corollaries 2.13 and 3.3; ``delta(epsilon)`` is Opacus'
:func:`~opacus.accountants.analysis.gdp.delta_eps_mu`), which the RDP
conversion over-states by 8-10% in ``epsilon`` at ``delta = 1e-5``: for
the same budget the noise is 7-8% smaller. The smaller of the two (both
are valid bounds) is reported. Poisson-subsampled DP-SGD stays with RDP
(the GDP central-limit formula for it is an approximation, not a bound).
Calibration happens before any data is touched
(:class:`fedsynth.privacy.release.ReleasePlan`):

1. releases with a budget share split the privacy loss of their part of
   epsilon (:func:`plan_release_split`);
2. the one release that takes the rest (DP-SGD) gets the smallest multiplier
   for which the *composition* of everything stays within ``epsilon``.

A plan that cannot meet the target (or needs absurd noise) raises
:class:`~fedsynth.errors.BudgetError`, and the run refuses to start.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.gdp import delta_eps_mu
from scipy.optimize import brentq

from ..errors import BudgetError, ParameterError

#: Renyi orders. Integer orders are exact finite sums for the subsampled
#: Gaussian; Opacus' series for fractional orders converges very slowly near
#: q = 0.5 (a minute per calibration), and at the noise levels fedsynth uses
#: the optimal order is well above 2, so only two fractional orders are kept.
ALPHAS = [1.5, 1.75] + list(range(2, 64)) + [80, 128, 256]

#: Beyond this epsilon the exact Gaussian-DP conversion is not computed (``e^epsilon`` nears overflow);
#: :func:`compose` keeps the RDP bound there.
GDP_MAX_EPSILON = 500.0
#: Above this noise multiplier the budget is treated as unreachable; refuse.
MAX_NOISE_MULTIPLIER = 500.0
#: Above this, DP-SGD learns little (the anchors still carry the classes); warn.
WARN_NOISE_MULTIPLIER = 50.0


@dataclass
class Mechanism:
    """One revealed quantity: name, noise multiplier, sample rate, repetitions."""

    name: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1


@dataclass
class PrivacyLedger:
    """Everything a run reveals, and what it costs in (epsilon, delta)."""

    epsilon: float
    delta: float
    mechanisms: list[Mechanism] = field(default_factory=list)

    def add(self, mechanism: Mechanism) -> None:
        self.mechanisms.append(mechanism)

    def spent(self) -> float:
        """Epsilon of the composition of all recorded mechanisms at ``delta``."""
        return compose(self.mechanisms, self.delta)

    def to_dict(self) -> dict:
        return {
            "epsilon_target": self.epsilon,
            "delta": self.delta,
            "epsilon_spent": self.spent(),
            "mechanisms": [asdict(m) for m in self.mechanisms],
            "accountant": accountant_name(self.mechanisms),
        }


def compose(mechanisms: list[Mechanism], delta: float) -> float:
    """Epsilon at ``delta`` of the composition of ``mechanisms``.

    The RDP bound (Opacus), or, where every mechanism is a full-batch
    Gaussian, the smaller of it and the exact Gaussian-DP composition
    (:func:`gaussian_dp_epsilon`; module doc).
    """
    if not mechanisms:
        return 0.0
    eps = _rdp_epsilon(mechanisms, delta)
    if full_batch(mechanisms):
        eps = min(eps, gaussian_dp_epsilon(mechanisms, delta))
    return eps


def full_batch(mechanisms: list[Mechanism]) -> bool:
    """Whether every mechanism is a full-batch Gaussian (sample rate 1): composed exactly by :func:`compose`."""
    return all(m.sample_rate == 1.0 for m in mechanisms)


def accountant_name(mechanisms: list[Mechanism]) -> str:
    """What :func:`compose` used for ``mechanisms`` (for the DP record)."""
    if mechanisms and full_batch(mechanisms):
        return "exact Gaussian-DP composition (opacus.accountants.analysis.gdp), RDP as the cap"
    return "opacus.accountants.RDPAccountant"


def _rdp_epsilon(mechanisms: list[Mechanism], delta: float) -> float:
    acc = RDPAccountant()
    acc.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms]
    with warnings.catch_warnings():
        # "optimal order is the largest/smallest alpha": only at the extremes the
        # calibration search probes; the bound stays valid there
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(acc.get_epsilon(delta, alphas=ALPHAS))


def gaussian_dp_epsilon(mechanisms: list[Mechanism], delta: float) -> float:
    """Exact epsilon at ``delta`` of full-batch Gaussian mechanisms: ``mu = sqrt(sum_j s_j / z_j^2)``.

    ``z_j`` the multipliers, ``s_j`` the repetitions; ``epsilon`` is the root
    of Opacus' :func:`~opacus.accountants.analysis.gdp.delta_eps_mu` at
    ``delta`` (module doc), found to full float precision (so that the
    calibration's search sees a cost monotone in the multipliers; Opacus'
    own ``eps_from_mu`` stops at 2e-12) and rounded up, so that the root
    finder's tolerance never claims less than the curve. Infinite when a
    multiplier is not positive or epsilon is beyond
    :data:`GDP_MAX_EPSILON` (the caller keeps the RDP bound then).
    """
    if not full_batch(mechanisms):
        raise ValueError("the Gaussian-DP composition is exact only for full-batch mechanisms (sample rate 1)")
    if any(not m.noise_multiplier > 0 for m in mechanisms):
        return math.inf
    mu = math.sqrt(math.fsum(m.steps / m.noise_multiplier**2 for m in mechanisms))
    if not math.isfinite(mu):
        return math.inf

    def excess(eps):
        return float(delta_eps_mu(eps=eps, mu=mu)) - delta

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2.0
        if hi > GDP_MAX_EPSILON:
            return math.inf
    # to full float precision, so that the calibration's search (relative 1e-13) sees a monotone cost
    root = brentq(excess, 0.0, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    eps = root * (1.0 + 1e-12) + 1e-15  # the finder's tolerance, to the safe side (monotone in mu)
    while excess(eps) > 0:  # not reached in practice; kept so the bound never undercuts the curve
        eps *= 1.0 + 1e-9
    return eps


def _smallest_multiplier(cost, target: float, *, lo: float = 0.05, hi: float = 1e3, rtol: float = 1e-3) -> float:
    """Smallest z in [lo, hi] with cost(z) <= target (cost decreasing in z)."""
    if cost(hi) > target:
        return float("inf")
    if cost(lo) <= target:
        return lo
    for _ in range(80):
        mid = (lo + hi) / 2
        if cost(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi - lo < rtol * hi:
            break
    return hi


def validate_budget(epsilon: float, delta: float, n_total: int | None = None) -> None:
    """Reject impossible (epsilon, delta) before anything starts."""
    if not epsilon > 0:
        raise ParameterError(f"--epsilon must be > 0 (got {epsilon})")
    if not 0 < delta < 1:
        raise ParameterError(f"--delta must be in (0, 1) (got {delta})")
    if n_total is not None and delta >= 1.0 / n_total:
        raise BudgetError(
            f"--delta {delta:g} is not below 1/n = {1 / n_total:.2g} for {n_total} records: "
            "such a guarantee can be met by publishing a record; lower --delta"
        )


def plan_release_split(epsilon: float, delta: float, weights: dict[str, float],
                       steps: dict[str, int] | None = None) -> dict[str, float]:
    """Noise multipliers for one-shot releases sharing ``epsilon`` in given proportions.

    A one-shot Gaussian release with noise multiplier ``z`` (noise
    ``z * Delta``) has Renyi-DP ``eps(alpha) = alpha / (2 z^2)``, i.e. zCDP
    ``rho = 1 / (2 z^2)``; ``s_i`` repetitions of it (adaptive rounds) cost
    ``s_i / (2 z^2)``. Release ``i`` gets the share ``w_i / sum_j w_j`` of
    the total ``rho``:

    .. math::

        z_i = c \\sqrt{\\frac{s_i}{w_i}}, \\qquad
        \\sum_i \\frac{s_i}{2 z_i^2} = \\frac{\\sum_i w_i}{2 c^2},

    and ``c`` is the smallest scale whose composition (in the one
    accountant, :func:`compose`) stays within ``epsilon`` at ``delta``. Called
    before any data is touched; raises :class:`BudgetError` when the noise
    needed exceeds :data:`MAX_NOISE_MULTIPLIER`.

    Parameters
    ----------
    weights
        Release name -> positive weight (its share of the privacy loss).
    steps
        Release name -> repetitions ``s_i`` (default 1 each).

    Returns
    -------
    dict
        Release name -> noise multiplier ``z_i`` (relative to its sensitivity).
    """
    validate_budget(epsilon, delta)
    if not weights:
        return {}
    for name, w in weights.items():
        if not (w > 0 and math.isfinite(w)):
            raise ParameterError(f"budget share of {name!r} must be > 0 (got {w})")
    names = list(weights)
    reps = {n: int((steps or {}).get(n, 1)) for n in names}
    # normalised, and searched from a start that does not depend on them, to full float precision: weights that
    # differ only by rounding (one release's share moved to another) give the same multipliers
    total_w = math.fsum(weights.values())
    weights = {n: w / total_w for n, w in weights.items()}

    def multipliers(c):
        return {n: c / math.sqrt(weights[n]) if reps[n] == 1 else c * math.sqrt(reps[n] / weights[n])
                for n in names}

    def cost(c):
        return compose([Mechanism(n, v, 1.0, reps[n]) for n, v in multipliers(c).items()], delta)

    c = _smallest_multiplier(cost, epsilon, lo=1e-3, hi=MAX_NOISE_MULTIPLIER * 1.01, rtol=1e-13)
    z = multipliers(c)
    worst = max(z.values())
    if not math.isfinite(worst) or worst > MAX_NOISE_MULTIPLIER:
        raise BudgetError(
            f"epsilon {epsilon:g} cannot be met for {len(names)} releases without a noise multiplier "
            f"above {MAX_NOISE_MULTIPLIER:g}; raise --epsilon"
        )
    spent = compose([Mechanism(n, z[n], 1.0, reps[n]) for n in names], delta)
    if spent > epsilon * (1 + 1e-9):
        raise BudgetError(f"calibrated plan spends epsilon {spent:.4f} > target {epsilon:g}")
    return z


def coalition_noise_scale(k: int, t: int, c: int) -> float:
    """Factor on every noise multiplier as seen by a coalition of ``c`` of the ``k`` sites.

    Each site adds ``N(0, sigma^2 / (k - t))`` to its share (``t`` =
    ``--max-colluders``), so the released sum carries ``k sigma^2 / (k - t)``.
    A coalition of ``c`` participating sites knows its own ``c`` draws and
    subtracts them; what it sees of everyone else carries the other
    ``k - c`` draws:

    .. math::

        \\mathrm{Var}_c = \\frac{(k - c)\\,\\sigma^2}{k - t}, \\qquad
        z_c = z \\sqrt{\\frac{k - c}{k - t}}.

    ``c = 0`` (an outsider) sees ``k / (k - t) >= 1`` times the planned
    variance; ``c <= t`` sees at least ``sigma^2`` (the guarantee holds with
    the planned ``z``); ``c = t + 1`` sees ``(k - t - 1) / (k - t)`` of it,
    less than planned. In particular with ``t = 0`` one curious co-site sees
    ``z sqrt((k - 1) / k)``. This assumes the masks hide each site's share
    from the coalition (issue 11 item 1); ``c = k`` sees no noise.
    """
    if not 0 <= t < k or not 0 <= c < k:
        raise ParameterError(f"coalition of {c} of {k} sites with --max-colluders {t}: need 0 <= t, c < k")
    return math.sqrt((k - c) / (k - t))


def epsilon_against_coalition(mechanisms: list[Mechanism], delta: float, *, k: int, t: int, c: int = 1) -> float:
    """Epsilon at ``delta`` of the same releases against a coalition of ``c`` participating sites.

    The ledger's ``mechanisms`` (planned multipliers ``z``, what an outsider
    and any ``t`` colluders face) composed in the same accountant with every
    ``z`` scaled by :func:`coalition_noise_scale`. Equal to or below the
    ledger's epsilon for ``c <= t``, above it for ``c > t``.
    """
    scale = coalition_noise_scale(k, t, c)
    return compose([Mechanism(m.name, m.noise_multiplier * scale, m.sample_rate, m.steps) for m in mechanisms],
                   delta)
