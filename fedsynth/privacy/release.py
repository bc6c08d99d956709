"""Every noisy release goes through one call.

A generator declares its releases up front, as :class:`ReleaseSpec`\\ s (name,
L2 sensitivity ``Delta``, budget share, sample rate ``q``, repetitions
``s``). Before any data is touched, :meth:`ReleasePlan.calibrate` turns them
into noise multipliers ``z`` in the one accountant
(:mod:`fedsynth.privacy.accounting`):

* releases with a ``share`` (one-shot statistics, adaptive rounds) split the
  privacy loss of ``f * epsilon`` in proportion to their shares
  (:func:`~fedsynth.privacy.accounting.plan_release_split`; ``f`` is
  ``one_shot_fraction``, 1 when every release has a share);
* at most one release without a share (DP-SGD: ``s = T`` steps at rate
  ``q``) gets the smallest ``z`` for which the composition of everything
  stays within ``epsilon``.

The record count comes first. Under add/remove neighbours the number of
records ``N`` is private too, yet the sample rate ``q = B / N``, the steps
``T``, the degrees of freedom and every mean's divisor need it. So every run
starts with one declared release of it (:data:`RECORD_COUNT`, sensitivity 1,
a fixed share :data:`COUNT_SHARE` of the one-shot budget,
:func:`with_record_count`), and everything after uses the noisy ``N``
(:func:`released_count`). No exact count crosses a site. Releases whose
shape depends on ``N`` (DP-SGD's ``q`` and ``T``) are planned again once it is
known (:meth:`ReleasePlan.calibrate` with the same one-shot shares, then
:meth:`Releaser.replan`, which refuses a new plan that changes the noise
of anything already released).

Then :class:`Releaser` is the only way a value leaves a site:
``release(name, values)`` looks the release up in the plan, asks the secure
sum for ``sum_i (x_i + eta_i)`` with total noise s.d. ``z * Delta``
(:class:`~fedsynth.federation.secure_sum.SecureSum` draws and splits the
noise; nothing else does), enters the release in the run's
:class:`~fedsynth.privacy.accounting.PrivacyLedger`, and returns a
:class:`Measurement`: the noisy value with its noise s.d., as mbi's
``LinearMeasurement`` does. A generator never sizes or draws noise; a name
it did not declare, or one more repetition than it declared, is a bug and
raises. The DP record of the model file is built from the ledger
(:meth:`Releaser.record`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ..errors import BudgetError, ParameterError
from .accounting import (
    MAX_NOISE_MULTIPLIER,
    Mechanism,
    PrivacyLedger,
    _smallest_multiplier,
    accountant_name,
    compose,
    epsilon_against_coalition,
    plan_release_split,
    validate_budget,
)


#: Name of the first release of every run: the number of records, summed over sites.
RECORD_COUNT = "record count"

#: Share of the one-shot privacy loss (zCDP ``rho``) spent on :data:`RECORD_COUNT`.
#: A scalar with sensitivity 1: at epsilon 1 (delta 1e-5) its noise s.d. is
#: about 20 records, a few per cent of a cohort of hundreds (the error of
#: ``q``, ``T`` and of every mean's divisor); every other one-shot release
#: pays ``1 / sqrt(1 - COUNT_SHARE)`` = 1.026 times the noise s.d.
COUNT_SHARE = 0.05


@dataclass(frozen=True)
class ReleaseSpec:
    """One release a generator will make, declared before any data is touched.

    Attributes
    ----------
    name
        Unique within the run; the key of :meth:`Releaser.__call__`.
    sensitivity
        ``Delta``: the largest L2 change of the summed vector when one record
        is added or removed (the record's clipped contribution).
    share
        Weight of this release in the one-shot budget (its share of the zCDP
        ``rho``); ``None`` for the one release that takes what remains.
    sample_rate
        ``q``: each record is in a repetition with probability ``q`` (1: all).
    steps
        Repetitions ``s`` (DP-SGD steps, adaptive rounds).
    """

    name: str
    sensitivity: float
    share: float | None = None
    sample_rate: float = 1.0
    steps: int = 1


@dataclass(frozen=True)
class Measurement:
    """A revealed noisy sum: ``value = sum_i x_i + N(0, noise_sd^2)``.

    ``noise_sd`` is the s.d. of all the noise in ``value``: ``z * sensitivity``
    times ``sqrt(k / (k - t))`` (each of the ``k`` sites adds its part sized
    so that the ``k - t`` honest ones alone carry ``z * sensitivity``; 0
    without DP). Post-processing should use it. ``round`` counts the
    repetitions of the release (1-based).
    """

    name: str
    value: np.ndarray
    noise_sd: float
    sensitivity: float
    round: int = 1


@dataclass
class ReleasePlan:
    """Calibrated noise multipliers for a run's declared releases."""

    specs: dict[str, ReleaseSpec]
    multipliers: dict[str, float]
    epsilon: float
    delta: float
    private: bool = True

    @classmethod
    def calibrate(cls, specs: list[ReleaseSpec], *, epsilon: float, delta: float, n_total: int | None = None,
                  one_shot_fraction: float = 1.0) -> "ReleasePlan":
        """Noise multipliers so that all of ``specs`` compose to exactly ``epsilon``.

        Raises :class:`~fedsynth.errors.BudgetError` (the run refuses to
        start, alike at every site) when the target cannot be met.
        """
        by_name = _by_name(specs)
        validate_budget(epsilon, delta, n_total)
        shared = [s for s in specs if s.share is not None]
        rest = [s for s in specs if s.share is None]
        if len(rest) > 1:
            raise ValueError(f"at most one release may take the remaining budget (got {[s.name for s in rest]})")
        if rest and not 0 < one_shot_fraction < 1:
            raise ParameterError(f"--stats-fraction must be in (0, 1) (got {one_shot_fraction})")
        for s in specs:
            if not 0 < s.sample_rate <= 1:
                raise ParameterError(f"sample rate of {s.name} must be in (0, 1] (got {s.sample_rate:g}); "
                                     "check --batch-size")
        z: dict[str, float] = {}
        if shared:
            if any(s.sample_rate != 1.0 for s in shared):
                raise ValueError("releases with a budget share must not be subsampled")
            z = plan_release_split(epsilon * (one_shot_fraction if rest else 1.0), delta,
                                   {s.name: s.share for s in shared}, {s.name: s.steps for s in shared})
        if rest:
            fill = rest[0]
            fixed = [Mechanism(s.name, z[s.name], 1.0, s.steps) for s in shared]

            def total(v):
                return compose(fixed + [Mechanism(fill.name, v, fill.sample_rate, fill.steps)], delta)

            z[fill.name] = _smallest_multiplier(total, epsilon, hi=MAX_NOISE_MULTIPLIER * 1.01)
            if z[fill.name] > MAX_NOISE_MULTIPLIER:
                raise BudgetError(
                    f"epsilon {epsilon:g} cannot be met with {fill.steps} {fill.name} steps at sample rate "
                    f"{fill.sample_rate:.3g} without noise multiplier {z[fill.name]:.3g} > {MAX_NOISE_MULTIPLIER:g}; "
                    "raise --epsilon, lower --epochs or raise --batch-size")
        plan = cls(by_name, {s.name: z[s.name] for s in specs}, epsilon, delta)
        spent = compose(plan.mechanisms(), delta)
        if spent > epsilon * (1 + 1e-9):
            raise BudgetError(f"calibrated plan spends epsilon {spent:.4f} > target {epsilon:g}")
        return plan

    @classmethod
    def not_private(cls, specs: list[ReleaseSpec], *, delta: float) -> "ReleasePlan":
        """``--no-dp``: the same releases, no noise, nothing accounted."""
        by_name = _by_name(specs)
        return cls(by_name, {n: 0.0 for n in by_name}, math.inf, delta, private=False)

    def noise_sd(self, name: str) -> float:
        """Noise s.d. the guarantee rests on for one repetition of ``name``: ``z * Delta``.

        (The honest sites' noise alone; the revealed value carries at least
        this much, see :attr:`Measurement.noise_sd`.)
        """
        z = self.multipliers[name]
        return z * self.specs[name].sensitivity if z else 0.0

    def mechanisms(self) -> list[Mechanism]:
        """Every declared release as the accountant sees it, in declaration order."""
        return [Mechanism(n, self.multipliers[n], s.sample_rate, s.steps) for n, s in self.specs.items()]


def with_record_count(specs: list[ReleaseSpec]) -> list[ReleaseSpec]:
    """``specs`` with :data:`RECORD_COUNT` first, weighted to take :data:`COUNT_SHARE` of the one-shot budget.

Its weight is ``COUNT_SHARE / (1 - COUNT_SHARE)`` times the sum of the
    other one-shot weights, so it takes the share ``COUNT_SHARE`` of their
    ``rho`` (:func:`~fedsynth.privacy.accounting.plan_release_split` gives
    release ``i`` the share ``w_i / sum_j w_j``). Its multiplier depends
    only on the one-shot shares and epsilon, never on ``N``: a plan made
    again once ``N`` is known gives it the same noise.
    """
    shared = sum(s.share for s in specs if s.share is not None)
    weight = COUNT_SHARE / (1.0 - COUNT_SHARE) * (shared or 1.0)
    return [ReleaseSpec(RECORD_COUNT, 1.0, weight)] + list(specs)


def released_count(measurement: Measurement, n_classes: int) -> int:
    """``N`` as every later step uses it: the noisy count, rounded, at least ``max(n_classes, 2)``.

    Post-processing of the released value (free); the floor keeps rates
    and divisors finite when the noise is large against a tiny cohort.
    """
    return max(int(round(float(np.asarray(measurement.value).reshape(-1)[0]))), n_classes, 2)


def _by_name(specs: list[ReleaseSpec]) -> dict[str, ReleaseSpec]:
    out: dict[str, ReleaseSpec] = {}
    for s in specs:
        if s.name in out:
            raise ValueError(f"release {s.name!r} declared twice")
        if not (s.sensitivity > 0 and math.isfinite(s.sensitivity)) or s.steps < 1:
            raise ValueError(f"release {s.name!r}: sensitivity must be finite and > 0, steps >= 1 (got {s})")
        out[s.name] = s
    return out


def _same_noise(a: ReleasePlan, b: ReleasePlan, name: str) -> bool:
    """Whether release ``name`` has the same spec and noise in both plans (up to float rounding, 1e-10)."""
    sa, sb = a.specs[name], b.specs[name]
    if (sa.share is None) != (sb.share is None):
        return False
    return (sa.steps, sa.sample_rate) == (sb.steps, sb.sample_rate) and all(
        math.isclose(x, y, rel_tol=1e-10, abs_tol=0.0) for x, y in
        ((a.multipliers[name], b.multipliers[name]), (sa.sensitivity, sb.sensitivity), (sa.share or 0.0, sb.share or 0.0)))


@dataclass
class Releaser:
    """The one call through which a generator reveals anything (see module doc).

    Parameters
    ----------
    secure_sum
        The session's :class:`~fedsynth.federation.secure_sum.SecureSum`.
    plan
        The calibrated :class:`ReleasePlan` (or :meth:`ReleasePlan.not_private`).
    label
        Prefix of the protocol step names (shown in deadline errors), e.g. the generator.
    """

    secure_sum: object
    plan: ReleasePlan
    label: str
    #: called as ``journal(name, noise_multiplier, sample_rate)`` before each release (the lifetime ledger)
    journal: object = None
    ledger: PrivacyLedger = field(init=False)
    rounds: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self):
        self.ledger = PrivacyLedger(self.plan.epsilon, self.plan.delta)

    def __call__(self, name: str, values) -> Measurement:
        """Reveal ``sum_i (values_i + eta_i)`` over all sites for declared release ``name``."""
        spec = self.plan.specs.get(name)
        if spec is None:
            raise KeyError(f"{self.label}: release {name!r} was not declared in the plan")
        done = self.rounds.get(name, 0)
        if done >= spec.steps:
            raise RuntimeError(f"{self.label}: release {name!r} declared {spec.steps} time(s), asked for more")
        self.rounds[name] = done + 1
        step = f"{self.label}: {name}" + (f" {done + 1}/{spec.steps}" if spec.steps > 1 else "")
        sd = self.plan.noise_sd(name)
        if self.journal is not None:
            self.journal(name, self.plan.multipliers[name], spec.sample_rate)
        x = values if isinstance(values, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        total = self.secure_sum.sum(x, noise_std=sd, step=step)
        if self.plan.private:
            self._account(name, spec)
        return Measurement(name, total.numpy(), self.secure_sum.released_noise_std(sd), spec.sensitivity, done + 1)

    def _account(self, name: str, spec: ReleaseSpec) -> None:
        z = self.plan.multipliers[name]
        for m in self.ledger.mechanisms:
            if m.name == name:
                m.steps += 1
                return
        self.ledger.add(Mechanism(name, z, spec.sample_rate, 1))

    def bound(self, name: str, sensitivity: float) -> None:
        """Set the L2 bound ``Delta`` of release ``name``, not yet made, from values already released.

        The noise multiplier stays as planned (the guarantee rests on it
        alone), so the release's noise s.d. ``z Delta`` follows the bound. A
        bound computed from released values is post-processing, and is the
        same at every site (each computes it from the same revealed sums).
        """
        spec = self.plan.specs.get(name)
        if spec is None:
            raise KeyError(f"{self.label}: release {name!r} was not declared in the plan")
        if name in self.rounds:
            raise RuntimeError(f"{self.label}: release {name!r} was already made; its bound cannot change")
        if not (sensitivity > 0 and math.isfinite(sensitivity)):
            raise ValueError(f"{self.label}: bound of {name!r} must be finite and > 0 (got {sensitivity})")
        self.plan = replace(self.plan, specs={**self.plan.specs, name: replace(spec, sensitivity=float(sensitivity))})

    def replan(self, plan: ReleasePlan) -> None:
        """Continue under ``plan`` (made again once ``N`` is known).

        Refuses a plan that drops a release already made or changes its
        noise multiplier: what was revealed stays accounted as it was made.
        """
        if (plan.private, plan.epsilon, plan.delta) != (self.plan.private, self.plan.epsilon, self.plan.delta):
            raise RuntimeError(f"{self.label}: the new plan changes the budget")
        for name in self.rounds:
            if name not in plan.multipliers or not _same_noise(plan, self.plan, name):
                raise RuntimeError(f"{self.label}: the new plan changes release {name!r}, already made")
        self.plan = plan

    @property
    def calls(self) -> int:
        return sum(self.rounds.values())

    def spent(self) -> float:
        """Epsilon of everything released so far (``inf`` without DP); checked against the target."""
        if not self.plan.private:
            return math.inf
        spent = self.ledger.spent()
        if spent > self.plan.epsilon * (1 + 1e-9):
            raise RuntimeError(f"accountant reports epsilon {spent} above the target {self.plan.epsilon}")
        return spent

    def record(self) -> dict:
        """The accounting part of the model file's ``dp`` record, from the ledger.

        ``mechanisms`` lists every release made as the accountant composed it
        (name, noise multiplier, sample rate, repetitions); ``noise_std`` and
        ``sensitivity`` give each declared release's guaranteed noise s.d.
        ``z * Delta`` and its ``Delta``; ``released_noise_std`` the s.d. of
        all the noise in the revealed value (:attr:`Measurement.noise_sd`,
        ``sqrt(k / (k - t))`` times ``noise_std``); ``sigma``,
        ``sample_rate``, ``clip_norm`` and ``steps`` describe the release that
        took the remaining budget (DP-SGD), ``stat_sigma`` the largest
        one-shot multiplier.

        ``epsilon_spent`` is the guarantee against outsiders and against any
        coalition of up to ``t`` (``--max-colluders``) sites: the ``k - t``
        other sites' noise alone has variance ``(z Delta)^2``.
        ``epsilon_vs_site`` is the epsilon of the same releases against one
        participating site, which knows its own noise draw: it sees the
        others' noise at variance ``(k - 1) / (k - t)`` of the planned one
        (:func:`~fedsynth.privacy.accounting.coalition_noise_scale`), so it
        equals ``epsilon_spent`` at ``t = 1``, is below it at ``t >= 2`` and
        above it at ``t = 0`` (1.46 / 1.25 / 1.13 at k = 2 / 3 / 5 for a
        target of 1). ``epsilon_vs_coalition`` maps each coalition size
        ``c = 1 .. k-1`` to its epsilon (above the target from ``c = t + 1``
        on). Both are ``None`` without DP or with one site.
        """
        private = self.plan.private
        rest = [s for s in self.plan.specs.values() if s.share is None]
        shots = {n: z for n, z in self.plan.multipliers.items() if self.plan.specs[n].share is not None}
        fill = rest[0] if rest else None
        mechanisms = [asdict(m) for m in self.ledger.mechanisms]
        k = int(getattr(self.secure_sum, "world_size", 1))
        t = int(getattr(self.secure_sum, "max_colluders", 0))
        vs = ({c: epsilon_against_coalition(self.ledger.mechanisms, self.plan.delta, k=k, t=t, c=c)
               for c in range(1, k)} if private and k > 1 else {})
        return {
            "private": private,
            "epsilon": self.plan.epsilon if private else None,
            "epsilon_spent": self.spent() if private else None,
            "epsilon_vs_site": vs.get(1),
            "epsilon_vs_coalition": {str(c): e for c, e in vs.items()} or None,
            "delta": self.plan.delta,
            "sigma": self.plan.multipliers[fill.name] if fill else None,
            "stat_sigma": (max(shots.values()) if shots else None) if private else None,
            "noise_multipliers": shots if private else None,
            "noise_std": {n: self.plan.noise_sd(n) for n in self.plan.specs},
            "released_noise_std": {n: float(self.secure_sum.released_noise_std(self.plan.noise_sd(n)))
                                   for n in self.plan.specs},
            "sensitivity": {n: spec.sensitivity for n, spec in self.plan.specs.items()},
            "sample_rate": fill.sample_rate if fill else None,
            "clip_norm": fill.sensitivity if fill and private else None,
            "steps": self.rounds.get(fill.name, 0) if fill else 0,
            "mechanisms": mechanisms if private else [],
            "accountant": accountant_name(self.ledger.mechanisms),
        }
