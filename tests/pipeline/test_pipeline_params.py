"""Bad parameters stop `nextflow run main.nf` before any process starts, with
ONE clear message (no Java stack trace) and a non-zero exit status; --help
prints the parameters from nextflow_schema.json.

Mirrored for nf-test users by tests/nf-test/params.nf.test."""

from __future__ import annotations

import pytest

from fedsynth.generators import registry
from nfhelpers import JAVA_TRACE, REPO, write_secret

pytestmark = pytest.mark.multiprocess

GOOD = {
    "--label_column": "pam50",
    "--meta_columns": "age",
    "--site_rank": "1",
    "--n_sites": "3",
    "--rendezvous": "tcp://127.0.0.1:29500",
    "--classes": "LumA,LumB,Basal,Her2,NormalLike",
}

RNASEQ = REPO / "tests" / "fixtures" / "rnaseq"
SHEET_FORM = {"--input": str(RNASEQ / "samplesheet.csv"), "--matrix": str(RNASEQ / "salmon.merged.gene_counts.tsv"),
              "--label_column": "condition", "--meta_columns": None, "--classes": "control,treated",
              "--input_kind": "counts"}

#: case -> (changes to GOOD (None: drop the option), what the message must say)
CASES = {
    "missing_input": ({"--input": None}, "--input is required"),
    "one_site": ({"--n_sites": "1"}, "--n_sites must be an integer of at least 2"),
    "rank_out_of_range": ({"--site_rank": "3"}, "--site_rank 3 is out of range: with --n_sites 3 the ranks are 0..2"),
    "rendezvous_not_tcp": ({"--rendezvous": "127.0.0.1:29500"}, "--rendezvous must be tcp://HOST:PORT"),
    "epsilon_zero": ({"--epsilon": "0"}, "--epsilon must be a number greater than 0 (got 0)"),
    "epsilon_negative": ({"--epsilon": "-0.5"}, "--epsilon must be a number greater than 0 (got -0.5)"),
    "generator_unknown": ({"--generator": "gan"}, f"--generator must be one of {', '.join(registry.names())} (got 'gan')"),
    "dp_without_classes": ({"--classes": None}, "--classes is required with DP"),
    "pgm_split_malformed": ({"--pgm_split": "0.5,0.5"},
                            "--pgm_split must be three shares EDGES,MARGINALS,PAIRS, e.g. 0.3,0.6,0.1 (got '0.5,0.5')"),
    # the samplesheet form (--input samplesheet --matrix), checked against assets/schema_input.json and the matrix
    "samplesheet_unknown_sample": ({**SHEET_FORM, "--input": "{base}/extra.samplesheet.csv"},
                                   "--input extra.samplesheet.csv: 1 samples are not in --matrix "
                                   "salmon.merged.gene_counts.tsv (e.g. GHOST_001)"),
    "samplesheet_matrix_sample_missing": ({**SHEET_FORM, "--input": "{base}/short.samplesheet.csv"},
                                          "--input short.samplesheet.csv: 1 samples of --matrix "
                                          "salmon.merged.gene_counts.tsv are not in the samplesheet (e.g. HOSPB_007)"),
    "samplesheet_label_column_missing": ({**SHEET_FORM, "--label_column": "group"},
                                         "--input samplesheet.csv: no column 'group'"),
    "samplesheet_with_labels_file": ({**SHEET_FORM, "--labels_file": "{base}/site.csv"},
                                     "--labels_file cannot be used with --matrix"),
}


@pytest.fixture(scope="module")
def bad_runs(run_nf, tmp_path_factory):
    """Every case as its own `nextflow run`, three at a time (JVM start dominates)."""
    base = tmp_path_factory.mktemp("params")
    site = base / "site.csv"
    site.write_text((REPO / "data" / "brca_pam50_sites.csv").read_text())
    key = write_secret(base / "session.key")
    sheet = (RNASEQ / "samplesheet.csv").read_text().splitlines()
    (base / "extra.samplesheet.csv").write_text("\n".join(sheet + [sheet[1].replace("HOSPA_001", "GHOST_001")]) + "\n")
    (base / "short.samplesheet.csv").write_text("\n".join(r for r in sheet if not r.startswith("HOSPB_007,")) + "\n")
    results, pending = {}, list(CASES.items())
    while pending:
        batch, pending = pending[:3], pending[3:]
        started = []
        for name, (change, _) in batch:
            opts = {"--input": str(site), **GOOD, "--secret_file": str(key), **change}
            args = [a for k, v in opts.items() if v is not None for a in (k, v.replace("{base}", str(base)))]
            started.append((name, run_nf(args + ["--outdir", str(base / name / "results")], base / name,
                                         background=True)))
        for name, proc in started:
            results[name] = proc.wait(300)
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_parameter_stops_with_one_clear_message(bad_runs, case):
    run = bad_runs[case]
    expected = CASES[case][1]
    assert run.returncode != 0, run.explain()
    assert run.output.count(expected) == 1, run.explain()
    assert "fedsynth: invalid parameters" in run.output, run.explain()
    assert not JAVA_TRACE.search(run.output), run.explain()
    assert run.processes("Submitted") == [], "no process may start: " + run.explain()
    assert not (run.cwd / "work").exists() or not any((run.cwd / "work").iterdir()), run.explain()
    # one problem, one line
    problems = [line for line in run.output.splitlines() if line.startswith("  * ")]
    assert len(problems) == 1, run.explain()


def test_help_lists_every_parameter(run_nf, tmp_path):
    run = run_nf(["--help"], tmp_path, timeout=300)
    assert run.returncode == 0, run.explain()
    for name in ("--input", "--label_column", "--site_rank", "--n_sites", "--rendezvous", "--secret_file",
                 "--epsilon", "--mode"):
        assert name in run.output, run.explain()
    assert run.processes("Submitted") == []
