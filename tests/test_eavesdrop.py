"""A passive eavesdropper against CrypTen's default PRZS and fedsynth's masks.

Threat model
------------
Three sites run one secure sum over 127.0.0.1, each in its own process
(``tests/eavesdrop_party.py``). The adversary is **passive and on the
network between the sites**: it records every byte the sites exchange over
gloo and over the rendezvous TCPStore (neither is encrypted) but changes
nothing, and it holds no site's private state. It wins if it recovers a
site's private input vector.

What is recorded: a *wire tap* in each party logs, before the op runs, every
tensor the process hands to torch.distributed for transmission (``isend``,
``send``, ``broadcast`` as the source, ``all_reduce``, ``reduce``,
``all_gather``; CrypTen's communicator calls these) and every value it
writes to the TCPStore (``set``/``add``/...). For the all-reduce the tap
logs the party's own share: gloo's ring all-reduce puts per-chunk partial
sums on the wire, and the difference between what a party sends and what it
received earlier in the ring is exactly its own share, so a full tap of the
links is equivalent to this record. (The store keys gloo writes from C++
during its own rendezvous, host addresses only, bypass the Python tap.)
Separately, each party writes *ground truth* (its real input, its pairwise
keys, its X25519 private key, its masks) that the attacker never reads; the
assertions use it only to judge the attacker's output.

The attack on CrypTen's default: CrypTen masks a share with PRZS,
``R(prev) - R(next)`` drawn from torch generators seeded with
``prev``/``next``; its default ``crypten.init()`` sends each ``next`` seed
to the successor with a plain ``isend``. The attacker takes the seeds off the
wire, rebuilds the generators as CrypTen does, regenerates the masks with
``crypten.common.rng.generate_random_ring_element``, subtracts them from the
all-reduce share and decodes at 32 fractional bits: every input, exactly.

The attack on fedsynth: its mask is
:meth:`fedsynth.federation.session.Session.przs_mask`,
``m_i = sum_{j>i} r(i->j) - sum_{j<i} r(j->i)`` (with three sites: the
streams of its two pairwise keys, i.e. with its ring predecessor and
successor, signed by which rank is lower) with ``r(i->j)`` the ChaCha20 key
stream under ``HKDF(K_ij, "przs-mask i->j #counter")``, where ``K_ij`` is the 256-bit
pairwise key (X25519 agreement, HKDF salted with the session secret, bound to
the transcript) and ``counter`` the index of the secure sum in the session
(0 here: the first ``SecureSum.sum``). The attacker re-implements that
derivation from the protocol (not by calling fedsynth) and fails: (1) no key
material is on the wire: every 32-byte window of every payload it recorded
(and of the hex fields in the store messages) tried as either pair key, and
every 8-byte window tried as a torch seed as before, with an oracle for the
first input value, never reconstructs the input; (2) knowing the session
secret too, i.e. every input of the derivation except an X25519 private
key, it still fails. (3) Controls hand the same code the party's real pair
keys (or one party's private key plus the secret), or plant the real keys in
a recorded payload for the window search, and it reconstructs exactly: the
attack code is right, only the key material is missing.

Why the masks changed (``test_torch_generator_keys_on_32_bits_of_its_seed``):
torch's CPU generator (MT19937) keeps only the low 32 bits of its seed, so
CrypTen's PRZS masks have 32-bit keys whatever seed they are given; a
neighbour holding one of a site's two seeds could search the other in 2**32
tries. fedsynth's masks are not drawn from a torch generator.

What stays trusted (not tested here): ChaCha20, HKDF-SHA256 and X25519 as
implemented by ``cryptography``, and ``os.urandom``, from which the
ephemeral keys, nonces and the DP noise (``csprng_normal``; zero in this
experiment) are drawn; traffic *integrity* (an active attacker could tamper
with shares or the revealed sum), which needs a VPN or SSH tunnel between
sites, as does keeping the revealed (noisy) sum from outsiders; and the one
shared session secret: any site holding it can authenticate as any other,
so it is trusted not to run a man-in-the-middle between other sites.

Runtime: both modes' six processes run concurrently; about 30 s on an idle
2-core machine, about 60 s under heavy load (mostly ``import torch``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
PARTY = ROOT / "tests" / "eavesdrop_party.py"
WORLD = 3
N = 1000
PRECISION = 32
SCALE = 2**PRECISION
TOL = 1e-6
MODES = ("crypten-default", "fedsynth")
PARTY_DEADLINE = 150.0  # seconds, for all six processes together


# ------------------------------------------------------------------ running
def _free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (bound to port 0, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _launch(mode: str, port: int, outdir: Path, secret_file: Path) -> list[tuple[subprocess.Popen, Path, Path]]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=str(ROOT), PYTHONNOUSERSITE="1")
    for key in ("RENDEZVOUS", "WORLD_SIZE", "RANK", "DISTRIBUTED_BACKEND"):
        env.pop(key, None)
    procs = []
    for rank in range(WORLD):
        out = outdir / f"{mode}.{rank}.tap.json"
        log = outdir / f"{mode}.{rank}.log"
        cmd = [sys.executable, str(PARTY), str(rank), str(WORLD), str(port), mode, str(out)]
        if mode == "fedsynth":
            cmd.append(str(secret_file))
        with open(log, "wb") as lf:
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT)
        procs.append((p, out, log))
    return procs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run both modes (3 parties each, concurrently); return taps and truths."""
    outdir = tmp_path_factory.mktemp("eavesdrop")
    secret = os.urandom(32).hex().encode()
    secret_file = outdir / "session.key"
    secret_file.write_bytes(secret)
    secret_file.chmod(0o600)

    started = time.monotonic()
    ports = dict(zip(MODES, _free_ports(len(MODES))))
    procs = {mode: _launch(mode, ports[mode], outdir, secret_file) for mode in MODES}
    try:
        for mode, group in procs.items():
            for p, _, log in group:
                left = PARTY_DEADLINE - (time.monotonic() - started)
                try:
                    p.wait(timeout=max(left, 0.1))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{mode} party pid {p.pid} still running after {PARTY_DEADLINE:g}s:\n"
                                + log.read_text(errors="replace")[-3000:])
                assert p.returncode == 0, (
                    f"{mode} party pid {p.pid} exited {p.returncode}:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
    finally:
        for group in procs.values():
            for p, _, _ in group:
                if p.poll() is None:
                    p.kill()  # only our own children, by PID
                    p.wait()

    result = {"secret": secret, "party_seconds": time.monotonic() - started}
    for mode, group in procs.items():
        taps = [json.loads(out.read_text()) for _, out, _ in group]
        truths = [json.loads(Path(str(out) + ".truth").read_text()) for _, out, _ in group]
        result[mode] = {"taps": taps, "truths": truths}
    return result


# ----------------------------------------------------------------- attacker
# Everything in this section reads only the tap logs (what crossed the wire),
# plus whatever extra knowledge a test explicitly hands it.

def _records(tap: dict) -> list[dict]:
    return [dict(r, data=base64.b64decode(r["data"])) for r in tap["records"]]


def _ring(seed: int, n: int) -> torch.Tensor:
    """n ring elements from a fresh generator, exactly as CrypTen's PRZS draws them."""
    from crypten.common.rng import generate_random_ring_element

    g = torch.Generator(device=torch.device("cpu"))
    g.manual_seed(seed)
    return generate_random_ring_element(torch.Size([n]), generator=g)


def _decode(enc: torch.Tensor) -> torch.Tensor:
    """Exact fixed-point decode at 32 fractional bits, in float64."""
    whole = torch.div(enc, SCALE, rounding_mode="floor")
    frac = torch.remainder(enc, SCALE)
    return whole.double() + frac.double() / SCALE


def _as_torch_seed(value: int) -> int:
    """The uint64 value torch.Generator.manual_seed stores for ``value``."""
    return value % 2**64


def contributed_share(tap: dict) -> torch.Tensor:
    """The share the party put into the revealing all-reduce."""
    ars = [r for r in _records(tap) if r["op"] == "all_reduce"]
    assert len(ars) == 1, f"expected one all_reduce on the wire, saw {len(ars)}"
    r = ars[0]
    assert r["dtype"] == "int64" and r["shape"] == [N]
    return torch.frombuffer(bytearray(r["data"]), dtype=torch.int64).clone()


def reconstruct(tap: dict, prev_seed: int, next_seed: int) -> torch.Tensor:
    """Undo one PRZS mask (prev/next generators fresh, one draw of N each)."""
    share = contributed_share(tap)
    mask = _ring(prev_seed, N) - _ring(next_seed, N)  # ArithmeticSharedTensor.PRZS
    return _decode(share - mask)


def seeds_on_wire(taps: list[dict]) -> dict[int, tuple[int, int]]:
    """CrypTen's _sync_seeds: rank r isends its ``next`` seed (one int64) to r+1."""
    next_seed = {}
    for tap in taps:
        r = tap["rank"]
        sends = [
            x for x in _records(tap)
            if x["op"] in ("isend", "send") and x["peer"] == (r + 1) % WORLD
            and x["dtype"] == "int64" and len(x["data"]) == 8
        ]
        if sends:
            next_seed[r] = int.from_bytes(sends[0]["data"], "little", signed=True)
    return {
        r: (next_seed[(r - 1) % WORLD], next_seed[r])
        for r in range(WORLD)
        if r in next_seed and (r - 1) % WORLD in next_seed
    }


def _payload_blobs(taps: list[dict]) -> list[bytes]:
    """Every payload recorded from every party, plus hex fields decoded."""
    blobs = []
    for tap in taps:
        for rec in _records(tap):
            blobs.append(rec["data"])
            for h in re.findall(rb"[0-9a-fA-F]{16,}", rec["data"]):
                blobs.append(bytes.fromhex(h[: len(h) // 2 * 2].decode()))
    return blobs


def candidate_seeds(taps: list[dict]) -> np.ndarray:
    """Every 8-byte window of every payload, read as a seed four ways (uint64)."""
    out = set()
    for blob in _payload_blobs(taps):
        for i in range(len(blob) - 7):
            w = blob[i : i + 8]
            le, be = int.from_bytes(w, "little"), int.from_bytes(w, "big")
            out.update((le, be, le >> 1, be >> 1))  # >> 1: fedsynth's _seed form
    return np.fromiter(out, dtype=np.uint64, count=len(out))


def _pair_search(a_prev: np.ndarray, a_next: np.ndarray, tap: dict, first_value: float,
                 signs: tuple[int, int] = (1, -1)) -> list[tuple[int, int]]:
    """Index pairs (i, j) with ``share[0] - (s_p a_prev[i] + s_n a_next[j])`` decoding to ``first_value``.

    ``a_prev[i]`` / ``a_next[j]`` are the first mask word (uint64) candidate
    i / j would give the ``prev`` / ``next`` stream, ``signs = (s_p, s_n)``
    how the mask combines them (CrypTen's PRZS: ``prev - next``). The attacker is handed an
    oracle for ``x[0]`` (stronger than reality); it needs ``a_next[j]`` within
    +-eps of ``a_prev[i] + d`` (mod 2**64), found for all pairs at once by
    binary search. The caller checks surviving pairs on the whole vector.
    """
    share0 = np.int64(contributed_share(tap)[0]).view(np.uint64)
    target0 = np.int64(int(first_value * SCALE)).view(np.uint64)  # encode truncates too
    eps = np.uint64(int(TOL * SCALE) + 1)
    order = np.argsort(a_next)
    next_sorted = a_next[order]
    s_p, s_n = signs
    with np.errstate(over="ignore"):
        rest = (share0 - target0) - (a_prev if s_p > 0 else np.uint64(0) - a_prev)  # = s_n * a_next
        centre = rest if s_n > 0 else np.uint64(0) - rest
        lo, hi = centre - eps, centre + eps
    j0 = np.searchsorted(next_sorted, lo, side="left")
    j1 = np.searchsorted(next_sorted, hi, side="right")
    wraps = lo > hi
    n = len(a_next)
    count = np.where(wraps, (n - j0) + j1, j1 - j0)
    hits = []
    for i in np.nonzero(count > 0)[0]:
        idx = (list(range(j0[i], n)) + list(range(0, j1[i]))) if wraps[i] else range(j0[i], j1[i])
        hits.extend((int(i), int(order[j])) for j in idx)
    return hits


class SeedTable:
    """Candidate torch seeds with the first ring element each one generates."""

    def __init__(self, taps: list[dict]):
        from crypten.common.rng import generate_random_ring_element

        self.seeds = candidate_seeds(taps)
        g, one = torch.Generator(device=torch.device("cpu")), torch.Size([1])
        first = np.empty(len(self.seeds), dtype=np.int64)
        for i, s in enumerate(self.seeds.tolist()):  # as _ring(s, 1), one generator reseeded
            g.manual_seed(s)
            first[i] = int(generate_random_ring_element(one, generator=g)[0])
        self.first = first.view(np.uint64)

    def __len__(self) -> int:
        return len(self.seeds)


def window_search(table: SeedTable, tap: dict, first_value: float) -> list[tuple[int, int]]:
    """All (prev, next) candidate torch seed pairs that reconstruct ``x[0]``
    under CrypTen's PRZS (the same generator stream for both directions)."""
    pairs = _pair_search(table.first, table.first, tap, first_value)
    return [(int(table.seeds[i]), int(table.seeds[j])) for i, j in pairs]


# -- fedsynth's masks and key agreement, re-derived from the protocol --------
# (written from the description in fedsynth/federation/session.py, not by calling it)
def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _seed63(b: bytes) -> int:
    return int.from_bytes(b[:8], "big") >> 1


def _keystream(pair_key: bytes, src: int, dst: int, counter: int, nbytes: int) -> bytes:
    """ChaCha20 key stream of ``r(src->dst)`` for secure sum number ``counter``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    sub = _hkdf(pair_key, b"", f"przs-mask {src}->{dst} #{counter}".encode())
    enc = Cipher(algorithms.ChaCha20(sub, bytes(16)), mode=None).encryptor()
    return enc.update(bytes(nbytes))


def directed_stream(pair_key: bytes, src: int, dst: int, counter: int, n: int = N) -> torch.Tensor:
    return torch.frombuffer(bytearray(_keystream(pair_key, src, dst, counter, 8 * n)), dtype=torch.int64)


def mask_term(rank: int, other: int) -> tuple[int, int, int]:
    """(sign, src, dst) of the stream ``rank``'s key with ``other`` adds to its mask:
    ``+r(rank->other)`` if ``other > rank``, else ``-r(other->rank)``."""
    return (1, rank, other) if other > rank else (-1, other, rank)


def fedsynth_mask(rank: int, key_prev: bytes, key_next: bytes, counter: int, n: int = N) -> torch.Tensor:
    """``sum_{j>rank} r(rank->j) - sum_{j<rank} r(j->rank)`` over Z_{2^64}, as Session.przs_mask
    (three sites: j runs over the ring predecessor and successor)."""
    mask = torch.zeros(n, dtype=torch.int64)
    for other, key in (((rank - 1) % WORLD, key_prev), ((rank + 1) % WORLD, key_next)):
        sign, src, dst = mask_term(rank, other)
        mask = mask + sign * directed_stream(key, src, dst, counter, n)
    return mask


def reconstruct_fedsynth(tap: dict, key_prev: bytes, key_next: bytes, counter: int = 0) -> torch.Tensor:
    """Undo fedsynth's mask of secure sum ``counter`` given the two pair keys."""
    share = contributed_share(tap)
    return _decode(share - fedsynth_mask(tap["rank"], key_prev, key_next, counter))


def candidate_keys(blobs: list[bytes]) -> list[bytes]:
    """Every 32-byte window of every blob, deduplicated."""
    return sorted({b[i : i + 32] for b in blobs for i in range(len(b) - 31)})


class KeyTable:
    """Candidate pair keys with the first mask word each gives every pair's stream ``r(src->dst)``, src < dst."""

    def __init__(self, keys: list[bytes], counter: int = 0):
        self.keys = keys
        self.counter = counter
        self.first = {}
        for src, dst in ((i, j) for i in range(WORLD) for j in range(i + 1, WORLD)):
            self.first[(src, dst)] = np.array(
                [int.from_bytes(_keystream(k, src, dst, counter, 8), "little") for k in keys],
                dtype=np.uint64,
            )

    def __len__(self) -> int:
        return len(self.keys)


def key_window_search(table: KeyTable, tap: dict, first_value: float) -> list[tuple[bytes, bytes]]:
    """All (K_prev, K_next) candidate pairs that reconstruct ``x[0]`` of ``tap``'s party."""
    r = tap["rank"]
    s_p, *e_prev = mask_term(r, (r - 1) % WORLD)
    s_n, *e_next = mask_term(r, (r + 1) % WORLD)
    a_prev, a_next = table.first[tuple(e_prev)], table.first[tuple(e_next)]
    hits = _pair_search(a_prev, a_next, tap, first_value, signs=(s_p, s_n))
    return [(table.keys[i], table.keys[j]) for i, j in hits]


def hellos_on_wire(taps: list[dict]) -> tuple[list[dict], dict[int, bytes]]:
    """The hello and proof messages each party wrote to the store."""
    hellos, proofs = {}, {}
    for tap in taps:
        for rec in _records(tap):
            m = re.fullmatch(r"x\d+:(hello|proof)/(\d+)", rec.get("key", ""))
            if m and rec["op"] == "store.set":
                value = json.loads(rec["data"])
                if m.group(1) == "hello":
                    hellos[int(m.group(2))] = value
                else:
                    proofs[int(m.group(2))] = bytes.fromhex(value)
    return [hellos[r] for r in range(len(hellos))], proofs


def transcript_of(hellos: list[dict]) -> bytes:
    return hashlib.sha256(b"".join(json.dumps(h, sort_keys=True).encode() for h in hellos)).digest()


def derive_pair_key(secret: bytes, hellos: list[dict], i: int, j: int, dh) -> bytes:
    """``K_ij`` as fedsynth derives it; ``dh(lo, hi)`` stands in for the X25519
    shared secret of sites lo < hi."""
    lo, hi = min(i, j), max(i, j)
    info = b"fedsynth-pair-v2" + transcript_of(hellos) + lo.to_bytes(4, "big") + hi.to_bytes(4, "big")
    return _hkdf(dh(lo, hi), hashlib.sha256(secret).digest(), info)


def derive_ring_keys(secret: bytes, hellos: list[dict], rank: int, dh) -> tuple[bytes, bytes]:
    """(K_prev, K_next) of ``rank``: its keys with its ring predecessor and successor."""
    prev, nxt = (rank - 1) % WORLD, (rank + 1) % WORLD
    return derive_pair_key(secret, hellos, prev, rank, dh), derive_pair_key(secret, hellos, rank, nxt, dh)


def _pub(hellos: list[dict], r: int):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    return X25519PublicKey.from_public_bytes(bytes.fromhex(hellos[r]["pub"]))


# -------------------------------------------------------------------- tests
def _truth_input(truth: dict) -> torch.Tensor:
    return torch.tensor(truth["input"], dtype=torch.float64)


def _err(x_hat: torch.Tensor, truth: dict) -> float:
    return float((x_hat - _truth_input(truth)).abs().max())


def _true_ring_keys(truths: list[dict], r: int) -> tuple[bytes, bytes]:
    """Ground truth: party r's pair keys with its predecessor and successor."""
    keys = truths[r]["pair_keys"]
    return bytes.fromhex(keys[str((r - 1) % WORLD)]), bytes.fromhex(keys[str((r + 1) % WORLD)])


def _true_mask(truth: dict, counter: int) -> torch.Tensor:
    return torch.tensor(truth["masks"][str(counter)], dtype=torch.int64)


@pytest.fixture(scope="module", autouse=True)
def _crypten():
    from fedsynth.federation import crypten_compat as _crypten_compat

    return _crypten_compat.import_crypten()


def test_both_runs_compute_the_right_sum(runs):
    """Sanity: the sharing is correct in both modes (masks cancel)."""
    for mode in MODES:
        truths = runs[mode]["truths"]
        expected = sum(_truth_input(t) for t in truths)
        for t in truths:
            assert torch.allclose(torch.tensor(t["revealed_sum"], dtype=torch.float64), expected, atol=1e-6), mode


# ----------------------------------------------------- CrypTen's default PRZS
def test_crypten_default_seeding_leaks_every_input(runs):
    taps, truths = runs["crypten-default"]["taps"], runs["crypten-default"]["truths"]
    seeds = seeds_on_wire(taps)
    assert sorted(seeds) == list(range(WORLD)), "CrypTen's seeds should be on the wire"
    for r in range(WORLD):
        x_hat = reconstruct(taps[r], *seeds[r])
        assert _err(x_hat, truths[r]) < TOL, f"rank {r}: reconstruction failed"
        # and the seeds the attacker read are the ones the generators held
        held = truths[r]["generator_seeds"]
        assert tuple(map(_as_torch_seed, seeds[r])) == (held["prev"], held["next"])


def test_window_search_finds_crypten_default_seeds(runs):
    """Positive control for the 8-byte (torch seed) search used against fedsynth below."""
    taps, truths = runs["crypten-default"]["taps"], runs["crypten-default"]["truths"]
    table = SeedTable(taps)
    for r in range(WORLD):
        hits = window_search(table, taps[r], truths[r]["input"][0])
        good = [h for h in hits if _err(reconstruct(taps[r], *h), truths[r]) < TOL]
        held = truths[r]["generator_seeds"]
        assert (held["prev"], held["next"]) in good, f"rank {r}: search missed the seeds"


def test_torch_generator_keys_on_32_bits_of_its_seed(runs):
    """Why fedsynth stopped using CrypTen's PRZS for its masks.

    torch's CPU generator (MT19937) keeps only the low 32 bits of its seed:
    seeds s and s & 0xffffffff give identical streams, so CrypTen's default
    PRZS masks have 32-bit keys however long the seed is. Shown on the seeds
    CrypTen really used (taken off the wire) and on random 63-bit seeds.
    """
    taps, truths = runs["crypten-default"]["taps"], runs["crypten-default"]["truths"]
    seeds = seeds_on_wire(taps)
    wire = [s for pair in seeds.values() for s in pair]
    assert any(s >> 32 not in (0, -1) for s in wire)  # CrypTen's seeds do use the high bits
    random_seeds = [int.from_bytes(os.urandom(8), "big") >> 1 for _ in range(8)]
    for s in wire + random_seeds:
        low = s & 0xFFFFFFFF
        other_high = low | ((int.from_bytes(os.urandom(4), "big") >> 1) << 32)
        stream = _ring(s, N)
        assert torch.equal(stream, _ring(low, N)), f"seed {s:#x}"
        assert torch.equal(stream, _ring(other_high, N)), f"seed {s:#x}"
    for r in range(WORLD):  # so 32 bits of each seed suffice to unmask CrypTen's shares
        low = tuple(s & 0xFFFFFFFF for s in seeds[r])
        assert _err(reconstruct(taps[r], *low), truths[r]) < TOL


# ----------------------------------------------------------- fedsynth's masks
def test_fedsynth_puts_no_seed_on_the_wire(runs):
    taps = runs["fedsynth"]["taps"]
    assert seeds_on_wire(taps) == {}
    for tap in taps:
        ops = {r["op"] for r in _records(tap)}
        # no point-to-point sends or broadcasts at all: only the one revealing
        # all-reduce and store writes (claims, heartbeats, hello, proof, done)
        assert ops <= {"all_reduce", "store.set", "store.add"}, ops
    hellos, proofs = hellos_on_wire(taps)
    assert len(hellos) == WORLD and len(proofs) == WORLD
    assert all(set(h) == {"v", "rank", "world_size", "site", "nonce", "pub"} for h in hellos)


def test_fedsynth_masks_are_chacha20_of_the_pair_keys_not_torch(runs):
    """fedsynth's ``Session.przs_mask``, judged on the masks the parties dumped.

    The masks of the three ranks sum to 0 mod 2**64 for each counter; the
    masks of secure sums 0 and 1 differ everywhere; the counter-0 mask is
    the one on the party's all-reduce share; the attacker's ChaCha20
    re-derivation from the pair keys gives them bit for bit; they are not the
    PRZS of the torch generators CrypTen holds in the same session; and a
    pair key that differs from the real one only above its low 32 bits (the
    test that was an ``xfail`` while masks came from torch) does not
    reconstruct.
    """
    taps, truths = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"]
    for c in (0, 1):
        total = sum(_true_mask(t, c) for t in truths)  # int64 arithmetic wraps mod 2**64
        assert torch.equal(total, torch.zeros(N, dtype=torch.int64)), f"counter {c}"
    for r in range(WORLD):
        m0, m1 = _true_mask(truths[r], 0), _true_mask(truths[r], 1)
        assert not bool((m0 == m1).any()), f"rank {r}: counters 0 and 1 share mask words"
        k_prev, k_next = _true_ring_keys(truths, r)
        for c, m in ((0, m0), (1, m1)):
            assert torch.equal(fedsynth_mask(r, k_prev, k_next, c), m), f"rank {r} counter {c}"
        # the dumped counter-0 mask is the one on rank r's share
        assert _err(_decode(contributed_share(taps[r]) - m0), truths[r]) < TOL
        held = truths[r]["generator_seeds"]
        assert not torch.equal(m0, _ring(held["prev"], N) - _ring(held["next"], N))
        # keys that agree with the real ones in their first 32 bits (and in all
        # but one bit): entirely different masks, no reconstruction
        for byte in (4, 8, 31):
            kp, kn = bytearray(k_prev), bytearray(k_next)
            kp[byte] ^= 0x01
            kn[byte] ^= 0x80
            kp, kn = bytes(kp), bytes(kn)
            assert not bool((fedsynth_mask(r, kp, k_next, 0) == m0).any())
            assert not bool((fedsynth_mask(r, k_prev, kn, 0) == m0).any())
            assert _err(reconstruct_fedsynth(taps[r], kp, kn, 0), truths[r]) > 1e6


def test_fedsynth_no_pair_key_in_any_32_byte_window(runs):
    """(1a) Every 32-byte window of every payload, as either pair key: no match."""
    taps, truths = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"]
    table = KeyTable(candidate_keys(_payload_blobs(taps)))
    assert len(table) > 20_000  # the search really covered the shares and messages
    candidates = set(table.keys)
    for r in range(WORLD):
        assert truths[r]["przs_counter"] == 0  # the first secure sum of the session
        assert not candidates & set(_true_ring_keys(truths, r)), f"rank {r}: a pair key is on the wire"
        hits = key_window_search(table, taps[r], truths[r]["input"][0])
        matches = [h for h in hits if _err(reconstruct_fedsynth(taps[r], *h), truths[r]) < TOL]
        assert matches == [], f"rank {r}: keys from the wire reconstruct the input"
    # and a guess built from the wire is noise, not the input
    hellos, _ = hellos_on_wire(taps)
    pubs = [bytes.fromhex(h["pub"]) for h in hellos]
    assert _err(reconstruct_fedsynth(taps[0], pubs[2], pubs[1]), truths[0]) > 1e6


def test_fedsynth_no_torch_seed_in_any_8_byte_window(runs):
    """(1b) Every 8-byte window of every payload, as either torch seed: no match
    (neither CrypTen's PRZS model nor the seeds its generators hold here)."""
    taps, truths = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"]
    table = SeedTable(taps)
    assert len(table) > 20_000
    candidates = set(table.seeds.tolist())
    for r in range(WORLD):
        held = truths[r]["generator_seeds"]
        assert held["prev"] not in candidates and held["next"] not in candidates
        hits = window_search(table, taps[r], truths[r]["input"][0])
        matches = [h for h in hits if _err(reconstruct(taps[r], *h), truths[r]) < TOL]
        assert matches == [], f"rank {r}: seeds {matches} from the wire reconstruct the input"
    assert _err(reconstruct(taps[0], 0, 0), truths[0]) > 1e6


def test_fedsynth_secret_holder_without_private_keys_fails(runs):
    """(2) The attacker also knows the session secret: it can check the proofs
    and derive every secret-only value, but not the pair keys or masks."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    taps, truths, secret = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"], runs["secret"]
    hellos, proofs = hellos_on_wire(taps)
    t = transcript_of(hellos)
    for r in range(WORLD):  # the attacker has the exact transcript the sites used
        expected = hmac.new(secret, b"fedsynth-auth-v1" + t + r.to_bytes(4, "big"), hashlib.sha256).digest()
        assert hmac.compare_digest(expected, proofs[r])
    group_key = _hkdf(secret, t, b"fedsynth-group-v1")
    global_seed = _seed63(_hkdf(group_key, b"", b"global"))
    assert all(tr["przs_seeds"]["global"] == global_seed for tr in truths)  # by design

    def raw(pub) -> bytes:
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    mine = X25519PrivateKey.generate()
    guesses = {
        "own fresh X25519 key": lambda i, j: mine.exchange(_pub(hellos, j)),
        "group key": lambda i, j: group_key,
        "SHA-256(secret)": lambda i, j: hashlib.sha256(secret).digest(),
        "secret": lambda i, j: secret,
        "transcript": lambda i, j: t,
        "pub_i || pub_j": lambda i, j: raw(_pub(hellos, i)) + raw(_pub(hellos, j)),
    }
    direct = {  # or skip the agreement and use a secret-only value as the pair key
        "group key as K": group_key,
        "SHA-256(secret) as K": hashlib.sha256(secret).digest(),
        "transcript as K": t,
    }
    for r in range(WORLD):
        real = _true_ring_keys(truths, r)
        tries = {name: derive_ring_keys(secret, hellos, r, dh) for name, dh in guesses.items()}
        tries.update({name: (k, k) for name, k in direct.items()})
        for name, keys in tries.items():
            assert keys[0] not in real and keys[1] not in real, name
            assert _err(reconstruct_fedsynth(taps[r], *keys), truths[r]) > 1e6, name


def test_fedsynth_control_with_the_real_key_material(runs):
    """(3) Same attacker code, given what it lacks, does reconstruct."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    taps, truths, secret = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"], runs["secret"]
    hellos, _ = hellos_on_wire(taps)
    for r in range(WORLD):
        nxt = (r + 1) % WORLD
        # both ends of an edge hold the same key
        assert truths[r]["pair_keys"][str(nxt)] == truths[nxt]["pair_keys"][str(r)]
        real = _true_ring_keys(truths, r)
        counter = truths[r]["przs_counter"]
        assert counter == 0
        # (a) the pair keys themselves, at the right counter (and not another)
        assert _err(reconstruct_fedsynth(taps[r], *real, counter), truths[r]) < TOL
        assert _err(reconstruct_fedsynth(taps[r], *real, counter + 1), truths[r]) > 1e6
        # (b) secret + transcript + this party's X25519 private key
        sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(truths[r]["x25519_private_key"]))
        dh = lambda i, j, sk=sk, r=r: sk.exchange(_pub(hellos, j if i == r else i))  # noqa: E731
        derived = derive_ring_keys(secret, hellos, r, dh)
        assert derived == real, "attacker's derivation != session.py's"
        assert _err(reconstruct_fedsynth(taps[r], *derived, counter), truths[r]) < TOL


def test_key_window_search_finds_planted_pair_keys(runs):
    """(3) Positive control for the 32-byte search: plant the real pair keys in
    a recorded payload (rank 0's share) and the same search finds them."""
    taps, truths = runs["fedsynth"]["taps"], runs["fedsynth"]["truths"]
    blob = bytearray(contributed_share(taps[0]).numpy().tobytes())
    edges = [bytes.fromhex(truths[r]["pair_keys"][str((r + 1) % WORLD)]) for r in range(WORLD)]
    for i, key in enumerate(edges):
        at = 1001 + 2011 * i  # unaligned offsets
        blob[at : at + 32] = key
    table = KeyTable(candidate_keys([bytes(blob)]))
    for r in range(WORLD):
        hits = key_window_search(table, taps[r], truths[r]["input"][0])
        good = [h for h in hits if _err(reconstruct_fedsynth(taps[r], *h), truths[r]) < TOL]
        assert good == [_true_ring_keys(truths, r)], f"rank {r}: search missed the planted keys"
