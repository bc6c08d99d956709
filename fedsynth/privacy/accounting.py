"""Privacy accounting: one Opacus RDP accountant for everything a run reveals.

Every revealed value is a Gaussian mechanism: a sum over records, each
record's contribution bounded in L2 norm by a sensitivity ``Delta``, with
total noise ``N(0, (z * Delta)^2)``. A mechanism is recorded as
``(noise_multiplier z, sample_rate q, steps)``:

* a one-shot statistic (class counts, gene means, library sizes) is
  ``(z_stat, 1.0, 1)``;
* DP-SGD is ``(z_sgd, q, T)`` with Poisson sampling at rate ``q``.

All of them are composed in one :class:`opacus.accountants.RDPAccountant`,
whose Renyi-DP bound ``eps(alpha) = sum_j eps_j(alpha)`` is converted to
``(epsilon, delta)``. Calibration happens before any data is touched
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

from opacus.accountants import RDPAccountant

from ..errors import BudgetError, ParameterError

#: Renyi orders. Integer orders are exact finite sums for the subsampled
#: Gaussian; Opacus' series for fractional orders converges very slowly near
#: q = 0.5 (a minute per calibration), and at the noise levels fedsynth uses
#: the optimal order is well above 2, so only two fractional orders are kept.
ALPHAS = [1.5, 1.75] + list(range(2, 64)) + [80, 128, 256]

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
            "accountant": "opacus.accountants.RDPAccountant",
        }


def compose(mechanisms: list[Mechanism], delta: float) -> float:
    """Epsilon at ``delta`` of the RDP composition of ``mechanisms``."""
    if not mechanisms:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms]
    with warnings.catch_warnings():
        # "optimal order is the largest/smallest alpha": only at the extremes the
        # calibration search probes; the bound stays valid there
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(acc.get_epsilon(delta, alphas=ALPHAS))


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

    and ``c`` is the smallest scale whose composition (in the one Opacus RDP
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
