"""What hospitals have (issue 13): nf-core/rnaseq matrices with samplesheets, scanpy AnnData layers.

Fixtures: ``tests/fixtures/rnaseq/`` (made by ``tests/fixtures/make_rnaseq_fixtures.py``).
"""

from __future__ import annotations

import subprocess

import anndata
import numpy as np
import pandas as pd
import pytest

from fedsynth.data.io import read_expression, read_gene_annotation
from fedsynth.data.preprocess import expression_as_validated, validate_and_normalise
from fedsynth.errors import InputError, ParameterError
from testkit import PARTY_ENV, PY, REPO

FIX = REPO / "tests" / "fixtures" / "rnaseq"
SALMON = FIX / "salmon.merged.gene_counts.tsv"
RSEM = FIX / "rsem.merged.gene_counts.tsv"
TPM = FIX / "salmon.merged.gene_tpm.tsv"
SHEET = FIX / "samplesheet.csv"
H5AD = FIX / "scanpy.h5ad"


def _salmon_frame() -> pd.DataFrame:
    return pd.read_csv(SALMON, sep="\t")


def _write(frame: pd.DataFrame, path, sep="\t"):
    frame.to_csv(path, sep=sep, index=False)
    return path


# ------------------------------------------------------------------ reading what nf-core/rnaseq writes
def test_salmon_matrix_with_samplesheet_reads_ids_annotation_and_merged_lanes():
    raw = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    sheet = pd.read_csv(SHEET)
    assert sheet["sample"].duplicated().any()  # the fixture lists some samples once per lane
    assert list(raw.expr.index) == list(_salmon_frame().columns[2:])
    assert raw.expr.shape == (90, 200)
    assert raw.estimated_counts == "salmon"
    # gene key: the ID without its Ensembl version; the name and the ID as written are carried
    assert raw.expr.columns[0] == "ENSG00000010000"
    assert raw.gene_annotation.loc["ENSG00000010000", "gene_name"] == "GENE1"
    assert raw.gene_annotation.loc["ENSG00000010000", "input_id"] == "ENSG00000010000.1"
    assert any("Ensembl version suffixes removed from 200 of 200" in n for n in raw.notes)
    first = sheet.drop_duplicates("sample").set_index("sample")
    assert (raw.labels == first.loc[raw.expr.index, "condition"]).all()
    assert (raw.meta["site"] == first.loc[raw.expr.index, "site"]).all()
    assert "fastq_1" not in raw.meta.columns  # differs between a sample's lanes: not a sample property


def test_salmon_estimated_counts_are_rounded_as_deseq2_does_and_logged():
    raw = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    values = raw.expr.to_numpy()
    assert (np.abs(values - np.round(values)) > 1e-6).sum() > 1000
    cohort = validate_and_normalise(raw, input_kind="counts", label_column="condition")
    rounded = expression_as_validated(raw, "counts").to_numpy()
    np.testing.assert_array_equal(rounded, np.round(values))  # numpy's (and R's) round half to even
    np.testing.assert_allclose(cohort.library_sizes, rounded.sum(axis=1))
    np.testing.assert_allclose(cohort.X, np.log1p(rounded / rounded.sum(1, keepdims=True) * 1e6))
    assert any("fractional salmon estimated counts rounded" in n for n in cohort.notes)


def test_input_notes_do_not_reveal_the_number_of_records():
    """run.json (shared with the other sites and beyond) carries the input notes: a note that counted
    rounded values would tell a site's exact record count, which only the noisy N may reveal."""
    raw = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    fewer = raw.expr.index[:-7]
    smaller = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    smaller.expr, smaller.labels = smaller.expr.loc[fewer], smaller.labels.loc[fewer]
    notes = [validate_and_normalise(r, input_kind="counts", label_column="condition").notes for r in (raw, smaller)]
    assert notes[0] == notes[1] and len(notes[0]) == 2


def test_rsem_layout_is_recognised_with_its_transcript_column():
    raw = read_expression(RSEM, samplesheet=SHEET, label_column="condition")
    assert raw.estimated_counts == "RSEM"
    assert raw.expr.shape == (90, 200)
    assert raw.gene_annotation.loc["ENSG00000010037", "transcript_id(s)"].startswith("ENST")
    assert validate_and_normalise(raw, input_kind="counts", label_column="condition").n_genes == 200


def test_other_fractional_counts_are_still_refused(tmp_path):
    """Log data passed as counts is still caught: only a recognised salmon/RSEM file is rounded."""
    raw = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    frame = raw.expr.copy()
    frame.insert(0, "condition", raw.labels)
    frame.index.name = "sample_id"
    path = tmp_path / "expression.csv"
    frame.to_csv(path)
    plain = read_expression(path, label_column="condition")
    assert plain.estimated_counts is None
    with pytest.raises(InputError, match=r"expression\.csv: \d+ non-integer values in counts input.*--input-kind log"):
        validate_and_normalise(plain, input_kind="counts", label_column="condition")


