"""Shared helpers of the benchmark scripts (not part of the fedsynth package).

* :func:`run_simulate` runs one ``fedsynth simulate`` through the installed
  CLI (the exact command is recorded), caching its outputs, so an
  interrupted benchmark resumes where it stopped;
* :func:`federated_holdout` reproduces simulate's per-site stratified
  holdout with fedsynth's own functions, so synthetic data from runs with a
  different split (``--sites 1``, ``--sites 5``) can be scored on exactly
  the test rows of the 3-site federated run;
* :func:`summary`, :func:`fmt` and :func:`md_table` format medians and ranges.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
DATA = REPO / "data" / "brca_pam50_sites.csv"
READ_KW = {"label_column": "pam50", "meta_columns": ("age", "site")}
DATA_ARGS = ["--label-column", "pam50", "--meta-columns", "age"]
FEDSYNTH = Path(sys.executable).parent / "fedsynth"


def env1() -> dict:
    """The environment for every child: one BLAS/OpenMP thread (2 shared cores)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def rel(p) -> str:
    """A path relative to the repository root when possible (for printed commands)."""
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def shell(cmd: list) -> str:
    """``cmd`` as one copy-pasteable shell line, run from the repository root."""
    return " ".join(shlex.quote(rel(c) if isinstance(c, Path) else str(c)) for c in cmd)


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": mem,
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
        **git_state(),
    }


