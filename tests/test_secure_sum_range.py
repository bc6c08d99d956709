"""The fixed-point range check follows k: 8 real site processes on 127.0.0.1.

This file is also the party program (``python tests/test_secure_sum_range.py
--rank R --world-size K --port P --secret F --out OUT.npz``): it opens a
:class:`fedsynth.federation.session.Session`, sums values just under the
per-site bound ``2^30 / k`` (they must come back exactly), then tries values
at and above it (every site must refuse before sharing anything, naming the
step and the bound), then sums once more to show the session is intact.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

K = 8


def _under(rank: int, bound: float) -> np.ndarray:
    """Values just under ``bound``, multiples of 2^-10 so that their sum is exact in float64."""
    step = 2.0**-10
    return np.array([bound - step, -(bound - step), (-1) ** rank * (bound - (rank + 1) * step),
                     bound - 1.0 - rank * step, 0.0])


# --------------------------------------------------------------- the party
def party_main(argv: list[str]) -> None:
    import torch
    from testkit import parse_party_args, party_session

    from fedsynth.federation.secure_sum import SecureSum, max_abs_per_site

    a = parse_party_args(argv)
    bound = max_abs_per_site(a.world_size)
    res: dict[str, np.ndarray] = {"bound": np.array(bound)}
    with party_session(a, timeout=120) as session:
        agg = SecureSum(session)
        res["under"] = agg.sum(torch.tensor(_under(a.rank, bound)), step="just under the bound").numpy()
        errors = []
        for label, value in (("at", bound), ("over", 1.5 * bound), ("old bound", 2.0**29)):
            x = torch.zeros(4, dtype=torch.float64)
            x[1] = value if a.rank % 2 else -value
            try:
                agg.sum(x, step=f"range check {label}")
                errors.append("no error")
            except Exception as e:  # noqa: BLE001 - the test looks at the type and text
                errors.append(f"{type(e).__name__}: {e}")
        res["errors"] = np.array(json.dumps(errors))
        res["after"] = agg.sum(torch.full((3,), float(a.rank)), step="after the refusals").numpy()
    np.savez(a.out, **res)


if __name__ == "__main__":
    party_main(sys.argv[1:])
    sys.exit(0)


# ------------------------------------------------------------------ tests
def test_per_site_bound_keeps_the_sum_of_k_values_from_wrapping():
    from fedsynth.federation.secure_sum import SUM_LIMIT, max_abs_per_site

    assert SUM_LIMIT == 2.0**63 / 2.0**32
    for k in (1, 2, 3, 5, 8, 64, 300):
        assert k * max_abs_per_site(k) <= SUM_LIMIT / 2
    # the fixed bound it replaces let 8 sites reach 2^32: a silent wrap
    assert K * 2.0**29 > SUM_LIMIT


@pytest.mark.multiprocess
def test_eight_sites_sum_exactly_under_the_bound_and_refuse_over_it(tmp_path):
    from testkit import run_secure_sum_parties

    parties = run_secure_sum_parties(tmp_path, K, timeout=300, script="test_secure_sum_range.py")
    bound = float(parties[0]["bound"])
    assert bound == 2.0**30 / K
    expected = sum(_under(r, bound) for r in range(K))
    for p in parties:
        np.testing.assert_array_equal(p["under"], expected)  # exact: no wrap, no rounding
        errors = json.loads(str(p["errors"]))
        assert len(errors) == 3
        for label, err in zip(("at", "over", "old bound"), errors):
            assert err.startswith("InputError: "), err
            assert f"range check {label}:" in err and "2^30/k for k=8 sites" in err and f"{bound:.6g}" in err
            assert "\n" not in err
        np.testing.assert_array_equal(p["after"], np.full(3, float(sum(range(K)))))
