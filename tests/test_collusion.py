"""Two colluding ring neighbours against one site's secure-sum share (issue #11 item 1).

Threat model
------------
k sites (k = 4 and k = 6), each its own OS process over 127.0.0.1, run
secure sums with ``SecureSum(session, max_colluders=2)``. Ranks 0 and 2, the
two ring neighbours of rank 1 in gloo's ring all-reduce, are semi-honest and
pool what they hold: their own inputs and shares, the pairwise keys they
legitimately agreed (``session.pair_keys``), the revealed total and what
they receive on the wire. In the ring all-reduce rank 1 sends its own share
(chunk by chunk, then partial sums containing it) to rank 2, and rank 0
knows its own share, so the pair sees rank 1's share; the party records it
as the wire tap of ``tests/test_eavesdrop.py`` does: the tensor each party
hands to ``torch.distributed.all_reduce``, recorded before the op runs.
The attacker's target is rank 1's noisy input ``x_1 + eta_1``: its noise
alone has s.d. ``sigma_tot / sqrt(k - t)`` (2.83 for sigma_tot = 4, k = 4,
t = 2), less than the ``sigma_tot`` the accountant assumed.

This file is also the party program (``python tests/test_collusion.py
--rank R --world-size K --port P --secret F --out OUT.npz [--masks old,new]``).
In one session it runs, in order, a noisy secure sum for each mask design in
``--masks``:

``old``
    the mask before the fix, ``r(i-1 -> i) - r(i -> i+1)``: two ChaCha20
    streams keyed by the two *ring* pairwise keys (kept here only, to show
    the attack's power: the test must catch that code);
``new``
    fedsynth's :meth:`~fedsynth.federation.session.Session.przs_mask`,
    ``sum_{j>i} r(i->j) - sum_{j<i} r(j->i)`` over all pairwise keys;

then an exact (noise 0) secure sum with the new masks. Each party writes
its wire record, its pairwise keys and, as ground truth the attacker never
uses, its true ``x + eta`` for each sum (the noise is recorded by wrapping
``csprng_normal``; nothing extra is sent).

The attack re-implements the stream derivation (not by calling fedsynth):
from the colluders' keys it computes every term of rank 1's mask they can
and subtracts it from rank 1's share. Against the old masks that is the
whole mask: exact recovery. Against the new ones the stream of every key
rank 1 shares with a non-colluder is missing: the result is uniform noise
in Z_{2^64}, uncorrelated with the input. A control hands the same code
rank 1's real keys and recovers exactly, so the failure is the missing key
material and not a wrong re-implementation.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(600)]

N = 10_000
NOISE_STD = 4.0  # total noise s.d.
T = 2  # --max-colluders
COLLUDERS = (0, 2)
VICTIM = 1
SCALE = 2.0**32
MODES = ("old", "new")


# --------------------------------------------------------------- the party
def old_two_key_mask(session, n: int, counter: int):
    """The mask before the fix: ``r(prev->me) - r(me->next)``, ring keys only."""
    import torch
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from fedsynth.federation.session import _hkdf

    session.secure_sum_values += n
    k, me = session.world_size, session.rank

    def stream(src: int, dst: int):
        key = session.pair_keys[dst if src == me else src]
        sub = _hkdf(key, b"", f"przs-mask {src}->{dst} #{counter}".encode())
        enc = Cipher(algorithms.ChaCha20(sub, bytes(16)), mode=None).encryptor()
        return torch.frombuffer(bytearray(enc.update(bytes(8 * n))), dtype=torch.int64)

    return stream((me - 1) % k, me) - stream(me, (me + 1) % k)


def party_main(argv: list[str]) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    import fedsynth.federation.secure_sum as ss
    from fedsynth.federation.session import Session, read_secret
    from testkit import parse_party_args

    a = parse_party_args(argv, masks=("old,new", "mask designs, one noisy sum each, in order"))
    rank, k = a.rank, a.world_size

    # wire tap: what this party hands to the revealing all-reduce (before it runs)
    wire: list[np.ndarray] = []
    orig_all_reduce = c10d.all_reduce

    def tapped_all_reduce(tensor, *args, **kwargs):
        wire.append(tensor.detach().clone().numpy())
        return orig_all_reduce(tensor, *args, **kwargs)

    c10d.all_reduce = dist.all_reduce = tapped_all_reduce

    # ground truth: the noise this site draws (the real draw, recorded)
    noises: list[torch.Tensor] = []
    orig_normal = ss.csprng_normal

    def recorded_normal(n, std):
        eta = orig_normal(n, std)
        noises.append(eta.clone())
        return eta

    ss.csprng_normal = recorded_normal

    new_mask = Session.przs_mask
    designs = {"old": old_two_key_mask, "new": new_mask}
    counters: list[int] = []
    orig_counter = Session.next_mask_counter

    def recorded_counter(self):
        counters.append(orig_counter(self))
        return counters[-1]

    Session.next_mask_counter = recorded_counter

    rng = np.random.default_rng(4242 + rank)
    res: dict[str, np.ndarray] = {"rank": np.array(rank)}
    with Session(rank, k, f"tcp://127.0.0.1:{a.port}", read_secret(a.secret),
                 rendezvous_timeout=240, step_timeout=120) as session:
        agg = ss.SecureSum(session, max_colluders=T)
        for mode in a.masks.split(","):
            Session.przs_mask = designs[mode]
            x = rng.uniform(-1e3, 1e3, size=N)
            n_noise, n_wire = len(noises), len(wire)
            total = agg.sum(torch.tensor(x), noise_std=NOISE_STD, step=f"collusion {mode}")
            assert len(noises) == n_noise + 1 and len(wire) == n_wire + 1, "one draw, one all-reduce"
            res[f"{mode}_x"] = x
            res[f"{mode}_noisy"] = x + noises[-1].numpy()  # ground truth x + eta
            res[f"{mode}_share"] = wire[-1]
            res[f"{mode}_counter"] = np.array(counters[-1])
            res[f"{mode}_total"] = total.numpy()
        Session.przs_mask = new_mask
        x = rng.uniform(-1e3, 1e3, size=N)
        x[:4] = [-1e3, 1e3, -0.5, -(2.0**-20)]
        res["exact_x"], res["exact_total"] = x, agg.sum(torch.tensor(x), step="collusion exact").numpy()
        res["local_std"] = np.array(agg.local_noise_std(NOISE_STD))
        keys = np.zeros((k, 32), dtype=np.uint8)
        for r, key in session.pair_keys.items():
            keys[r] = np.frombuffer(key, dtype=np.uint8)
        res["pair_keys"] = keys
    np.savez(a.out, **res)


if __name__ == "__main__":
    party_main(sys.argv[1:])
    sys.exit(0)


# ----------------------------------------------------------------- attacker
# Written from the mask descriptions (session.py's docstring), not by calling fedsynth.
def _stream(key: bytes, src: int, dst: int, counter: int, n: int = N) -> np.ndarray:
    """``r(src->dst)``: ChaCha20 under ``HKDF(K, "przs-mask src->dst #counter")``, as int64."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    sub = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"",
               info=f"przs-mask {src}->{dst} #{counter}".encode()).derive(key)
    enc = Cipher(algorithms.ChaCha20(sub, bytes(16)), mode=None).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype=np.int64)