def test_scanpy_h5ad_counts_layer_and_raw(tmp_path):
    with pytest.raises(InputError, match=r"scanpy\.h5ad: \d+ non-integer values.*layers counts: pass --layer"):
        validate_and_normalise(read_expression(H5AD, label_column="condition"), input_kind="counts",
                               label_column="condition")
    raw = read_expression(H5AD, label_column="condition", layer="counts")
    adata = anndata.read_h5ad(H5AD)
    np.testing.assert_array_equal(raw.expr.to_numpy(), adata.layers["counts"])
    assert raw.gene_annotation.loc[raw.expr.columns[3], "gene_name"] == "GENE4"
    assert validate_and_normalise(raw, input_kind="counts", label_column="condition").n_samples == 90
    # .raw: a scanpy habit for the unfiltered matrix
    adata.raw = anndata.AnnData(X=adata.layers["counts"].astype(np.float32), var=adata.var, obs=adata.obs)
    with_raw = tmp_path / "with_raw.h5ad"
    adata.write_h5ad(with_raw)
    np.testing.assert_array_equal(read_expression(with_raw, label_column="condition", layer="raw").expr.to_numpy(),
                                  adata.layers["counts"])


def test_samples_by_genes_log_csv_reads_as_before():
    raw = read_expression(REPO / "data" / "brca_pam50_sites.csv", label_column="pam50", meta_columns=("age",))
    assert raw.gene_annotation is None and raw.estimated_counts is None and raw.notes == []
    assert raw.expr.shape[1] == 50 and "age" in raw.meta.columns


def test_version_suffixes_match_across_sites(tmp_path):
    """Two sites on different Ensembl releases (ENSG...12 against ENSG...13) agree on the genes."""
    frame = _salmon_frame()
    other = frame.copy()
    other["gene_id"] = [g.rsplit(".", 1)[0] + ".99" for g in frame["gene_id"]]
    a = read_expression(_write(frame, tmp_path / "a.gene_counts.tsv"), samplesheet=SHEET, label_column="condition")
    b = read_expression(_write(other, tmp_path / "b.gene_counts.tsv"), samplesheet=SHEET, label_column="condition")
    assert list(a.expr.columns) == list(b.expr.columns)
    assert b.gene_annotation["input_id"].iloc[0].endswith(".99")


def test_gene_annotation_of_a_matrix_reads_no_sample_values():
    ann = read_gene_annotation(SALMON)
    assert list(ann.columns) == ["input_id", "gene_name"]
    assert ann.loc["ENSG00000010037", "input_id"] == "ENSG00000010037.2"


# ------------------------------------------------------------------ each bad input: one line naming the file
def _error_cases(tmp_path):
    frame = _salmon_frame()
    cases = {}
    dup = frame.copy()
    dup.loc[1, "gene_id"] = dup.loc[0, "gene_id"]
    cases["duplicate gene IDs"] = (["--data", _write(dup, tmp_path / "dup.gene_counts.tsv"),
                                    "--samplesheet", SHEET, "--label-column", "condition", "--input-kind", "counts"],
                                   "dup.gene_counts.tsv: 1 gene IDs appear more than once (e.g. ENSG00000010000.1)")
    ver = frame.copy()
    ver.loc[1, "gene_id"] = ver.loc[0, "gene_id"].replace(".1", ".7")
    cases["duplicate without version"] = (["--data", _write(ver, tmp_path / "ver.gene_counts.tsv"),
                                           "--samplesheet", SHEET, "--label-column", "condition"],
                                          "ver.gene_counts.tsv: 1 gene IDs appear more than once without their "
                                          "Ensembl version (e.g. ENSG00000010000.1, ENSG00000010000.7)")
    sheet = pd.read_csv(SHEET)
    extra = pd.concat([sheet, sheet.iloc[[0]].assign(sample="GHOST_001")])
    cases["samplesheet sample not in matrix"] = (
        ["--data", SALMON, "--samplesheet", _write(extra, tmp_path / "extra.csv", sep=","),
         "--label-column", "condition"], "extra.csv: 1 samples are not in ")
    short = sheet[sheet["sample"] != "HOSPB_007"]
    cases["matrix sample not in samplesheet"] = (
        ["--data", SALMON, "--samplesheet", _write(short, tmp_path / "short.csv", sep=","),
         "--label-column", "condition"], "short.csv: 1 samples of ")
    lanes = sheet.copy()
    lanes.loc[1, "condition"] = "treated"  # the second lane of HOSPA_001 disagrees
    cases["lanes disagree"] = (
        ["--data", SALMON, "--samplesheet", _write(lanes, tmp_path / "lanes.csv", sep=","),
         "--label-column", "condition"], "lanes.csv: sample HOSPA_001 has rows with different 'condition' values")
    cases["label column missing"] = (["--data", SALMON, "--samplesheet", SHEET, "--label-column", "group"],
                                     "samplesheet.csv: column 'group' not found")
    cases["layer missing"] = (["--data", H5AD, "--label-column", "condition", "--layer", "spliced"],
                              "scanpy.h5ad: no layer 'spliced' (--layer; this file has: counts)")
    neg = frame.copy()
    neg.iloc[3, 5] = -2.0
    cases["negative counts"] = (["--data", _write(neg, tmp_path / "neg.gene_counts.tsv"), "--samplesheet", SHEET,
                                 "--label-column", "condition", "--input-kind", "counts"],
                                "neg.gene_counts.tsv: 1 negative values in counts input")
    cases["TPM as counts"] = (["--data", TPM, "--samplesheet", SHEET, "--label-column", "condition",
                               "--input-kind", "counts"], "salmon.merged.gene_tpm.tsv: every sample sums to about "
                                                          "1e6: this looks like TPM, not counts")
    empty = frame[["gene_id", "gene_name"]]
    cases["no samples after annotation columns"] = (
        ["--data", _write(empty, tmp_path / "empty.gene_counts.tsv"), "--samplesheet", SHEET,
         "--label-column", "condition"], "empty.gene_counts.tsv: no sample columns after the gene ID and annotation "
                                         "columns (gene_name)")
    brca = pd.read_csv(REPO / "data" / "brca_pam50_sites.csv")
    cases["numeric metadata"] = (["--data", _write(brca, tmp_path / "with_age.csv", sep=","),
                                  "--label-column", "pam50"],
                                 "with_age.csv: column(s) 'age' reach 90 while the other 50 stay at or below")
    cases["layer on a CSV"] = (["--data", SALMON, "--samplesheet", SHEET, "--label-column", "condition",
                                "--layer", "counts"], "--layer applies to .h5ad files")
    return cases


