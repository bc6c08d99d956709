"""Regenerate galaxy_tools/fedsynth/test-data from the bundled TCGA-BRCA table.

Run from the project root with the project's environment:

    .venv/bin/python tests/galaxy/make_test_data.py

- brca_3sites.csv: 48 real tumours, 4 of each of LumA, LumB, Basal, Her2 from
  each of the three largest tissue source sites (BH, A8, A2); columns
  sample_id, site, pam50, age and 20 PAM50 genes.
- site_{BH,A8,A2}.csv: the same rows, one file per site (16 samples each).
- site_BH_genes_by_samples.tsv + site_BH_labels.tsv: site BH transposed
  (genes x samples) with a separate sample_id/label file.
- brca_train.csv / brca_holdout.csv: `fedsynth preprocess` of brca_3sites.csv
  with a 25% stratified holdout (seed 0): the preprocess tool's expected
  outputs and the evaluate tool's real inputs.
- model.pt: `fedsynth simulate` over the three sites, epsilon 5, 20 epochs
  (seed 1: with DP that fixes only the initial weights, so a rerun gives
  another model); synthetic.csv: 36 samples drawn from it (seed 0).
- train_run.json: a train run record of site BH whose lifetime ledger had
  spent epsilon 2 before the run, under a --lifetime-epsilon 10 cap (the
  evaluate tool's --run-record; written by hand: simulate's ledger is a
  throw-away one).
- session.key / short_secret.txt: a test session secret and one too short.
- rnaseq.gene_counts.tsv + rnaseq.samplesheet.csv: nf-core/rnaseq's salmon
  layout (gene_id with Ensembl versions, gene_name, fractional estimated
  counts) and its samplesheet (lanes as extra rows; condition, site), 36
  samples x 40 genes at 3 sites (tests/fixtures/make_rnaseq_fixtures.py);
  rnaseq_scanpy.h5ad: the same counts the scanpy way (log-normalised X,
  counts in layers['counts']); model_counts.pt: `fedsynth simulate` on the
  pair (counts, epsilon 5).

    .venv/bin/python tests/galaxy/make_test_data.py --only rnaseq   # just these

Keep every file small: the Galaxy tests upload each of them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "galaxy_tools" / "fedsynth" / "test-data"
GENES = ["ESR1", "PGR", "FOXA1", "ERBB2", "GRB7", "KRT5", "KRT14", "KRT17", "FOXC1", "MKI67",
         "CCNB1", "BIRC5", "MYBL2", "BCL2", "MLPH", "SFRP1", "EGFR", "CDH3", "NAT1", "MIA"]
SITES = ["BH", "A8", "A2"]
LABELS = ["LumA", "LumB", "Basal", "Her2"]


def fedsynth(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "fedsynth", *args], check=True, env=env, cwd=ROOT)


def rnaseq() -> None:
    """The nf-core/rnaseq-shaped test data (module doc)."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import make_rnaseq_fixtures as fx

    counts, samples, _ = fx.cohort(n_per_site=12, n_genes=40, n_de=6, log2_fc=2.0, seed=3)
    fx.write_salmon(counts, OUT / "rnaseq.gene_counts.tsv")
    fx.write_samplesheet(samples, OUT / "rnaseq.samplesheet.csv")
    fx.write_scanpy_h5ad(counts, samples, OUT / "rnaseq_scanpy.h5ad")
    work = Path(tempfile.mkdtemp(prefix="fedsynth-testdata-"))
    try:
        fedsynth("simulate", "--data", str(OUT / "rnaseq.gene_counts.tsv"), "--samplesheet",
                 str(OUT / "rnaseq.samplesheet.csv"), "--label-column", "condition", "--input-kind", "counts",
                 "--site-column", "site", "--holdout", "0", "--epsilon", "5", "--outdir", str(work / "sim"))
        shutil.copy2(work / "sim" / "model.pt", OUT / "model_counts.pt")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if sys.argv[1:] == ["--only", "rnaseq"]:
        rnaseq()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    d = pd.read_csv(ROOT / "data" / "brca_pam50_sites.csv")
    parts = [d[(d.site == s) & (d.pam50 == lab)].head(4) for s in SITES for lab in LABELS]
    sub = pd.concat(parts)[["sample_id", "site", "pam50", "age", *GENES]]
    sub.to_csv(OUT / "brca_3sites.csv", index=False)
    for s in SITES:
        sub[sub.site == s].to_csv(OUT / f"site_{s}.csv", index=False)
    bh = sub[sub.site == "BH"]
    m = bh.set_index("sample_id")[GENES].T
    m.index.name = "gene"
    m.to_csv(OUT / "site_BH_genes_by_samples.tsv", sep="\t")
    bh[["sample_id", "pam50"]].rename(columns={"pam50": "label"}).to_csv(
        OUT / "site_BH_labels.tsv", sep="\t", index=False)

    for name in ("brca_train.csv", "brca_holdout.csv"):
        (OUT / name).unlink(missing_ok=True)
    fedsynth("preprocess", "--data", str(OUT / "brca_3sites.csv"), "--label-column", "pam50",
             "--meta-columns", "age", "--holdout", "0.25", "--seed", "0",
             "--out", str(OUT / "brca_train.csv"), "--holdout-out", str(OUT / "brca_holdout.csv"))

    work = Path(tempfile.mkdtemp(prefix="fedsynth-testdata-"))
    try:
        fedsynth("simulate", "--data", str(OUT / "brca_3sites.csv"), "--label-column", "pam50",
                 "--meta-columns", "age", "--sites", "3", "--site-column", "site", "--holdout", "0.25",
                 "--split-seed", "1", "--epsilon", "5", "--epochs", "20", "--seed", "1",
                 "--outdir", str(work / "sim"))
        shutil.copy2(work / "sim" / "model.pt", OUT / "model.pt")
        fedsynth("synthesize", "--model", str(OUT / "model.pt"), "--n", "36", "--seed", "0",
                 "--outdir", str(work / "syn"))
        shutil.copy2(work / "syn" / "synthetic.csv", OUT / "synthetic.csv")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    run = {"command": "train", "site": "BH", "rank": 0, "generator": "cvae", "epsilon": 5.0, "epsilon_spent": 4.98,
           "delta": 1e-05, "private": True,
           "lifetime": {"ledger": "/srv/fedsynth/ledger", "unbounded": False, "spent_before": 2.0,
                        "spent_after": 6.1, "limit": 10.0, "remaining": 3.9}}
    (OUT / "train_run.json").write_text(json.dumps(run, indent=1) + "\n")
    if not (OUT / "session.key").exists():
        (OUT / "session.key").write_text(secrets.token_hex(32) + "\n")
    (OUT / "short_secret.txt").write_text("tooshort\n")
    rnaseq()
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:>8}  {p.name}")


if __name__ == "__main__":
    main()
