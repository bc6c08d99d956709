"""Generators benchmark: CVAE vs DP Gaussian vs Private-PGM (issue 6).

Utility grid, per generator in {gaussian, pgm}: federated over the 3
largest natural sites of ``data/brca_pam50_sites.csv`` (``--site-column
site --sites 3``, label pam50, 202 training tumours x 50 PAM50 genes) at
epsilon in {0.5, 1, 2, 4, 10, no DP} x split seeds {0, 1, 2}, plus
centralised (``--sites 1`` on the same 3 sites' records) at epsilon 1. Each
cell is one ``fedsynth simulate --generator NAME`` run, scored exactly like
bench/utility_privacy.py (its ``run_cell``: ``fedsynth.evaluation.evaluate``
on the rows simulate used, checked against simulate's own TSTR score):
TSTR logistic-regression macro-F1 and accuracy, discriminator AUROC, worst
of four membership-inference AUROCs.

CVAE rows: the cells of bench/utility_privacy.py's grid (same cache,
``bench/out/utility_privacy/``). Epsilon 1 and no DP (federated, 3 seeds)
and centralised epsilon 1 are re-run when their cache is stale (fedsynth's
code changed since); the other epsilons are shown from the cache and
marked when they were run on older code.

Cost, per generator, at 50 genes (the epsilon-1 federated runs above) and
at 1,000 genes (a generated matrix: 200 records x 1,000 genes, 3 sites, 4
classes, seed 0; one epsilon-1 run): wall seconds and bytes sent per site.
Bytes come from each site's run.json ``communication`` record
(:meth:`fedsynth.federation.session.Session.traffic`): ``tcp_bytes_sent`` is measured
by the kernel (``TCP_INFO`` ``tcpi_bytes_acked``, TCP payload summed over
the site process's sockets: gloo pairs and rendezvous-store connections,
which at rank 0 include the store server's replies); ``share_bytes`` is
8 bytes x the values the site put into secure sums.

    OMP_NUM_THREADS=1 .venv/bin/python bench/generators.py                 # everything
    OMP_NUM_THREADS=1 .venv/bin/python bench/generators.py --only gaussian # one part (repeatable)

Parts: gaussian, cvae, pgm, timing; each is cached, so parts can be run
one by one and the report is always rendered from everything cached.
Writes bench/out/generators.md and bench/out/generators.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import utility_privacy as up  # noqa: E402
from _common import (  # noqa: E402
    GENERATOR_FILES,
    OUT,
    Progress,
    code_consistency,
    code_hash,
    fmt,
    largest_sites,
    machine,
    md_table,
    read_table,
    rel,
    run_simulate,
    summary,
    write_json,
)

EPSILONS = up.EPSILONS
SEEDS = up.SEEDS
STAT_GENERATORS = ("gaussian", "pgm")
ALL_GENERATORS = ("cvae", "gaussian", "pgm")
CVAE_RERUN = (1.0, None)
WORK = OUT / "generators"
PARTS = ("gaussian", "cvae", "pgm", "timing")
LINE = "OMP_NUM_THREADS=1 .venv/bin/python bench/generators.py"

# issue 6 / DESIGN.md, all at epsilon 1 and centralised, on TCGA-BRCA 871 training tumours x 978 genes, 5 subtypes
PUBLISHED = {
    "gaussian": {"what": "DP class-conditional Gaussian (diagonal variance), central", "accuracy": 0.78,
                 "macro_f1": 0.52},
    "pgm": {"what": "Private-PGM (published MPC system)", "accuracy": 0.72, "macro_f1": None,
            "accuracy_nodp": 0.82},
    "cvae": {"what": "plain DP-SGD CVAE, central", "accuracy": None, "macro_f1": None,
             "note": "no better than the majority class"},
}


def cell(gen, setting, eps, seed, ctx, fresh=False, rerun=True):
    """One scored cell; for a CVAE cell with ``rerun=False``, the cached score (stale or not) or None."""
    if gen == "cvae" and not rerun:
        stamp = up.cell_dir(setting, eps, seed) / "bench_eval.json"
        if not stamp.is_file():
            return None
        r = json.loads(stamp.read_text())
        r.setdefault("generator", "cvae")
        git = up.cell_dir(setting, eps, seed) / "git.json"
        r["git"] = json.loads(git.read_text()) if git.is_file() else None
        r["stale"] = (r["git"] or {}).get("code_hash") != code_hash()
        return r
    code_files = () if gen == "cvae" else GENERATOR_FILES[gen]
    r = up.run_cell(setting, eps, seed, ctx, fresh, generator=gen, work=up.WORK if gen == "cvae" else WORK,
                    code_files=code_files)
    r["stale"] = False
    return r


def grid(gen, rerun_eps=EPSILONS, rerun_central=True, seeds=SEEDS, settings=("federated", "centralised")):
    """(setting, eps, seed, rerun) for one generator: federated grid + centralised at epsilon 1."""
    first = [e for e in (1.0, None) if e in EPSILONS]  # the rows that matter most run first
    fed = "federated" in settings
    cells = [("federated", e, s, e in rerun_eps) for e in first for s in seeds if fed]
    cells += [("centralised", 1.0, s, rerun_central) for s in seeds if "centralised" in settings]
    cells += [("federated", e, s, e in rerun_eps) for e in EPSILONS if e not in first for s in seeds if fed]
    return cells


def run_part(gen, ctx, fresh, cvae_central=True, seeds=SEEDS, settings=("federated", "centralised"),
             cvae_all=False) -> list:
    eps = CVAE_RERUN if gen == "cvae" and not cvae_all else EPSILONS
    todo = grid(gen, eps, gen != "cvae" or cvae_central, seeds, settings)
    prog = Progress(sum(1 for c in todo if c[3]))
    out = []
    for setting, eps, seed, rerun in todo:
        if rerun:
            prog.start(f"{gen} {setting} epsilon={up.eps_name(eps)} seed={seed}")
        r = cell(gen, setting, eps, seed, ctx, fresh, rerun)
        if r is None:
            continue
        out.append(r)
        if rerun:
            m = r["metrics"]
            prog.finish(f"macro-F1 {m['macro_f1']:.3f}, accuracy {m['accuracy']:.3f}, discriminator "
                        f"{m['discriminator']:.3f}, worst MIA {m['worst_mia']:.3f}; "
                        f"simulate {r['simulate_wall_seconds']:.0f} s")
    return out


def cached_part(gen, ctx) -> list:
    """Every cell of ``gen`` already scored (no runs)."""
    out, mtimes = [], []
    for setting, eps, seed, _ in grid(gen):
        d = up.cell_dir(setting, eps, seed, gen, up.WORK if gen == "cvae" else WORK)
        stamp = d / "bench_eval.json"
        if not stamp.is_file():
            continue
        r = json.loads(stamp.read_text())
        r.setdefault("generator", gen)
        git = d / "git.json"
        r["git"] = json.loads(git.read_text()) if git.is_file() else None
        mtimes.append(git.stat().st_mtime if git.is_file() else 0.0)
        out.append(r)
    # "stale" = run on another fedsynth version than this generator's newest run (for the CVAE: the
    # utility/privacy grid's cells not re-run here); a code change after the runs does not make them stale
    hashes = [(r["git"] or {}).get("code_hash") for r in out]
    ref = hashes[max(range(len(out)), key=mtimes.__getitem__)] if out else None
    for r, h in zip(out, hashes):
        r["stale"] = h != ref
    return out


# ------------------------------------------------------------------ cost at 1,000 genes
def generated_csv(n=200, genes=1000, classes=4, seed=0) -> Path:
    """A log-expression matrix with class structure: 3 sites (80/65/55 records), ``classes`` labels."""
    path = WORK / f"generated_{n}x{genes}.csv"
    if path.is_file():
        return path
    import pandas as pd

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, size=(classes, genes))
    W = rng.normal(0, 0.4, size=(8, genes))
    y = rng.choice(classes, size=n, p=[0.4, 0.3, 0.2, 0.1])
    X = 6 + centres[y] + rng.normal(size=(n, 8)) @ W + rng.normal(0, 0.7, size=(n, genes))
    sites = np.repeat(["s0", "s1", "s2"], [80, 65, n - 145])
    df = pd.DataFrame(np.round(X, 4), columns=[f"g{j:04d}" for j in range(genes)])
    df.insert(0, "label", [f"class{c}" for c in y])
    df.insert(0, "site", sites)
    df.insert(0, "sample_id", [f"r{i:04d}" for i in range(n)])
    WORK.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def run_timing(gen, fresh=False) -> dict:
    data = generated_csv()
    args = ["--data", data, "--site-column", "site", "--sites", "3", "--label-column", "label",
            "--input-kind", "log", "--split-seed", "0", "--epsilon", "1"]
    if gen != "cvae":
        args += ["--generator", gen]
    outdir = WORK / f"timing_{gen}_1000genes"
    print(f"  timing {gen} at 1,000 genes ...", flush=True)
    t0 = time.monotonic()
    run = run_simulate(args, outdir, fresh=fresh, label=f"timing {gen} 1000 genes",
                       code_files=GENERATOR_FILES[gen] if gen != "cvae" else ())
    res = {"generator": gen, "genes": 1000, "command": run["_command"], "cached": run["_cached"],
           "wall_seconds": run["wall_seconds"], "site_wall_seconds": run["site_wall_seconds"],
           "site_communication": run.get("site_communication"), "git": run["_git"],
           "load_avg_after": os.getloadavg(), "outer_seconds": round(time.monotonic() - t0, 1),
           "tstr": (run.get("evaluation") or {}).get("tstr", {}).get("logreg")}
    write_json(outdir / "bench_timing.json", res)
    return res


def cached_timing(gen) -> dict | None:
    f = WORK / f"timing_{gen}_1000genes" / "bench_timing.json"
    return json.loads(f.read_text()) if f.is_file() else None


# ------------------------------------------------------------------ report
def protocol_seconds(site_wall: dict) -> float:
    """A site's time inside the session: set-up + the generator's phases (not imports/loading)."""
    return sum(v for k, v in site_wall.items() if k not in ("load", "total"))


def cost_row(gen, genes, runs) -> list | None:
    """Median over runs of: simulate total, slowest site's protocol time, bytes per site."""
    runs = [r for r in runs if r.get("site_communication")]
    if not runs:
        return None
    total = summary([r["wall_seconds"]["total"] for r in runs])
    proto = summary([max(protocol_seconds(w) for w in r["site_wall_seconds"].values()) for r in runs])
    r0, others, share, sums = [], [], [], []
    for r in runs:
        comm = list(r["site_communication"].values())  # rank order
        r0.append(comm[0]["tcp_bytes_sent"])
        others += [c["tcp_bytes_sent"] for c in comm[1:]]
        share.append(comm[0]["share_bytes"])
        sums.append(comm[0]["secure_sums"])
    kib = lambda v: f"{v / 1024:,.1f}"  # noqa: E731
    so = summary(others)
    k = len(runs[0]["site_communication"])
    # closed system on one host: what all sites sent, all sites received; a gap means uncounted sockets
    gaps = []
    for r in runs:
        comm = r["site_communication"].values()
        sent, recv = sum(c["tcp_bytes_sent"] for c in comm), sum(c["tcp_bytes_received"] for c in comm)
        gaps.append((sent - recv) / max(sent, 1))
    gap = max(gaps, key=abs)
    return [gen, f"{genes:,}", len(runs), fmt(total, 1), fmt(proto, 1), int(statistics.median(sums)),
            kib(statistics.median(share)), kib(2 * (k - 1) / k * statistics.median(share)),
            kib(statistics.median(r0)),
            f"{kib(so['min'])}-{kib(so['max'])}" if so["n"] > 1 else kib(so["median"]),
            f"{100 * gap:+.0f}%"]


