"""The one-run audit's epsilon lower bound (bench/audit.py; Steinke, Nasr and Jagielski 2023, Thm 3.1)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from audit import audit_guesses, eps_lower_bound, p_value  # noqa: E402


def test_chance_level_gives_zero():
    assert eps_lower_bound(1000, 100, 50) == 0.0
    assert eps_lower_bound(1000, 200, 90) == 0.0
    assert eps_lower_bound(1000, 0, 0) == 0.0


def test_all_correct_grows_with_r():
    bounds = [eps_lower_bound(1000, r, r) for r in (10, 20, 50, 100, 200)]
    assert all(a < b for a, b in zip(bounds, bounds[1:]))


def test_hand_worked_pure_dp():
    # delta = 0, all r correct: p = q^r with q = e^eps / (1 + e^eps); p = 0.05 at q = 0.05^(1/r)
    for r in (10, 100):
        q = 0.05 ** (1 / r)
        assert eps_lower_bound(1000, r, r, delta=0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    # eps = 0 is a fair coin: P[Binomial(10, 1/2) >= 10] = 2^-10
    assert p_value(1000, 10, 10, 0.0, 0.0) == pytest.approx(0.5**10)
    # 60 of 100 correct at eps = 0: P[Binomial(100, 1/2) >= 60] = 0.0284 < 0.05, so the bound is positive
    assert p_value(1000, 100, 60, 0.0, 0.0) == pytest.approx(0.02844, abs=1e-4)
    assert 0 < eps_lower_bound(1000, 100, 60, delta=0.0) < 0.2


def test_delta_term_lowers_the_bound():
    # the 2 m delta term of Thm 3.1 makes the bound smaller (weaker), more so for more canaries
    a = eps_lower_bound(1000, 100, 100, delta=0.0)
    b = eps_lower_bound(1000, 100, 100, delta=1e-5)
    c = eps_lower_bound(100000, 100, 100, delta=1e-5)
    assert c < b < a
    # p_value at the bound is beta (continuity), above it larger
    assert p_value(1000, 100, 100, b, 1e-5) == pytest.approx(0.05, abs=1e-6)
    assert p_value(1000, 100, 100, b + 0.1, 1e-5) > 0.05


def test_audit_guesses_counts_top_and_bottom():
    scores = list(range(100))  # the highest 50 are the included canaries
    included = [s >= 50 for s in scores]
    out = audit_guesses(scores, included, ks=(10,), delta=0.0)
    assert out["best"]["r"] == 20 and out["best"]["v"] == 20
    flipped = audit_guesses(scores, [not i for i in included], ks=(10,), delta=0.0)
    assert flipped["best"]["v"] == 0 and flipped["best"]["eps_lb"] == 0.0
