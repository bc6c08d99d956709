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
    assert s0._diagnose() == (msg.split(": ", 2)[2], [])  # a failed collective names it the same way


def test_values_that_arrived_with_an_abort_are_returned_not_the_abort():
    """The race of CI run 2026-11-30: rank 1 found rank 2's value missing, then rank 0 (which had it) found
    a mismatch and aborted before rank 1 looked again. Rank 1 has every value by then, so it returns them
    and reports the mismatch itself; a value still missing with an abort ends the wait as before."""
    from fedsynth.errors import InputError, SessionError

    s0, s1, s2 = _store_pair()
    s0.site_names = s1.site_names = s2.site_names = {0: "A1", 1: "A2", 2: "A3"}
    for r in (0, 1):
        s1._store.set(f"x1:schema/{r}", b"1")

    class Late:
        """Rank 2's value arrives right after rank 1's first look; rank 0 aborts at once on seeing it."""

        def __init__(self, store):
            self.store, self.looked = store, False

        def check(self, keys):
            if keys == ["x1:schema/2"] and not self.looked:
                self.looked = True
                self.store.set("x1:schema/2", b"1")
                s0.current_step = "schema agreement"
                s0.abort(InputError("schema agreement: sites disagree on 3 genes"))
                return False
            return self.store.check(keys)

        def __getattr__(self, name):
            return getattr(self.store, name)

    keys = [f"x1:schema/{r}" for r in range(3)]
    s1._store = Late(s1._store)
    s1._wait_for(keys, "schema agreement", 5.0)  # returns: every value is here
    s2._store.delete_key("x1:schema/2")
    with pytest.raises(SessionError, match="rank 0 .A1. aborted with an input error"):
        s2._wait_for(keys, "schema agreement", 5.0)


def test_a_victims_abort_does_not_hide_the_rank_that_went_away():
    """Rank 1 saw the crash first and aborted with a session error naming no one: rank 0 still names
    the silent rank 2 (by the heartbeats), and blames it (its SessionError's ranks)."""
    from fedsynth.errors import SessionError

    s0, s1, _ = _store_pair()
    s0._store.add("beat/1", 1)  # rank 1 beat once; no rank beats during the check (rank 2 is dead,
    s1.current_step = "cvae: dp-sgd 3/10"  # rank 1 has left), but rank 1 is accounted for by its notice
    s1.abort(SessionError("cvae: dp-sgd 3/10: Connection closed by peer"))
    text, ranks = s0._diagnose()
    assert ranks == [2]
    assert text.startswith("rank 2 stopped responding (crashed or killed); rank 1 aborted with a session error")


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


def test_a_session_error_passes_on_the_ranks_it_blames():
    """A site that timed out waiting for rank 2 tells the others whom it waited for (ranks only)."""
    from fedsynth.errors import SessionError

    s0, s1, _ = _store_pair()
    s0.current_step = "rendezvous"
    s0.abort(SessionError("rendezvous: rank 2 did not join within 5s (host x.example)", ranks=[2]))
    msg = s1._aborted(0)
    assert msg == ("rank 0 aborted with a session error at its step 'rendezvous', naming rank 2 "
                   "(details in that site's log)")
    s0._store.set("abort/0", b'{"code": "session", "step": "x", "ranks": ["TCGA-1", true, -1]}')
    assert "TCGA" not in s1._aborted(0) and "naming" not in s1._aborted(0)


def test_free_text_in_an_abort_key_is_never_echoed():
    """A notice that is not fedsynth's (an older version's free text, a stray write) reads as unknown."""
    s0, _, _ = _store_pair()
    s0._store.set("abort/2", b"x.csv: sample TCGA-ZZ-9999 is broken")
    msg = s0._aborted(2)
    assert "TCGA" not in msg and "unknown error at its step 'unknown'" in msg


