#!/usr/bin/env python3
"""One site of the eavesdropping experiment in ``tests/test_eavesdrop.py``.

Usage::

    eavesdrop_party.py RANK WORLD PORT MODE OUTFILE [SECRETFILE]

MODE is ``crypten-default`` (CrypTen seeds its PRZS generators itself, via
``crypten.init()`` from the RENDEZVOUS/WORLD_SIZE/RANK/DISTRIBUTED_BACKEND
environment, and the masks are CrypTen's stock ``ArithmeticSharedTensor.PRZS``
drawn from those torch generators) or ``fedsynth`` (a
:class:`fedsynth.federation.session.Session`: pairwise keys from the authenticated X25519
key agreement, masks from :meth:`~fedsynth.federation.session.Session.przs_mask`, i.e.
ChaCha20 streams under per-call HKDF subkeys of those keys; needs SECRETFILE).

Either way the site then secret-shares a private input vector through
:meth:`fedsynth.federation.secure_sum.SecureSum.sum` (mask + fixed-point
encoding, then ``get_plain_text`` = one gloo all-reduce), so the only
difference between the two modes is where the masks come from: in
``crypten-default`` mode the session passed to ``SecureSum`` is a stub whose
``przs_mask`` is CrypTen's own PRZS.

Two files are written:

``OUTFILE`` -- the *wire tap*: every payload this process handed to
    torch.distributed for transmission (``send``/``isend``/``broadcast`` as
    the source/``all_reduce``/``reduce``/``all_gather``), recorded *before*
    the op runs, and every write it made to the rendezvous TCPStore
    (``set``/``add``/``compare_set``/``append``/``multi_set``). This is what
    a passive observer of the (unencrypted) gloo and store connections sees.
``OUTFILE + ".truth"`` -- ground truth the attacker never reads: the real
    input, the seeds CrypTen's generators actually held, the revealed sum
    and, in fedsynth mode, the X25519 private key, the pairwise keys
    (``session.pair_keys``), the counter the secure sum used and the masks
    ``session.przs_mask(N, c)`` for ``c = 0, 1`` (computed locally; nothing
    extra is sent).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import threading

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.distributed.distributed_c10d as c10d  # noqa: E402

N_VALUES = 1000
INPUT_SEED = 7_000


def private_input(rank: int) -> torch.Tensor:
    """The site's private vector: 1000 float64 values in [-1000, 1000)."""
    g = torch.Generator().manual_seed(INPUT_SEED + rank)
    return torch.rand(N_VALUES, generator=g, dtype=torch.float64) * 2000.0 - 1000.0


# --------------------------------------------------------------------- tap
_RECORDS: list[dict] = []
_LOCK = threading.Lock()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def _log_tensor(op: str, peer, t: torch.Tensor) -> None:
    rec = {
        "op": op,
        "peer": peer,
        "dtype": str(t.dtype).replace("torch.", ""),
        "shape": list(t.shape),
        "data": _b64(_tensor_bytes(t)),
    }
    with _LOCK:
        _RECORDS.append(rec)


def _log_store(op: str, key, value) -> None:
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = str(value).encode()
    elif isinstance(value, (list, tuple)):
        value = bytes(value)
    rec = {"op": op, "key": str(key), "data": _b64(bytes(value))}
    with _LOCK:
        _RECORDS.append(rec)


def _arg(args, kwargs, pos: int, *names):
    if len(args) > pos:
        return args[pos]
    for n in names:
        if kwargs.get(n) is not None:
            return kwargs[n]
    return None


def _install_tap(rank: int) -> None:
    """Wrap torch.distributed's sending ops and the store's writes."""

    def wrap_p2p(name):
        orig = getattr(c10d, name)

        def tapped(tensor, *args, **kwargs):
            _log_tensor(name, _arg(args, kwargs, 0, "dst", "group_dst"), tensor)
            return orig(tensor, *args, **kwargs)

        return tapped

    def wrap_bcast(name):
        orig = getattr(c10d, name)

        def tapped(tensor, *args, **kwargs):
            # only the source transmits its buffer; the others receive into theirs
            src = _arg(args, kwargs, 0, "src")  # a global rank in torch's API
            if src is None and kwargs.get("group_src") is not None:
                src = dist.get_global_rank(kwargs.get("group"), kwargs["group_src"])
            if src is None or src == rank:
                _log_tensor(name, "*", tensor)
            return orig(tensor, *args, **kwargs)

        return tapped

    def wrap_collective(name, tensor_pos=0):
        orig = getattr(c10d, name)

        def tapped(*args, **kwargs):
            t = _arg(args, kwargs, tensor_pos, "tensor")
            if isinstance(t, torch.Tensor):
                _log_tensor(name, "*", t)
            return orig(*args, **kwargs)

        return tapped

    wrappers = {
        "send": wrap_p2p("send"),
        "isend": wrap_p2p("isend"),
        "broadcast": wrap_bcast("broadcast"),
        "all_reduce": wrap_collective("all_reduce"),
        "reduce": wrap_collective("reduce"),
        "all_gather": wrap_collective("all_gather", tensor_pos=1),
    }
    for name, fn in wrappers.items():
        setattr(c10d, name, fn)
        setattr(dist, name, fn)

    for cls in (dist.TCPStore, dist.PrefixStore):
        def make(cls, meth):
            orig = getattr(cls, meth)

            if meth == "set":
                def tapped(self, key, value, _o=orig):
                    _log_store("store.set", key, value)
                    return _o(self, key, value)
            elif meth == "add":
                def tapped(self, key, amount, _o=orig):
                    _log_store("store.add", key, amount)
                    return _o(self, key, amount)
            elif meth == "append":
                def tapped(self, key, value, _o=orig):
                    _log_store("store.append", key, value)
                    return _o(self, key, value)
            elif meth == "compare_set":
                def tapped(self, key, expected, desired, _o=orig):
                    _log_store("store.compare_set", key, desired)
                    return _o(self, key, expected, desired)
            else:  # multi_set
                def tapped(self, keys, values, _o=orig):
                    for k, v in zip(keys, values):
                        _log_store("store.multi_set", k, v)
                    return _o(self, keys, values)
            return tapped

        for meth in ("set", "add", "append", "compare_set", "multi_set"):
            if hasattr(cls, meth):
                setattr(cls, meth, make(cls, meth))


