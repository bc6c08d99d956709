"""One test per workaround in fedsynth/federation/crypten_compat.py.

Each test fails if the workaround stops working *or* stops being needed
(i.e. if upstream CrypTen/torch behaves correctly without it), so the
compatibility layer can be dropped as soon as it is dead weight.
Upstream behaviour is always observed in a fresh subprocess, where the
fixes have not been applied.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from fractions import Fraction

import numpy as np
import pytest
import torch

from testkit import PARTY_ENV, PY, REPO, describe, free_port, start_process, wait_all

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]


def run_py(code: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (repo importable, one thread)."""
    return subprocess.run([PY, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, env=PARTY_ENV, cwd=str(REPO), timeout=timeout)


# ------------------------------------------------------------------ 1. import
def test_plain_import_fails_and_import_crypten_succeeds():
    plain = run_py("import crypten")
    assert plain.returncode != 0, "plain `import crypten` works now: drop the onnx alias"
    assert "ModuleNotFoundError" in plain.stderr
    assert "No module named 'torch.onnx._internal.registration'" in plain.stderr, plain.stderr[-2000:]

    fixed = run_py("""
        import sys
        from fedsynth.federation.crypten_compat import import_crypten
        crypten = import_crypten()
        import torch.onnx._internal.torchscript_exporter.registration as new
        assert sys.modules["torch.onnx._internal.registration"] is new
        import crypten.nn, crypten.mpc
        print("ok", crypten.__name__)
    """)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert fixed.stdout.strip() == "ok crypten"


# ------------------------------------------------------------------ 2. decode
_DECODE_SCRIPT = """
    import sys
    import numpy as np
    import torch
    from fedsynth.federation import crypten_compat as cc

    cc._alias_onnx_registration()          # only the import fix: the encoder is still upstream's
    from crypten.encoder import FixedPointEncoder
    upstream = FixedPointEncoder.__dict__["decode"]
    assert upstream is not cc.exact_decode
    cc.import_crypten()
    ours = FixedPointEncoder.__dict__["decode"]
    assert ours is cc.exact_decode, "import_crypten did not install exact_decode"

    g = torch.Generator().manual_seed(12345)
    # precision 16, |value| < 128: every such value is exactly representable in
    # float32, so any deviation of upstream's decode is a logic error, not rounding
    enc16 = FixedPointEncoder(precision_bits=16)
    t16 = torch.randint(-2**23, 2**23, (2_000_000,), generator=g, dtype=torch.long)
    # precision 32: sums around 1e3 need more than float32's 24 bits
    enc32 = FixedPointEncoder(precision_bits=32)
    t32 = torch.randint(-2**42, 2**42, (10_000,), generator=g, dtype=torch.long)
    np.savez(sys.argv[1],
             t16=t16.numpy(), up16=upstream(enc16, t16).numpy(), ours16=ours(enc16, t16).numpy(),
             t32=t32.numpy(), up32=upstream(enc32, t32).numpy(), ours32=ours(enc32, t32).numpy())
"""


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    out = tmp_path_factory.mktemp("decode") / "decode.npz"
    r = run_py(_DECODE_SCRIPT, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(np.load(out))


def test_upstream_decode_is_off_by_one_on_some_negatives(decoded):
    t, up, ours = decoded["t16"], decoded["up16"], decoded["ours16"]
    truth = t.astype(np.float64) / 2.0**16  # exact: |t| < 2**53, scale a power of two
    err = up.astype(np.float64) - truth
    wrong = err != 0
    assert wrong.sum() > 0, "upstream FixedPointEncoder.decode is exact now: drop exact_decode"
    # every error is exactly one whole unit too low, and only on negative values
    assert set(np.unique(err[wrong]).tolist()) == {-1.0}
    assert (t[wrong] < 0).all()
    # about (|value| - 1) / 2**16 of the negatives with integer part |value|: ~0.05% here
    assert 100 < wrong.sum() < 5000, wrong.sum()
    # ours is exact on every one of them
    assert np.array_equal(ours, truth)
    assert ours.dtype == np.float64


def test_upstream_decode_loses_low_bits_at_32_bit_precision(decoded):
    t, up, ours = decoded["t32"], decoded["up32"], decoded["ours32"]
    truth = t.astype(np.float64) / 2.0**32
    assert up.dtype == np.float32
    assert np.abs(up.astype(np.float64) - truth).max() > 1e-5  # float32 near 1e3: ulp 6e-5
    assert np.array_equal(ours, truth)


def test_exact_decode_is_floor_plus_fraction_over_full_int64_range():
    """exact_decode(t) == floor(t/s) + (t mod s)/s, checked against Python integers/fractions."""
    from fedsynth.federation.crypten_compat import exact_decode, import_crypten

    import_crypten()
    from crypten.encoder import FixedPointEncoder

    rng = np.random.default_rng(7)
    ints = [int(v) for v in rng.integers(-2**63, 2**63 - 1, size=3000, dtype=np.int64)]
    ints += [-2**63, 2**63 - 1, -1, 0, 1, -2**16, -2**16 - 1, -2**16 + 1, -2**32, -2**32 - 1, -2**32 + 1]
    t = torch.tensor(ints, dtype=torch.long)
    for p in (16, 32):
        s = 2**p
        enc = FixedPointEncoder(precision_bits=p)
        assert FixedPointEncoder.decode is exact_decode
        got = enc.decode(t)
        assert got.dtype == torch.float64
        for ti, gi in zip(ints, got.tolist()):
            want = Fraction(ti // s) + Fraction(ti % s, s)  # Python: floor and non-negative mod
            assert want == Fraction(ti, s)
            assert gi == float(want), (p, ti, gi, float(want))


# --------------------------------------------------------------- 2b. precision
def _secure_style_roundtrip(x: torch.Tensor, precision: int, k: int = 3) -> torch.Tensor:
    """Encode x at ``precision`` bits, split into k random int64 shares, add them, decode."""
    from fedsynth.federation.crypten_compat import import_crypten

    import_crypten()
    from crypten.common.rng import generate_random_ring_element
    from crypten.encoder import FixedPointEncoder

    enc = FixedPointEncoder(precision_bits=precision)
    g = torch.Generator().manual_seed(99)
    masks = [generate_random_ring_element(x.shape, generator=g) for _ in range(k - 1)]
    shares = [enc.encode(x) - sum(masks)] + masks  # int64 wraps: a sharing of encode(x)
    total = shares[0].clone()
    for s in shares[1:]:
        total += s
    return enc.decode(total)


def test_precision_16_bits_is_too_coarse_32_bits_is_not():
    from fedsynth.federation.crypten_compat import PRECISION_BITS

    assert PRECISION_BITS == 32
    g = torch.Generator().manual_seed(3)
    mag = 1e-4 * (1 + torch.rand(20000, generator=g, dtype=torch.float64))  # values in [1e-4, 2e-4)
    sign = torch.where(torch.rand(20000, generator=g) < 0.5, -1.0, 1.0).double()
    x = mag * sign
    rel16 = ((_secure_style_roundtrip(x, 16) - x).abs() / x.abs())
    rel32 = ((_secure_style_roundtrip(x, PRECISION_BITS) - x).abs() / x.abs())
    assert rel16.max() > 0.05 and rel16.mean() > 0.01, "16-bit fixed point is fine now?"
    # 32 bits: absolute error below one unit 2**-32, i.e. relative < 2.33e-6 at 1e-4
    # (encode truncates; relative error < 1e-6 is reached from |x| >= 2.4e-4)
    assert (_secure_style_roundtrip(x, 32) - x).abs().max() < 2.0**-32
    assert rel32.max() < 2.0**-32 / 1e-4
    assert rel32.median() < 1e-6
    big = x * 10  # ~1e-3
    rel32_big = ((_secure_style_roundtrip(big, 32) - big).abs() / big.abs())
    assert rel32_big.max() < 1e-6


# ---------------------------------------------------- 3. own process group
_NO_RENDEZVOUS_SCRIPT = """
    import os, sys, threading, time
    from fedsynth.federation.crypten_compat import import_crypten
    crypten = import_crypten()
    for key in ("RENDEZVOUS", "DISTRIBUTED_BACKEND", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    os.environ["WORLD_SIZE"] = "2"
    os.environ["RANK"] = sys.argv[1]
    threading.Thread(target=crypten.init, daemon=True).start()   # blocks forever: nobody comes
    for _ in range(600):
        if "RENDEZVOUS" in os.environ:
            break
        time.sleep(0.05)
    print(os.environ.get("RENDEZVOUS", "none"), flush=True)
    os._exit(0)
"""


def test_crypten_default_rendezvous_cannot_meet(tmp_path):
    """Without RENDEZVOUS, every CrypTen party invents its own file rendezvous (so all hang)."""
    urls = []
    for rank in (0, 1):
        r = run_py(_NO_RENDEZVOUS_SCRIPT, rank, timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        urls.append(r.stdout.strip())
    assert all(u.startswith("file:///tmp/") for u in urls), urls
    assert urls[0] != urls[1], "CrypTen's parties now agree on a rendezvous by themselves"


def test_session_adopts_its_process_group_and_never_runs_crypten_seeding(secure_sum_3):
    for rank, rec in enumerate(secure_sum_3):
        assert list(rec["comm"]) == [rank, 3]
        calls = json.loads(str(rec["calls"]))
        seeding = {key: calls[key] for key in ("isend", "send", "setup_prng", "sync_seeds")}
        assert seeding == {"isend": 0, "send": 0, "setup_prng": 0, "sync_seeds": 0}, calls


# ------------------------------------------------------- 4. PRZS seeds in clear
_SETUP_PRNG_SCRIPT = """
    import json, os, sys
    import torch
    import torch.distributed as dist
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    wire = []
    _isend = dist.isend
    def isend(tensor, dst, *a, **kw):            # what goes over the gloo connection
        wire.append({"dst": int(dst), "values": tensor.reshape(-1).tolist(), "dtype": str(tensor.dtype)})
        return _isend(tensor, dst, *a, **kw)
    dist.isend = isend
    from fedsynth.federation.crypten_compat import import_crypten
    crypten = import_crypten()
    os.environ.update(RENDEZVOUS=f"tcp://127.0.0.1:{port}", WORLD_SIZE="2", RANK=str(rank),
                      DISTRIBUTED_BACKEND="gloo")
    crypten.init()
    from crypten.common.rng import generate_random_ring_element
    cpu = torch.device("cpu")
    draws = {key: generate_random_ring_element((16,), generator=crypten.generators[key][cpu]).tolist()
             for key in ("prev", "next")}
    json.dump({"wire": wire, "draws": draws}, open(out, "w"))
    dist.barrier()
    os._exit(0)
"""


def test_crypten_setup_prng_sends_przs_seed_in_clear(tmp_path):
    """CrypTen's own seeding: an eavesdropper on the isend can recompute the PRZS masks."""
    from fedsynth.federation.crypten_compat import import_crypten

    import_crypten()
    from crypten.common.rng import generate_random_ring_element

    port = free_port()
    script = tmp_path / "setup_prng.py"
    script.write_text(textwrap.dedent(_SETUP_PRNG_SCRIPT))
    procs = [start_process([PY, str(script), str(r), str(port), str(tmp_path / f"r{r}.json")],
                           tmp_path, f"prng{r}") for r in (0, 1)]
    assert wait_all(procs, 150) == [0, 0], describe(procs)
    rec = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1)]

    for r in (0, 1):
        sends = rec[r]["wire"]
        assert len(sends) == 1 and sends[0]["dst"] == 1 - r and len(sends[0]["values"]) == 1, sends
        intercepted = sends[0]["values"][0]  # rank r's "next" seed, as seen on the wire
        receiver = rec[1 - r]
        # an eavesdropper seeds a generator with the intercepted value ...
        g = torch.Generator()
        g.manual_seed(intercepted)
        eve = generate_random_ring_element((16,), generator=g).tolist()
        # ... and reproduces exactly the receiver's "prev" mask stream and the sender's "next"
        assert eve == receiver["draws"]["prev"]
        assert eve == rec[r]["draws"]["next"]


def test_fedsynth_przs_shares_sum_to_zero_from_derived_seeds(secure_sum_3):
    """seed_generators with session-derived seeds: PRZS shares are random but sum to 0 mod 2**64."""
    shares = [rec["przs"].astype(np.int64) for rec in secure_sum_3]
    with np.errstate(over="ignore"):
        total = shares[0] + shares[1] + shares[2]  # int64 arithmetic wraps like Z_{2^64}
    assert not total.any()
    for s in shares:
        assert (s != 0).mean() > 0.99
        assert s.min() < -2**60 and s.max() > 2**60  # spread over the whole ring
    assert not np.array_equal(shares[0], shares[1]) and not np.array_equal(shares[1], shares[2])
    # the shared (global) seed agrees across ranks too
    assert len({int(rec["shared_seed"]) for rec in secure_sum_3}) == 1


def test_seed_generators_pairs_next_with_successors_prev():
    """seed_generators installs the given seeds: rank i's next == rank i+1's prev gives PRZS = 0."""
    from fedsynth.federation.crypten_compat import import_crypten, seed_generators

    crypten = import_crypten()
    from crypten.common.rng import generate_random_ring_element

    k, pair = 4, [11, 22, 33, 44]  # pair[i]: seed of the link i -> i+1
    cpu = torch.device("cpu")
    shares = []
    for i in range(k):
        seed_generators(pair[(i - 1) % k], pair[i], 1000 + i, 5)
        g0, g1 = crypten.generators["prev"][cpu], crypten.generators["next"][cpu]
        shares.append(generate_random_ring_element((256,), generator=g0)
                      - generate_random_ring_element((256,), generator=g1))
    assert not sum(shares).any()
    assert all(s.any() for s in shares)


# ------------------------------------------------- 5. 32-bit torch mask seeds
def test_torch_generator_keeps_32_bits_of_seed_so_sums_use_fedsynth_masks(secure_sum_3):
    """CrypTen's PRZS draws from torch's CPU generator, which ignores seed bits above 32."""
    from fedsynth.federation.crypten_compat import import_crypten

    import_crypten()
    from crypten.common.rng import generate_random_ring_element

    seed = 0x1234_5678_9ABC
    draws = []
    for s in (seed, seed + 2**32, seed + 2**40, seed + 1):
        g = torch.Generator()
        g.manual_seed(s)
        draws.append(generate_random_ring_element((64,), generator=g))
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2]), (
        "torch's generator now uses the whole seed: workaround 5 may be unnecessary")
    assert not torch.equal(draws[0], draws[3])
    # fedsynth's secure sums take every mask from Session.przs_mask, never CrypTen's PRZS
    for rec in secure_sum_3:
        calls = json.loads(str(rec["calls"]))
        mask_calls, przs_calls, n_sums = rec["sum_mask_calls"].tolist()
        assert n_sums > 0 and mask_calls == n_sums and przs_calls == 0, calls


# ------------------------------------------------------------ 6. configs name
def test_crypten_installs_configs_package_and_fedsynth_avoids_the_name():
    r = run_py("""
        import importlib.util, pathlib
        spec = importlib.util.find_spec("configs")
        print(spec.origin if spec else "none")
    """)
    assert r.returncode == 0, r.stderr
    origin = r.stdout.strip()
    assert origin != "none", "CrypTen no longer installs a top-level `configs`: drop workaround 5"
    assert "site-packages" in origin
    pkg = REPO / "fedsynth"
    assert not (pkg / "configs").exists() and not (pkg / "configs.py").exists()
    for f in pkg.glob("*.py"):
        text = f.read_text()
        assert "import configs" not in text and "from configs" not in text, f
