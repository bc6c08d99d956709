"""SecureSum over real fedsynth sessions: k separate OS processes on 127.0.0.1.

This file is also the party program: ``python tests/test_secure_sum.py
--rank R --world-size K --port P --secret F --out OUT.npz`` opens a
:class:`fedsynth.federation.session.Session`, runs a fixed sequence of secure sums and
PRZS draws, and writes its inputs and everything it saw to ``OUT.npz``. The
fixtures ``secure_sum_3`` / ``secure_sum_1`` (conftest) run it once per
session; the tests below only look at the files.

What a party records besides the sums: CrypTen's communicator as adopted
(rank, world size), and whether any point-to-point send (``dist.isend`` /
``dist.send``, which CrypTen's own seed exchange uses) or CrypTen's own
``_setup_prng`` ran during the session (instrumented by wrapping, not mocked:
the wrapped functions still run).
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

pytestmark = pytest.mark.multiprocess

NOISE_STD = 3.0
NOISE_N = 20000
EXACT_N = 1000


# --------------------------------------------------------------- the party
def party_main(argv: list[str]) -> None:
    import json

    import torch
    import torch.distributed as dist

    from testkit import parse_party_args

    a = parse_party_args(argv)
    rank, k = a.rank, a.world_size

    calls = {"isend": 0, "send": 0, "setup_prng": 0, "sync_seeds": 0}
    for name in ("isend", "send"):
        orig = getattr(dist, name)

        def counted(*args, _orig=orig, _name=name, **kw):
            calls[_name] += 1
            return _orig(*args, **kw)

        setattr(dist, name, counted)

    from fedsynth.federation import crypten_compat as cc

    crypten = cc.import_crypten()
    for attr, key in (("_setup_prng", "setup_prng"), ("_sync_seeds", "sync_seeds")):
        orig = getattr(crypten, attr)

        def counted(*args, _orig=orig, _key=key, **kw):
            calls[_key] += 1
            return _orig(*args, **kw)

        setattr(crypten, attr, counted)

    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor

    from fedsynth.federation.secure_sum import SecureSum
    from fedsynth.federation.session import Session, read_secret

    # which mask source do secure sums use? (counted; the originals still run)
    orig_przs = ArithmeticSharedTensor.PRZS
    orig_mask = Session.przs_mask

    def przs_counted(*args, **kw):
        calls["crypten_przs"] += 1
        return orig_przs(*args, **kw)

    used_masks = []

    def mask_counted(self, *args, **kw):
        calls["przs_mask"] += 1
        mask = orig_mask(self, *args, **kw)
        used_masks.append(mask[:4].tolist() + [0] * (4 - min(4, mask.numel())))
        return mask

    calls.update(crypten_przs=0, przs_mask=0)
    ArithmeticSharedTensor.PRZS = staticmethod(przs_counted)
    Session.przs_mask = mask_counted

    res: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(1000 + rank)
    x = rng.uniform(-1e3, 1e3, size=EXACT_N)
    # edge values: both ends of the range, small negatives, a negative just below an integer
    x[:6] = [-1e3, 1e3, -0.5, -(2.0**-20), -7.000001, -(rank + 1) * 123.456789]
    m = rng.uniform(-5, 5, size=(7, 3))
    with Session(rank, k, f"tcp://127.0.0.1:{a.port}", read_secret(a.secret),
                 rendezvous_timeout=90, step_timeout=90) as session:
        comm = crypten.communicator.get()
        res["comm"] = np.array([comm.get_rank(), comm.get_world_size()])
        agg = SecureSum(session)
        res["x"], res["exact"] = x, agg.sum(torch.tensor(x), step="exact sum").numpy()
        res["m"], res["msum"] = m, agg.sum(torch.tensor(m), step="matrix sum").numpy()
        res["local_std_t0"] = np.array(agg.local_noise_std(NOISE_STD))
        res["noisy_t0"] = agg.sum(torch.zeros(NOISE_N), noise_std=NOISE_STD, step="noise t=0").numpy()
        if k > 1:
            agg1 = SecureSum(session, max_colluders=1)
            res["local_std_t1"] = np.array(agg1.local_noise_std(NOISE_STD))
            res["noisy_t1"] = agg1.sum(torch.zeros(NOISE_N), noise_std=NOISE_STD, step="noise t=1").numpy()
        n_sums = agg.calls + (agg1.calls if k > 1 else 0)
        res["sum_mask_calls"] = np.array([calls["przs_mask"], calls["crypten_przs"], n_sums])
        res["used_masks"] = np.array(used_masks, dtype=np.int64)
        # CrypTen's PRZS from the generators fedsynth seeded, and fedsynth's own masks
        res["przs"] = orig_przs((4096,)).share.numpy().copy()
        res["mask"] = orig_mask(session, 4096, 10_000).numpy().copy()
        res["shared_seed"] = np.array(session.shared_seed, dtype=np.int64)
    res["calls"] = np.array(json.dumps(calls))
    np.savez(a.out, **res)


if __name__ == "__main__":
    party_main(sys.argv[1:])
    sys.exit(0)


# ------------------------------------------------------------------ tests
def test_secure_sum_equals_plain_sum(secure_sum_3):
    xs = [r["x"] for r in secure_sum_3]
    assert all((x < 0).any() for x in xs), "inputs must include negative numbers"
    plain = np.sum(xs, axis=0)
    for r in secure_sum_3:
        err = np.abs(r["exact"] - plain)
        assert err.max() <= 1e-8, f"secure sum off by {err.max():.3g}"
        assert r["exact"].dtype == np.float64


def test_secure_sum_keeps_shape_and_is_exact_on_small_values(secure_sum_3):
    plain = np.sum([r["m"] for r in secure_sum_3], axis=0)
    for r in secure_sum_3:
        assert r["msum"].shape == (7, 3)
        np.testing.assert_allclose(r["msum"], plain, rtol=0, atol=1e-8)


def test_all_ranks_reveal_the_same_total(secure_sum_3):
    first = secure_sum_3[0]
    for r in secure_sum_3[1:]:
        for key in ("exact", "msum", "noisy_t0", "noisy_t1"):
            assert np.array_equal(r[key], first[key]), key


def test_noise_variance_matches_noise_std(secure_sum_3):
    """Total noise of one revealed sum (inputs all zero) has variance noise_std**2."""
    total = secure_sum_3[0]["noisy_t0"]
    assert total.shape == (NOISE_N,)
    var = float(np.var(total))
    assert abs(var / NOISE_STD**2 - 1) < 0.10, f"variance {var:.4g} vs {NOISE_STD**2:g}"
    assert abs(float(np.mean(total))) < 5 * NOISE_STD / math.sqrt(NOISE_N)


def test_noise_with_colluders_is_split_over_k_minus_t(secure_sum_3):
    k, t = 3, 1
    for r in secure_sum_3:
        assert float(r["local_std_t0"]) == pytest.approx(NOISE_STD / math.sqrt(k))
        assert float(r["local_std_t1"]) == pytest.approx(NOISE_STD / math.sqrt(k - t))
    total = secure_sum_3[0]["noisy_t1"]
    # k sites each add N(0, noise_std^2 / (k - t)): total variance k/(k-t) noise_std^2
    var = float(np.var(total))
    expected = k / (k - t) * NOISE_STD**2
    assert abs(var / expected - 1) < 0.10, f"variance {var:.4g} vs {expected:.4g}"
    local_std = math.sqrt(var / k)
    assert local_std == pytest.approx(NOISE_STD / math.sqrt(k - t), rel=0.05)


def test_local_noise_std_unit():
    from fedsynth.errors import ParameterError
    from fedsynth.federation.secure_sum import SecureSum

    for k, t in ((2, 0), (3, 0), (3, 2), (5, 1), (5, 4), (1, 0)):
        agg = SecureSum(types.SimpleNamespace(world_size=k), max_colluders=t)
        assert agg.local_noise_std(2.0) == pytest.approx(2.0 / math.sqrt(k - t))
        # the honest k - t sites alone carry the full variance
        assert (k - t) * agg.local_noise_std(2.0) ** 2 == pytest.approx(4.0)
    for t in (-1, 3, 4):
        with pytest.raises(ParameterError, match="max-colluders"):
            SecureSum(types.SimpleNamespace(world_size=3), max_colluders=t)


def test_single_site_session(secure_sum_1):
    (r,) = secure_sum_1
    assert list(r["comm"]) == [0, 1]
    np.testing.assert_allclose(r["exact"], r["x"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(r["msum"], r["m"], rtol=0, atol=1e-8)
    # one party: its PRZS share must be zero (prev == next)
    assert not r["przs"].any()
    var = float(np.var(r["noisy_t0"]))
    assert abs(var / NOISE_STD**2 - 1) < 0.10


def test_secure_sums_use_fedsynth_masks_not_crypten_przs(secure_sum_3):
    for r in secure_sum_3:
        mask_calls, przs_calls, n_sums = r["sum_mask_calls"].tolist()
        assert n_sums == 4
        assert mask_calls == n_sums and przs_calls == 0


def test_przs_masks_sum_to_zero_across_sites(secure_sum_3):
    masks = [r["mask"].astype(np.int64) for r in secure_sum_3]
    with np.errstate(over="ignore"):
        total = masks[0] + masks[1] + masks[2]  # wraps like Z_{2^64}
    assert not total.any()
    for m in masks:
        assert (m != 0).mean() > 0.99 and m.min() < -2**60 and m.max() > 2**60


def test_no_mask_is_used_twice_in_a_session(secure_sum_3):
    """Every secure sum of a session needs a fresh mask (a reused one leaks share differences).

    The party runs its sums through two SecureSum objects on one session
    (``max_colluders`` 0 and 1); a mask repeated on the wire gives an
    eavesdropper ``encode(x_a) - encode(x_b)`` of a site's two inputs.
    """
    for r in secure_sum_3:
        used = [tuple(m) for m in r["used_masks"].tolist()]
        assert len(used) == 4
        assert len(set(used)) == len(used), f"rank {list(r['comm'])[0]}: a mask was reused: {used}"