# ------------------------------------------------------------------- modes
def _share(session_like, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One secure sum; returns the revealed total and the mask counter it used."""
    from fedsynth.federation.secure_sum import SecureSum

    used: list[int] = []
    draw = session_like.next_mask_counter

    def recording_counter() -> int:
        used.append(draw())
        return used[-1]

    session_like.next_mask_counter = recording_counter
    total = SecureSum(session_like).sum(x, noise_std=0.0, step="eavesdrop")
    assert len(used) == 1, f"one secure sum drew {len(used)} mask counters"
    return total, used[0]


class _StockCrypTenSession:
    """What ``SecureSum`` needs from a session, with CrypTen's own masks.

    ``przs_mask`` is CrypTen's stock ``ArithmeticSharedTensor.PRZS``:
    ``R(prev) - R(next)`` from the torch generators ``crypten.init()``
    seeded (and whose seeds it sent in clear). ``counter`` is ignored:
    CrypTen's generators simply advance.
    """

    def __init__(self, world: int):
        self.world_size = world
        self._counter = 0

    def next_mask_counter(self) -> int:
        self._counter += 1
        return self._counter - 1

    def step(self, name):
        return contextlib.nullcontext()

    def przs_mask(self, n: int, counter: int) -> torch.Tensor:
        from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor

        return ArithmeticSharedTensor.PRZS(torch.Size([n])).share


def _generator_seeds(crypten) -> dict:
    cpu = torch.device("cpu")
    return {k: int(crypten.generators[k][cpu].initial_seed()) for k in ("prev", "next", "global")}


def run_crypten_default(rank: int, world: int, port: int, truth: dict) -> None:
    from fedsynth.federation import crypten_compat as _crypten_compat

    os.environ.update(
        RENDEZVOUS=f"tcp://127.0.0.1:{port}",
        WORLD_SIZE=str(world),
        RANK=str(rank),
        DISTRIBUTED_BACKEND="gloo",
    )
    crypten = _crypten_compat.import_crypten()
    crypten.init()
    truth["generator_seeds"] = _generator_seeds(crypten)
    x = private_input(rank)
    total, _ = _share(_StockCrypTenSession(world), x)
    truth["input"] = x.tolist()
    truth["revealed_sum"] = total.tolist()
    dist.barrier()
    dist.destroy_process_group()


def run_fedsynth(rank: int, world: int, port: int, secret_file: str, truth: dict) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    import fedsynth.federation.session as fs

    private_keys: list[str] = []

    class _RecordingX25519:
        """Ground truth only: remember the ephemeral private key the session draws."""

        @staticmethod
        def generate():
            sk = X25519PrivateKey.generate()
            private_keys.append(sk.private_bytes_raw().hex())
            return sk

    fs.X25519PrivateKey = _RecordingX25519
    secret = fs.read_secret(secret_file)
    x = private_input(rank)
    with fs.Session(
        rank,
        world,
        f"tcp://127.0.0.1:{port}",
        secret,
        rendezvous_timeout=120,  # imports are slow on a loaded machine
        step_timeout=60,
    ) as session:
        from fedsynth.federation import crypten_compat as _crypten_compat

        crypten = _crypten_compat.import_crypten()
        # CrypTen's generators are still seeded from the pair keys, but
        # fedsynth's secure sums no longer draw their masks from them
        prev_seed, next_seed, _local, global_seed = session.przs_seeds()
        truth["przs_seeds"] = {"prev": prev_seed, "next": next_seed, "global": global_seed}
        truth["generator_seeds"] = _generator_seeds(crypten)
        truth["x25519_private_key"] = private_keys[0]
        truth["pair_keys"] = {str(r): k.hex() for r, k in session.pair_keys.items()}
        # the masks of the first two secure sums (a pure local computation)
        truth["masks"] = {str(c): session.przs_mask(N_VALUES, c).tolist() for c in (0, 1)}
        total, counter = _share(session, x)
        truth["przs_counter"] = counter
        truth["input"] = x.tolist()
        truth["revealed_sum"] = total.tolist()


def main(argv: list[str]) -> int:
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    rank, world, port = int(argv[0]), int(argv[1]), int(argv[2])
    mode, outfile = argv[3], argv[4]
    _install_tap(rank)
    truth: dict = {"rank": rank, "mode": mode}
    if mode == "crypten-default":
        run_crypten_default(rank, world, port, truth)
    elif mode == "fedsynth":
        if len(argv) != 6:
            print("fedsynth mode needs SECRETFILE", file=sys.stderr)
            return 2
        run_fedsynth(rank, world, port, argv[5], truth)
    else:
        print(f"unknown MODE {mode!r}", file=sys.stderr)
        return 2
    with _LOCK:
        records = list(_RECORDS)
    with open(outfile + ".truth", "w") as f:
        json.dump(truth, f)
    with open(outfile, "w") as f:
        json.dump({"rank": rank, "world_size": world, "records": records}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
