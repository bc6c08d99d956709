"""Tests for fedsynth.data.io and fedsynth.data.preprocess."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.errors import InputError, ParameterError
from fedsynth.data.io import atomic_path, atomic_write_json, atomic_write_text, read_expression, write_table
from fedsynth.data.preprocess import (
    LOG1P_CPM_MAX,
    PUBLIC_RANGE,
    Cohort,
    constant_genes,
    harmonise_genes,
    split_sites,
    validate_and_normalise,
)

#: the project's bundled copy of ../shared/data/brca_pam50.csv (plus a site column; data/README.md)
REAL_DATA = Path(__file__).resolve().parents[1] / "data" / "brca_pam50_sites.csv"
#: the original, when the project sits beside the shared folder (checked to match the copy)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brca_pam50.csv"

SBG = """sample_id,label,er_status,age,G1,G2,G3
S1,A,Positive,50,1.5,2.0,3.25
S2,B,Negative,61,0.5,4.0,1.0
S3,A,Positive,47,2.5,1.0,0.0
S4,B,Negative,70,3.0,0.5,2.0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def raises_input(match_parts, fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as exc:
        fn(*args, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg
    for part in match_parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def raw_from(tmp_path, text, name="data.csv", **kw):
    kw.setdefault("label_column", "label")
    return read_expression(write(tmp_path, name, text), **kw)


# --------------------------------------------------------------------------- reading


def test_samples_by_genes_csv_splits_genes_meta_labels(tmp_path):
    raw = raw_from(tmp_path, SBG, meta_columns=("age",))
    assert list(raw.expr.columns) == ["G1", "G2", "G3"]
    assert list(raw.expr.index) == ["S1", "S2", "S3", "S4"]
    assert (raw.expr.dtypes == np.float64).all()
    assert raw.expr.loc["S1", "G3"] == 3.25
    assert list(raw.meta.columns) == ["er_status", "age"]
    assert list(raw.labels) == ["A", "B", "A", "B"]
    assert raw.path.endswith("data.csv")


def test_numeric_column_not_in_meta_is_a_gene(tmp_path):
    raw = raw_from(tmp_path, SBG)
    assert list(raw.expr.columns) == ["age", "G1", "G2", "G3"]


def test_numeric_labels_and_ids_stay_strings(tmp_path):
    raw = raw_from(tmp_path, "id,label,G1\n001,0,1.0\n002,1,2.0\n")
    assert list(raw.expr.index) == ["001", "002"]
    assert list(raw.labels) == ["0", "1"]


def test_sample_id_column(tmp_path):
    text = "idx,label,sid,G1\n0,A,X1,1.0\n1,B,X2,2.0\n"
    raw = raw_from(tmp_path, text, sample_id_column="sid")
    assert list(raw.expr.index) == ["X1", "X2"]
    assert list(raw.expr.columns) == ["idx", "G1"]


def test_tsv_and_txt(tmp_path):
    tsv = SBG.replace(",", "\t")
    for name in ("data.tsv", "data.txt"):
        raw = raw_from(tmp_path, tsv, name=name, meta_columns=("age",))
        assert raw.expr.shape == (4, 3)
        assert raw.expr.loc["S2", "G2"] == 4.0


def test_gzipped_csv(tmp_path):
    p = tmp_path / "data.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(SBG)
    raw = read_expression(p, label_column="label", meta_columns=("age",))
    assert raw.expr.shape == (4, 3)
    assert raw.expr.loc["S4", "G1"] == 3.0


def test_missing_file(tmp_path):
    raises_input(["nope.csv", "no such file"], read_expression, tmp_path / "nope.csv")


def test_unsupported_extension(tmp_path):
    p = write(tmp_path, "data.xlsx", "x")
    raises_input(["data.xlsx", "unsupported", ".csv", ".h5ad"], read_expression, p)


def test_unparseable_csv(tmp_path):
    p = write(tmp_path, "bad.csv", "id,label,G1\nS1,A,1.0\nS2,B,2.0,7,8\n")
    raises_input(["bad.csv", "cannot parse"], read_expression, p, label_column="label")


def test_corrupt_h5ad(tmp_path):
    p = write(tmp_path, "bad.h5ad", "this is not hdf5")
    raises_input(["bad.h5ad", "cannot parse as H5AD"], read_expression, p, label_column="label")


def test_empty_file(tmp_path):
    p = write(tmp_path, "empty.csv", "")
    raises_input(["empty.csv", "empty"], read_expression, p, label_column="label")


def test_unknown_label_and_meta_column(tmp_path):
    p = write(tmp_path, "data.csv", SBG)
    raises_input(["data.csv", "'pam50'", "not found"], read_expression, p, label_column="pam50")
    raises_input(["data.csv", "'bmi'", "not found"], read_expression, p, label_column="label",
                 meta_columns=("bmi",))


def test_mostly_numeric_column_with_junk_is_an_error(tmp_path):
    text = "id,label,G1,G2\nS1,A,1.0,2\nS2,B,?,3\nS3,A,2.0,4\n"
    raises_input(["data.csv", "'G1'", "'?'", "S2"], raw_from, tmp_path, text)


def test_orientation_parameter_errors(tmp_path):
    p = write(tmp_path, "data.csv", SBG)
    with pytest.raises(ParameterError, match="--orientation"):
        read_expression(p, orientation="sideways")
    with pytest.raises(ParameterError, match="--label-column"):
        read_expression(p, label_column="label", orientation="genes-by-samples")


GBS = """gene,S1,S2,S3
G1,1.0,2.0,3.0
G2,4.0,5.0,6.5
"""


def test_genes_by_samples_with_labels_file_auto(tmp_path):
    p = write(tmp_path, "t.csv", GBS)
    lab = write(tmp_path, "labels.csv", "sample,cls\nS3,b\nS1,a\nS2,a\nS9,c\n")
    raw = read_expression(p, labels_file=lab)  # auto: header IDs match the labels file
    assert list(raw.expr.index) == ["S1", "S2", "S3"]
    assert list(raw.expr.columns) == ["G1", "G2"]
    assert raw.expr.loc["S3", "G2"] == 6.5
    assert list(raw.labels) == ["a", "a", "b"]
    explicit = read_expression(p, labels_file=lab, orientation="genes-by-samples")
    pd.testing.assert_frame_equal(raw.expr, explicit.expr)


def test_auto_orientation_samples_by_genes_from_labels_file(tmp_path):
    p = write(tmp_path, "d.csv", "id,G1,G2\nS1,1,2\nS2,3,4\nS3,5,6\n")
    lab = write(tmp_path, "labels.tsv", "sample\tlabel\nS1\tx\nS2\ty\nS3\tx\n")
    raw = read_expression(p, labels_file=lab)
    assert list(raw.expr.index) == ["S1", "S2", "S3"]
    assert list(raw.labels) == ["x", "y", "x"]


def test_auto_orientation_needs_a_hint(tmp_path):
    p = write(tmp_path, "d.csv", GBS)
    raises_input(["d.csv", "--orientation"], read_expression, p)


def test_auto_orientation_label_column_means_samples_by_genes(tmp_path):
    raw = raw_from(tmp_path, SBG)
    assert raw.expr.shape[0] == 4


def test_labels_file_missing_samples(tmp_path):
    p = write(tmp_path, "t.csv", GBS)
    lab = write(tmp_path, "labels.csv", "sample,cls\nS1,a\n")
    raises_input(["labels.csv", "2 samples", "S2", "S3"], read_expression, p, labels_file=lab,
                 orientation="genes-by-samples")


# --------------------------------------------------------------------------- writing


def test_h5ad_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(6, 4)).astype(np.float32).astype(np.float64)  # exactly representable
    expr = pd.DataFrame(vals, index=[f"S{i}" for i in range(6)], columns=["A", "B", "C", "D"])
    labels = pd.Series(list("xyxyzz"), index=expr.index)
    out = tmp_path / "syn.h5ad"
    write_table(expr, labels, out, label_column="pam50", uns={"epsilon": 1.0, "gen": {"name": "vae", "k": [1, 2]}})
    raw = read_expression(out, label_column="pam50")
    pd.testing.assert_frame_equal(raw.expr, expr, check_names=False)
    assert list(raw.labels) == list(labels)
    import anndata

    ad = anndata.read_h5ad(out)
    assert ad.X.dtype == np.float32
    assert isinstance(ad.obs["pam50"].dtype, pd.CategoricalDtype)
    assert ad.uns["epsilon"] == 1.0 and ad.uns["gen"]["name"] == "vae"


def test_h5ad_sparse_x_is_densified(tmp_path):
    import anndata
    import scipy.sparse as sp

    X = np.array([[0.0, 1.0], [2.0, 0.0]])
    ad = anndata.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"y": ["a", "b"]}, index=["s1", "s2"]),
                         var=pd.DataFrame(index=["g1", "g2"]))
    ad.write_h5ad(tmp_path / "s.h5ad")
    raw = read_expression(tmp_path / "s.h5ad", label_column="y")
    np.testing.assert_array_equal(raw.expr.to_numpy(), X)