def collect(results):
    cells = {}
    for r in results:
        c = cells.setdefault((r["generator"], r["setting"], r["epsilon"]), {"stale": False})
        c["stale"] |= bool(r.get("stale"))
        for k in ("macro_f1", "accuracy", "discriminator", "worst_mia", "relative_f1", "mean_pearson",
                  "corr_similarity"):
            c.setdefault(k, []).append(r["metrics"][k])
        c.setdefault("wall", []).append((r.get("wall_seconds") or {}).get("total") or r["simulate_wall_seconds"])
    return cells


def render(results, timings, started, mc) -> str:
    cells = collect(results)
    gens = [g for g in ALL_GENERATORS if any(k[0] == g for k in cells)]

    def c(gen, setting, eps, key, digits=3):
        v = cells.get((gen, setting, eps))
        if not v:
            return "not run"
        s = fmt(summary(v.get(key, [])), digits)
        return s + (" *" if v["stale"] else "")

    lines = ["# Generators: CVAE vs DP Gaussian vs Private-PGM", "",
             f"Command: `{LINE}` (parts: `--only gaussian|cvae|pgm|timing`). Generated "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {mc['cores']} shared cores ({mc['cpu']}), "
             f"load average at start {', '.join(f'{x:.1f}' for x in mc['load_avg_at_start'])}; "
             f"this rendering took {(time.time() - started) / 60:.1f} min.", "",
             "Data: `data/brca_pam50_sites.csv`, the 3 largest natural sites (BH, A8, A2: 202 training + 52 "
             "holdout tumours, 50 PAM50 genes, 5 subtypes), `--site-column site --sites 3`; centralised = "
             "`--sites 1` on the same 3 sites' records. Scored as in bench/utility_privacy.py: logistic "
             "regression trained on synthetic, tested on the real holdout (TSTR). Cells: median (min-max) over "
             "split seeds 0, 1, 2. `*` = some runs of that cell were made on older fedsynth code (CVAE cells "
             "kept from the utility/privacy grid's cache, not re-run).", "",
             "Per-generator code check: " + "; ".join(
                 f"{g}: " + code_consistency([r.get("git") for r in results if r["generator"] == g and
                                              not r.get("stale")]) for g in gens), ""]
    for title, key in (("TSTR macro-F1 (federated, 3 sites)", "macro_f1"),
                       ("TSTR accuracy (federated, 3 sites)", "accuracy"),
                       ("Discriminator AUROC (federated; 0.5 = indistinguishable)", "discriminator"),
                       ("Worst MIA AUROC (federated; strongest of 4 attacks, 0.5 = guessing)", "worst_mia")):
        rows = [[up.eps_name(e)] + [c(g, "federated", e, key) for g in gens] for e in EPSILONS]
        lines += [f"## {title}", "", md_table(["epsilon"] + gens, rows), ""]
    null = up.WORK / "mia_null_40.json"
    if null.is_file():
        nl = json.loads(null.read_text())
        lines += [f"MIA null level (bench/utility_privacy.py: real tumours of other sites as 'synthetic'): worst-of-4 "
                  f"median {nl['worst_median']:.3f}, 95th percentile {nl['worst_p95']:.3f}.", ""]
    rows = []
    for g in gens:
        rows.append([g, c(g, "federated", 1.0, "macro_f1"), c(g, "centralised", 1.0, "macro_f1"),
                     c(g, "federated", 1.0, "accuracy"), c(g, "centralised", 1.0, "accuracy"),
                     c(g, "centralised", 1.0, "discriminator")])
    lines += ["## Federated vs centralised at epsilon 1", "",
              md_table(["generator", "macro-F1 federated", "macro-F1 centralised", "accuracy federated",
                        "accuracy centralised", "discriminator centralised"], rows), ""]
    # train-on-real depends only on the split seed (the same rows for every generator)
    fed = {r["seed"]: r["metrics"] for r in results if r["setting"] == "federated"}
    trtr = summary([m["trtr_macro_f1"] for m in fed.values()])
    trtr_acc = summary([m["trtr_accuracy"] for m in fed.values()])
    lines += [f"Train on real (logistic regression, the 3 sites' pooled training rows, same holdouts): macro-F1 "
              f"{fmt(trtr)}, accuracy {fmt(trtr_acc)}.", ""]
    rows = []
    for g in gens:
        p = PUBLISHED[g]
        pub_acc = "n/a" if p["accuracy"] is None else f"{p['accuracy']:.2f}"
        pub_f1 = "n/a" if p["macro_f1"] is None else f"{p['macro_f1']:.2f}"
        if p.get("note"):
            pub_acc = p["note"]
        if p.get("accuracy_nodp"):
            pub_acc += f" (no DP {p['accuracy_nodp']:.2f})"
        ours_acc = f"{c(g, 'federated', 1.0, 'accuracy')} fed / {c(g, 'centralised', 1.0, 'accuracy')} central"
        if g == "pgm":
            ours_acc += f" (no DP fed {c(g, 'federated', None, 'accuracy')})"
        rows.append([f"{g}: {p['what']}", pub_acc, pub_f1, ours_acc,
                     f"{c(g, 'federated', 1.0, 'macro_f1')} fed / {c(g, 'centralised', 1.0, 'macro_f1')} central"])
    lines += ["## Published epsilon-1 figures beside ours", "",
              "Published: TCGA-BRCA, 871 training tumours x 978 landmark genes, 5 subtypes, centralised (issue 6, "
              "DESIGN.md). Ours: 202 training tumours x 50 PAM50 genes (the genes the subtypes are defined by), "
              "federated over 3 sites or centralised; different cohort size, gene panel and holdout, so the "
              "comparison is indicative only.", "",
              md_table(["generator", "published accuracy", "published macro-F1", "ours accuracy",
                        "ours macro-F1"], rows), ""]

    # cost
    rows = []
    for g in gens:
        runs50 = [r for r in results if r["generator"] == g and r["setting"] == "federated"
                  and r["epsilon"] == 1.0 and not r.get("stale")]
        row = cost_row(g, 50, runs50)
        if row:
            rows.append(row)
        t = timings.get(g)
        if t:
            row = cost_row(g, 1000, [t])
            if row:
                rows.append(row)
    if rows:
        lines += ["## Wall time and bytes sent per site (federated, 3 sites, epsilon 1)", "",
                  "50 genes: the real data above (median over the 3 seeds' epsilon-1 runs). 1,000 genes: a generated "
                  f"matrix (`{rel(generated_csv())}`: 200 records x 1,000 genes, 3 sites of 80/65/55 records, "
                  "4 classes, seed 0; one run). Simulate wall: the whole `fedsynth simulate` (3 site processes "
                  "incl. Python/torch/CrypTen imports, synthesis, TSTR). Session + protocol: the slowest site's "
                  "time from opening the session to its model (rendezvous, authentication, process group, "
                  "secure sums, fitting). Share KiB: the int64 shares a site put into secure sums (8 bytes per "
                  "value; the same at every site). TCP KiB sent: measured by the kernel (TCP_INFO "
                  "tcpi_bytes_acked summed over the site process's sockets at the end of training: gloo "
                  "all-reduces + rendezvous-store traffic incl. heartbeats); rank 0 hosts the store, so it also "
                  "sends the store's replies to the other sites.", "",
                  md_table(["generator", "genes", "runs", "simulate wall s", "session + protocol s (slowest site)",
                            "secure sums", "share KiB / site", "bytes sent / site, KiB (gloo ring: 2(k-1)/k x share)",
                            "TCP KiB sent measured, rank 0 (lower bound)", "TCP KiB sent measured, other sites (lower bound)",
                            "check: (sent - received) / sent, all sites"], rows), "",
                  "Read the bytes from the 'gloo ring' column: the protocol's exact figure (each site's share "
                  "bytes, counted, times 2(k-1)/k for gloo's ring all-reduce). The measured TCP counts confirm it "
                  "where they are complete (check about 0: every byte sent on this host is received on it), "
                  "within 1-3% plus the rendezvous-store traffic (heartbeats, schema exchange; rank 0 also serves "
                  "the store). They are lower bounds: fedsynth samples TCP_INFO once, at the end of training, and "
                  "sockets closed before then escape the count (a non-zero check; seen most in the long PGM runs, "
                  "where one site's measured figure is far below the protocol's).", ""]
        lines += [f"Machine load: 2 shared cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  "when rendered; wall times include waiting for the CPU under that load.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=PARTS, help="run only these parts (repeatable)")
    ap.add_argument("--render", action="store_true", help="run nothing; render from the cache")
    ap.add_argument("--fresh", action="store_true", help="rerun cached simulate runs of the chosen parts")
    ap.add_argument("--timing-generators", default=",".join(ALL_GENERATORS),
                    help="generators the timing part runs (comma-separated)")
    ap.add_argument("--seeds", default="0,1,2", help="split seeds the parts run (the report shows all cached)")
    ap.add_argument("--settings", default="federated,centralised", help="settings the parts run")
    ap.add_argument("--cvae-all-epsilons", action="store_true",
                    help="cvae part: re-run every epsilon of the grid, not only 1 and no DP (the others are "
                         "otherwise read from bench/utility_privacy.py's cache, marked if stale)")
    ap.add_argument("--no-cvae-central", action="store_true",
                    help="cvae part: keep the cached centralised epsilon-1 CVAE cells (marked if stale)")
    args = ap.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    started = time.time()
    mc = machine()
    raw = read_table()
    names = largest_sites(raw, 3)
    three = up.three_site_csv(names)
    from fedsynth.data.io import read_expression

    ctx = {"raw": raw, "names": names, "three": three,
           "raw3": read_expression(three, label_column=up.LABEL, meta_columns=("age",))}
    parts = [] if args.render else (args.only or list(PARTS))
    for p in parts:
        if p == "timing":
            for g in args.timing_generators.split(","):
                run_timing(g, args.fresh)
        else:
            run_part(p, ctx, args.fresh, cvae_central=not args.no_cvae_central, cvae_all=args.cvae_all_epsilons,
                     seeds=tuple(int(x) for x in args.seeds.split(",")), settings=tuple(args.settings.split(",")))
    results = [r for g in ALL_GENERATORS for r in cached_part(g, ctx)]
    timings = {g: t for g in ALL_GENERATORS if (t := cached_timing(g))}
    md = render(results, timings, started, mc)
    out = OUT / "generators.md"
    out.write_text(md + "\n")
    write_json(out.with_suffix(".json"), {"results": results, "timings": timings, "machine": mc,
                                          "command": LINE, "published": PUBLISHED})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
