"""Hyper-parameter sweep of federated DP training (a report; changes no default).

Usage (from the repository root)::

    .venv/bin/python bench/sweep.py [--quick] [--seeds 0,1,2] [--configs NAME,...] [--fresh]

Federated, 3 natural sites (``--sites 3 --site-column site``: BH, A8, A2),
epsilon 1, on data/brca_pam50_sites.csv; one option varied at a time around
the current defaults (read from fedsynth.generators.cvae.CVAEGenerator.Config, so the sweep
follows the code), each for every split seed. Also: ``--sites 5``
at defaults (more data: the 5 largest sites), and ``--no-dp`` at defaults
(the non-private ceiling).

Every configuration is scored on the same test rows for a given seed (the
20% per-site holdouts of BH, A8, A2): the 5-site runs hold out the same
rows of those 3 sites (simulate stratifies per site), and their synthetic
data is re-scored on exactly those rows with fedsynth.evaluation.tstr; their
score on their own 5-site holdout is reported beside it. Ranked by median
TSTR logistic-regression macro-F1. Results: bench/out/sweep.json and
bench/out/sweep.md (runs under bench/out/sweep/, cached by command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402


def current_defaults() -> dict:
    """The training defaults of the fedsynth code on disk (they move; the sweep follows them)."""
    from fedsynth.generators.cvae import CVAEGenerator

    d = CVAEGenerator.Config()
    return {"epochs": d.epochs, "batch-size": d.batch_size, "latent-dim": d.latent_dim,
            "hidden-dim": d.hidden_dim, "lr": d.lr, "stats-fraction": d.stats_fraction, "clip": d.clip}


#: values tried for each option, one option at a time; a value equal to the default is skipped
GRID = {
    "stats-fraction": [0.5, 0.7, 0.85, 0.95],
    "epochs": [5, 10, 20],
    "batch-size": [64, 128, 256],
    "latent-dim": [2, 4, 8],
    "hidden-dim": [16, 32, 64],
    "lr": [1e-3, 3e-3, 1e-2],
    "clip": [0.5, 1.0, 2.0],
}
DEFAULTS = current_defaults()
CONFIGS: list[tuple[str, list]] = [("defaults", [])] + [
    (f"{opt} {v:g}", [f"--{opt}", v]) for opt, values in GRID.items() for v in values if v != DEFAULTS[opt]
] + [
    ("sites 5 (more data)", ["__sites5__"]),
    ("no-dp (ceiling)", ["--no-dp"]),
]
# combinations, run only when named with --configs (e.g. a confirmation round with more seeds)
EXTRA: list[tuple[str, list]] = [
    ("stats-fraction 0.95 + epochs 5", ["--stats-fraction", 0.95, "--epochs", 5]),
    ("stats-fraction 0.9 + epochs 5", ["--stats-fraction", 0.9, "--epochs", 5]),
    ("stats-fraction 0.95 + batch-size 256", ["--stats-fraction", 0.95, "--batch-size", 256]),
]
QUICK = ["defaults", "stats-fraction 0.95", "sites 5 (more data)", "no-dp (ceiling)"]


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in name).strip("_")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"seed 0 only, configs: {', '.join(QUICK)}")
    p.add_argument("--seeds", default=None, help="comma-separated split seeds (default 0,1,2)")
    p.add_argument("--configs", default=None, help="comma-separated config names (default: all)")
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--fresh", action="store_true", help="re-run even if a cached run with the same command exists")
    p.add_argument("--tag", default="", help="suffix for the output files (e.g. a confirmation round)")
    a = p.parse_args()
    seeds = [int(s) for s in (a.seeds or ("0" if a.quick else "0,1,2")).split(",")]
    names = a.configs.split(",") if a.configs else (QUICK if a.quick else [n for n, _ in CONFIGS])
    table = dict(CONFIGS + EXTRA)
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown config(s) {unknown}; choose from {list(table)}")
    info = c.machine()
    root = c.OUT / "sweep"
    raw = c.read_table()
    top3 = c.largest_sites(raw, 3)
    print(f"sweep: {len(names)} configs x seeds {seeds}, federated {top3}, epsilon {a.epsilon:g}; "
          f"{info['cores']} cores, torch {info['torch']}", flush=True)

    prog = c.Progress(len(names) * len(seeds))
    results = {}
    # seed-major order: an interrupted sweep still has every config at the first seeds
    for seed in seeds:
        tr_rows, te_rows = c.site_holdout(raw, top3, seed)
        for name in names:
            extra = table[name]
            sites = ["--sites", 3, "--site-column", "site"]
            if extra == ["__sites5__"]:
                sites, extra = ["--sites", 5, "--site-column", "site"], []
            args = ["--data", c.DATA, *c.DATA_ARGS, *sites, "--epsilon", a.epsilon, *extra, "--split-seed", seed]
            prog.start(f"{name}, seed {seed}")
            outdir = root / slug(name) / f"seed{seed}"
            run = c.run_simulate(args, outdir, fresh=a.fresh, label=name)
            ev = run["evaluation"]
            matched = c.score_synthetic(outdir / "synthetic.csv", raw, tr_rows, te_rows, seed)
            if len(run["sites"]) == 3 and abs(matched["tstr"]["logreg"]["macro_f1"]
                                              - ev["tstr"]["logreg"]["macro_f1"]) > 1e-9:
                print("    WARNING: re-scoring did not reproduce simulate's own score")
            dp = run["dp"]
            results.setdefault(name, []).append({
                "seed": seed, "command": run["_command"], "git": run.get("_git"), "own_holdout": ev, "matched": matched,
                "n_train": sum(s["n"] for s in run["sites"]), "wall_training": run["wall_seconds"]["training"],
                "sigma": dp.get("sigma"), "stat_sigma": dp.get("stat_sigma"), "steps": dp.get("steps"),
                "sample_rate": dp.get("sample_rate")})
            lr = matched["tstr"]["logreg"]
            own = "" if len(run["sites"]) == 3 else \
                f" (own {len(run['sites'])}-site holdout: {ev['tstr']['logreg']['macro_f1']:.3f})"
            prog.finish(f"TSTR macro-F1 {lr['macro_f1']:.3f}, accuracy {lr['accuracy']:.3f}{own}; "
                        f"z_sgd {dp.get('sigma') or 0:.3g}, {dp.get('steps')} steps; "
                        f"training {run['wall_seconds']['training']:.0f}s")
        c.write_json(root / f"partial{a.tag}.json", results)

    rows = []
    for name, runs in results.items():
        def s(get):
            return c.summary([get(r) for r in runs])

        rows.append({
            "config": name,
            "macro_f1": s(lambda r: r["matched"]["tstr"]["logreg"]["macro_f1"]),
            "accuracy": s(lambda r: r["matched"]["tstr"]["logreg"]["accuracy"]),
            "auroc": s(lambda r: r["matched"]["tstr"]["logreg"]["auroc"]),
            "rf_macro_f1": s(lambda r: r["matched"]["tstr"]["rf"]["macro_f1"]),
            "own_macro_f1": s(lambda r: r["own_holdout"]["tstr"]["logreg"]["macro_f1"]),
            "trtr_macro_f1": s(lambda r: r["matched"]["trtr"]["logreg"]["macro_f1"]),
            "sigma": s(lambda r: r["sigma"]), "stat_sigma": s(lambda r: r["stat_sigma"]),
            "steps": s(lambda r: r["steps"]), "n_train": s(lambda r: r["n_train"]),
            "wall": s(lambda r: r["wall_training"]),
        })
    rows.sort(key=lambda r: (-r["macro_f1"]["median"], -r["accuracy"]["median"]))
    md_rows = []
    for i, r in enumerate(rows, 1):
        note = ""
        if r["config"].startswith("sites 5"):
            note = f" (own 5-site holdout: {c.fmt(r['own_macro_f1'])}; n train {c.fmt(r['n_train'], 0)})"
        z = "-" if not r["sigma"] or not r["sigma"]["median"] else f"{r['sigma']['median']:.3g} / {r['stat_sigma']['median']:.3g}"
        md_rows.append([i, r["config"] + note, c.fmt(r["macro_f1"]), c.fmt(r["accuracy"]), c.fmt(r["auroc"]),
                        c.fmt(r["rf_macro_f1"]), z, c.fmt(r["steps"], 0), c.fmt(r["wall"], 0)])
    md = (f"## Sweep: federated DP, 3 natural sites, epsilon {a.epsilon:g}, seeds {seeds}\n\n"
          f"{info['date_utc']}; one option changed at a time from the defaults "
          f"({', '.join(f'{k} {v:g}' for k, v in DEFAULTS.items())}); median (min-max) over seeds; all scored on "
          f"the same test rows per seed (20% holdout of each of {', '.join(top3)}); TRTR macro-F1 on those rows: "
          f"{c.fmt(c.summary([r['matched']['trtr']['logreg']['macro_f1'] for r in results[names[0]]]))}.\n\n"
          + c.md_table(["rank", "config", "TSTR logreg macro-F1", "TSTR logreg accuracy", "TSTR logreg AUROC",
                        "TSTR RF macro-F1", "z DP-SGD / z stats", "DP-SGD steps", "wall s (training)"], md_rows)
          + "\n\n" + c.code_consistency([r.get("git") for runs in results.values() for r in runs]) + "; "
          f"1-min load average at start {info['load_avg_at_start'][0]:.1f}.\n")
    out = {"machine": info, "load_avg_at_end": __import__("os").getloadavg(), "epsilon": a.epsilon,
           "seeds": seeds, "defaults": DEFAULTS, "sites": top3, "ranked": rows, "runs": results}
    name = "sweep_quick" if a.quick else f"sweep{a.tag}"
    c.write_results(name, out, md)


if __name__ == "__main__":
    main()