ERROR_CASES = ("duplicate gene IDs", "duplicate without version", "samplesheet sample not in matrix",
               "matrix sample not in samplesheet", "lanes disagree", "label column missing", "layer missing",
               "negative counts", "TPM as counts", "no samples after annotation columns", "numeric metadata",
               "layer on a CSV")


@pytest.mark.parametrize("case", ERROR_CASES)
def test_each_bad_input_is_one_line_naming_the_file_and_writes_nothing(tmp_path, case):
    """``fedsynth preprocess`` (click's runner, in this process): exit != 0, one error line, last; no output."""
    from click.testing import CliRunner

    from fedsynth.cli import main

    cases = _error_cases(tmp_path)
    assert tuple(cases) == ERROR_CASES
    args, expected = cases[case]
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, ["preprocess", *map(str, args), "--out", str(out / "train.h5ad"),
                                       "--holdout", "0.2", "--holdout-out", str(out / "holdout.h5ad")])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("fedsynth: error:")]
    assert result.exit_code not in (0, None) and not isinstance(result.exception, AssertionError), result.output
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert expected in errors[0], errors[0]
    assert list(out.iterdir()) == []


def test_samplesheet_and_labels_file_or_no_label_column_are_parameter_errors():
    with pytest.raises(ParameterError, match="--samplesheet needs --label-column"):
        read_expression(SALMON, samplesheet=SHEET)
    with pytest.raises(ParameterError, match="either --samplesheet"):
        read_expression(SALMON, samplesheet=SHEET, labels_file=SHEET, label_column="condition")


