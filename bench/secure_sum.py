"""Benchmark: secure sum (CrypTen shares) vs plaintext all_reduce, 3 real parties.

Usage (from the repository root)::

    .venv/bin/python bench/secure_sum.py [--quick] [--parties 3] [--reps N]

Starts ``--parties`` worker processes (this script with ``--worker``) on
127.0.0.1, each with OMP_NUM_THREADS=1. Every worker first imports torch,
CrypTen and fedsynth, then waits for a common start signal, so the session
set-up time measures only rendezvous + authentication/key agreement +
process group (+ CrypTen PRZS seeding), not Python imports. Each worker
opens ``fedsynth.federation.session.Session`` with one shared secret file
(``--setup-reps`` times, on fresh ports, to get several set-up timings);
in the last session it times, for each vector size (float64 values):

* ``SecureSum.sum(x)``: fixed-point encoding, PRZS masking, one gloo
  all_reduce of the int64 shares, decoding (noise_std=0);
* ``SecureSum.sum(x, noise_std=1)``: the same plus this site's Gaussian
  noise share (what every DP release pays);
* ``torch.distributed.all_reduce`` of a float64 copy of ``x`` in the same
  gloo process group (the plaintext floor).

Every repetition starts after a barrier; a repetition's time is the slowest
rank's (the sum is done when every party has it); we report the median over
repetitions after one warm-up. The secure result is checked against the
plaintext sum. Results: bench/out/secure_sum.json and bench/out/secure_sum.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


# ----------------------------------------------------------------- worker
def worker(a) -> None:
    t_import = time.monotonic()
    import torch
    import torch.distributed as dist

    from fedsynth.federation import crypten_compat as _crypten_compat
    from fedsynth.federation.secure_sum import SecureSum
    from fedsynth.federation.session import Session, read_secret

    _crypten_compat.import_crypten()
    torch.set_num_threads(1)
    import_s = time.monotonic() - t_import
    secret = read_secret(a.secret)
    work = Path(a.workdir)
    (work / f"ready.{a.rank}").write_text("1")
    go = work / "go"
    while not go.exists():
        time.sleep(0.002)
    go_wall = float(go.read_text())

    ports = [int(p) for p in a.ports.split(",")]
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    setups, results = [], {}
    for i, port in enumerate(ports):
        if i > 0:
            # the previous session's rank 0 must be gone before the next rendezvous
            time.sleep(0.5)
        t_start_wall = go_wall if i == 0 else time.time()
        t0 = time.monotonic()
        s = Session(a.rank, a.parties, f"tcp://127.0.0.1:{port}", secret,
                    site_name=f"bench{a.rank}", step_timeout=600.0, rendezvous_timeout=120.0)
        try:
            s._rendezvous()
            t1 = time.monotonic()
            s._authenticate()
            t2 = time.monotonic()
            s._start_process_group()
            t3 = time.monotonic()
        except BaseException as e:
            s.abort(e)
            s.close()
            raise
        # the first session's clock starts at the common go signal (wall clock, same host)
        lag = max(0.0, time.time() - (t3 - t0) - t_start_wall) if i == 0 else 0.0
        setups.append({"rendezvous": t1 - t0, "authentication": t2 - t1, "process_group": t3 - t2,
                       "total": t3 - t0, "start_lag": lag})
        if i < len(ports) - 1:
            dist.barrier()
            s.finish()
            s.close()
            continue
        agg = SecureSum(s)
        gen = torch.Generator().manual_seed(1234 + a.rank)
        for n in sizes:
            x = torch.randn(n, dtype=torch.float64, generator=gen)
            times = {"secure": [], "secure_noise": [], "plain": []}
            max_err = 0.0
            # small vectors are latency-bound and noisy on shared cores: more repetitions
            reps = 2 * a.reps + 1 if n <= 200_000 else a.reps if n < 5_000_000 else max(3, a.reps - 2)
            for rep in range(reps + 1):  # rep 0: warm-up
                for op in ("secure", "secure_noise", "plain"):
                    y = x.clone() if op == "plain" else None
                    dist.barrier()
                    t = time.perf_counter()
                    if op == "secure":
                        out = agg.sum(x, step="bench secure sum")
                    elif op == "secure_noise":
                        agg.sum(x, noise_std=1.0, step="bench secure sum with noise")
                    else:
                        dist.all_reduce(y)
                    dt = time.perf_counter() - t
                    if rep:
                        times[op].append(dt)
                    if op == "plain":
                        max_err = max(max_err, float((y - out).abs().max()))
                        del y, out
            results[str(n)] = {"times": times, "max_abs_err": max_err, "reps": reps}
            if a.rank == 0:
                med = {k: statistics.median(v) for k, v in times.items()}
                print(f"  n={n:>9,}: secure {med['secure'] * 1e3:9.2f} ms, with noise "
                      f"{med['secure_noise'] * 1e3:9.2f} ms, plain all_reduce {med['plain'] * 1e3:9.2f} ms "
                      f"(rank 0, max |secure - plain| = {max_err:.2e})", flush=True)
        comm_stats = None
        try:
            import crypten.communicator as comm

            c = comm.get()
            comm_stats = {"rounds": c.comm_rounds, "bytes": c.comm_bytes}
        except Exception:  # noqa: BLE001
            pass
        dist.barrier()
        s.finish()
        s.close()
    (work / f"result.{a.rank}.json").write_text(json.dumps(
        {"rank": a.rank, "import_s": import_s, "setups": setups, "results": results,
         "crypten_comm": comm_stats, "secure_sum_calls": agg.calls}))


# ------------------------------------------------------- component profile
def profile_components(sizes: list[int], reps: int = 3) -> dict:
    """Single-process cost of each local step of SecureSum.sum (no communication), ms median.

    Uses an unopened Session with random pairwise keys for ``przs_mask``
    (the same code path as in a session; the keys just are not agreed).
    """
    import torch

    from fedsynth.federation import crypten_compat as _crypten_compat
    from fedsynth.federation.secure_sum import csprng_normal
    from fedsynth.federation.session import Session

    _crypten_compat.import_crypten()
    from crypten.encoder import FixedPointEncoder

    torch.set_num_threads(1)
    s = Session(0, 3, "tcp://127.0.0.1:1", os.urandom(32))
    s.pair_keys = {1: os.urandom(32), 2: os.urandom(32)}
    enc = FixedPointEncoder(precision_bits=_crypten_compat.PRECISION_BITS)

    def med(f):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e3

    out = {}
    for n in sizes:
        x = torch.randn(n, dtype=torch.float64)
        e = enc.encode(x)
        out[str(n)] = {
            "copy + range check": med(lambda: float(x.detach().to(torch.float64).reshape(-1).clone().abs().max())),
            "noise share (csprng_normal)": med(lambda: csprng_normal(n, 1.0)),
            "fixed-point encode": med(lambda: enc.encode(x)),
            "PRZS mask (2 ChaCha20 streams)": med(lambda: s.przs_mask(n, 0)),
            "decode": med(lambda: enc.decode(e)),
        }
        print(f"  component profile n={n:,}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in out[str(n)].items()),
              flush=True)
    return out


# ----------------------------------------------------------------- driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sizes 1e5, 1e6; 3 repetitions; 2 set-ups")
    p.add_argument("--parties", type=int, default=3)
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per size (default 7, quick 3; 2N+1 up to 2e5 values, N-2 at 1e7)")
    p.add_argument("--setup-reps", type=int, default=None, help="sessions opened (default 3, quick 2)")
    p.add_argument("--sizes", default=None, help="comma-separated vector lengths")
    p.add_argument("--wait-quiet", type=float, default=600.0,
                   help="wait up to this many seconds for a 1-min load average below 1.0 (0: don't wait)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ports", help=argparse.SUPPRESS)
    p.add_argument("--secret", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return

    import _common as c

    from fedsynth.generators.cvae import CVAE, CVAEConfig

    grad_n = sum(p.numel() for p in CVAE(CVAEConfig(50, 5, 4, 32)).parameters())
    a.reps = a.reps or (3 if a.quick else 7)
    a.setup_reps = a.setup_reps or (2 if a.quick else 3)
    a.sizes = a.sizes or (f"{grad_n},1e5,1e6" if a.quick else f"{grad_n},1e5,1e6,1e7")
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    c.wait_for_quiet(1.0, a.wait_quiet)
    info = c.machine()
    print(f"secure-sum benchmark: {a.parties} parties on 127.0.0.1, sizes {sizes}, {a.reps} reps "
          f"(+1 warm-up), {a.setup_reps} session set-ups; {info['cores']} cores, torch {info['torch']}",
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="fedsynth-bench-"))
    secret = work / "session.key"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    ports = free_ports(a.setup_reps)
    procs = []
    t0 = time.monotonic()
    for r in range(a.parties):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--rank", str(r),
               "--parties", str(a.parties), "--ports", ",".join(map(str, ports)), "--secret", str(secret),
               "--workdir", str(work), "--sizes", a.sizes, "--reps", str(a.reps)]
        procs.append(subprocess.Popen(cmd, env=c.env1()))
    print("waiting for the workers to import torch/CrypTen/fedsynth ...", flush=True)
    while not all((work / f"ready.{r}").exists() for r in range(a.parties)):
        if any(pr.poll() not in (None, 0) for pr in procs):
            break
        time.sleep(0.05)
    (work / "go.tmp").write_text(repr(time.time()))
    os.replace(work / "go.tmp", work / "go")
    print(f"all {a.parties} workers ready after {time.monotonic() - t0:.1f}s; opening sessions ...", flush=True)
    codes = [pr.wait() for pr in procs]
    if any(codes):
        sys.exit(f"a worker failed: exit codes {codes}")
    res = [json.loads((work / f"result.{r}.json").read_text()) for r in range(a.parties)]
    for f in work.iterdir():
        f.unlink()
    work.rmdir()

    print("single-process profile of SecureSum.sum's local steps ...", flush=True)
    components = profile_components(sizes, reps=3)

    # set-up: a session is ready when its slowest rank is
    setup_rows = []
    for i in range(a.setup_reps):
        per = [r["setups"][i] for r in res]
        setup_rows.append({k: max(s[k] for s in per) for k in ("rendezvous", "authentication",
                                                               "process_group", "total", "start_lag")})
    setup = {k: c.summary([s[k] for s in setup_rows]) for k in setup_rows[0]}
    sums = {}
    for n in sizes:
        ent = {}
        for op in ("secure", "secure_noise", "plain"):
            reps = len(res[0]["results"][str(n)]["times"][op])
            slowest = [max(r["results"][str(n)]["times"][op][i] for r in res) for i in range(reps)]
            ent[op] = c.summary(slowest)
        ent["max_abs_err"] = max(r["results"][str(n)]["max_abs_err"] for r in res)
        sums[str(n)] = ent

    rows = []
    for n in sizes:
        e = sums[str(n)]
        sec, noi, pl = e["secure"]["median"], e["secure_noise"]["median"], e["plain"]["median"]
        what = " (DP-SGD gradient, default CVAE)" if n == grad_n else ""
        rows.append([f"{n:,}{what}", f"{n * 8 / 1e6:.3g}",
                     f"{sec * 1e3:.2f} ({e['secure']['min'] * 1e3:.2f}-{e['secure']['max'] * 1e3:.2f})",
                     f"{noi * 1e3:.2f}", f"{pl * 1e3:.2f} ({e['plain']['min'] * 1e3:.2f}-{e['plain']['max'] * 1e3:.2f})",
                     f"{sec / pl:.1f}x", f"{n * 8 / 1e6 / sec:.0f}", f"{e['max_abs_err']:.1e}"])
    table = c.md_table(["float64 values", "MB per party", "SecureSum.sum ms, median (min-max)",
                        "SecureSum.sum + noise ms", "plain all_reduce ms, median (min-max)",
                        "secure / plain", "secure MB/s", "max abs error"], rows)
    srows = [[k.replace("_", " "), c.fmt({kk: v * 1e3 if kk in ("median", "min", "max") else v
                                          for kk, v in setup[k].items()}, 1)]
             for k in ("rendezvous", "authentication", "process_group", "total")]
    stable = c.md_table(["session set-up step (slowest rank)", f"ms, median (min-max) of {a.setup_reps}"], srows)
    reps_txt = ", ".join(f"{n:,}: {len(res[0]['results'][str(n)]['times']['plain'])}" for n in sizes)
    md = (f"## Secure sum vs plaintext all_reduce ({a.parties} parties, 127.0.0.1)\n\n"
          f"{info['date_utc']}; 1-min load average {info['load_avg_at_start'][0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end.\n\n{table}\n\n"
          f"Repetitions per size: {reps_txt} "
          f"(after 1 warm-up); a repetition's time is the slowest rank's.\n\n"
          f"{stable}\n\n(first set-up: the parties were released within "
          f"{setup_rows[0]['start_lag'] * 1e3:.0f} ms of each other; worker import of torch+CrypTen+fedsynth, "
          f"not counted: {statistics.median(r['import_s'] for r in res):.1f} s)\n")
    comp_names = list(next(iter(components.values())))
    ctable = c.md_table(["local step (1 process, no communication)"] + [f"{n:,} values, ms" for n in sizes],
                        [[k] + [f"{components[str(n)][k]:.1f}" for n in sizes] for k in comp_names])
    md += (f"\nWhere a secure sum's time goes (median of 3, one process; in the 3-party runs above the 3 "
           f"parties share 2 cores):\n\n{ctable}\n")
    out = {"machine": info, "parties": a.parties, "components_ms": components, "sizes": sizes, "reps": {str(n): len(res[0]["results"][str(n)]["times"]["plain"]) for n in sizes}, "setup_reps": a.setup_reps,
           "dp_sgd_gradient_values": grad_n,
           "load_avg_at_end": os.getloadavg(), "setup_ms_slowest_rank": setup_rows, "setup": setup,
           "sums_seconds_slowest_rank": sums, "workers": res,
           "command": ".venv/bin/python bench/secure_sum.py" + (" --quick" if a.quick else "")}
    name = "secure_sum_quick" if a.quick else "secure_sum"
    c.write_results(name, out, md)


if __name__ == "__main__":
    main()
