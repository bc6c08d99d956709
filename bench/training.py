"""Benchmark: federated vs centralised vs single-site DP synthesis (TSTR utility).

Usage (from the repository root)::

    .venv/bin/python bench/training.py [--quick] [--seeds 0,1,2] [--epsilon 1] [--fresh]

Data: data/brca_pam50_sites.csv (522 TCGA-BRCA tumours x 50 PAM50 genes,
label ``pam50``, hospital = ``site``). To compare like with like, the rows of
the 3 largest sites (BH, A8, A2) are first written to
bench/out/training/brca_top3.csv and every setting below uses that file.
For each split seed (``--split-seed``: holdout, site split, synthetic
sampling seed), through the ``fedsynth simulate`` CLI at epsilon 1:

* **federated**: ``--sites 3 --site-column site``: 3 processes, one per
  hospital, one CrypTen session; test rows = 20% stratified holdout of each site;
* **centralised**: ``--sites 1``: one process on the pooled rows (simulate's
  own pooled 20% holdout, so its test rows differ from the federated ones);
* **centralised, matched holdout**: ``--sites 1 --holdout 0`` on exactly the
  federated run's training rows, the synthetic data then scored on exactly
  the federated run's test rows (with fedsynth.evaluation.tstr, as simulate does);
* **local-only**: ``--sites 3 --site-column site --local-only``: each
  hospital alone (scored on the same test rows as federated). "Best single
  site" is the site with the best TSTR macro-F1 *on those test rows*, per
  seed: an oracle choice, so it flatters the single-site baseline.

Scores come from run.json: evaluation.tstr.logreg (train on synthetic, test
on real), evaluation.trtr.logreg (train on real, reference), evaluation.majority,
and wall_seconds.training (process start to the last site's exit: includes
~3x Python/torch/CrypTen start-up). Results: bench/out/training.json and
bench/out/training.md (runs under bench/out/training/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as c  # noqa: E402

# Published reference figures (DESIGN.md "Reference results"): TCGA-BRCA,
# 1,089 tumours x 978 landmark genes, 5 PAM50 subtypes, 80/20 split.
REFERENCE = {
    "real (TRTR) accuracy": 0.865,
    "non-DP multivariate normal TSTR accuracy": 0.848,
    "non-DP CVAE TSTR accuracy": 0.835,
    "DP-CVAE epsilon 10 TSTR accuracy": 0.673,
    "DP-Private-PGM epsilon 1 relative F1 (TSTR/TRTR)": 0.82,
}


def lr_scores(ev: dict, part: str) -> tuple[float, float]:
    s = ev[part]["logreg"]
    return s["accuracy"], s["macro_f1"]


def slowest_phases(run: dict) -> dict:
    """Per phase, the slowest site's seconds (site_wall_seconds: load, session, schema, statistics, training)."""
    sw = run.get("site_wall_seconds") or {}
    keys = set().union(*[set(v) for v in sw.values()]) if sw else set()
    return {k: max(v.get(k, 0.0) for v in sw.values()) for k in sorted(keys)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed (0)")
    p.add_argument("--seeds", default=None, help="comma-separated split seeds (default 0,1,2)")
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--fresh", action="store_true", help="re-run even if a cached run with the same command exists")
    p.add_argument("--tag", default="", help="suffix for the output files (e.g. _10seeds)")
    a = p.parse_args()
    seeds = [int(s) for s in (a.seeds or ("0" if a.quick else "0,1,2")).split(",")]
    info = c.machine()
    root = c.OUT / ("training_quick" if a.quick else "training")
    root.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import pandas as pd

    # --- the like-for-like input: the 3 largest sites' rows only
    raw_all = c.read_table()
    top3 = c.largest_sites(raw_all, 3)
    df = pd.read_csv(c.DATA, dtype={"sample_id": str})
    top3_csv = root / "brca_top3.csv"
    df[df["site"].astype(str).isin(top3)].to_csv(top3_csv, index=False)
    raw = c.read_table(top3_csv)
    labels = raw.labels.astype(str)
    print(f"training benchmark: sites {top3} ({len(raw.expr)} rows -> {c.rel(top3_csv)}), "
          f"epsilon {a.epsilon:g}, seeds {seeds}; {info['cores']} cores, torch {info['torch']}", flush=True)

    common = ["--data", top3_csv, *c.DATA_ARGS, "--epsilon", a.epsilon]
    prog = c.Progress(4 * len(seeds))
    per_seed = []
    for seed in seeds:
        rec = {"seed": seed}
        tr_rows, te_rows = c.site_holdout(raw, top3, seed)

        prog.start(f"seed {seed}: federated, 3 sites")
        run = c.run_simulate([*common, "--sites", 3, "--site-column", "site", "--split-seed", seed],
                             root / f"federated/seed{seed}", fresh=a.fresh, label="federated")
        ev = run["evaluation"]
        check = c.score_synthetic(root / f"federated/seed{seed}/synthetic.csv", raw, tr_rows, te_rows, seed)
        if abs(check["tstr"]["logreg"]["macro_f1"] - ev["tstr"]["logreg"]["macro_f1"]) > 1e-9:
            print("    WARNING: could not reproduce simulate's holdout; matched scores are not comparable")
        rec["federated"] = {"evaluation": ev, "wall": run["wall_seconds"]["training"],
                            "site_phases": slowest_phases(run), "command": run["_command"], "git": run.get("_git"),
                            "sites": run["sites"], "dp": {k: run["dp"][k] for k in ("sigma", "stat_sigma", "sample_rate", "steps")}}
        prog.finish(f"TSTR macro-F1 {ev['tstr']['logreg']['macro_f1']:.3f}, accuracy "
                    f"{ev['tstr']['logreg']['accuracy']:.3f} (TRTR {ev['trtr']['logreg']['macro_f1']:.3f}); "
                    f"training {run['wall_seconds']['training']:.0f}s")

        prog.start(f"seed {seed}: centralised, pooled (simulate's holdout)")
        run = c.run_simulate([*common, "--sites", 1, "--split-seed", seed],
                             root / f"centralised/seed{seed}", fresh=a.fresh, label="centralised")
        ev = run["evaluation"]
        rec["centralised"] = {"evaluation": ev, "wall": run["wall_seconds"]["training"],
                              "site_phases": slowest_phases(run), "command": run["_command"], "git": run.get("_git"),
                              "dp": {k: run["dp"][k] for k in ("sigma", "stat_sigma", "sample_rate", "steps")}}
        prog.finish(f"TSTR macro-F1 {ev['tstr']['logreg']['macro_f1']:.3f}, accuracy "
                    f"{ev['tstr']['logreg']['accuracy']:.3f} (TRTR {ev['trtr']['logreg']['macro_f1']:.3f}); "
                    f"training {run['wall_seconds']['training']:.0f}s")

        prog.start(f"seed {seed}: centralised, matched holdout")
        train_csv = root / f"centralised_matched/seed{seed}_train.csv"
        train_csv.parent.mkdir(parents=True, exist_ok=True)
        ids = set(raw.expr.index[tr_rows].astype(str))
        df[df["sample_id"].astype(str).isin(ids)].to_csv(train_csv, index=False)
        run = c.run_simulate(["--data", train_csv, *c.DATA_ARGS, "--epsilon", a.epsilon, "--sites", 1,
                              "--holdout", 0, "--split-seed", seed],
                             root / f"centralised_matched/seed{seed}", fresh=a.fresh, label="centralised matched")
        ev = c.score_synthetic(root / f"centralised_matched/seed{seed}/synthetic.csv", raw, tr_rows, te_rows, seed)
        rec["centralised_matched"] = {"evaluation": ev, "wall": run["wall_seconds"]["training"],
                                      "site_phases": slowest_phases(run),
                                      "command": run["_command"], "git": run.get("_git"), "n_train": int(len(tr_rows))}
        prog.finish(f"TSTR macro-F1 {ev['tstr']['logreg']['macro_f1']:.3f}, accuracy "
                    f"{ev['tstr']['logreg']['accuracy']:.3f}; training {run['wall_seconds']['training']:.0f}s")

        prog.start(f"seed {seed}: local-only, each site alone")
        run = c.run_simulate([*common, "--sites", 3, "--site-column", "site", "--local-only", "--split-seed", seed],
                             root / f"local/seed{seed}", fresh=a.fresh, label="local-only")
        local = {name: v for name, v in run["local"].items()}
        best = max(local, key=lambda s: local[s]["evaluation"]["tstr"]["logreg"]["macro_f1"])
        # reference: a classifier trained on one site's real training rows, same test rows
        real_single = {}
        sites = raw.meta["site"].astype(str).to_numpy()
        for name in top3:
            rows = np.intersect1d(tr_rows, np.flatnonzero(sites == name))
            from fedsynth.evaluation import tstr

            real_single[name] = tstr(raw.expr.iloc[rows].to_numpy(), labels.iloc[rows].to_numpy(),
                                     raw.expr.iloc[te_rows].to_numpy(), labels.iloc[te_rows].to_numpy(),
                                     models=("logreg",), seed=seed)["tstr"]["logreg"]
        rec["local"] = {"sites": {n: {"n": v["n"], "tstr_logreg": v["evaluation"]["tstr"]["logreg"],
                                      "real_single_site_logreg": real_single[n]} for n, v in local.items()},
                        "best": best, "evaluation_best": local[best]["evaluation"],
                        "wall_all_sites": run["wall_seconds"]["training"], "command": run["_command"], "git": run.get("_git")}
        prog.finish("per site TSTR macro-F1: " + ", ".join(
            f"{n} (n={v['n']}) {v['evaluation']['tstr']['logreg']['macro_f1']:.3f}" for n, v in local.items())
            + f"; best {best}; training (3 sites, sequential) {run['wall_seconds']['training']:.0f}s")
        per_seed.append(rec)
        c.write_json(root / f"partial{a.tag}.json", per_seed)

    # ------------------------------------------------------------ tables
    def col(getter):
        return c.summary([getter(r) for r in per_seed])

    rows = []

    def add(name, key, ev_get, wall_get, n_get, phase_get=None):
        f1 = col(lambda r: ev_get(r)["tstr"]["logreg"]["macro_f1"])
        acc = col(lambda r: ev_get(r)["tstr"]["logreg"]["accuracy"])
        rows.append({"setting": name, "key": key, "tstr_macro_f1": f1, "tstr_accuracy": acc,
                     "trtr_macro_f1": col(lambda r: ev_get(r)["trtr"]["logreg"]["macro_f1"]),
                     "trtr_accuracy": col(lambda r: ev_get(r)["trtr"]["logreg"]["accuracy"]),
                     "majority_accuracy": col(lambda r: ev_get(r)["majority"]["accuracy"]),
                     "majority_macro_f1": col(lambda r: ev_get(r)["majority"]["macro_f1"]),
                     "n_test": col(lambda r: ev_get(r)["n_test"]),
                     "n_train": col(n_get), "wall_training_s": col(wall_get) if wall_get else None,
                     "session_s": col(lambda r: phase_get(r)["session"]) if phase_get else None,
                     "dp_sgd_s": col(lambda r: phase_get(r)["training"]) if phase_get else None,
                     "statistics_s": col(lambda r: phase_get(r)["statistics"]) if phase_get else None})

    add("Federated DP, 3 sites", "federated", lambda r: r["federated"]["evaluation"],
        lambda r: r["federated"]["wall"], lambda r: sum(s["n"] for s in r["federated"]["sites"]),
        lambda r: r["federated"]["site_phases"])
    add("Centralised DP, pooled 3 sites (own holdout)", "centralised", lambda r: r["centralised"]["evaluation"],
        lambda r: r["centralised"]["wall"], lambda r: r["centralised"]["evaluation"]["n_train_real"],
        lambda r: r["centralised"]["site_phases"])
    add("Centralised DP, pooled 3 sites (federated's test rows)", "centralised_matched",
        lambda r: r["centralised_matched"]["evaluation"], lambda r: r["centralised_matched"]["wall"],
        lambda r: r["centralised_matched"]["n_train"], lambda r: r["centralised_matched"]["site_phases"])
    def best_ev(r):
        # TRTR of this row: a classifier trained on the best site's own real rows (simulate's
        # local-only TRTR is trained on the pooled real rows of all sites)
        ev = dict(r["local"]["evaluation_best"])
        ev["trtr"] = {"logreg": r["local"]["sites"][r["local"]["best"]]["real_single_site_logreg"]}
        return ev

    add("Best single site alone, DP (oracle pick per seed)", "best_single", best_ev, None,
        lambda r: r["local"]["sites"][r["local"]["best"]]["n"])

    md_rows = []
    for r in rows:
        wall = c.fmt(r["wall_training_s"], 0) if r["wall_training_s"] else "see below"
        phases = (f"{c.fmt(r['session_s'], 2)} / {c.fmt(r['statistics_s'], 2)} / {c.fmt(r['dp_sgd_s'], 2)}"
                  if r["session_s"] else "-")
        md_rows.append([r["setting"], c.fmt(r["tstr_macro_f1"]), c.fmt(r["tstr_accuracy"]),
                        c.fmt(r["trtr_macro_f1"]), c.fmt(r["trtr_accuracy"]),
                        f"{c.fmt(r['majority_macro_f1'])} / {c.fmt(r['majority_accuracy'])}",
                        c.fmt(r["n_train"], 0) + " / " + c.fmt(r["n_test"], 0), wall, phases])
    table = c.md_table(["setting (epsilon %g)" % a.epsilon, "TSTR macro-F1", "TSTR accuracy",
                        "TRTR macro-F1", "TRTR accuracy", "majority macro-F1 / acc.", "n train / test",
                        "wall s (training)", "site s: session / statistics / DP-SGD"], md_rows)

    site_rows = []
    for name in top3:
        site_rows.append([name, c.fmt(col(lambda r: r["local"]["sites"][name]["n"]), 0),
                          c.fmt(col(lambda r: r["local"]["sites"][name]["tstr_logreg"]["macro_f1"])),
                          c.fmt(col(lambda r: r["local"]["sites"][name]["tstr_logreg"]["accuracy"])),
                          c.fmt(col(lambda r: r["local"]["sites"][name]["real_single_site_logreg"]["macro_f1"])),
                          c.fmt(col(lambda r: r["local"]["sites"][name]["real_single_site_logreg"]["accuracy"])),
                          sum(r["local"]["best"] == name for r in per_seed)])
    site_table = c.md_table(["site alone", "n train", "DP TSTR macro-F1", "DP TSTR accuracy",
                             "real-data (this site only) macro-F1", "real-data accuracy", "times best"], site_rows)
    local_wall = c.fmt(col(lambda r: r["local"]["wall_all_sites"]), 0)
    fed = per_seed[0]["federated"]["dp"]
    cmds = sorted({r[k]["command"] for r in per_seed for k in ("federated", "centralised", "centralised_matched")}
                  | {r["local"]["command"] for r in per_seed})
    md = (f"## Utility: federated vs centralised vs single site (epsilon {a.epsilon:g}, {len(seeds)} split seeds)\n\n"
          f"{info['date_utc']}; median (min-max) over split seeds {seeds}; logistic regression; "
          f"test rows = 20% stratified holdout. TRTR = the same classifier trained on the real training rows "
          f"of the setting (for the single site: that site's own rows).\n\n{table}\n\n"
          f"Each site alone (local-only; same test rows as federated; 3 sites trained one after another in "
          f"{local_wall} s wall):\n\n{site_table}\n\n"
          f"DP plan of the federated run (seed {seeds[0]}): DP-SGD noise multiplier {fed['sigma']:.3g}, "
          f"statistics noise multiplier {fed['stat_sigma']:.3g}, sample rate {fed['sample_rate']:.3g}, "
          f"{fed['steps']} steps.\n\n"
          f"Wall s (training) is simulate's wall_seconds.training: from starting the site processes to the last "
          f"exit, so mostly 1-3 Python processes importing torch/Opacus/CrypTen on 2 shared cores; the last column "
          f"is the slowest site's own phases (site_wall_seconds). 1-min load average at start "
          f"{info['load_avg_at_start'][0]:.1f} (other engineers' test runs shared the 2 cores).\n\n"
          + c.code_consistency([r[k].get("git") for r in per_seed
                                for k in ("federated", "centralised", "centralised_matched", "local")]) + ".\n")
    out = {"machine": info, "load_avg_at_end": __import__("os").getloadavg(), "epsilon": a.epsilon,
           "seeds": seeds, "sites": top3, "rows": rows, "per_seed": per_seed, "reference": REFERENCE,
           "commands": cmds}
    name = "training_quick" if a.quick else f"training{a.tag}"
    c.write_results(name, out, md + "\nCommands:\n\n```\n" + "\n".join(cmds) + "\n```\n", shown=md)


if __name__ == "__main__":
    main()
