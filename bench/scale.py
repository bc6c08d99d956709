"""Scale benchmark (issue 12, item 4): the default generator end to end at up to 20,000 genes.

The default generator (``gaussian``, fedsynth/generators/gaussian.py) never
forms a G x G matrix; this measures that training and synthesis indeed stay
linear in the number of genes G and of sites k. No ``fedsynth simulate`` (its
evaluation at 10,000 x 20,000 is not what is measured): each site's CSV is
generated directly, then

* k real ``fedsynth train`` processes (``--rank R --world-size k
  --rendezvous tcp://127.0.0.1:PORT --secret-file ... --classes
  class0,...,class4 --epsilon 1``, default generator) over loopback, one
  CrypTen session;
* one ``fedsynth synthesize --model model.pt --n 1000`` (rank 0's model).

Configurations (``--configs``; 1,000 samples per site, 5 classes):

* ``smoke``: 3 sites x 200 samples x 500 genes (debugging);
* ``s3_g1000``, ``s3_g5000``, ``s3_g20000``: 3 sites at 1,000 / 5,000 / 20,000 genes;
* ``s10_g5000``, ``s10_g20000``: 10 sites at 5,000 / 20,000 genes.

Data: ``bench/synthdata.py`` preset ``bulk``, matrix seed 0 (the gene-level
parameters, :func:`synthdata.make_model` with 10 sites), so site r's matrix
is the same in every configuration with the same G: site r draws its
samples with site effect r and sampling seed ``1000 + r``
(:func:`site_csv`; columns ``sample_id,label,g00000,...``; written once to
``bench/out/scale/data/``).

Per configuration (``bench/out/scale/<config>/result.json``, cached and
resumable: a configuration whose result exists is not re-run unless
``--fresh``): wall seconds of training (first site started to last site
exited: reading the CSV, joining, fitting, writing) and of synthesis; peak
RSS (MiB) and CPU seconds (user + system) of every site process and of
synthesize, exact, from the kernel's rusage of the reaped child
(``os.wait4``: ``ru_maxrss``, ``ru_utime + ru_stime``; the /proc poller
:class:`high_dim.Monitor` runs beside it as a cross-check); per site, the
values put into secure sums (``secure_sum_values``: every secure sum is a
DP release, so these are the released values), their int64 share bytes, the
gloo ring all-reduce bytes ``2 (k - 1) / k x share_bytes`` and the kernel's
TCP byte count (a lower bound, see ``Session.traffic``); and the check
``bytes sent per site <= 16 B x released values + 1 MiB`` on both byte
figures.

    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/scale.py --configs smoke
    nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/scale.py   # the whole grid
    .venv/bin/python bench/scale.py --render                                        # table from the cache

Writes bench/out/scale.md and bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from _common import OUT, REPO, env1, git_state, machine, md_table, rel, shell, write_json, write_results  # noqa: E402

import synthdata  # noqa: E402
from high_dim import Monitor  # noqa: E402

WORK = OUT / "scale"
CLASSES, PRESET, MATRIX_SEED, MAX_SITES = 5, "bulk", 0, 10
SYNTH_N = 1000
#: name -> (sites, samples per site, genes), in the order they are run (cheapest first)
CONFIGS = {
    "smoke": (3, 200, 500),
    "s3_g1000": (3, 1000, 1000),
    "s3_g5000": (3, 1000, 5000),
    "s10_g5000": (10, 1000, 5000),
    "s3_g20000": (3, 1000, 20000),
    "s10_g20000": (10, 1000, 20000),
}
DEFAULT = [c for c in CONFIGS if c != "smoke"]
LABELS = [f"class{k}" for k in range(CLASSES)]


# ------------------------------------------------------------------ data
def site_csv(site: int, samples: int, genes: int) -> Path:
    """Site ``site``'s matrix (samples x genes, sample_id,label,genes), written once."""
    path = WORK / "data" / f"{PRESET}_g{genes}_n{samples}_k{CLASSES}_seed{MATRIX_SEED}_site{site}.csv"
    stamp = path.with_name(path.name + ".params")
    params = synthdata.PARAMS.read_bytes()
    if path.is_file() and stamp.is_file() and stamp.read_bytes() == params:
        return path
    print(f"  writing {rel(path)} ...", flush=True)
    model = synthdata.make_model(genes, CLASSES, MAX_SITES, MATRIX_SEED, PRESET)
    onehot = np.zeros(MAX_SITES)
    onehot[site] = 1.0
    # same gene-level parameters; this site's effect for every sample; its own sampling seed
    model = dict(model, site_prop=onehot, seed=1000 + site)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        start = 0
        for yb, sb, X in synthdata.blocks(model, samples):
            df = synthdata._frame(yb, sb, X, start).drop(columns="site")
            df["sample_id"] = [f"site{site}_{s}" for s in df["sample_id"]]
            df.to_csv(f, index=False, header=start == 0, float_format="%.4f")
            start += len(yb)
    tmp.replace(path)
    stamp.write_bytes(params)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ one configuration