def test_h5ad_uns_must_be_serialisable(tmp_path):
    expr = pd.DataFrame([[1.0]], index=["S1"], columns=["G"])
    with pytest.raises(TypeError, match="uns.bad"):
        write_table(expr, None, tmp_path / "x.h5ad", uns={"bad": None})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["out.csv", "out.tsv", "out.csv.gz"])
def test_csv_round_trip_exact(tmp_path, name):
    rng = np.random.default_rng(1)
    expr = pd.DataFrame(rng.normal(size=(5, 3)), index=[f"S{i}" for i in range(5)], columns=["G1", "G2", "G3"])
    labels = pd.Series(["a", "b", "a", "b", "c"], index=expr.index)
    write_table(expr, labels, tmp_path / name)
    raw = read_expression(tmp_path / name, label_column="label")
    pd.testing.assert_frame_equal(raw.expr, expr, check_names=False)
    assert list(raw.labels) == list(labels)


def test_write_refuses_to_overwrite(tmp_path):
    expr = pd.DataFrame([[1.0, 2.0]], index=["S1"], columns=["G1", "G2"])
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    raises_input(["out.csv", "exists"], write_table, expr, None, out)
    assert out.read_text() == "keep me"
    write_table(expr, None, out, overwrite=True)
    assert out.read_text().startswith("sample_id,G1,G2")


