"""Utility cost of the two issue-11 privacy fixes: colluder default t=1, noisy record count.

Three code/option settings, each one ``fedsynth simulate`` run per cell, all at epsilon 1:

* ``pre_t0``: the code before the noisy count (``--pre`` worktree, commit 2e5437c) with
  ``--max-colluders 0``: exact record counts, each site adds sigma^2/k (what BENCHMARKS.md
  section 5 was measured at);
* ``pre_t1``: the same code at its default ``--max-colluders`` (t = 1: each site adds
  sigma^2/(k-1), so the released noise is k/(k-1) = 1.5x the planned variance at k = 3);
* ``new``: the current code (``--new`` worktree) at its defaults: t = 1 plus a noisy total
  record count (5% of the one-shot budget) used for sample rates, steps and divisors.

Data A: ``data/brca_pam50_sites.csv``, the 3 largest natural sites (``--site-column site``),
label pam50, 50 genes, 5 classes. Data B: ``pbmc68k_reduced.csv.gz`` (700 cells x 765 genes,
10 cell types), ``--sites 3 --split dirichlet --alpha 0.5``. Default holdout (20% per site).

Every run is executed from its worktree with ``python -m fedsynth`` (so the worktree's own
package is imported, not the editable install) and OMP_NUM_THREADS=1. Each cell's parsed
result is cached as ``bench/out/colluders_noisy_n/<version>/<data>/<gen>/eps1_seed<s>.json``;
cached cells are skipped, so the script resumes. The Markdown table goes to
``bench/out/colluders_noisy_n.md`` (and stdout).

    OMP_NUM_THREADS=1 .venv/bin/python bench/colluders_noisy_n.py --pre /work/wt-pre --new . \\
        --cells A:gaussian,A:cvae,A:pgm,A:marginals,B:gaussian,B:cvae --seeds 0-4
    .venv/bin/python bench/colluders_noisy_n.py --pre /work/wt-pre --new . --render-only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out" / "colluders_noisy_n"
VERSIONS = ("pre_t0", "pre_t1", "new")
VERSION_TITLE = {"pre_t0": "pre, t=0 (exact N)", "pre_t1": "pre, t=1 (exact N)", "new": "new: t=1 + noisy N"}
DATA_TITLE = {"A": "A: BRCA PAM50, 3 natural sites", "B": "B: PBMC68k, 3 Dirichlet(0.5) sites"}
LINE_RE = re.compile(r"TSTR logreg accuracy ([0-9.]+), macro-F1 ([0-9.]+)")


def data_args(data: str, new_tree: Path) -> list[str]:
    if data == "A":
        return ["--data", str(new_tree / "data" / "brca_pam50_sites.csv"), "--label-column", "pam50",
                "--meta-columns", "age", "--site-column", "site", "--sites", "3"]
    if data == "B":
        return ["--data", "/work/shared/data/pbmc68k_reduced.csv.gz", "--label-column", "cell_type",
                "--sites", "3", "--split", "dirichlet", "--alpha", "0.5"]
    raise ValueError(data)


def version_args(version: str) -> list[str]:
    return ["--max-colluders", "0"] if version == "pre_t0" else []


def cache_path(version: str, data: str, gen: str, seed: int) -> Path:
    return OUT / version / data / gen / f"eps1_seed{seed}.json"


def git_head(tree: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True,
                              text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def find_discriminator(ev: dict):
    """A discriminator AUROC in run.json's evaluation, if this version records one."""
    for k, v in ev.items():
        if "discrim" in k.lower():
            if isinstance(v, dict):
                for kk in ("auroc", "roc_auc", "auc"):
                    if kk in v:
                        return v[kk]
            elif isinstance(v, (int, float)):
                return v
    return None


