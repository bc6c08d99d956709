"""The one release path (:mod:`fedsynth.privacy.release`) over a real 2-party session.

This file is also the party program (``python tests/test_release.py --rank R
--world-size K --port P --secret F --out OUT.npz``): each party opens a
:class:`~fedsynth.federation.session.Session`, calibrates one plan, makes its
releases through :class:`~fedsynth.privacy.release.Releaser` and records
what came back. The tests read the records.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

NOISE_N = 20000
EPSILON, DELTA, FRACTION = 1.0, 1e-5, 0.5


def specs(rate: float = 0.1, steps: int = 5):
    from fedsynth.privacy.release import ReleaseSpec

    return [ReleaseSpec("a", 2.0, 1.0), ReleaseSpec("b", 1.0, 3.0, steps=2),
            ReleaseSpec("sgd", 1.5, None, sample_rate=rate, steps=steps)]


def party_main(argv: list[str]) -> None:
    import torch
    from testkit import parse_party_args, party_session

    from fedsynth.federation.secure_sum import SecureSum
    from fedsynth.privacy.release import RECORD_COUNT, ReleasePlan, Releaser, with_record_count

    a = parse_party_args(argv)
    res = {}
    plan = ReleasePlan.calibrate(specs(), epsilon=EPSILON, delta=DELTA, n_total=1000, one_shot_fraction=FRACTION)
    with party_session(a) as session:
        release = Releaser(SecureSum(session, max_colluders=1), plan, "test")
        m = release("a", np.zeros(NOISE_N))
        res["a"], res["a_sd"] = m.value, np.array(m.noise_sd)
        for i in range(2):
            res[f"b{i}"] = release("b", torch.full((3,), float(a.rank + 1))).value
        for i in range(5):
            release("sgd", np.zeros(4))
        errors = []
        for name in ("b", "undeclared"):
            try:
                release(name, np.zeros(3))
            except (RuntimeError, KeyError) as e:
                errors.append(f"{type(e).__name__}: {e}")
        res["errors"] = np.array(json.dumps(errors))
        res["record"] = np.array(json.dumps(release.record()))
        res["multipliers"] = np.array(json.dumps(plan.multipliers))
        # the record count: first, its own share; then the plan made again at the released N
        cplan = ReleasePlan.calibrate(with_record_count(specs()), epsilon=EPSILON, delta=DELTA,
                                      one_shot_fraction=FRACTION)
        counted = Releaser(SecureSum(session, max_colluders=1), cplan, "count")
        m = counted(RECORD_COUNT, np.zeros(NOISE_N))
        res["count"], res["count_sd"] = m.value, np.array(m.noise_sd)
        res["count_plan"] = np.array(json.dumps(cplan.multipliers))
        later = ReleasePlan.calibrate(with_record_count(specs(rate=0.05, steps=9)), epsilon=EPSILON, delta=DELTA,
                                      one_shot_fraction=FRACTION)
        counted.replan(later)
        res["replanned"] = np.array(json.dumps(counted.plan.multipliers))
        counted("sgd", np.zeros(4))
        res["count_record"] = np.array(json.dumps(counted.record()))
        exact = Releaser(SecureSum(session), ReleasePlan.not_private(specs(), delta=DELTA), "exact")
        res["exact"] = exact("b", np.arange(3.0) * (a.rank + 1)).value
        res["exact_record"] = np.array(json.dumps(exact.record()))
    np.savez(a.out, **res)


if __name__ == "__main__":
    party_main(sys.argv[1:])
    sys.exit(0)


# ------------------------------------------------------------------ tests
pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    from testkit import run_secure_sum_parties

    return run_secure_sum_parties(tmp_path_factory.mktemp("release"), 2, script="test_release.py")


def test_noise_is_what_the_plan_says(parties):
    z = json.loads(str(parties[0]["multipliers"]))
    # z * sensitivity from the k - t = 1 honest site alone; both add it (t = 1): sqrt(2) times that in all
    sd = float(parties[0]["a_sd"])
    assert sd == pytest.approx(z["a"] * 2.0 * math.sqrt(2))
    for p in parties:
        assert np.std(p["a"]) == pytest.approx(sd, rel=0.03)
    np.testing.assert_array_equal(parties[0]["a"], parties[1]["a"])  # every site sees the same noisy sum


def test_shares_split_the_one_shot_budget_and_the_rest_fills_it():
    from fedsynth.privacy.accounting import Mechanism, compose
    from fedsynth.privacy.release import ReleasePlan

    plan = ReleasePlan.calibrate(specs(), epsilon=EPSILON, delta=DELTA, one_shot_fraction=FRACTION)
    z = plan.multipliers
    # rho_b / rho_a = (2 / z_b^2) / (1 / z_a^2) = share_b / share_a = 3
    assert (2 / z["b"] ** 2) / (1 / z["a"] ** 2) == pytest.approx(3.0, rel=1e-9)
    one_shot = compose([Mechanism("a", z["a"]), Mechanism("b", z["b"], 1.0, 2)], DELTA)
    assert 0.99 * FRACTION * EPSILON < one_shot <= FRACTION * EPSILON
    assert 0.98 * EPSILON < compose(plan.mechanisms(), DELTA) <= EPSILON


def test_ledger_records_every_release_as_made(parties):
    rec = json.loads(str(parties[0]["record"]))
    assert rec == json.loads(str(parties[1]["record"]))
    z = json.loads(str(parties[0]["multipliers"]))
    got = {m["name"]: (m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in rec["mechanisms"]}
    assert got == {"a": (z["a"], 1.0, 1), "b": (z["b"], 1.0, 2), "sgd": (z["sgd"], 0.1, 5)}
    assert rec["noise_std"] == {"a": z["a"] * 2.0, "b": z["b"] * 1.0, "sgd": z["sgd"] * 1.5}
    # all the noise in the revealed values: both sites' draws at k = 2, t = 1
    assert rec["released_noise_std"] == pytest.approx({n: sd * math.sqrt(2) for n, sd in rec["noise_std"].items()})
    assert rec["sigma"] == z["sgd"] and rec["clip_norm"] == 1.5 and rec["steps"] == 5
    assert 0.98 * EPSILON < rec["epsilon_spent"] <= EPSILON and rec["private"] is True
    # k = 2, t = 1: the co-site sees the other site's noise, sigma^2 (k-1)/(k-t) = sigma^2: same epsilon
    assert rec["epsilon_vs_site"] == pytest.approx(rec["epsilon_spent"]) and rec["epsilon_vs_coalition"] == {
        "1": rec["epsilon_vs_site"]}


def test_undeclared_or_extra_releases_are_refused(parties):
    errors = json.loads(str(parties[0]["errors"]))
    assert errors[0].startswith("RuntimeError") and "declared 2 time(s)" in errors[0]
    assert errors[1].startswith("KeyError") and "not declared" in errors[1]


def test_without_dp_the_sum_is_exact_and_nothing_is_accounted(parties):
    np.testing.assert_allclose(parties[0]["exact"], np.arange(3.0) * 3, atol=1e-8)
    rec = json.loads(str(parties[0]["exact_record"]))
    assert rec["private"] is False and rec["mechanisms"] == [] and rec["epsilon_spent"] is None
    assert math.isfinite(float(parties[0]["b0"][0]))


def test_record_count_noise_is_what_the_plan_says(parties):
    """The record count is one more release: its noise is z * 1 from the honest site, sqrt(2) that in all."""
    z = json.loads(str(parties[0]["count_plan"]))
    sd = float(parties[0]["count_sd"])
    assert sd == pytest.approx(z["record count"] * 1.0 * math.sqrt(2))
    for p in parties:
        assert np.std(p["count"]) == pytest.approx(sd, rel=0.03)
        assert abs(np.mean(p["count"])) < 4 * sd / math.sqrt(NOISE_N)  # unbiased: N is not shifted


def test_record_count_takes_its_share_and_keeps_its_noise_when_replanned(parties):
    """COUNT_SHARE of the one-shot rho; the plan made at the released N keeps it and refills only DP-SGD."""
    from fedsynth.privacy.accounting import compose, Mechanism
    from fedsynth.privacy.release import COUNT_SHARE

    z = json.loads(str(parties[0]["count_plan"]))
    rho = {"record count": 1 / (2 * z["record count"] ** 2), "a": 1 / (2 * z["a"] ** 2), "b": 2 / (2 * z["b"] ** 2)}
    assert rho["record count"] / sum(rho.values()) == pytest.approx(COUNT_SHARE, rel=1e-9)
    later = json.loads(str(parties[0]["replanned"]))
    assert {n: later[n] for n in ("record count", "a", "b")} == {n: z[n] for n in ("record count", "a", "b")}
    assert later["sgd"] != z["sgd"]
    rec = json.loads(str(parties[0]["count_record"]))
    assert [m["name"] for m in rec["mechanisms"]] == ["record count", "sgd"]
    full = [Mechanism("record count", later["record count"]), Mechanism("a", later["a"]),
            Mechanism("b", later["b"], 1.0, 2), Mechanism("sgd", later["sgd"], 0.05, 9)]
    assert 0.98 * EPSILON < compose(full, DELTA) <= EPSILON


def test_replan_refuses_to_change_what_was_released():
    from fedsynth.privacy.release import RECORD_COUNT, ReleasePlan, Releaser, ReleaseSpec, with_record_count

    plan = ReleasePlan.calibrate(with_record_count(specs()), epsilon=EPSILON, delta=DELTA, one_shot_fraction=FRACTION)
    release = Releaser(None, plan, "t")
    release.rounds[RECORD_COUNT] = 1  # as after the count's secure sum
    other = ReleasePlan.calibrate([ReleaseSpec(RECORD_COUNT, 1.0, 1.0)] + specs(), epsilon=EPSILON, delta=DELTA,
                                  one_shot_fraction=FRACTION)
    with pytest.raises(RuntimeError, match="changes release 'record count'"):
        release.replan(other)
    with pytest.raises(RuntimeError, match="changes the budget"):
        release.replan(ReleasePlan.calibrate(with_record_count(specs()), epsilon=2 * EPSILON, delta=DELTA,
                                             one_shot_fraction=FRACTION))


def test_released_count_is_rounded_and_floored():
    from fedsynth.privacy.release import Measurement, released_count

    assert released_count(Measurement("record count", np.array([201.6]), 20.0, 1.0), 5) == 202
    assert released_count(Measurement("record count", np.array([-40.0]), 20.0, 1.0), 5) == 5
    assert released_count(Measurement("record count", np.array([1.2]), 20.0, 1.0), 1) == 2


def test_bound_set_from_released_values_keeps_the_multiplier():
    """A bound computed from earlier releases changes the noise s.d. with it, never the multiplier."""
    from fedsynth.privacy.release import ReleasePlan, Releaser, with_record_count

    class Plain:
        def released_noise_std(self, sd):
            return sd

        def sum(self, x, *, noise_std=0.0, step=""):
            self.asked = noise_std
            return x.clone()

    plan = ReleasePlan.calibrate(with_record_count(specs()), epsilon=EPSILON, delta=DELTA, one_shot_fraction=FRACTION)
    ss = Plain()
    release = Releaser(ss, plan, "t")
    release.bound("a", 5.0)
    assert plan.specs["a"].sensitivity == 2.0  # the calibrated plan itself is not changed
    assert release.plan.multipliers == plan.multipliers
    m = release("a", [1.0, 2.0])
    assert m.sensitivity == 5.0 and ss.asked == pytest.approx(plan.multipliers["a"] * 5.0) == m.noise_sd
    assert release.record()["sensitivity"]["a"] == 5.0
    with pytest.raises(RuntimeError, match="already made"):
        release.bound("a", 1.0)
    with pytest.raises(KeyError):
        release.bound("undeclared", 1.0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            release.bound("b", bad)
    # the privacy spent is the plan's, whatever the bounds
    release.bound("b", 100.0)
    release("b", [0.0])
    release("b", [0.0])
    assert [(x.name, x.noise_multiplier) for x in release.ledger.mechanisms] == [
        ("a", plan.multipliers["a"]), ("b", plan.multipliers["b"])]