def test_atomic_path_removes_temp_on_error(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"b": 1, "a": [1, 2]}
    assert target.read_text().startswith('{\n  "b": 1')  # indent 2, key order kept
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_atomic_write_json_rejects_nan_and_text_writes(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "r.txt", "hello")
    assert (tmp_path / "r.txt").read_text() == "hello"


def test_atomic_path_missing_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_path(tmp_path / "nodir" / "x.txt"):
            pass


# --------------------------------------------------------------------------- validation


def check(tmp_path, text, parts, name="data.csv", meta=(), **kw):
    raw = raw_from(tmp_path, text, name=name, meta_columns=meta)
    return raises_input([name, *parts], validate_and_normalise, raw, label_column="label", **kw)


def test_valid_log_input(tmp_path):
    raw = raw_from(tmp_path, SBG, meta_columns=("age",))
    c = validate_and_normalise(raw, label_column="label")
    assert isinstance(c, Cohort)
    assert (c.n_samples, c.n_genes) == (4, 3)
    assert c.X.dtype == np.float64 and c.input_kind == "log" and c.library_sizes is None
    assert list(c.labels) == ["A", "B", "A", "B"] and c.sample_ids == ["S1", "S2", "S3", "S4"]
    np.testing.assert_array_equal(c.X, raw.expr.to_numpy())


def test_empty_matrix(tmp_path):
    check(tmp_path, "id,label,G1\n", ["empty"])


def test_no_genes(tmp_path):
    check(tmp_path, "id,label,note\nS1,A,x\nS2,B,y\n", ["no gene"])


def test_nan_and_inf(tmp_path):
    text = "id,label,G1,G2\nS1,A,1,2\nS2,B,,inf\nS3,A,1,NA\n"
    check(tmp_path, text, ["3 values are NaN or infinite", "sample S2, gene G1"])


def test_duplicate_sample_ids(tmp_path):
    check(tmp_path, "id,label,G1\nS1,A,1\nS2,B,2\nS1,A,3\n", ["sample IDs appear more than once", "S1"])


def test_duplicate_gene_ids(tmp_path):
    check(tmp_path, "id,label,G1,G2,G1\nS1,A,1,2,3\nS2,B,2,3,4\n", ["gene IDs appear more than once", "G1"])


def test_missing_labels(tmp_path):
    check(tmp_path, "id,label,G1\nS1,A,1\nS2,,2\nS3, ,3\n", ["2 samples have no label", "S2", "S3"])


def test_no_label_column(tmp_path):
    raw = read_expression(write(tmp_path, "data.csv", GBS), orientation="genes-by-samples")
    raises_input(["data.csv", "no labels", "'pam50'"], validate_and_normalise, raw, label_column="pam50")


def test_unknown_labels(tmp_path):
    check(tmp_path, SBG, ["1 unknown labels", "B"], meta=("age",), allowed_labels=["A", "C"])


def test_too_few_samples(tmp_path):
    check(tmp_path, "id,label,G1\nS1,A,1\nS2,B,2\n", ["only 2 samples; at least 10 are needed"], min_samples=10)


