"""Unit tests of :class:`fedsynth.federation.session.Session` that need no other process.

Sessions here are constructed but not opened: pairwise keys are set by hand,
as the key agreement would leave them (both ends of a pair hold one key).
"""

from __future__ import annotations

import os

import pytest
import torch

from fedsynth.federation.session import Session


def _sessions(k: int) -> list[Session]:
    """k unopened sessions with consistent random pairwise keys."""
    sessions = [Session(r, k, "tcp://127.0.0.1:1", os.urandom(32)) for r in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            key = os.urandom(32)
            sessions[i].pair_keys[j] = sessions[j].pair_keys[i] = key
    return sessions


@pytest.mark.parametrize("k", [2, 3, 5, 257])
def test_masks_of_all_ranks_sum_to_zero(k):
    """``sum_{j>i} r_ij - sum_{j<i} r_ji`` cancels over all ranks, also past 256 ranks."""
    n = 64 if k < 100 else 4
    sessions = _sessions(k)
    for counter in (0, 1):
        masks = [s.przs_mask(n, counter) for s in sessions]
        assert not sum(masks).any(), f"k={k} counter {counter}"  # int64 wraps mod 2**64
        if k > 2:
            assert all(bool(m.ne(0).all()) for m in masks)


def test_mask_depends_on_every_pairwise_key():
    """Change any one of rank 1's keys (not only its ring neighbours'): its whole mask changes."""
    k, n = 6, 256
    sessions = _sessions(k)
    me = sessions[1]
    base = me.przs_mask(n, 0)
    for j in (0, 2, 3, 4, 5):
        real = me.pair_keys[j]
        me.pair_keys[j] = os.urandom(32)
        try:
            other = me.przs_mask(n, 0)
        finally:
            me.pair_keys[j] = real
        assert not bool((other == base).any()), f"the mask ignores the key with rank {j}"
    assert torch.equal(me.przs_mask(n, 0), base)
    assert not bool((me.przs_mask(n, 1) == base).any())  # a fresh counter, a fresh mask


def test_single_site_mask_is_zero():
    (s,) = _sessions(1)
    assert not s.przs_mask(16, 0).any()


def _store_pair(k: int = 3):
    """Sessions of ranks 0..k-1 sharing one in-process store (no network), as if joined."""
    import torch.distributed as dist

    store = dist.HashStore()
    sessions = [Session(r, k, "tcp://127.0.0.1:1", os.urandom(32)) for r in range(k)]
    for s in sessions:
        s._store = store
    return sessions


def test_abort_sends_the_code_and_step_not_the_message():
    """Issue #11 item 6: what another site reads of a failure is the rank, the code and the step."""
    from fedsynth.errors import InputError, SessionError

    s0, s1, _ = _store_pair()
    s1.site_names = s0.site_names = {0: "A1", 1: "A2", 2: "A3"}  # public after the hellos
    s1.current_step = "cvae: gene means"
    s1.abort(InputError("x.csv: 1 values are NaN (first at sample TCGA-AB-1234, gene KRT14) value 3.25"))
    with pytest.raises(SessionError) as e:
        s0._raise_if_aborted("cvae: class means")
    msg = str(e.value)
    assert msg == ("cvae: class means: rank 1 (A2) aborted with an input error at its step "
                   "'cvae: gene means' (details in that site's log)")
    for private in ("TCGA-AB-1234", "KRT14", "3.25", "NaN", "x.csv"):
        assert private not in msg and private.encode() not in s0._store.get("abort/1")
    assert s0._diagnose() == msg.split(": ", 2)[2]  # a failed collective names it the same way


@pytest.mark.parametrize("exc, code", [
    ("ParameterError", "parameter"), ("BudgetError", "budget"), ("SessionError", "session"),
    ("ValueError", "internal"), ("KeyboardInterrupt", "interrupted"),
])
def test_abort_codes(exc, code):
    import builtins

    import fedsynth.errors as errors

    cls = getattr(errors, exc, None) or getattr(builtins, exc)
    s0, s1, _ = _store_pair()
    s1.current_step = "schema agreement"
    s1.abort(cls("secret detail 42"))
    msg = s0._aborted(1)
    assert f" {code} error at its step 'schema agreement'" in msg and "42" not in msg and "(A2)" not in msg


def test_free_text_in_an_abort_key_is_never_echoed():
    """A notice that is not fedsynth's (an older version's free text, a stray write) reads as unknown."""
    s0, _, _ = _store_pair()
    s0._store.set("abort/2", b"x.csv: sample TCGA-ZZ-9999 is broken")
    msg = s0._aborted(2)
    assert "TCGA" not in msg and "unknown error at its step 'unknown'" in msg
