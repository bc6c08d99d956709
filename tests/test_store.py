"""The rendezvous store hardened (issue #11, "Privacy hardening"), without other processes.

* rank 0's store listens on the rendezvous address only, not on every interface;
* after authentication every value a site writes to the store carries a MAC,
  and a value anyone else wrote (or moved from another key) is a SessionError
  naming the step;
* a site checks the store returned its own hello;
* secrets that are hex or base64 of fewer than 16 bytes are refused.

Sessions here talk through an in-process ``HashStore`` (threads, no network)
except in the listening tests, which open a real TCPStore on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from fedsynth.errors import InputError, SessionError
from fedsynth.federation.session import Session, read_secret
from fedsynth.federation.store import host_store

SECRET = b"correct horse battery staple 0123456789"


# ------------------------------------------------------------ 1. listening address
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                found.append(addr)
    return found


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_the_store_listens_on_the_rendezvous_address_only():
    """A session at tcp://127.0.0.1:P listens on 127.0.0.1 only: 127.0.0.2 (also loopback) is refused.

    torch's TCPStore alone listens on 0.0.0.0 / :: (every interface), which
    this test catches (fedsynth/federation/store.py works around it).
    """
    port = _free_port()
    s = Session(0, 1, f"tcp://127.0.0.1:{port}", SECRET, rendezvous_timeout=20)
    s._rendezvous()
    try:
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, little-endian hex; no 00000000 nor [::]
        assert _refused("127.0.0.2", port)
        assert not _refused("127.0.0.1", port)
        s._store.set("probe", b"1")
        assert s._store.get("probe") == b"1"
    finally:
        s._beat_stop.set()
        s._beat_thread.join(5)
        del s._store, s._base_store


@pytest.mark.skipif(not Path("/proc/net/tcp6").exists(), reason="reads Linux's /proc/net/tcp6")
def test_an_ipv6_rendezvous_listens_on_that_address_only():
    port = _free_port()
    try:
        store = host_store("::1", port, 1, timedelta(seconds=10))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert _listening(port) == ["00000000000000000000000001000000"]  # ::1
        assert _refused("127.0.0.1", port)
        store.set("a", b"b")
        client = __import__("torch.distributed", fromlist=["TCPStore"]).TCPStore(
            "::1", port, None, is_master=False, timeout=timedelta(seconds=10))
        assert client.get("a") == b"b"
    finally:
        del store


def test_rank_0_cannot_listen_on_a_port_taken_on_that_address():
    """A one-line SessionError at once (not a wait until the rendezvous deadline)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        s = Session(0, 1, f"tcp://127.0.0.1:{port}", SECRET, rendezvous_timeout=60)
        with pytest.raises(SessionError, match=rf"^rendezvous: could not listen on tcp://127\.0\.0\.1:{port} "
                                               r"\(Address already in use\)$"):
            s._rendezvous()


def test_an_address_not_of_this_machine_is_explained(monkeypatch):
    """Binding an address this machine does not have (EADDRNOTAVAIL; simulated: tests use loopback only)."""
    import errno

    import fedsynth.federation.session as session_mod

    def unavailable(*args, **kwargs):
        raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))

    monkeypatch.setattr(session_mod, "host_store", unavailable)
    s = Session(0, 1, "tcp://127.0.0.1:29999", SECRET, rendezvous_timeout=5)
    with pytest.raises(SessionError) as e:
        s._rendezvous()
    assert str(e.value) == ("rendezvous: could not listen on tcp://127.0.0.1:29999 (Cannot assign requested "
                            "address); rank 0 listens on exactly the rendezvous host, which must be an address "
                            "of this machine")


