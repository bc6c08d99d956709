"""`nextflow run main.nf -profile test`: the nf-core/rnaseq form, end to end.

--input samplesheet.csv (one row per sequencing run, `condition`, `site`) and
--matrix salmon.merged.gene_counts.tsv (gene_id, gene_name, fractional
estimated counts), as nf-core/differentialabundance takes them; the
samplesheet's `site` column splits both into 3 sites on this host, which
train the default generator at epsilon 1 on the counts. Every site gets the
synthetic cohort back in the same layout (synthetic.gene_counts.tsv +
synthetic.samplesheet.csv), ready for nf-core/differentialabundance.

Mirrored for nf-test users by tests/nf-test/main.nf.test.
"""

from __future__ import annotations

import csv

import pytest

from nfhelpers import JAVA_TRACE, REPO, load_model, same_model

pytestmark = pytest.mark.multiprocess

SITES = ["hospA", "hospB", "hospC"]
N_SYNTHETIC = 60  # conf/test.config
MATRIX = REPO / "tests" / "fixtures" / "rnaseq" / "salmon.merged.gene_counts.tsv"


@pytest.fixture(scope="module")
def sheet_run(run_nf, tmp_path_factory):
    base = tmp_path_factory.mktemp("samplesheet_profile")
    run = run_nf(["-profile", "test", "--outdir", base / "results"], base, timeout=1500)
    assert run.returncode == 0, run.explain()
    return run, base / "results"


def _tsv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def test_every_site_runs_every_step(sheet_run):
    run, _ = sheet_run
    names = run.processes("Submitted")
    assert names.count("FEDSYNTH:SPLIT_SITES") == 1
    for step in ("PREPROCESS", "FEDERATED_TRAIN", "SYNTHESIZE", "EVALUATE", "REPORT"):
        assert names.count(f"FEDSYNTH:{step}") == 3, run.explain()
    assert not JAVA_TRACE.search(run.output)
    for site in SITES:
        assert f"fedsynth [{site}]: 3 sites" in run.output


def test_synthetic_cohort_comes_back_in_the_inputs_layout(sheet_run):
    _, results = sheet_run
    real = _tsv(MATRIX)
    real_ids = [r[0] for r in real[1:]]
    real_names = [r[1] for r in real[1:]]
    for site in SITES:
        out = results / site / "synthetic"
        counts = _tsv(out / "synthetic.gene_counts.tsv")
        header, body = counts[0], counts[1:]
        assert header[:2] == ["gene_id", "gene_name"]
        # the site's own gene IDs as written (with their Ensembl versions) and names, in order
        assert [r[0] for r in body] == real_ids and [r[1] for r in body] == real_names
        assert len(header) == 2 + N_SYNTHETIC
        assert all(int(v) >= 0 for r in body for v in r[2:])
        with open(out / "synthetic.samplesheet.csv", newline="") as f:
            sheet = list(csv.DictReader(f))
        assert list(sheet[0]) == ["sample", "condition", "synthetic"]
        assert [s["sample"] for s in sheet] == header[2:]
        assert {s["condition"] for s in sheet} <= {"control", "treated"} and {s["synthetic"] for s in sheet} == {"true"}
        assert (out / "synthetic.h5ad").is_file() and (out / "synthetic.csv").is_file()


def test_models_identical_and_counts_rounded_as_recorded(sheet_run):
    _, results = sheet_run
    models = [load_model(results / site / "model" / "model.pt") for site in SITES]
    for m in models:
        assert m["input_kind"] == "counts" and m["dp"]["k"] == 3
        assert m["dp"]["epsilon"] == pytest.approx(1.0)
    assert same_model(models[0], models[1]) and same_model(models[0], models[2])
    import json

    for site in SITES:
        run = json.loads((results / site / "model" / "run.json").read_text())
        notes = " ".join(run["input_notes"])
        assert "Ensembl version suffixes removed" in notes  # the outputs say so
        assert "fractional salmon estimated counts rounded" in notes  # by PREPROCESS, recorded in its .h5ad
        assert not list((results / site).rglob("*.train.h5ad"))  # the real data is not published
