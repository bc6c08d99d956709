"""The MPC session: rendezvous, authentication, key agreement and deadlines.

One :class:`Session` per site process. Opening it runs, in order:

1. **Rendezvous** on ``tcp://HOST:PORT``: rank 0 hosts a ``torch.distributed``
   TCPStore there, every rank announces itself. Deadline:
   ``rendezvous_timeout``; missing ranks are named.
2. **Authentication and key agreement** (before any share exists): each rank
   publishes a fresh nonce and an ephemeral X25519 public key; with the
   transcript ``T = SHA-256(hello_0 || ... || hello_{k-1})`` each rank proves
   knowledge of the pre-shared secret ``s`` by publishing
   ``HMAC-SHA256(s, "auth" || T || rank)``. A rank whose proof does not verify
   is refused by every other rank, which says so and exits non-zero. Pairwise
   keys are ``K_ij = HKDF(X25519(sk_i, pk_j), salt=SHA-256(s), info=T, i, j)``
   (``i < j``, each a 4-byte big-endian integer):
   an eavesdropper who records everything (but holds neither the secret nor
   a private key) cannot compute them, and a man in the middle who swaps
   public keys cannot produce valid proofs.
3. **Process group**: gloo over the same store, with ``step_timeout`` as the
   deadline of every collective; CrypTen adopts it, its generators are
   seeded from the pairwise keys (never sent, unlike CrypTen's default), and
   the masks of every secure sum come from :meth:`Session.przs_mask`,
   ChaCha20 streams keyed by all k-1 of the site's 256-bit pairwise keys
   (so no coalition of up to k-2 other sites can unmask its share).

Every blocking step runs inside :meth:`Session.step`, which records progress
in the store and, when something fails or times out, names the step and the
rank(s) that went silent, crashed or aborted. A heartbeat thread lets the
survivors tell a dead party from a slow one.

A site that fails tells the others only an error *code* (:func:`error_code`:
``input``, ``parameter``, ``budget``, ``session``, ``internal``, ...), the
step it failed in and the ranks a session error blames (e.g. one that never
joined), never the message: messages can hold sample IDs, values or labels.
The full message stays in that site's own log and stderr.

The rendezvous store (:mod:`.store`) listens only on the rendezvous address.
It is not access-controlled: anyone who reaches its port can read and write
keys. After authentication every value a site writes to it
(:meth:`Session.exchange` payloads, abort notices) carries an HMAC under a
key derived from the secret and the transcript, and a value that does not
verify ends the session at every site, naming the step. Not covered: the
heartbeat, claim and done counters (an outsider can fake liveness or delay a
diagnosis, not change a result) and gloo's own address keys, written by
torch (an outsider who rewrites them can make gloo fail, or point it at
itself: gloo traffic is not integrity-protected, see below).

What stays trusted (also in the README): the store and gloo traffic is not encrypted and gloo's is not
integrity-protected, so
sites on different networks must use a VPN or SSH tunnel; gloo needs
full-mesh TCP reachability between all sites.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import crypten_compat as _crypten_compat
from .store import host_store
from ..errors import BudgetError, FedsynthError, InputError, ParameterError, SessionError

PROTOCOL_VERSION = 3  # 2: masks from all pairwise keys, 4-byte ranks in the pair-key info;
#                      3: store values after authentication carry an HMAC (see Session.exchange)
DEFAULT_RENDEZVOUS_TIMEOUT = 300.0
DEFAULT_STEP_TIMEOUT = 120.0
_HEARTBEAT_SECONDS = 1.0

log = logging.getLogger("fedsynth")


def parse_rendezvous(url: str) -> tuple[str, int]:
    """Split ``tcp://HOST:PORT`` into host and port; ParameterError otherwise."""
    m = re.fullmatch(r"tcp://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})", url or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ParameterError(
            f"--rendezvous: {url!r} is not tcp://HOST:PORT (e.g. tcp://127.0.0.1:29500)"
        )
    return m.group(1).strip("[]"), int(m.group(2))


def read_secret(path: str | os.PathLike) -> bytes:
    """Read the pre-shared session secret; refuse empty or world-readable files."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: secret file does not exist")
    mode = p.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise InputError(
            f"{p}: secret file is readable or writable by other users; run chmod 600 {p}"
        )
    secret = p.read_bytes().strip()
    if not secret:
        raise InputError(f"{p}: secret file is empty")
    if len(secret) < 16:
        raise InputError(f"{p}: secret is only {len(secret)} bytes; use at least 16 random bytes")
    short = _encoded_bytes(secret)
    if short is not None and short[1] < 16:
        raise InputError(f"{p}: secret is {short[0]} of only {short[1]} bytes (below 128 bits); "
                         "make one with openssl rand -hex 32")
    return secret


def _encoded_bytes(secret: bytes) -> tuple[str, int] | None:
    """(encoding, decoded length) of a secret that is hex or base64 text, else None.

    Random bytes written as hex or base64 carry at most 8 bits per decoded
    byte, whatever the length of the text: ``0123...`` of 30 hex digits is
    15 random bytes at best. Other text (a passphrase) cannot be judged.
    """
    if re.fullmatch(rb"[0-9a-fA-F]+", secret):
        return "hex", len(secret) // 2
    m = re.fullmatch(rb"([A-Za-z0-9+/]+|[A-Za-z0-9_-]+)(={0,2})", secret)
    if m and (len(secret) % 4 == 0 if m.group(2) else len(secret) % 4 != 1):
        return "base64", len(m.group(1)) * 3 // 4
    return None


def _hkdf(key: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def _seed(b: bytes) -> int:
    """A 63-bit torch seed from key material."""
    return int.from_bytes(b[:8], "big") >> 1


#: the error codes that cross sites (everything else reads as "unknown")
ERROR_CODES = ("input", "parameter", "budget", "session", "error", "interrupted", "internal")


def error_code(exc: BaseException | None) -> str:
    """The short fixed code that tells other sites what kind of error ended this one."""
    for cls, code in ((InputError, "input"), (ParameterError, "parameter"), (BudgetError, "budget"),
                      (SessionError, "session"), (FedsynthError, "error")):
        if isinstance(exc, cls):
            return code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "internal"


def _abort_notice(code: str, step: str, ranks=()) -> bytes:
    """What crosses sites when one fails: the code, the step and the ranks a session error blames."""
    return json.dumps({"code": code, "step": step[:80], "ranks": [int(r) for r in ranks]}).encode()


def _read_abort_notice(raw: bytes) -> tuple[str, str, list[int]]:
    """(code, step, blamed ranks) of another site's notice; anything unexpected reads as "unknown", never echoed."""
    try:
        notice = json.loads(raw.decode())
        code, step = notice["code"], notice["step"]
    except Exception:  # noqa: BLE001 - e.g. free text from an older version: never print it
        return "unknown", "unknown", []
    ranks = notice.get("ranks")
    ranks = sorted({r for r in ranks if type(r) is int and 0 <= r < 1_000_000}) if isinstance(ranks, list) else []
    code = code if code in ERROR_CODES else "unknown"
    # step names are protocol names, the same at every site (release names, gene pairs of the schema)
    step = "".join(c if c.isprintable() else "?" for c in step)[:80] if isinstance(step, str) and step else "unknown"
    return code, step, ranks


def _is_hex(value, nbytes: int) -> bool:
    """Whether ``value`` is a string of exactly ``nbytes`` bytes in hex."""
    return isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{2 * nbytes}}}", value) is not None


