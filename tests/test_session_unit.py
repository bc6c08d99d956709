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