def git_state(extra: tuple = ()) -> dict:
    """The commit benchmarked, and whether fedsynth/ had uncommitted edits (others edit concurrently)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"git_commit": git("rev-parse", "--short", "HEAD"),
            "fedsynth_dirty": bool(git("status", "--porcelain", "--", "fedsynth")),
            "code_hash": code_hash(extra)}


#: The modules whose code decides a simulate run's model and scores (not the report/attack modules).
ALGORITHM_FILES = ("cli.py", "data/io.py", "data/preprocess.py", "federation/crypten_compat.py",
                   "federation/schema.py", "federation/secure_sum.py", "federation/session.py",
                   "privacy/accounting.py", "privacy/clip.py", "privacy/library_size.py", "privacy/release.py",
                   "generators/base.py", "generators/modelfile.py", "generators/protocol.py",
                   "generators/registry.py", "workflows/common.py", "workflows/options.py",
                   "workflows/records.py", "workflows/simulate.py", "workflows/synthesize.py", "workflows/train.py",
                   "evaluation/_inputs.py", "evaluation/utility.py")


#: The generator modules a ``--generator`` run also depends on (beside ALGORITHM_FILES): a change to
#: pgm.py must not invalidate cached gaussian runs, and the reverse.
GENERATOR_FILES = {name: (f"generators/{name}.py",) for name in ("cvae", "gaussian", "pgm", "marginals")}


def code_hash(extra: tuple = ()) -> str:
    """SHA-256 (12 hex) over fedsynth's algorithm modules (plus ``extra`` ones) as they are on disk now.

    ``extra=()`` keeps the hash the pre-generator benchmarks were cached under.
    """
    import hashlib

    h = hashlib.sha256()
    for name in ALGORITHM_FILES + tuple(extra):
        f = REPO / "fedsynth" / name
        h.update(name.encode())
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()[:12]


def reuse_or_reset(outdir: Path, key: str, *, fresh: bool, needs: tuple = ()) -> dict | None:
    """run.json of an earlier run in ``outdir`` stamped with ``key`` (command + code hash), or None.

    None (and ``outdir`` made ready for a new run, its run.json removed) when
    ``fresh``, when the stamp differs, or when a file of ``needs`` is missing.
    """
    stamp = outdir / "command.txt"
    if (not fresh and (outdir / "run.json").is_file() and stamp.is_file() and stamp.read_text().strip() == key
            and all((outdir / n).is_file() for n in needs)):
        return json.loads((outdir / "run.json").read_text())
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "run.json").unlink(missing_ok=True)
    return None


def stamp_run(outdir: Path, line: str, key: str, code_files: tuple, code_before: str) -> None:
    """Stamp a finished run with ``key`` (unless fedsynth's code changed while it ran) and its git state."""
    if code_hash(code_files) != code_before:
        print("    NOTE: fedsynth's code changed while this run was going; it will be re-run next time")
        key = f"{line}\n# fedsynth code changed during the run"
    (outdir / "command.txt").write_text(key + "\n")
    (outdir / "git.json").write_text(json.dumps(git_state(code_files)) + "\n")


def run_simulate(args: list[str], outdir: Path, *, fresh: bool = False, label: str = "",
                 code_files: tuple = ()) -> dict:
    """Run ``fedsynth simulate ARGS --outdir OUTDIR``; return run.json plus bookkeeping.

    A previous run in ``outdir`` with the identical command is reused unless
    ``fresh`` (or fedsynth's code changed: ALGORITHM_FILES plus
    ``code_files``, e.g. ``GENERATOR_FILES[name]``). The simulate log goes
    to ``outdir/simulate.log``.
    """
    outdir = Path(outdir)
    cmd = [FEDSYNTH, "simulate", *map(str, args), "--outdir", outdir, "--overwrite"]
    line = shell(cmd)
    # a cached run is reused only if the command and fedsynth's algorithm code are unchanged
    key = f"{line}\n# fedsynth code {code_hash(code_files)}"
    run = reuse_or_reset(outdir, key, fresh=fresh)
    if run is not None:
        run["_cached"] = True
        run["_command"] = line
        run["_git"] = json.loads((outdir / "git.json").read_text()) if (outdir / "git.json").is_file() else None
        print(f"    [cached] {label}", flush=True)
        return run
    code_before = code_hash(code_files)
    t0 = time.monotonic()
    with open(outdir / "simulate.log", "w") as logf:
        proc = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env1(), stdout=logf,
                              stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        tail = (outdir / "simulate.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"simulate failed ({proc.returncode}): {line}\n" + "\n".join(tail))
    stamp_run(outdir, line, key, code_files, code_before)
    run = json.loads((outdir / "run.json").read_text())
    run["_cached"] = False
    run["_command"] = line
    run["_wall_outer"] = round(wall, 2)
    run["_git"] = git_state(code_files)
    return run


# ------------------------------------------------------------ holdouts
def read_table(path=DATA):
    from fedsynth.data.io import read_expression

    return read_expression(path, **READ_KW)


def site_holdout(raw, site_names: list[str], seed: int, fraction: float = 0.2):
    """simulate's split for ``--site-column site``: per named site, a stratified holdout.

    Returns (train_rows, test_rows) as integer positions in ``raw``, built
    exactly as :func:`fedsynth.workflows.simulate.run_simulation` builds them.
    """
    import numpy as np

    from fedsynth.data.preprocess import split_holdout

    labels = raw.labels.astype(str).to_numpy()
    sites = raw.meta["site"].astype(str).to_numpy()
    tr_all, te_all = [], []
    for name in site_names:
        rows = np.flatnonzero(sites == name)
        tr, te = split_holdout(len(rows), labels[rows], fraction=fraction, seed=seed)
        tr_all.append(rows[tr])
        te_all.append(rows[te])
    return np.sort(np.concatenate(tr_all)), np.concatenate(te_all)


def score_synthetic(synthetic_csv: Path, raw, train_rows, test_rows, seed: int) -> dict:
    """fedsynth.evaluation.tstr of a synthetic.csv on chosen real test rows (as simulate does)."""
    from fedsynth.evaluation import tstr
    from fedsynth.data.io import read_expression

    syn = read_expression(synthetic_csv, label_column="pam50")
    expr = syn.expr[list(raw.expr.columns)]
    labels = raw.labels.astype(str)
    return tstr(expr.to_numpy(), syn.labels.astype(str).to_numpy(),
                raw.expr.iloc[test_rows].to_numpy(), labels.iloc[test_rows].to_numpy(),
                X_real_train=raw.expr.iloc[train_rows].to_numpy(),
                y_real_train=labels.iloc[train_rows].to_numpy(), seed=seed)


def largest_sites(raw, k: int) -> list[str]:
    """The k largest sites, largest first, ties by name (as split_sites orders them)."""
    counts = raw.meta["site"].astype(str).value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, _ in order[:k]]


# ------------------------------------------------------------ formatting
def summary(values) -> dict | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def fmt(s: dict | None, digits: int = 3) -> str:
    if not s:
        return "n/a"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def write_results(name: str, out: dict, md: str, *, shown: str | None = None) -> None:
    """Write ``OUT/name.json`` and ``OUT/name.md``; print ``shown`` (default: the Markdown) and where they went."""
    write_json(OUT / f"{name}.json", out)
    tmp = OUT / f"{name}.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, OUT / f"{name}.md")
    print("\n" + (md if shown is None else shown))
    print(f"wrote {rel(OUT / (name + '.json'))} and {rel(OUT / (name + '.md'))}")


class Progress:
    """Counts runs and prints elapsed time and a naive ETA."""

    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def start(self, what: str) -> None:
        el = time.monotonic() - self.t0
        eta = "" if not self.done else f", ETA {el / self.done * (self.total - self.done) / 60:.1f} min"
        print(f"[{self.done + 1}/{self.total}] {what}  (elapsed {el / 60:.1f} min{eta})", flush=True)

    def finish(self, msg: str) -> None:
        self.done += 1
        print(f"    {msg}", flush=True)


def wait_for_quiet(threshold: float = 1.5, max_wait: float = 0.0) -> None:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``threshold``.

    The machine's 2 cores are shared with other people's test runs; timings
    taken under load are recorded with the load average, but are better
    taken when it is quiet.
    """
    if max_wait <= 0:
        return
    t0 = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - t0 < max_wait:
        print(f"  waiting for a quieter machine: load average {os.getloadavg()[0]:.1f} "
              f"(threshold {threshold}) ...", flush=True)
        time.sleep(20)


def code_consistency(gits: list) -> str:
    """One line saying whether all runs used the same fedsynth code."""
    hashes = sorted({(g or {}).get("code_hash") or "?" for g in gits})
    commits = sorted({(g or {}).get("git_commit") or "?" for g in gits})
    if len(hashes) == 1:
        return f"all {len(gits)} runs on the same fedsynth code (hash {hashes[0]}; commit(s) {', '.join(commits)})"
    return (f"WARNING: runs used {len(hashes)} different versions of fedsynth's code ({', '.join(hashes)}); "
            "re-run without --fresh to redo the stale ones")