def _ranks(ranks) -> str:
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class Session:
    """An authenticated k-party session; see the module docstring.

    Parameters
    ----------
    rank, world_size
        This site's rank (0..k-1) and the number of sites k.
    rendezvous
        ``tcp://HOST:PORT``; rank 0 listens there.
    secret
        The pre-shared session secret (bytes, see :func:`read_secret`).
    site_name
        Human name used in logs and messages.
    rendezvous_timeout, step_timeout
        Deadlines in seconds for joining, and for every later blocking step.
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        rendezvous: str,
        secret: bytes,
        *,
        site_name: str | None = None,
        rendezvous_timeout: float = DEFAULT_RENDEZVOUS_TIMEOUT,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
    ):
        if world_size < 1:
            raise ParameterError(f"--world-size must be >= 1 (got {world_size})")
        if not 0 <= rank < world_size:
            raise ParameterError(f"--rank must be in 0..{world_size - 1} (got {rank})")
        for name, value in (("--rendezvous-timeout", rendezvous_timeout), ("--step-timeout", step_timeout)):
            if not value > 0:
                raise ParameterError(f"{name} must be > 0 seconds (got {value})")
        self.host, self.port = parse_rendezvous(rendezvous)
        self.rendezvous = rendezvous
        self.rank = rank
        self.world_size = world_size
        self.site_name = site_name or f"site{rank}"
        self.rendezvous_timeout = float(rendezvous_timeout)
        self.step_timeout = float(step_timeout)
        self._secret = secret
        self._store = None
        self._store_key: bytes | None = None  # set once authenticated: the MAC key of store values
        self._beat_stop = threading.Event()
        self._beat_thread = None
        self._step_no = 0
        self.current_step = "start"
        self.pair_keys: dict[int, bytes] = {}
        self.shared_seed: int | None = None
        self.transcript: bytes | None = None
        self.site_names: dict[int, str] = {}  # public once the hellos are exchanged
        self.bytes_sent = 0
        self._mask_calls = 0
        self.secure_sum_values = 0  # int64 share values this site put into secure sums (one mask each)

    # ------------------------------------------------------------------ open
    def open(self) -> "Session":
        """Rendezvous, authenticate, agree keys, start the process group."""
        self._rendezvous()
        self._authenticate()
        self._start_process_group()
        return self

    def _rendezvous(self) -> None:
        import torch.distributed as dist

        self.current_step = "rendezvous"
        timeout = timedelta(seconds=self.rendezvous_timeout)
        try:
            if self.rank == 0:  # listening on the rendezvous address only, not on every interface
                base = host_store(self.host, self.port, self.world_size, timeout)
            else:
                base = dist.TCPStore(self.host, self.port, self.world_size, is_master=False,
                                     timeout=timeout, wait_for_workers=False)
        except OSError as e:  # rank 0: binding the rendezvous address failed at once
            hint = ("; rank 0 listens on exactly the rendezvous host, which must be an address of "
                    "this machine" if e.errno == errno.EADDRNOTAVAIL else "")
            raise SessionError(
                f"rendezvous: could not listen on {self.rendezvous} ({e.strerror or _short(e)}){hint}"
            ) from None
        except Exception as e:  # noqa: BLE001 - torch raises several types
            what = "listen on" if self.rank == 0 else "reach rank 0 at"
            raise SessionError(
                f"rendezvous: could not {what} {self.rendezvous} within "
                f"{self.rendezvous_timeout:g}s ({_short(e)})"
            ) from None
        self._base_store = base
        self._store = dist.PrefixStore("fedsynth/", base)
        claims = self._store.add(f"claim/{self.rank}", 1)
        if claims > 1:
            raise SessionError(
                f"rendezvous: rank {self.rank} was already taken by another site; "
                "every site needs its own --rank"
            )
        self._start_heartbeat()
        self._wait_for(
            [f"claim/{r}" for r in range(self.world_size)],
            "rendezvous",
            self.rendezvous_timeout,
            what="did not join",
        )
        log.info("rendezvous at %s complete: %d sites", self.rendezvous, self.world_size)

    def _authenticate(self) -> None:
        step = "authentication"
        self.current_step = step
        sk = X25519PrivateKey.generate()
        pub = sk.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        hello = {
            "v": PROTOCOL_VERSION,
            "rank": self.rank,
            "world_size": self.world_size,
            "site": self.site_name,
            "nonce": os.urandom(32).hex(),
            "pub": pub.hex(),
        }
        hellos = self.exchange("hello", hello, step=step)
        if hellos[self.rank] != hello:  # each rank vouches (with its proof) for a transcript holding its own hello
            raise SessionError(f"{step}: the rendezvous store returned a hello for rank {self.rank} (this site) "
                               "that this site did not send; someone else wrote to the rendezvous store")
        for r, h in enumerate(hellos):
            if not (isinstance(h, dict) and h.get("rank") == r and _is_hex(h.get("pub"), 32)
                    and _is_hex(h.get("nonce"), 32)):
                raise SessionError(f"{step}: rank {r} sent a malformed hello; refused before any "
                                   "share was exchanged", ranks=[r])
            if h.get("v") != PROTOCOL_VERSION or h.get("world_size") != self.world_size:
                raise SessionError(
                    f"{step}: rank {h.get('rank')} runs protocol v{h.get('v')} with "
                    f"world size {h.get('world_size')}; this site runs v{PROTOCOL_VERSION} "
                    f"with world size {self.world_size}"
                )
        self.site_names = {h["rank"]: str(h.get("site")) for h in hellos if isinstance(h.get("rank"), int)}
        canon = b"".join(json.dumps(h, sort_keys=True).encode() for h in hellos)
        self.transcript = hashlib.sha256(canon).digest()
        proofs = self.exchange("proof", self._proof(self.rank).hex(), step=step)
        bad = [  # a malformed proof (not 32 hex bytes) is a proof that does not verify
            r
            for r, p in enumerate(proofs)
            if r != self.rank and not (_is_hex(p, 32) and hmac.compare_digest(bytes.fromhex(p), self._proof(r)))
        ]
        if bad:
            if len(bad) == self.world_size - 1 and self.world_size > 2:
                msg = (
                    f"{step}: no other site accepts this site's session secret "
                    f"({_ranks(bad)} disagree); check --secret-file"
                )
            else:
                msg = (
                    f"{step}: {_ranks(bad)} could not prove knowledge of the session "
                    "secret; refused before any share was exchanged"
                )
            raise SessionError(msg, ranks=bad)
        salt = hashlib.sha256(self._secret).digest()
        for h in hellos:
            r = h["rank"]
            if r == self.rank:
                continue
            shared = sk.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(h["pub"])))
            lo, hi = min(r, self.rank), max(r, self.rank)
            info = b"fedsynth-pair-v2" + self.transcript + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")
            self.pair_keys[r] = _hkdf(shared, salt, info)
        group_key = _hkdf(self._secret, self.transcript, b"fedsynth-group-v1")
        self._group_key = group_key
        # from here on every value this site writes to the store carries a MAC under this key
        self._store_key = _hkdf(self._secret, self.transcript, b"fedsynth-store-mac-v1")
        self.shared_seed = _seed(_hkdf(group_key, b"", b"shared-seed"))
        log.info("authenticated %d sites; pairwise keys agreed", self.world_size)

    def _proof(self, rank: int) -> bytes:
        msg = b"fedsynth-auth-v1" + self.transcript + rank.to_bytes(4, "big")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def przs_seeds(self) -> tuple[int, int, int, int]:
        """(prev, next, local, global) seeds for CrypTen's generators.

        ``next`` of rank i equals ``prev`` of rank i+1: both derive
        ``seed(i -> i+1)`` from their pairwise key.
        """
        k = self.world_size

        def directed(src: int, dst: int) -> int:
            if src == dst:  # one party: PRZS must be zero, so prev == next
                return _seed(_hkdf(self._group_key, b"", b"przs-solo"))
            key = self.pair_keys[dst if src == self.rank else src]
            return _seed(_hkdf(key, b"", f"przs {src}->{dst}".encode()))

        prev_seed = directed((self.rank - 1) % k, self.rank)
        next_seed = directed(self.rank, (self.rank + 1) % k)
        local_seed = _seed(os.urandom(8))
        global_seed = _seed(_hkdf(self._group_key, b"", b"global"))
        return prev_seed, next_seed, local_seed, global_seed

    def next_mask_counter(self) -> int:
        """A fresh mask counter for each secure sum of this session (never reused)."""
        self._mask_calls += 1
        return self._mask_calls - 1

    def przs_mask(self, n: int, counter: int):
        """A pseudo-random sharing of zero over Z_{2^64} built from *all* pairwise keys.

        .. math::

            m_i = \\sum_{j > i} r(i \\to j) - \\sum_{j < i} r(j \\to i)

        ``r(i->j)`` (``i < j``) is the ChaCha20 key stream (a cryptographic
        PRG) under a per-call subkey ``HKDF(K_ij, "przs-mask i->j #counter")``
        (ranks and counter written out in decimal with fixed separators, so
        the string is unambiguous for any k). Sites i and j derive the same
        ``r(i->j)``: i adds it and j subtracts it, so the masks of all ranks
        sum to zero. Unmasking site i's share takes all k-1 of its pairwise
        keys: a coalition of up to k-2 other sites (e.g. its two ring
        neighbours in gloo's all-reduce) lacks at least one of them. The
        previous mask used only the two ring keys ``K(i-1,i)``, ``K(i,i+1)``,
        which site i's two neighbours together hold
        (``tests/test_collusion.py``). This replaces CrypTen's PRZS, whose
        torch Mersenne Twister generators take 32-bit seeds. ``counter``
        must advance identically at every site (one per secure sum).
        """
        import torch

        self.secure_sum_values += n
        mask = torch.zeros(n, dtype=torch.int64)
        for j in range(self.world_size):
            if j == self.rank:
                continue
            lo, hi = min(self.rank, j), max(self.rank, j)
            sub = _hkdf(self.pair_keys[j], b"", f"przs-mask {lo}->{hi} #{counter}".encode())
            enc = Cipher(algorithms.ChaCha20(sub, bytes(16)), mode=None).encryptor()
            stream = torch.frombuffer(bytearray(enc.update(bytes(8 * n))), dtype=torch.int64)
            mask = mask + stream if j > self.rank else mask - stream
        return mask

    def _start_process_group(self) -> None:
        import torch.distributed as dist

        with self.step("process group"):
            dist.init_process_group(
                backend="gloo",
                store=dist.PrefixStore("pg/", self._store),
                rank=self.rank,
                world_size=self.world_size,
                timeout=timedelta(seconds=self.step_timeout),
            )
        _crypten_compat.adopt_process_group(self.rank, self.world_size)
        _crypten_compat.seed_generators(*self.przs_seeds())

    # ------------------------------------------------------------- heartbeat
    def _start_heartbeat(self) -> None:
        import torch.distributed as dist

        store = dist.PrefixStore("fedsynth/", self._base_store.clone())
        key = f"beat/{self.rank}"

        def beat():
            while not self._beat_stop.wait(_HEARTBEAT_SECONDS):
                try:
                    store.add(key, 1)
                except Exception:  # noqa: BLE001 - store host gone: stop beating
                    return

        store.add(key, 1)
        self._beat_thread = threading.Thread(target=beat, name="fedsynth-heartbeat", daemon=True)
        self._beat_thread.start()

    # ----------------------------------------------------------- traffic
    def traffic(self) -> dict:
        """What this site has sent so far, counted and measured (for run.json).

        * ``secure_sums``, ``share_bytes``: the secure sums and their int64
          share bytes ``8 n`` (one share of ``n`` values per sum; a ring
          all-reduce sends ``2 (k - 1) / k`` of that per party);
        * ``store_exchange_bytes``: JSON payloads of :meth:`exchange`;
        * ``tcp_bytes_sent`` / ``tcp_bytes_received``: measured, the kernel's
          ``tcpi_bytes_acked`` / ``tcpi_bytes_received`` (TCP payload, no
          headers) summed over this process's open TCP sockets: the gloo
          pairs, the store connections and, at rank 0, the store server's.
          Linux only (None elsewhere). A LOWER BOUND: sockets closed before
          this call are not counted, and in long runs (minutes between the
          last sums, e.g. pgm) some are (bench/generators.py checks
          sent = received over all sites); ``share_bytes`` is the exact
          protocol figure.
        """
        sent, received, n = _tcp_socket_bytes()
        return {"secure_sums": self._mask_calls, "secure_sum_values": self.secure_sum_values,
                "share_bytes": 8 * self.secure_sum_values, "store_exchange_bytes": self.bytes_sent,
                "tcp_bytes_sent": sent, "tcp_bytes_received": received, "tcp_sockets": n}

    # ----------------------------------------------------------- public data
    def exchange(self, name: str, payload, *, step: str | None = None, timeout: float | None = None) -> list:
        """All-gather a small JSON-serialisable public value through the store.

        Only for values that are public to the parties by design (protocol
        messages, gene names, label names); never for data or statistics.

        Rank r's value is stored under ``x<n>:<name>/<r>`` (``n`` counts this
        session's exchanges). After authentication it carries
        ``HMAC-SHA256(K_store, key || rank || payload)`` (:meth:`_sealed`),
        ``K_store = HKDF(s, salt=T, "fedsynth-store-mac-v1")``: anyone else
        who writes to the store (it is not access-controlled) cannot forge
        or replay a value; a value that does not verify is a SessionError
        naming the step, whichever was written first. (The hellos and proofs
        before it are covered by the proofs themselves.)
        """
        step = step or name
        self.current_step = step  # what an abort notice names
        self._step_no += 1
        prefix = f"x{self._step_no}:{name}"
        data = json.dumps(payload).encode()
        own = f"{prefix}/{self.rank}"
        value = self._sealed(own, self.rank, data)
        self.bytes_sent += len(value)
        self._store.set(own, value)
        keys = [f"{prefix}/{r}" for r in range(self.world_size)]
        self._wait_for(keys, step, timeout or self.step_timeout)
        values = []
        for r, k in enumerate(keys):
            raw = self._opened(k, r, self._store.get(k))
            try:
                values.append(json.loads(raw) if raw is not None else None)
            except ValueError:
                raw = None
            if raw is None:
                raise SessionError(f"{step}: store value for {step} from rank {r} failed authentication; "
                                   "someone else wrote to the rendezvous store")
        return values

    def _mac(self, key: str, rank: int, data: bytes) -> bytes:
        msg = b"fedsynth-store-v1\0" + key.encode() + b"\0" + rank.to_bytes(4, "big") + data
        return hmac.new(self._store_key, msg, hashlib.sha256).digest()

    def _sealed(self, key: str, rank: int, data: bytes) -> bytes:
        """``data`` as written under store key ``key`` (without the PrefixStore prefix): after
        authentication ``hex(MAC) || ":" || data``, before it ``data`` as is."""
        if self._store_key is None:
            return data
        return self._mac(key, rank, data).hex().encode() + b":" + data

    def _opened(self, key: str, rank: int, value: bytes) -> bytes | None:
        """The payload of a :meth:`_sealed` value, or None if its MAC does not verify."""
        if self._store_key is None:
            return value
        tag, sep, data = bytes(value).partition(b":")
        if not sep or not re.fullmatch(rb"[0-9a-f]{64}", tag):
            return None
        return data if hmac.compare_digest(bytes.fromhex(tag.decode()), self._mac(key, rank, data)) else None

    def _wait_for(self, keys: list[str], step: str, timeout: float, what: str = "did not respond") -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                missing = [k for k in keys if not self._store.check([k])]
            except Exception as e:  # noqa: BLE001
                raise SessionError(
                    f"{step}: lost the rendezvous store hosted by rank 0 ({_short(e)})"
                ) from None
            if not missing:
                return
            try:
                self._raise_if_aborted(step)
            except SessionError:
                # the last values came in, and another rank saw them and aborted, between the two checks:
                # with every value here this site goes on and finds the same problem itself (its own
                # message, not "rank r aborted"); whatever it does next waits on that rank and stops
                if all(self._store.check([k]) for k in keys):
                    return
                raise
            if time.monotonic() > deadline:
                ranks = [int(k.rsplit("/", 1)[1]) for k in missing]
                raise SessionError(f"{step}: {_ranks(ranks)} {what} within {timeout:g}s", ranks=ranks)
            time.sleep(0.05)

    def _aborted(self, r: int) -> str:
        """Rank r's abort notice as one phrase: its rank (and public site name), code and step."""
        key = f"abort/{r}"
        raw = self._store.get(key)
        data = self._opened(key, r, raw)
        # an unauthenticated notice still ends the session (anyone on the store can stop it anyway),
        # but says so: sites write MACed notices once authenticated
        note = "" if data is not None else (
            "; the notice is not authenticated: that site failed before completing authentication, "
            "or someone else wrote to the rendezvous store")
        code, step, blamed = _read_abort_notice(raw if data is None else data)
        who = f"rank {r}" + (f" ({self.site_names[r]})" if r in self.site_names else "")
        blame = f", naming {_ranks(blamed)}" if blamed else ""
        return (f"{who} aborted with a{'n' if code[0] in 'aeiou' else ''} {code} error at its step "
                f"'{step}'{blame} (details in that site's log{note})")

    def _raise_if_aborted(self, step: str) -> None:
        others = [r for r in range(self.world_size) if r != self.rank]
        for r in others:
            if self._store.check([f"abort/{r}"]):
                raise SessionError(f"{step}: {self._aborted(r)}")

    # ----------------------------------------------------------------- steps
    @contextlib.contextmanager
    def step(self, name: str):
        """Run one blocking step; translate any failure into a SessionError naming ranks."""
        self.current_step = name
        try:
            yield
        except SessionError:
            raise
        except Exception as e:  # noqa: BLE001 - gloo raises RuntimeError/DistBackendError
            text, ranks = self._diagnose()
            raise SessionError(f"{name}: {text} ({_short(e)})", ranks=ranks) from None

    def _diagnose(self) -> tuple[str, list[int]]:
        """Who is to blame for a failed collective: aborted, dead, or just late; and the ranks it blames.

        A site that aborted with its own error (or naming the ranks it
        blames) is the answer. A site that aborted only because the
        collective failed under it too (a session error naming no one: it
        saw the crash first) is not: then the heartbeats decide, so that
        every survivor names the rank that actually went away.
        """
        try:
            others = [r for r in range(self.world_size) if r != self.rank]
            aborted = [r for r in others if self._store.check([f"abort/{r}"])]
            for r in aborted:
                code, blamed = self._abort_code(r)
                if code != "session" or blamed:
                    return self._aborted(r), list(blamed)
            before = {r: self._store.add(f"beat/{r}", 0) for r in others}
            time.sleep(2.5 * _HEARTBEAT_SECONDS)
            after = {r: self._store.add(f"beat/{r}", 0) for r in others}
        except Exception:  # noqa: BLE001
            return "rank 0 (the rendezvous host) is unreachable", [0]
        silent = [r for r in others if r not in aborted and after[r] == before[r]]
        said = [self._aborted(r) for r in aborted]
        if silent:
            return "; ".join([f"{_ranks(silent)} stopped responding (crashed or killed)", *said]), silent
        if said:
            return "; ".join(said), []
        return f"{_ranks(others)} did not complete the step within {self.step_timeout:g}s", []

    def _abort_code(self, r: int) -> tuple[str, list[int]]:
        """Rank r's abort notice: its error code and the ranks it blames."""
        key = f"abort/{r}"
        raw = self._store.get(key)
        data = self._opened(key, r, raw)
        code, _, blamed = _read_abort_notice(raw if data is None else data)
        return code, list(blamed)

    def abort(self, exc: BaseException | None = None) -> None:
        """Tell the other sites that this site is leaving (best effort).

        Only :func:`error_code` of ``exc``, the current step and, for a
        :class:`SessionError`, the ranks it blames cross sites, never the
        message (it stays in this site's log).
        """
        if self._store is None:
            return
        with contextlib.suppress(Exception):
            key = f"abort/{self.rank}"
            notice = _abort_notice(error_code(exc), self.current_step, getattr(exc, "ranks", ()))
            self._store.set(key, self._sealed(key, self.rank, notice))

    def linger(self) -> None:
        """After a failure, rank 0 keeps hosting the store until every other rank has
        finished, aborted or gone silent (bounded by ``step_timeout`` + a few heartbeats),
        so the others can still read why the session ended and who is to blame."""
        if self._store is None or self.rank != 0:
            return
        deadline = time.monotonic() + self.step_timeout + 5 * _HEARTBEAT_SECONDS
        seen: dict[int, tuple[int, float]] = {}
        while time.monotonic() < deadline:
            pending = []
            for r in range(1, self.world_size):
                try:
                    if self._store.check([f"abort/{r}"]) or self._store.check([f"done/{r}"]):
                        continue
                    beat = self._store.add(f"beat/{r}", 0)
                except Exception:  # noqa: BLE001
                    return
                last, since = seen.get(r, (None, time.monotonic()))
                if beat != last:
                    seen[r] = (beat, time.monotonic())
                elif time.monotonic() - since > 3 * _HEARTBEAT_SECONDS:
                    continue  # silent: crashed, killed or never joined
                pending.append(r)
            if not pending:
                return
            time.sleep(0.1)

    def finish(self) -> None:
        """Leave cleanly; rank 0 keeps the store up until every rank is done.

        Never raises: the session's work is complete, so a rank 0 that has
        already left (its store gone) must not cost a slower site its model.
        """
        if self._store is None:
            return
        try:
            self._store.set(f"done/{self.rank}", b"1")
        except Exception as e:  # noqa: BLE001 - rank 0 (the store host) already exited
            log.info("finish: rank 0 has already left the session (%s); nothing is lost", _short(e))
            return
        if self.rank == 0:
            with contextlib.suppress(SessionError):
                self._wait_for(
                    [f"done/{r}" for r in range(self.world_size)],
                    "finish",
                    self.step_timeout,
                )

    def close(self) -> None:
        import torch.distributed as dist

        self._beat_stop.set()
        _crypten_compat.shutdown()
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    def __enter__(self) -> "Session":
        try:
            return self.open()
        except BaseException as e:
            self.abort(e)
            self.linger()
            self.close()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        else:
            self.abort(exc)
            self.linger()
        self.close()


def _tcp_socket_bytes() -> tuple[int | None, int | None, int]:
    """(bytes acked, bytes received, sockets) over this process's TCP sockets (Linux ``TCP_INFO``)."""
    import socket
    import struct

    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir() or not hasattr(socket, "TCP_INFO"):
        return None, None, 0
    sent = received = n = 0
    for entry in fd_dir.iterdir():
        try:
            if not os.readlink(entry).startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(entry.name)))
        except OSError:
            continue
        try:
            if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
                info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
                if len(info) >= 136:  # tcpi_bytes_acked, tcpi_bytes_received: u64 at offsets 120, 128
                    a, r = struct.unpack_from("=QQ", info, 120)
                    sent, received, n = sent + a, received + r, n + 1
        except OSError:
            pass
        finally:
            s.close()  # closes only the duplicate descriptor
    return sent, received, n