# ------------------------------------------------------- item 9: smaller defects
class _Tampering(Session):
    """A session that replaces one of its own exchange payloads (a broken or hostile peer)."""

    def __init__(self, *args, replace: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self._replace = replace

    def exchange(self, name, payload, **kwargs):
        if name in self._replace:
            payload = self._replace[name](payload)
        return super().exchange(name, payload, **kwargs)


def _authenticate_pair(replace: dict) -> dict:
    """Authenticate rank 0 (honest) and rank 1 (tampering) over one in-process store, in threads."""
    import threading

    import torch.distributed as dist

    store, secret = dist.HashStore(), b"correct horse battery staple 0123456789"
    honest = Session(0, 2, "tcp://127.0.0.1:1", secret, step_timeout=20)
    broken = _Tampering(1, 2, "tcp://127.0.0.1:1", secret, step_timeout=20, replace=replace)
    outcome = {}

    def run(s):
        s._store = store
        try:
            s._authenticate()
            outcome[s.rank] = None
        except Exception as e:  # noqa: BLE001 - judged by the caller
            outcome[s.rank] = e

    threads = [threading.Thread(target=run, args=(s,)) for s in (honest, broken)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


@pytest.mark.parametrize("bad_proof", ["not hex at all", "abcd", 12345, None, "zz" * 32])
def test_malformed_proof_is_a_session_error(bad_proof):
    """A proof that is not 32 hex bytes is refused like a wrong one (SessionError), not a ValueError."""
    from fedsynth.errors import SessionError

    outcome = _authenticate_pair({"proof": lambda p: bad_proof})
    assert isinstance(outcome[0], SessionError), repr(outcome[0])
    assert "authentication: rank 1 could not prove knowledge of the session secret" in str(outcome[0])


def test_malformed_hello_is_a_session_error():
    from fedsynth.errors import SessionError

    outcome = _authenticate_pair({"hello": lambda h: dict(h, pub="not a key")})
    for r in (0, 1):
        assert isinstance(outcome[r], SessionError), repr(outcome[r])
    assert "authentication: rank 1 sent a malformed hello" in str(outcome[0])
    # rank 1 itself finds in the store a hello other than the one its authenticate() made
    assert "authentication: the rendezvous store returned a hello for rank 1 (this site)" in str(outcome[1])


def test_the_honest_pair_authenticates():
    """Control for the two tests above: untampered, both ranks agree the same pair key."""
    outcome = _authenticate_pair({})
    assert outcome == {0: None, 1: None}


@pytest.mark.multiprocess
def test_finish_does_not_raise_when_rank_0_has_left(tmp_path):
    """A slower site whose rank 0 already exited (store gone) finishes cleanly and keeps its model.

    Rank 0's store is hosted by a real child process, killed (by its PID) to play rank 0 leaving.
    """
    import subprocess
    import sys
    import time
    from datetime import timedelta

    import torch.distributed as dist

    from testkit import PARTY_ENV, free_port, kill_by_pid, start_process

    port = free_port()
    host = start_process([sys.executable, "-c", (
        "import time, datetime, torch.distributed as d; "
        f"s = d.TCPStore('127.0.0.1', {port}, None, is_master=True, wait_for_workers=False); "
        "s.set('up', b'1'); time.sleep(600)")], tmp_path, "store_host", env=PARTY_ENV)
    deadline = time.monotonic() + 60
    while True:
        try:
            client = dist.TCPStore("127.0.0.1", port, None, is_master=False, wait_for_workers=False,
                                   timeout=timedelta(seconds=5))
            client.get("up")
            break
        except Exception:  # noqa: BLE001 - not up yet (torch logs the refused connection)
            assert host.poll() is None and time.monotonic() < deadline, host.stderr_text()
            time.sleep(0.3)
    s = Session(1, 2, f"tcp://127.0.0.1:{port}", os.urandom(32))
    s._store = dist.PrefixStore("fedsynth/", client)
    kill_by_pid(host)  # rank 0 exits: its store server goes with it
    with pytest.raises(Exception):
        s._store.check(["probe"])  # the store really is gone
    with pytest.raises(Exception):
        s._store.set("done/1", b"1")  # what made finish() raise before
    s.finish()  # and finishing does not raise
    assert isinstance(host, subprocess.Popen)