def test_log_input_that_looks_like_counts(tmp_path):
    check(tmp_path, "id,label,G1\nS1,A,3\nS2,B,1200\n", ["1200", "looks like raw counts", "--input-kind counts"])


def test_log_input_allows_negative(tmp_path):
    raw = raw_from(tmp_path, "id,label,G1\nS1,A,-3\nS2,B,1.5\n")
    assert validate_and_normalise(raw, label_column="label").X.min() == -3


def test_counts_negative(tmp_path):
    check(tmp_path, "id,label,G1\nS1,A,3\nS2,B,-1\n", ["1 negative values", "sample S2, gene G1"],
          input_kind="counts")


def test_counts_non_integer(tmp_path):
    check(tmp_path, "id,label,G1,G2\nS1,A,3,4.5\nS2,B,1.0000001,2\n", ["1 non-integer values", "sample S1, gene G2"],
          input_kind="counts")


def test_counts_zero_library(tmp_path):
    check(tmp_path, "id,label,G1,G2\nS1,A,3,4\nS2,B,0,0\n", ["1 samples have zero total counts", "S2"],
          input_kind="counts")


def test_all_genes_constant(tmp_path):
    check(tmp_path, "id,label,G1,G2\nS1,A,3,4\nS2,B,3,4\n", ["all 2 genes are constant"])


def test_unknown_input_kind(tmp_path):
    raw = raw_from(tmp_path, SBG)
    with pytest.raises(ParameterError, match="--input-kind"):
        validate_and_normalise(raw, label_column="label", input_kind="tpm")


def test_counts_log1p_cpm(tmp_path):
    raw = raw_from(tmp_path, "id,label,G1,G2,G3\nS1,A,1,3,0\nS2,B,5,5,10\n")
    c = validate_and_normalise(raw, label_column="label", input_kind="counts")
    np.testing.assert_array_equal(c.library_sizes, [4.0, 20.0])
    expected = np.log1p(np.array([[250_000.0, 750_000.0, 0.0], [250_000.0, 250_000.0, 500_000.0]]))
    np.testing.assert_allclose(c.X, expected, rtol=1e-15)
    assert c.input_kind == "counts"


def test_counts_ceiling_is_within_the_public_range(tmp_path):
    # a sample whose reads all fall on one gene reaches the ceiling that synthesize clips to, and the
    # public range the DP bounds use (pgm, marginals) covers it
    raw = raw_from(tmp_path, "id,label,G1,G2\nS1,A,7,0\nS2,B,1,3\n")
    c = validate_and_normalise(raw, label_column="label", input_kind="counts")
    assert c.X.max() == LOG1P_CPM_MAX == np.log1p(1e6)
    lo, hi = PUBLIC_RANGE["counts"]
    assert lo == 0.0 <= c.X.min() and LOG1P_CPM_MAX <= hi


def test_constant_genes_and_subsets(tmp_path):
    raw = raw_from(tmp_path, "id,label,G1,G2,G3\nS1,A,1,7,0\nS2,B,2,7,1\nS3,A,3,7,0\n")
    c = validate_and_normalise(raw, label_column="label")
    assert constant_genes(c) == ["G2"]
    sub = c.subset_genes(["G3", "G1"])
    assert sub.genes == ["G3", "G1"]
    np.testing.assert_array_equal(sub.X, [[0, 1], [1, 2], [0, 3]])
    assert c.genes == ["G1", "G2", "G3"]  # original untouched
    with pytest.raises(InputError, match="data.csv.*missing.*G9"):
        c.subset_genes(["G9"])
    s = c.subset_samples(np.array([True, False, True]))
    assert s.sample_ids == ["S1", "S3"] and list(s.labels) == ["A", "A"]
    np.testing.assert_array_equal(s.X[:, 0], [1, 3])
    ad = c.to_anndata()
    assert list(ad.obs["label"]) == ["A", "B", "A"] and list(ad.var_names) == c.genes
    assert ad.uns["input_kind"] == "log"


# --------------------------------------------------------------------------- harmonise


def test_harmonise_strict_and_intersect():
    a, b = ["G3", "G1", "G2", "G4"], ["G1", "G2", "G3", "G5"]
    assert harmonise_genes([a, list(reversed(a))], "strict") == a
    with pytest.raises(InputError) as exc:
        harmonise_genes([a, b], "strict")
    msg = str(exc.value)
    assert "sites disagree on 2 genes" in msg and "G4" in msg and "G5" in msg
    assert "pass --genes intersect to use the 3 shared genes" in msg
    assert harmonise_genes([a, b], "intersect") == ["G3", "G1", "G2"]
    with pytest.raises(InputError, match="share no genes"):
        harmonise_genes([["X"], ["Y"]], "intersect")
    with pytest.raises(ParameterError, match="--genes"):
        harmonise_genes([a], "union")


