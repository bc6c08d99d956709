"""`-stub-run`: the whole DAG with every process's stub block (fast, no
training), in site mode and with -profile test (all sites, one host).

Mirrored for nf-test users by tests/nf-test/main.nf.test (stub tests)."""

from __future__ import annotations

from nfhelpers import JAVA_TRACE, REPO, write_secret

import pytest

pytestmark = pytest.mark.multiprocess

STEPS = ["PREPROCESS", "FEDERATED_TRAIN", "SYNTHESIZE", "EVALUATE", "REPORT"]


def test_stub_run_site_mode(run_nf, tmp_path):
    key = write_secret(tmp_path / "session.key")
    run = run_nf(["-stub-run", "--input", REPO / "data" / "brca_pam50_sites.csv", "--label_column", "pam50",
                  "--site_rank", "1", "--n_sites", "3", "--rendezvous", "tcp://127.0.0.1:29500",
                  "--secret_file", key, "--site_name", "hospital1", "--classes", "LumA,LumB,Basal,Her2,NormalLike",
                  "--outdir", tmp_path / "results"],
                 tmp_path, timeout=600)
    assert run.returncode == 0, run.explain()
    names = run.processes("Submitted")
    for step in STEPS:
        assert [n for n in names if n.endswith(f":{step}")] == [f"FEDSYNTH:{step}"], run.explain()
    out = tmp_path / "results" / "hospital1"
    for f in ["model/model.pt", "model/run.json", "synthetic/synthetic.csv", "synthetic/synthetic.h5ad",
              "evaluation/metrics.json", "evaluation/report.html", "hospital1.summary.json"]:
        assert (out / f).is_file(), f
    assert (tmp_path / "results" / "pipeline_info" / "software_versions.yml").is_file()
    assert not JAVA_TRACE.search(run.output), run.explain()


def test_stub_run_test_profile(run_nf, tmp_path):
    run = run_nf(["-stub-run", "-profile", "test", "--outdir", tmp_path / "results"], tmp_path, timeout=600)
    assert run.returncode == 0, run.explain()
    names = run.processes("Submitted")
    for step in STEPS:
        assert sum(n == f"FEDSYNTH:{step}" for n in names) == 3, run.explain()
    assert names.count("FEDSYNTH:SPLIT_SITES") == 1 and names.count("FEDSYNTH:SESSION_SECRET") == 1
    for site in ("site0", "site1", "site2"):
        assert (tmp_path / "results" / site / "model" / "model.pt").is_file()
        assert (tmp_path / "results" / site / f"{site}.summary.txt").is_file()