# ------------------------------------------------------------ 2.-3. MACs and hellos
class _Store:
    """A HashStore that lets a test play an outsider on the store: ``tamper(key, value)`` on each set.

    The write and the outsider's overwrite are one step for readers (a lock): the sessions run as
    threads, and a reader scheduled between the two would read the honest value (CI run of
    2026-11-30, "bad mac": rank 2 read rank 1's payload before the forgery landed).
    """

    def __init__(self, tamper=None):
        import torch.distributed as dist

        self.inner, self.tamper, self.lock = dist.HashStore(), tamper, threading.Lock()

    def set(self, key, value):
        with self.lock:
            self.inner.set(key, value)
            if self.tamper:
                self.tamper(self.inner, key, bytes(value) if not isinstance(value, str) else value.encode())

    def check(self, keys):
        with self.lock:
            return self.inner.check(keys)

    def get(self, key):
        with self.lock:
            if self.inner.check([key]):
                return self.inner.get(key)
        return self.inner.get(key)  # not there yet: wait for it outside the lock (HashStore.get blocks)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _run(sessions, store, body):
    """Authenticate ``sessions`` over ``store`` in threads, then ``body(session)``; outcome per rank."""
    outcome = {}

    def run(s):
        s._store = store
        try:
            s._authenticate()
            outcome[s.rank] = body(s)
        except Exception as e:  # noqa: BLE001 - judged by the caller
            outcome[s.rank] = e
            s.abort(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def _sessions(k=3, secret=SECRET):
    return [Session(r, k, "tcp://127.0.0.1:1", secret, step_timeout=15) for r in range(k)]


def _schema(s):
    return s.exchange("schema", {"n": 10 + s.rank}, step="schema agreement")


def test_honest_exchange_after_authentication():
    """Control: untouched, every rank reads every rank's payload; the stored values carry a MAC."""
    store = _Store()
    outcome = _run(_sessions(), store, _schema)
    assert outcome == {r: [{"n": 10}, {"n": 11}, {"n": 12}] for r in range(3)}
    raw = store.get("x3:schema/1")
    assert raw.endswith(b':{"n": 11}') and len(raw.split(b":")[0]) == 64


@pytest.mark.parametrize("forge", ["plain", "other key", "other session", "bad mac"])
def test_a_value_written_by_someone_else_is_refused(forge):
    """An outsider overwrites rank 1's schema payload just after rank 1 writes it: every reader refuses it.

    ``plain``: the payload as the old protocol stored it (no MAC);
    ``other key``: rank 1's own, valid, value of an earlier exchange (the proof) moved there;
    ``other session``: a value MACed with another session's store key (same secret, other transcript);
    ``bad mac``: a MAC of the right shape over another payload.
    """
    other = {}
    if forge == "other session":
        o = _run(_sessions(), _Store(), lambda s: other.setdefault(s.rank, s._sealed("x3:schema/1", 1, b'{"n": 1000}')))
        assert all(not isinstance(v, Exception) for v in o.values())

    def tamper(inner, key, value):
        if key != "x3:schema/1":
            return
        if forge == "plain":
            inner.set(key, b'{"n": 1000}')
        elif forge == "other key":
            inner.set(key, inner.get("x2:proof/1"))
        elif forge == "other session":
            inner.set(key, other[1])
        else:
            inner.set(key, value.split(b":", 1)[0] + b':{"n": 1000}')

    outcome = _run(_sessions(), _Store(tamper), _schema)
    told = ("schema agreement: store value for schema agreement from rank 1 failed authentication; "
            "someone else wrote to the rendezvous store")
    for r in range(3):
        assert isinstance(outcome[r], SessionError), (r, outcome[r])
        # each reader finds the forgery itself, unless another's abort notice reaches it first
        assert str(outcome[r]) == told or (
            " aborted with a session error at its step 'schema agreement' (details in that site's log)"
            in str(outcome[r])), (r, outcome[r])
    assert sum(str(e) == told for e in outcome.values()) >= 1


def test_the_store_must_return_this_sites_own_hello():
    """An outsider swaps rank 0's hello (well formed: its own nonce and key) before anyone reads it.

    Every rank would read the same swapped hello, so the transcripts and
    proofs would agree; rank 0 alone can tell it is not what it sent.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    pub = X25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                serialization.PublicFormat.Raw)

    def tamper(inner, key, value):
        if key == "x1:hello/0":
            inner.set(key, json.dumps(dict(json.loads(value), pub=pub.hex(), nonce=os.urandom(32).hex())))

    outcome = _run(_sessions(2), _Store(tamper), lambda s: None)
    assert isinstance(outcome[0], SessionError), outcome[0]
    assert str(outcome[0]).startswith("authentication: the rendezvous store returned a hello for rank 0 "
                                      "(this site) that this site did not send")
    assert isinstance(outcome[1], SessionError), outcome[1]  # told by rank 0's abort (or its missing proof)


def test_abort_notices_after_authentication_are_authenticated():
    """A site's own abort notice reads as before; one an outsider writes says it is not authenticated."""
    store = _Store()
    sessions = _sessions(2)
    assert _run(sessions, store, lambda s: None) == {0: None, 1: None}
    s0, s1 = sessions
    s1.current_step = "cvae: gene means"
    s1.abort(SessionError("x"))
    assert s0._aborted(1) == ("rank 1 (site1) aborted with a session error at its step 'cvae: gene means' "
                              "(details in that site's log)")
    store.set("abort/1", b'{"code": "budget", "step": "forged", "ranks": [0]}')
    msg = s0._aborted(1)
    assert "budget error at its step 'forged'" in msg
    assert msg.endswith("the notice is not authenticated: that site failed before completing authentication, "
                        "or someone else wrote to the rendezvous store)")


# ------------------------------------------------------------ 4. secret entropy
def _secret(tmp_path, text: str) -> Path:
    p = tmp_path / "session.key"
    p.write_text(text + "\n")
    os.chmod(p, 0o600)
    return p


@pytest.mark.parametrize("text, what", [
    ("0123456789abcdef0123456789abcde", "hex of only 15 bytes"),          # 31 hex digits
    ("0123456789abcdef0123456789ABCDEF"[:16], "hex of only 8 bytes"),     # openssl rand -hex 8
    ("q83vEjRWeJCrze8SNFZ4kA", None),                                      # base64 of 16 bytes, unpadded: fine
    ("q83vEjRWeJCrze8SNFZ4", "base64 of only 15 bytes"),
    ("q83vEjRWeJCrze8S", "base64 of only 12 bytes"),                      # openssl rand -base64 12
    ("q83vEjRWeJCrze8SNFZ=", "base64 of only 14 bytes"),
])
def test_short_hex_or_base64_secrets_are_refused(tmp_path, text, what):
    p = _secret(tmp_path, text)
    if what is None:
        assert read_secret(p) == text.encode()
        return
    with pytest.raises(InputError) as e:
        read_secret(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: secret is {what} (below 128 bits)") and "\n" not in msg


@pytest.mark.parametrize("text", [
    os.urandom(16).hex(),                                   # openssl rand -hex 16: 32 hex digits
    os.urandom(32).hex(),                                   # openssl rand -hex 32, secrets.token_hex(32)
    __import__("base64").b64encode(os.urandom(16)).decode(),  # openssl rand -base64 16
    __import__("secrets").token_urlsafe(16),
    "correct horse battery staple 0123456789",              # a passphrase: not judged (tests/testkit.py)
    "the right secret for this session 12345",
])
def test_secrets_of_128_bits_or_unjudgeable_text_are_accepted(tmp_path, text):
    assert read_secret(_secret(tmp_path, text)) == text.encode()


def test_the_old_length_check_stays(tmp_path):
    with pytest.raises(InputError, match="secret is only 15 bytes; use at least 16 random bytes"):
        read_secret(_secret(tmp_path, "x" * 15))