def run_cell(version: str, data: str, gen: str, seed: int, trees: dict, timeout: float) -> dict:
    tree = trees["pre"] if version.startswith("pre") else trees["new"]
    outdir = OUT / "_runs" / version / data / gen / f"eps1_seed{seed}"
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fedsynth", "simulate", *data_args(data, trees["new"]),
           "--generator", gen, "--epsilon", "1", "--split-seed", str(seed), *version_args(version),
           "--outdir", str(outdir), "--overwrite"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = str(tree)  # the worktree's package, in simulate and in its site processes
    load0 = os.getloadavg()
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), ""
    wall = time.monotonic() - t0
    (outdir / "simulate.log").write_text(f"{stdout}\n--- stderr ---\n{stderr}")
    res = {"version": version, "data": data, "generator": gen, "seed": seed, "epsilon": 1.0,
           "worktree": str(tree), "commit": git_head(tree), "command": shlex.join(cmd), "cwd": str(tree),
           "started_utc": started, "wall_seconds_outer": round(wall, 1), "load_avg_at_start": load0,
           "returncode": rc}
    m = LINE_RE.search(stdout or "")
    res["stdout_line"] = m.group(0) if m else None
    run_json = outdir / "run.json"
    if rc == 0 and run_json.is_file():
        run = json.loads(run_json.read_text())
        ev = run.get("evaluation") or {}
        lr = (ev.get("tstr") or {}).get("logreg") or {}
        rf = (ev.get("tstr") or {}).get("rf") or {}
        res.update({
            "accuracy": lr.get("accuracy"), "macro_f1": lr.get("macro_f1"),
            "rf_accuracy": rf.get("accuracy"), "rf_macro_f1": rf.get("macro_f1"),
            "discriminator_auroc": find_discriminator(ev),
            "evaluation_keys": sorted(ev.keys()),
            "wall_seconds_run": (run.get("wall_seconds") or {}).get("total"),
            "max_colluders": run.get("max_colluders"), "epsilon_spent": run.get("epsilon_spent"),
            "epsilon_vs_site": run.get("epsilon_vs_site"), "sites": run.get("sites"),
            "n_test": ev.get("n_test"), "majority": ev.get("majority"),
            "n_total_released": (run.get("dp") or {}).get("n_total"),
            "n_total_sd": (run.get("dp") or {}).get("n_total_sd"),
        })
    else:
        res["error"] = ((stderr or "") + (stdout or ""))[-2000:]
    return res


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def summ(vals):
    vals = [float(v) for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt(s, d: int = 3) -> str:
    if not s:
        return "n/a"
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"


def run_json_value(version: str, data: str, gen: str, seed: int, *keys):
    """A value from the kept run.json of a cell (for fields the cache did not record)."""
    p = OUT / "_runs" / version / data / gen / f"eps1_seed{seed}" / "run.json"
    if not p.is_file() or not cache_path(version, data, gen, seed).is_file():
        return None
    v = json.loads(p.read_text())
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v


def render(cells: list[tuple[str, str]], seeds: list[int]) -> str:
    header = ["data", "generator", "metric"] + [VERSION_TITLE[v] for v in VERSIONS] + \
             ["new - pre t=0 (medians)", "pre t=1 - pre t=0 (medians)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    extra = []
    for data, gen in cells:
        runs = {v: [json.loads(cache_path(v, data, gen, s).read_text()) for s in seeds
                    if cache_path(v, data, gen, s).is_file()] for v in VERSIONS}
        if not any(runs.values()):
            continue
        for metric, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            s = {v: summ(r.get(metric) for r in runs[v]) for v in VERSIONS}
            n = {v: len([r for r in runs[v] if r.get(metric) is not None]) for v in VERSIONS}
            row = [DATA_TITLE[data] if metric == "accuracy" else "", gen if metric == "accuracy" else "", name]
            for v in VERSIONS:
                row.append(fmt(s[v]) + ("" if n[v] == len(seeds) else f" [n={n[v]}]"))
            for a, b in (("new", "pre_t0"), ("pre_t1", "pre_t0")):
                row.append(f"{s[a]['median'] - s[b]['median']:+.3f}" if s[a] and s[b] else "n/a")
            lines.append("| " + " | ".join(row) + " |")
        walls = {v: summ(r.get("wall_seconds_outer") for r in runs[v]) for v in VERSIONS}
        discs = {v: summ(r.get("discriminator_auroc") for r in runs[v]) for v in VERSIONS}
        aurocs = {v: summ(run_json_value(v, data, gen, sd, "evaluation", "tstr", "logreg", "auroc") for sd in seeds)
                  for v in VERSIONS}
        nhat = summ(run_json_value("new", data, gen, sd, "dp", "n_total") for sd in seeds)
        ntrue = summ(sum(x["n"] for x in (r.get("sites") or [])) for r in runs["new"])
        fails = {v: sum(1 for r in runs[v] if r.get("returncode") != 0) for v in VERSIONS}
        extra.append(f"- {data} {gen}: wall s (median) " + ", ".join(
            f"{v} {walls[v]['median']:.0f}" if walls[v] else f"{v} n/a" for v in VERSIONS)
            + "; discriminator AUROC: " + (", ".join(f"{v} {fmt(discs[v])}" for v in VERSIONS)
                                           if any(discs.values()) else "not in run.json")
            + "; TSTR logreg macro-AUROC " + ", ".join(f"{v} {fmt(aurocs[v])}" for v in VERSIONS)
            + (f"; released N (new) {fmt(nhat, 0)} vs true training N {fmt(ntrue, 0)}" if nhat else "")
            + ("; failed runs: " + ", ".join(f"{v} {fails[v]}" for v in VERSIONS) if any(fails.values()) else ""))
    # per-seed detail (paired comparison: the same split seed gives the same sites and holdout)
    detail = ["| data | generator | seed | " + " | ".join(VERSION_TITLE[v] for v in VERSIONS) + " |",
              "|---|---|---|" + "|".join("---" for _ in VERSIONS) + "|"]
    for data, gen in cells:
        for sd in seeds:
            row = []
            for v in VERSIONS:
                p = cache_path(v, data, gen, sd)
                if p.is_file():
                    r = json.loads(p.read_text())
                    row.append(f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}" if r.get("accuracy") is not None
                               else "failed")
                else:
                    row.append("-")
            if any(c != "-" for c in row):
                detail.append(f"| {data} | {gen} | {sd} | " + " | ".join(row) + " |")
    return ("TSTR logistic regression on the real holdout, epsilon 1; cells: median (min-max) over split seeds "
            f"{','.join(map(str, seeds))} ([n=..] where fewer seeds ran).\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(extra) + "\n\nPer seed (accuracy / macro-F1):\n\n" + "\n".join(detail) + "\n")


def parse_seeds(s: str) -> list[int]:
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pre", type=Path, required=True, help="worktree of the code before the noisy count")
    ap.add_argument("--new", type=Path, required=True, help="worktree of the current code")
    ap.add_argument("--cells", default="A:gaussian,A:cvae,A:pgm,A:marginals,B:gaussian,B:cvae",
                    help="DATA:GENERATOR list, run in this order")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--versions", default=",".join(VERSIONS))
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per simulate run")
    ap.add_argument("--render-only", action="store_true")
    a = ap.parse_args()
    trees = {"pre": a.pre.resolve(), "new": a.new.resolve()}
    cells = [tuple(c.split(":")) for c in a.cells.split(",")]
    seeds = parse_seeds(a.seeds)
    versions = [v for v in a.versions.split(",") if v]
    if not a.render_only:
        todo = [(d, g, s, v) for d, g in cells for s in seeds for v in versions
                if not cache_path(v, d, g, s).is_file()]
        t0 = time.monotonic()
        for i, (d, g, s, v) in enumerate(todo):
            if cache_path(v, d, g, s).is_file():  # done meanwhile by another worker on other --cells
                continue
            print(f"[{i + 1}/{len(todo)}] {time.strftime('%H:%M:%S', time.gmtime())} {v} {d} {g} seed {s} "
                  f"(load {os.getloadavg()[0]:.1f}, elapsed {(time.monotonic() - t0) / 60:.1f} min)", flush=True)
            res = run_cell(v, d, g, s, trees, a.timeout)
            write_json(cache_path(v, d, g, s), res)
            print(f"    {res.get('stdout_line') or 'FAILED rc=' + str(res['returncode'])} "
                  f"[{res['wall_seconds_outer']:.0f}s]", flush=True)
            md = render(cells, seeds)
            (OUT.parent / "colluders_noisy_n.md").write_text(md)
    md = render(cells, seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT.parent / "colluders_noisy_n.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
