"""Site mode: three separate `nextflow run` invocations, one per hospital,
each with its own data, work directory and results, meet on 127.0.0.1.

1. Site 2 has the wrong session secret: every site's run fails promptly with
   fedsynth's own message (no hang, no Java stack trace).
2. Site 2 gets the right secret and all three rerun with `-resume`: only
   what is needed reruns (PREPROCESS is cached), and the three sites end
   with identical models.
3. A further `-resume` of one finished site reruns nothing and needs no
   other site.

Mirrored for nf-test users by tests/nf-test/site_mode.nf.test."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nfhelpers import DEMO, JAVA_TRACE, REPO, free_port, load_model, same_model, write_secret

pytestmark = pytest.mark.multiprocess

SITES = ["BH", "A8", "A2"]


def site_args(i: int, base, port: int) -> list:
    d = base / SITES[i]
    return ["--input", d / f"{SITES[i]}.csv", "--label_column", "pam50", "--meta_columns", "age",
            "--site_rank", i, "--n_sites", 3, "--rendezvous", f"tcp://127.0.0.1:{port}",
            "--secret_file", d / "session.key", "--site_name", SITES[i], "--outdir", d / "results",
            "--classes", "LumA,LumB,Basal,Her2,NormalLike", "--epochs", 3, "--skip_evaluation",
            "--rendezvous_timeout", 180, "--step_timeout", 60]


def run_sites(run_nf, base, port, extra=()):
    procs = [run_nf([*site_args(i, base, port), *extra], base / SITES[i], background=True) for i in range(3)]
    return [p.wait(1200) for p in procs]


@pytest.fixture(scope="module")
def federation(run_nf, tmp_path_factory):
    base = tmp_path_factory.mktemp("sites")
    split = base / "split"
    subprocess.run([str(REPO / "bin" / "fedsynth"), "split-sites", "--data", str(DEMO), "--site-column", "site",
                    "--n-sites", "3", "--outdir", str(split)], check=True, capture_output=True)
    good = write_secret(base / "shared.key")
    for i, s in enumerate(SITES):
        (base / s).mkdir()
        shutil.copy(split / f"{i}__{s}.csv", base / s / f"{s}.csv")
        shutil.copy(good, base / s / "session.key")
    write_secret(base / "A2" / "session.key")          # site 2: the wrong secret
    failed = run_sites(run_nf, base, free_port())
    shutil.copy(good, base / "A2" / "session.key")      # the fix
    port = free_port()
    resumed = run_sites(run_nf, base, port, ["-resume"])
    # the same command again: everything is cached, no other site is needed
    again = run_nf([*site_args(1, base, port), "-resume"], base / "A8", timeout=600)
    return {"base": base, "failed": failed, "resumed": resumed, "again": again}


def test_a_bad_site_fails_every_site_with_fedsynths_message(federation):
    for i, run in enumerate(federation["failed"]):
        assert run.returncode != 0, run.explain()
        assert not JAVA_TRACE.search(run.output), run.explain()
        assert "frame #" not in run.output, "native stack trace: " + run.explain()
        # the last word is fedsynth's message, from this site, naming the step
        assert f"fedsynth pipeline failed: fedsynth: error: [{SITES[i]}] authentication:" in run.output, run.explain()
        assert "FEDSYNTH:SYNTHESIZE" not in run.processes("Submitted")
    # rank 0 (the rendezvous host) names the site that was refused; the others
    # may instead see rank 0 leave first ("lost the rendezvous store hosted by rank 0")
    out = federation["failed"][0].output
    assert "rank 2 could not prove knowledge of the session secret" in out, out[-3000:]


def test_resume_after_the_fix_reruns_only_what_is_needed(federation):
    for run in federation["resumed"]:
        assert run.returncode == 0, run.explain()
        assert run.processes("Cached") == ["FEDSYNTH:PREPROCESS"], run.explain()
        assert "FEDSYNTH:FEDERATED_TRAIN" in run.processes("Submitted")
    again = federation["again"]
    assert again.returncode == 0, again.explain()
    assert again.processes("Submitted") == [], again.explain()
    assert set(again.processes("Cached")) >= {"FEDSYNTH:PREPROCESS", "FEDSYNTH:FEDERATED_TRAIN",
                                              "FEDSYNTH:SYNTHESIZE", "FEDSYNTH:REPORT"}


def test_three_sites_end_with_identical_models(federation):
    base = federation["base"]
    models = [load_model(base / s / "results" / s / "model" / "model.pt") for s in SITES]
    assert same_model(models[0], models[1]) and same_model(models[0], models[2])
    dp = models[0]["dp"]
    assert dp["epsilon"] == pytest.approx(1.0) and dp["k"] == 3
    assert [s["name"] for s in sorted(dp["sites"], key=lambda s: s["rank"])] == SITES
    for s in SITES:
        syn = (base / s / "results" / s / "synthetic" / "synthetic.csv").read_text().splitlines()
        assert len(syn) == 1 + 500
        assert (base / s / "results" / s / f"{s}.summary.json").is_file()