# ------------------------------------------------------------------ end to end
@pytest.mark.multiprocess
@pytest.mark.parametrize("source", ["rsem", "h5ad"])
def test_simulate_from_rsem_and_scanpy_h5ad(tmp_path, source):
    args = {"rsem": ["--data", RSEM, "--samplesheet", SHEET, "--label-column", "condition"],
            "h5ad": ["--data", H5AD, "--layer", "counts", "--label-column", "condition"]}[source]
    out = tmp_path / "sim"
    proc = subprocess.run([PY, "-m", "fedsynth", "simulate", *map(str, args), "--input-kind", "counts",
                           "--site-column", "site", "--epsilon", "4", "--outdir", str(out)],
                          env=PARTY_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    counts = pd.read_csv(out / "synthetic.gene_counts.tsv", sep="\t")
    sheet = pd.read_csv(out / "synthetic.samplesheet.csv")
    annotation = {"rsem": "transcript_id(s)", "h5ad": "gene_name"}[source]
    assert list(counts.columns[:2]) == ["gene_id", annotation]
    assert list(counts.columns[2:]) == list(sheet["sample"])
    assert list(sheet.columns) == ["sample", "condition", "synthetic"] and (sheet["synthetic"] == True).all()  # noqa: E712
    assert set(sheet["condition"]) <= {"control", "treated"}
    values = counts.iloc[:, 2:].to_numpy()
    assert values.dtype.kind == "i" and values.min() >= 0 and values.sum() > 0
    adata = anndata.read_h5ad(out / "synthetic.h5ad")
    np.testing.assert_array_equal(adata.layers["counts"], values.T)


@pytest.mark.multiprocess
def test_synthetic_gene_counts_and_samplesheet_pass_deseq2(tmp_path):
    """The synthetic pair goes through DESeq2-style DE (pydeseq2) as nf-core/differentialabundance would
    take it: 10 planted DE genes, --no-dp; at least 8 in the synthetic top 20, at most 2 with shuffled labels."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    import sys

    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from make_rnaseq_fixtures import cohort, write_salmon, write_samplesheet

    counts, samples, planted = cohort(n_per_site=30, n_genes=600, n_de=10, log2_fc=2.0, seed=7)
    matrix = write_salmon(counts, tmp_path / "salmon.merged.gene_counts.tsv")
    shuffled = samples.copy()
    shuffled["condition"] = np.random.default_rng(0).permutation(samples["condition"].to_numpy())

    def top20(sheet_frame, name):
        sheet = write_samplesheet(sheet_frame, tmp_path / f"{name}.samplesheet.csv")
        out = tmp_path / name
        proc = subprocess.run([PY, "-m", "fedsynth", "simulate", "--data", str(matrix), "--samplesheet", str(sheet),
                               "--label-column", "condition", "--input-kind", "counts", "--site-column", "site",
                               "--no-dp", "--holdout", "0", "--n-synthetic", "150", "--outdir", str(out)],
                              env=PARTY_ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        syn = pd.read_csv(out / "synthetic.gene_counts.tsv", sep="\t").set_index("gene_id")
        meta = pd.read_csv(out / "synthetic.samplesheet.csv").set_index("sample")
        dds = DeseqDataSet(counts=syn.drop(columns="gene_name").T, metadata=meta, design="~condition",
                           inference=DefaultInference(n_cpus=1), quiet=True)
        dds.deseq2()
        stats = DeseqStats(dds, contrast=["condition", "treated", "control"],
                           inference=DefaultInference(n_cpus=1), quiet=True)
        stats.summary()
        return set(stats.results_df["pvalue"].sort_values().index[:20])

    found, by_chance = len(top20(samples, "true") & set(planted)), len(top20(shuffled, "shuffled") & set(planted))
    print(f"planted DE genes in the synthetic top 20: {found} of 10; with shuffled labels: {by_chance}")
    assert found >= 8
    assert by_chance <= 2


def test_log_values_in_the_nf_core_layout_given_as_counts_are_refused(tmp_path):
    frame = _salmon_frame()
    frame.iloc[:, 2:] = np.log2(frame.iloc[:, 2:] + 1.0)
    raw = read_expression(_write(frame, tmp_path / "expression.tsv"), samplesheet=SHEET, label_column="condition")
    assert raw.estimated_counts == "nf-core/rnaseq"  # recognised by its layout (gene_id, gene_name), not its name
    with pytest.raises(InputError, match=r"expression\.tsv: non-integer values no larger than .*look like log-scale"):
        validate_and_normalise(raw, input_kind="counts", label_column="condition")


def test_gzipped_matrix_and_samplesheet_read_alike(tmp_path):
    import gzip

    for src in (SALMON, SHEET):
        with open(src, "rb") as f, gzip.open(tmp_path / (src.name + ".gz"), "wb") as g:
            g.write(f.read())
    plain = read_expression(SALMON, samplesheet=SHEET, label_column="condition")
    gz = read_expression(tmp_path / (SALMON.name + ".gz"), samplesheet=tmp_path / (SHEET.name + ".gz"),
                         label_column="condition")
    assert gz.estimated_counts == "salmon"
    pd.testing.assert_frame_equal(gz.expr, plain.expr)
    assert (gz.labels == plain.labels).all()
    pd.testing.assert_frame_equal(gz.gene_annotation, plain.gene_annotation)


def test_a_label_column_the_samplesheet_cannot_hold_writes_nothing(tmp_path):
    from fedsynth.workflows.synthesize import synthesize_to

    model = REPO / "galaxy_tools" / "fedsynth" / "test-data" / "model_counts.pt"  # trained on counts
    with pytest.raises(ParameterError, match="'sample' is a column synthetic.samplesheet.csv already has"):
        synthesize_to(tmp_path, model, 5, label_column="sample")
    assert list(tmp_path.iterdir()) == []
    synthesize_to(tmp_path, model, 5, label_column="condition", annotation_from=SALMON)
    sheet = pd.read_csv(tmp_path / "synthetic.samplesheet.csv")
    assert list(sheet.columns) == ["sample", "condition", "synthetic"]