def _reap(proc: subprocess.Popen) -> dict:
    """Wait for a child; its exact rusage (peak RSS MiB, CPU seconds) and exit time."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "peak_mib": round(ru.ru_maxrss / 1024, 1),
            "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2), "exited": time.monotonic()}


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_config(name: str, *, step_timeout: float, rendezvous_timeout: float, fresh: bool = False) -> dict:
    k, n, G = CONFIGS[name]
    outdir = WORK / name
    res_file = outdir / "result.json"
    if res_file.is_file() and not fresh:
        r = json.loads(res_file.read_text())
        if r.get("ok"):
            print("    [cached]", flush=True)
            return r
    datas = [site_csv(r, n, G) for r in range(k)]
    outdir.mkdir(parents=True, exist_ok=True)
    secret = outdir / "session.key"
    secret.write_text(secrets.token_hex(20) + "\n")
    os.chmod(secret, 0o600)
    env = env1() | {"PYTHONPATH": str(REPO), "PYTHONNOUSERSITE": "1",
                    "FEDSYNTH_LEDGER_DIR": str(outdir / "ledger")}  # a throw-away privacy ledger
    for var in ("RENDEZVOUS", "WORLD_SIZE", "RANK", "DISTRIBUTED_BACKEND", "FEDSYNTH_SITE"):
        env.pop(var, None)
    port = free_port()
    py = Path(sys.executable)
    cmds = [[py, "-m", "fedsynth", "train", "--rank", str(r), "--world-size", str(k),
             "--rendezvous", f"tcp://127.0.0.1:{port}", "--secret-file", secret, "--data", datas[r],
             "--label-column", "label", "--classes", ",".join(LABELS), "--epsilon", "1",
             "--step-timeout", f"{step_timeout:g}", "--rendezvous-timeout", f"{rendezvous_timeout:g}",
             "--outdir", outdir / f"site{r}", "--overwrite", "--no-progress"] for r in range(k)]
    result = {"config": name, "sites": k, "samples_per_site": n, "genes": G, "classes": CLASSES,
              "preset": PRESET, "matrix_seed": MATRIX_SEED, "ok": False,
              "train_command_rank0": shell(cmds[0]), "load_avg_before": os.getloadavg(),
              "git": git_state(("generators/gaussian.py",))}
    print(f"    training: {k} x fedsynth train ({n} samples x {G} genes each) ...", flush=True)
    mon = Monitor(os.getpid())
    mon.start()
    t0 = time.monotonic()
    procs, logs = [], []
    for r, cmd in enumerate(cmds):
        log = open(outdir / f"train_rank{r}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    reaped = [_reap(p) for p in procs]
    mon.stop.set()
    mon.join()
    for log in logs:
        log.close()
    result["train_wall_seconds"] = round(max(x["exited"] for x in reaped) - t0, 2)
    result["load_avg_after_train"] = os.getloadavg()
    site_recs = []
    for r, x in enumerate(reaped):
        rec = {"rank": r, "rc": x["rc"], "peak_mib": x["peak_mib"], "cpu_seconds": x["cpu_seconds"],
               "wall_seconds": round(x["exited"] - t0, 2),
               "monitor": {kk: round(v, 2) for kk, v in mon.sites.get(r, {}).items()}}
        run_json = outdir / f"site{r}" / "run.json"
        if x["rc"] == 0 and run_json.is_file():
            run = json.loads(run_json.read_text())
            comm = run.get("communication") or {}
            rec["communication"] = comm
            rec["run_wall_seconds"] = run.get("wall_seconds")
            vals = comm.get("secure_sum_values")
            if vals is not None:
                ring = comm["share_bytes"] * 2 * (k - 1) / k
                bound = 16 * vals + 2**20
                rec.update(released_values=vals, ring_bytes=round(ring), bound_bytes=bound,
                           ring_within_bound=ring <= bound,
                           tcp_within_bound=(comm.get("tcp_bytes_sent") or 0) <= bound)
        site_recs.append(rec)
    result["site"] = site_recs
    failed = [s for s in site_recs if s["rc"] != 0]
    if failed:
        result["error"] = {f"rank{s['rank']}": {"rc": s["rc"], "log_tail": _tail(outdir / f"train_rank{s['rank']}.log")}
                           for s in failed}
        write_json(res_file, result)
        raise RuntimeError(f"{name}: training failed at rank(s) {[s['rank'] for s in failed]}:\n"
                           + _tail(outdir / f"train_rank{failed[0]['rank']}.log"))
    # ---- synthesis, once, from rank 0's model (every site writes the same model)
    scmd = [py, "-m", "fedsynth", "synthesize", "--model", outdir / "site0" / "model.pt", "--n", str(SYNTH_N),
            "--outdir", outdir / "synth", "--overwrite"]
    result["synthesize_command"] = shell(scmd)
    print(f"    synthesizing {SYNTH_N} samples ...", flush=True)
    t1 = time.monotonic()
    with open(outdir / "synthesize.log", "w") as log:
        sp = subprocess.Popen([str(c) for c in scmd], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        smon = Monitor(sp.pid)
        smon.start()
        sx = _reap(sp)
        smon.stop.set()
        smon.join()
    result["synthesize"] = {"rc": sx["rc"], "wall_seconds": round(sx["exited"] - t1, 2),
                            "peak_mib": sx["peak_mib"], "cpu_seconds": sx["cpu_seconds"],
                            "monitor": {kk: round(v, 2) for kk, v in smon.parent.items()}}
    if sx["rc"] != 0:
        result["error"] = {"synthesize": _tail(outdir / "synthesize.log")}
        write_json(res_file, result)
        raise RuntimeError(f"{name}: synthesize failed ({sx['rc']}):\n" + _tail(outdir / "synthesize.log"))
    import pandas as pd

    head = pd.read_csv(outdir / "synth" / "synthetic.csv", nrows=2)
    rows = sum(1 for _ in open(outdir / "synth" / "synthetic.csv")) - 1
    result["synthetic_shape"] = [rows, int(sum(c.startswith("g") for c in head.columns))]
    result["ok"] = True
    write_json(res_file, result)
    return result


# ------------------------------------------------------------------ report
def _mx(vals):
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def row(r: dict) -> list:
    s = r["site"]
    cpu = [x["cpu_seconds"] for x in s]
    mib = [x["peak_mib"] for x in s]
    vals = _mx([x.get("released_values") for x in s])
    ring = _mx([x.get("ring_bytes") for x in s])
    tcp = _mx([(x.get("communication") or {}).get("tcp_bytes_sent") for x in s[1:]])
    tcp0 = (s[0].get("communication") or {}).get("tcp_bytes_sent")
    bound = 16 * vals + 2**20 if vals is not None else None

    def yes(key, xs):
        return "yes" if all(x.get(key) for x in xs) else "NO"
    ok = f"{yes('ring_within_bound', s)} / {yes('tcp_within_bound', s[1:])} / {yes('tcp_within_bound', s[:1])}"
    syn = r.get("synthesize") or {}
    phase = {p: _mx([(x.get("run_wall_seconds") or {}).get(p) for x in s]) for p in ("load", "statistics")}
    phases = " / ".join("n/a" if phase[p] is None else f"{phase[p]:.1f}" for p in ("load", "statistics"))
    return [r["config"], r["sites"], f"{r['samples_per_site']:,}", f"{r['genes']:,}", f"{r['train_wall_seconds']:.0f}",
            f"{min(cpu):.1f}-{max(cpu):.1f}", phases, f"{min(mib):.0f}-{max(mib):.0f}",
            f"{vals:,}" if vals is not None else "n/a",
            f"{ring / 2**20:.2f}" if ring is not None else "n/a",
            f"{tcp / 2**20:.2f}" if tcp is not None else "n/a",
            f"{tcp0 / 2**20:.2f}" if tcp0 is not None else "n/a",
            f"{bound / 2**20:.2f}" if bound is not None else "n/a", ok,
            f"{syn.get('wall_seconds', float('nan')):.0f}", f"{syn.get('cpu_seconds', float('nan')):.0f}",
            f"{syn.get('peak_mib', float('nan')):.0f}"]


def growth(results: dict) -> list[str]:
    """Per-site CPU seconds (max over sites) ratios against genes and sites."""
    cpu = {n: max(x["cpu_seconds"] for x in r["site"]) for n, r in results.items()}

    def ratio(a, b):  # (wall-clock phase timings are not compared: 10 processes share 2 busy cores)
        return f"CPU s / site x{cpu[b] / cpu[a]:.2f} ({cpu[a]:.1f} -> {cpu[b]:.1f})"

    out = []
    g = [n for n in ("s3_g1000", "s3_g5000", "s3_g20000") if n in cpu]
    for a, b in zip(g, g[1:]):
        g0, g1 = CONFIGS[a][2], CONFIGS[b][2]
        out.append(f"3 sites, {g0:,} -> {g1:,} genes (x{g1 / g0:g}): {ratio(a, b)}")
    for G in (5000, 20000):
        a, b = f"s3_g{G}", f"s10_g{G}"
        if a in cpu and b in cpu:
            out.append(f"{G:,} genes, 3 -> 10 sites (x{10 / 3:.2f}): {ratio(a, b)}")
    return out


def render(results: dict, mc: dict) -> str:
    head = ["config", "sites", "samples / site", "genes", "train wall s", "CPU s / site", "read / statistics wall s",
            "peak MiB / site",
            "released values", "MiB sent / site (gloo ring)", "MiB sent, ranks 1..k-1 (TCP, lower bound)",
            "MiB sent, rank 0 = store host (TCP, lower bound)", "bound MiB (16 B x values + 1 MiB)",
            "within bound: ring / TCP ranks 1..k-1 / TCP rank 0", "synthesize wall s", "synthesize CPU s",
            "synthesize peak MiB"]
    names = [n for n in CONFIGS if n in results]
    lines = ["# Scale: 20,000 genes (issue 12, item 4)", "",
             f"Rendered {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{rel(WORK)}`; machine: "
             f"{mc.get('cores')} cores ({mc.get('cpu')}), {mc.get('mem_gib')} GiB, shared with another benchmark "
             f"(load average at the runs: see result.json); commit {mc.get('git_commit')}.",
             f"Generator `gaussian` (default), epsilon 1, {CLASSES} classes, `bench/synthdata.py` preset `{PRESET}`, "
             f"matrix seed {MATRIX_SEED}; synthesize `--n {SYNTH_N}`. CPU seconds and peak RSS: the kernel's rusage "
             "of each reaped process (min-max over sites). Released values: values the site put into secure sums "
             "(each a DP release); bytes: the largest site's; rank 0 apart, as it also hosts the rendezvous store "
             "(it relays every site's schema message, which holds the gene names, to every site). Read / statistics: the largest site's own timings "
             "(run.json `wall_seconds`: reading the CSV; computing and releasing the statistics).", "",
             md_table(head, [row(results[n]) for n in names]), ""]
    g = growth(results)
    if g:
        lines += ["Growth of per-site CPU seconds (largest site):", ""] + [f"* {x}" for x in g] + [""]
    return "\n".join(lines)


def cached() -> dict:
    out = {}
    for n in CONFIGS:
        f = WORK / n / "result.json"
        if f.is_file():
            r = json.loads(f.read_text())
            if r.get("ok"):
                out[n] = r
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(DEFAULT), help=f"comma-separated from {', '.join(CONFIGS)}")
    ap.add_argument("--step-timeout", type=float, default=1800.0,
                    help="fedsynth train --step-timeout (10 sites on 2 shared cores need more than 120 s)")
    ap.add_argument("--rendezvous-timeout", type=float, default=1800.0,
                    help="fedsynth train --rendezvous-timeout (sites read 20,000-gene CSVs before joining)")
    ap.add_argument("--fresh", action="store_true", help="re-run cached configurations")
    ap.add_argument("--render", action="store_true", help="run nothing; render the table from the cache")
    a = ap.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    mc = machine()
    if not a.render:
        for name in a.configs.split(","):
            if name not in CONFIGS:
                raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
            k, n, G = CONFIGS[name]
            print(f"[{name}] {k} sites x {n} samples x {G} genes  ({time.strftime('%H:%M:%S')})", flush=True)
            try:
                r = run_config(name, step_timeout=a.step_timeout, rendezvous_timeout=a.rendezvous_timeout,
                               fresh=a.fresh)
            except RuntimeError as err:  # one failed configuration does not stop the others
                print(f"    FAILED: {err}", flush=True)
                continue
            cpu = [x["cpu_seconds"] for x in r["site"]]
            print(f"    train wall {r['train_wall_seconds']:.0f} s, CPU/site {max(cpu):.0f} s, peak "
                  f"{max(x['peak_mib'] for x in r['site']):.0f} MiB/site; synthesize "
                  f"{r['synthesize']['wall_seconds']:.0f} s", flush=True)
    results = cached()
    md = render(results, mc)
    WORK.mkdir(parents=True, exist_ok=True)
    write_results("scale", {"results": results, "machine": mc}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
