"""`nextflow run main.nf -profile test_matrix`: the single-matrix form, all three
demo sites (BH, A8, A2 of data/brca_pam50_sites.csv) on this host in one run, end
to end, with real training (the default generator, epsilon 1): the three
FEDERATED_TRAIN tasks must run at the same time on a 2-core machine.
(`-profile test`, the nf-core/rnaseq samplesheet + matrix form: test_pipeline_samplesheet.py.)

Mirrored for nf-test users by tests/nf-test/main.nf.test."""

from __future__ import annotations

import csv
import json

import pytest

from nfhelpers import JAVA_TRACE, PAM50, load_model, same_model

pytestmark = pytest.mark.multiprocess

SITES = ["BH", "A8", "A2"]
N_SYNTHETIC = 200   # conf/test_matrix.config
N_GENES = 50


@pytest.fixture(scope="module")
def test_profile(run_nf, tmp_path_factory):
    base = tmp_path_factory.mktemp("test_profile")
    run = run_nf(["-profile", "test_matrix", "--outdir", base / "results"], base, timeout=1500)
    assert run.returncode == 0, run.explain()
    return run, base / "results"


def test_runs_every_site_and_step(test_profile):
    run, _ = test_profile
    names = run.processes("Submitted")
    for step in ("PREPROCESS", "FEDERATED_TRAIN", "SYNTHESIZE", "EVALUATE", "REPORT"):
        assert sum(n == f"FEDSYNTH:{step}" for n in names) == 3, run.explain()
    assert not JAVA_TRACE.search(run.output)
    for site in SITES:
        assert f"fedsynth [{site}]: 3 sites" in run.output


def test_synthetic_matrix_shape_and_labels(test_profile):
    _, results = test_profile
    for site in SITES:
        with open(results / site / "synthetic" / "synthetic.csv", newline="") as f:
            rows = list(csv.reader(f))
        header, body = rows[0], rows[1:]
        assert len(body) == N_SYNTHETIC
        assert "pam50" in header  # the input's own label column name (--label_column)
        genes = [h for h in header[1:] if h != "pam50"]
        assert len(genes) == N_GENES, header
        labels = {r[header.index("pam50")] for r in body}
        assert labels <= PAM50 and len(labels) >= 3, labels
        for r in body[:20]:
            [float(r[header.index(g)]) for g in genes]


def test_models_record_epsilon_and_are_identical(test_profile):
    _, results = test_profile
    models = [load_model(results / site / "model" / "model.pt") for site in SITES]
    for m in models:
        assert m["dp"]["epsilon"] == pytest.approx(1.0)
        assert m["dp"]["epsilon_spent"] <= 1.0 + 1e-9
        assert m["dp"]["k"] == 3
        assert sorted(s["name"] for s in m["dp"]["sites"]) == sorted(SITES)
    assert same_model(models[0], models[1]) and same_model(models[0], models[2])


def test_each_site_evaluated_on_its_own_holdout(test_profile):
    _, results = test_profile
    for site in SITES:
        metrics = json.loads((results / site / "evaluation" / "metrics.json").read_text())
        assert "utility" in metrics and "tstr" in metrics["utility"]
        assert (results / site / "evaluation" / "report.html").stat().st_size > 1000
        # EVALUATE gets the site's run.json (--run-record): its lifetime budget in metrics and report
        run = json.loads((results / site / "model" / "run.json").read_text())
        assert metrics["privacy"]["lifetime"] == run["lifetime"] and run["lifetime"]["spent_after"] > 0
        assert "Lifetime budget of this site" in (results / site / "evaluation" / "report.html").read_text()
        summary = json.loads((results / site / f"{site}.summary.json").read_text())
        assert summary["site"] == site and summary["epsilon"] == pytest.approx(1.0)
        model = load_model(results / site / "model" / "model.pt")
        assert summary["n_training_samples"] == model["dp"]["n_total"]  # the released noisy N, no exact count
        assert all(set(s) == {"rank", "name"} for s in summary["sites"])
        life = summary["lifetime"]  # this site's ledger: at least this run's epsilon, more than before it
        assert life["spent_after"] >= 0.99 and life["spent_after"] > life["spent_before"]
        # the site's real data is not published
        assert not list((results / site).rglob("*.train.h5ad")) and not list((results / site).rglob("*holdout*"))
    info = results / "pipeline_info"
    assert (info / "software_versions.yml").read_text().count("fedsynth:") >= 5
    assert list(info.glob("execution_trace_*.txt"))


def test_a_registered_generator_runs_through_the_pipeline_unedited(run_nf, tmp_path):
    """The fourth generator (marginals) and its own option reach every site from the generated params."""
    run = run_nf(["-profile", "test_matrix", "--generator", "marginals", "--marginals_bins", 5, "--skip_evaluation",
                  "--outdir", tmp_path / "results"], tmp_path, timeout=1500)
    assert run.returncode == 0, run.explain()
    models = [load_model(tmp_path / "results" / site / "model" / "model.pt") for site in SITES]
    for m in models:
        assert m["generator"] == "marginals" and m["config"]["bins"] == 5
        assert m["dp"]["epsilon"] == pytest.approx(1.0) and m["dp"]["k"] == 3
        assert [x["name"] for x in m["dp"]["mechanisms"]] == ["record count", "class x gene histograms"]
    assert same_model(models[0], models[1]) and same_model(models[0], models[2])