# --------------------------------------------------------------------------- split


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]
    df = pd.DataFrame(rng.normal(size=(n, 2)), index=[f"S{i}" for i in range(n)])
    return df, labels


def test_split_column_largest_sites():
    df, labels = _toy(10)
    site = pd.Series(["BH", "A8", "BH", "E2", "A8", "BH", "A8", "BH", "E2", "ZZ"])
    sites = split_sites(df, labels, mode="column", site_values=site, min_per_site=1)
    assert [s for s, _ in sites] == ["BH", "A8", "E2", "ZZ"]
    np.testing.assert_array_equal(sites[0][1], [0, 2, 5, 7])
    top2 = split_sites(df, labels, mode="column", site_values=site, n_sites=2, min_per_site=2)
    assert [s for s, _ in top2] == ["BH", "A8"]
    with pytest.raises(InputError, match="fewer than 2 samples.*ZZ"):
        split_sites(df, labels, mode="column", site_values=site, min_per_site=2)
    with pytest.raises(ParameterError, match="--n-sites"):
        split_sites(df, labels, mode="column", site_values=site, n_sites=9)


def test_split_even_deterministic():
    df, labels = _toy(103)
    s1 = split_sites(df, labels, mode="even", n_sites=4, seed=7)
    s2 = split_sites(df, labels, mode="even", n_sites=4, seed=7)
    s3 = split_sites(df, labels, mode="even", n_sites=4, seed=8)
    assert [n for n, _ in s1] == ["site0", "site1", "site2", "site3"]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(s1, s2))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(s1, s3))
    assert sorted(len(r) for _, r in s1) == [25, 26, 26, 26]
    assert sorted(np.concatenate([r for _, r in s1]).tolist()) == list(range(103))


def test_split_dirichlet_skewed_deterministic_min_per_site():
    df, labels = _toy(400)
    kw = dict(mode="dirichlet", n_sites=5, alpha=0.1, seed=3, min_per_site=15)
    s1 = split_sites(df, labels, **kw)
    s2 = split_sites(df, labels, **kw)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(s1, s2))
    assert sorted(np.concatenate([r for _, r in s1]).tolist()) == list(range(400))
    assert min(len(r) for _, r in s1) >= 15
    # label skew: with alpha=0.1 each site is dominated by one class (overall ~25% each)
    dominant = [Counter(labels[r]).most_common(1)[0][1] / len(r) for _, r in s1]
    assert np.mean(dominant) > 0.6
    even = split_sites(df, labels, mode="even", n_sites=5, seed=3)
    assert np.mean([Counter(labels[r]).most_common(1)[0][1] / len(r) for _, r in even]) < 0.45


def test_split_dirichlet_impossible():
    df, labels = _toy(20)
    with pytest.raises(InputError, match="cannot fill 5 sites"):
        split_sites(df, labels, mode="dirichlet", n_sites=5, min_per_site=5)
    with pytest.raises(InputError, match="raise --alpha"):
        split_sites(df, labels, mode="dirichlet", n_sites=4, alpha=0.01, min_per_site=5, max_tries=20)


# --------------------------------------------------------------------------- real data


def test_real_brca_pam50():
    raw = read_expression(REAL_DATA, label_column="pam50", meta_columns=("age",))
    c = validate_and_normalise(raw, label_column="pam50")
    assert (c.n_samples, c.n_genes) == (522, 50)
    assert len(set(c.labels)) == 5
    assert "age" in raw.meta.columns and "er_status" in raw.meta.columns


def test_bundled_data_matches_its_provenance():
    """data/README.md: the bundled file's checksum, and `site` = the barcode's tissue-source-site field."""
    import hashlib

    import pandas as pd

    readme = (REAL_DATA.parent / "README.md").read_text()
    digest = hashlib.sha256(REAL_DATA.read_bytes()).hexdigest()
    assert f"sha256 of the result: {digest}" in readme
    d = pd.read_csv(REAL_DATA, dtype={"sample_id": str})
    assert (d["site"] == d["sample_id"].str.split("-").str[1]).all()
    if SHARED_DATA.is_file():  # beside the shared folder: the copy is the original plus `site`
        assert d.drop(columns="site").equals(pd.read_csv(SHARED_DATA, dtype={"sample_id": str}))