def mask_terms(design: str, victim: int, k: int) -> list[tuple[int, int, int, int]]:
    """The victim's mask as ``(sign, partner, src, dst)``: ``sign * r(src->dst)`` under ``K(victim, partner)``."""
    if design == "old":
        prev, nxt = (victim - 1) % k, (victim + 1) % k
        return [(1, prev, prev, victim), (-1, nxt, victim, nxt)]
    return [(1, j, victim, j) if j > victim else (-1, j, j, victim) for j in range(k) if j != victim]


def attack(design: str, share: np.ndarray, keys_of: dict[int, bytes], victim: int, k: int,
           counter: int) -> tuple[np.ndarray, int]:
    """Subtract every term of the victim's mask the attacker holds a key for; decode.

    ``keys_of[partner]`` is ``K(victim, partner)`` where the attacker has it.
    Returns the decoded vector and how many of the mask's terms were missing.
    """
    known = np.zeros(len(share), dtype=np.int64)
    missing = 0
    with np.errstate(over="ignore"):
        for sign, partner, src, dst in mask_terms(design, victim, k):
            if partner not in keys_of:
                missing += 1
                continue
            r = _stream(keys_of[partner], src, dst, counter, len(share))
            known = known + r if sign > 0 else known - r
        enc = share.astype(np.int64) - known
    return enc.astype(np.float64) / SCALE, missing  # exact to ~2**-21 for |value| < 2**31


def colluder_keys(records: list[dict]) -> dict[int, bytes]:
    """``K(VICTIM, c)`` for each colluder c: its own pairwise key with the victim."""
    return {c: records[c]["pair_keys"][VICTIM].tobytes() for c in COLLUDERS}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------ runs