def announce_failure(rendezvous: str, rank: int, exc: BaseException, step: str = "setup",
                     timeout: float = 3.0) -> bool:
    """Best effort, before joining: tell a waiting session that this rank won't come.

    Used when a site fails locally (bad input) before it joins; the other
    sites then stop at once, told the rank, :func:`error_code` of ``exc`` and
    ``step``, instead of waiting for the deadline. The message of ``exc``
    never leaves this site.
    Returns whether the notice was delivered (it cannot be if rank 0 is the
    one failing, or is not up).
    """
    import torch.distributed as dist

    if rank == 0:
        return False
    try:
        host, port = parse_rendezvous(rendezvous)
        # nobody listening: give up quietly (TCPStore would retry until the timeout
        # and log C++ connection errors with stack traces on stderr)
        import socket

        with socket.create_connection((host, port), timeout=timeout):
            pass
        store = dist.TCPStore(host, port, None, is_master=False,
                              timeout=timedelta(seconds=timeout), wait_for_workers=False)
        dist.PrefixStore("fedsynth/", store).set(f"abort/{rank}", _abort_notice(error_code(exc), step))
        return True
    except Exception:  # noqa: BLE001 - best effort only
        return False


def _short(e: BaseException) -> str:
    """First line of an exception message, trimmed of C++ source prefixes."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)
    return text[:300]