@pytest.fixture(scope="module", params=[4, 6], ids=["k4", "k6"])
def run(request, tmp_path_factory):
    from testkit import run_secure_sum_parties

    k = request.param
    records = run_secure_sum_parties(tmp_path_factory.mktemp(f"collusion{k}"), k, timeout=420,
                                     script="test_collusion.py")
    return k, records


def test_colluding_neighbours_unmask_a_site_under_the_old_two_key_masks(run):
    """The attack's power: against the old masks ranks 0 and 2 read rank 1's x + eta exactly."""
    k, rec = run
    victim = rec[VICTIM]
    recovered, missing = attack("old", victim["old_share"], colluder_keys(rec), VICTIM, k,
                                int(victim["old_counter"]))
    assert missing == 0, "the two ring neighbours hold both of the old mask's keys"
    err = float(np.abs(recovered - victim["old_noisy"]).max())
    assert err < 1e-6, f"k={k}: old masks, recovery off by {err:.3g}"
    # what they read carries only the victim's own noise: s.d. sigma_tot / sqrt(k - t) < sigma_tot
    eta = recovered - victim["old_x"]
    assert float(np.std(eta)) == pytest.approx(NOISE_STD / np.sqrt(k - T), rel=0.05)
    assert float(np.std(eta)) < 0.9 * NOISE_STD
    print(f"\nk={k} old masks: max |recovered - (x_1 + eta_1)| = {err:.3g}, "
          f"corr(recovered, x_1) = {_corr(recovered, victim['old_x']):.6f}, s.d. of eta_1 = {np.std(eta):.3f}")


def test_colluding_neighbours_learn_nothing_under_the_all_pair_masks(run):
    """The fix: the same pair lacks rank 1's keys with the other k - 3 sites; what they get is noise."""
    k, rec = run
    victim = rec[VICTIM]
    share, counter, x = victim["new_share"], int(victim["new_counter"]), victim["new_x"]
    for design in ("new", "old"):  # neither the right design nor the old one helps
        recovered, missing = attack(design, share, colluder_keys(rec), VICTIM, k, counter)
        corr = _corr(recovered, x)
        err = float(np.abs(recovered - victim["new_noisy"]).max())
        assert abs(corr) < 0.05, f"k={k} ({design} attack): corr {corr:.4f}"
        assert err > 1e6, f"k={k} ({design} attack): error only {err:.3g}"
        # uniform over the int64 range: s.d. 2**63/sqrt(3) / 2**32 ~ 1.24e9
        assert float(np.std(recovered)) > 1e8
        if design == "new":
            assert missing == k - 1 - len(COLLUDERS)
            print(f"\nk={k} new masks: {missing} of {k - 1} mask streams missing, "
                  f"corr(recovered, x_1) = {corr:.4f}, max error {err:.3g}")
    # control: the same code with all of rank 1's keys (ground truth) does recover it
    own = {j: victim["pair_keys"][j].tobytes() for j in range(k) if j != VICTIM}
    recovered, missing = attack("new", share, own, VICTIM, k, counter)
    assert missing == 0
    assert float(np.abs(recovered - victim["new_noisy"]).max()) < 1e-6


def test_all_pair_masks_sum_to_zero_and_the_sum_stays_exact(run):
    k, rec = run
    plain = np.sum([r["exact_x"] for r in rec], axis=0)
    for r in rec:
        np.testing.assert_allclose(r["exact_total"], plain, rtol=0, atol=1e-8)
    # noisy sums: every rank reveals the same total, equal to sum of x + eta
    for mode in MODES:
        expected = np.sum([r[f"{mode}_noisy"] for r in rec], axis=0)
        for r in rec:
            assert np.array_equal(r[f"{mode}_total"], rec[0][f"{mode}_total"])
            np.testing.assert_allclose(r[f"{mode}_total"], expected, rtol=0, atol=1e-6)
    # the masks (share - encoded x + eta) of all ranks sum to zero mod 2**64: the shares sum to the encoding
    with np.errstate(over="ignore"):
        shares = np.sum([r["new_share"] for r in rec], axis=0, dtype=np.int64)
    assert float(np.abs(shares.astype(np.float64) / SCALE - np.sum([r["new_noisy"] for r in rec], axis=0)).max()) < 1e-6
    for r in rec:
        assert float(r["local_std"]) == pytest.approx(NOISE_STD / np.sqrt(k - T))
