"""`fedsynth split-sites` (fedsynth.workflows.split): one matrix -> one file per
site, for the pipeline's --mode local. Real files; the CLI as a real process."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from fedsynth.errors import InputError, ParameterError
from fedsynth.workflows.split import split_sites_to_files
from testkit import BUNDLED, PARTY_ENV, PY

HEADER = "sample_id,site,pam50,age,note,G1,G2"
#: values pandas would rewrite (007, 1.50, 1e3, quoted commas, blanks) must come out as written
ROWS = {
    "S1": 'S1,BH,LumA,59,"a, quoted",007,1.50',
    "S2": "S2,A8,Basal,61,,1e3,2.0",
    "S3": "S3,BH,LumB,40,x,3,4",
    "S4": 'S4,St. Mary\'s,Her2,55,"say ""hi""",5,6',
    "S5": "S5,A8,LumA,70,,7,8",
    "S6": "S6,BH,LumA,48,,9,10",
    "S7": "S7,St. Mary's,LumA,51,,11,12",
    "S8": "S8,A2,LumA,52,,13,14",
}


def write(path, lines, sep=","):
    text = "\n".join(line.replace(",", sep) if sep != "," else line for line in lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def rows_of(path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return fh.read().splitlines()


def test_rows_are_copied_verbatim_to_largest_first_sites(tmp_path):
    data = write(tmp_path / "cohort.csv", [HEADER, *ROWS.values()])
    files = split_sites_to_files(data, site_column="site", n_sites=3, outdir=tmp_path / "sites", min_samples=2)
    # BH 3, A8 2, St. Mary's 2 (A8 < St. Mary's by name), A2 1 (dropped)
    assert [f.name for f in files] == ["0__BH.csv", "1__A8.csv", "2__St._Mary_s.csv"]
    assert sorted(p.name for p in (tmp_path / "sites").iterdir()) == [f.name for f in files]
    assert rows_of(files[0]) == [HEADER, ROWS["S1"], ROWS["S3"], ROWS["S6"]]
    assert rows_of(files[1]) == [HEADER, ROWS["S2"], ROWS["S5"]]
    assert rows_of(files[2]) == [HEADER, ROWS["S4"], ROWS["S7"]]


def test_gzipped_tsv_gives_gzipped_tsv_sites(tmp_path):
    data = write(tmp_path / "cohort.tsv.gz", [HEADER, *ROWS.values()], sep="\t")
    files = split_sites_to_files(data, site_column="site", n_sites=2, outdir=tmp_path / "out", min_samples=2)
    assert [f.name for f in files] == ["0__BH.tsv.gz", "1__A8.tsv.gz"]
    tab = [line.replace(",", "\t") for line in (HEADER, ROWS["S2"], ROWS["S5"])]
    assert rows_of(files[1]) == tab
    # same bytes on a second run (no time stamp in the gzip header)
    again = split_sites_to_files(data, site_column="site", n_sites=2, outdir=tmp_path / "again", min_samples=2)
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in again]


def test_a_numeric_site_column_is_not_a_gene(tmp_path):
    lines = ["id,centre,G1", "a,10,1.0", "b,2,2.0", "c,10,3.0", "d,2,4.0", "e,3,5.0"]
    files = split_sites_to_files(write(tmp_path / "m.csv", lines), site_column="centre", n_sites=2,
                                 outdir=tmp_path / "o", min_samples=2)
    assert [f.name for f in files] == ["0__10.csv", "1__2.csv"]  # 2 vs 2: by name, "10" < "2"
    assert rows_of(files[0]) == ["id,centre,G1", "a,10,1.0", "c,10,3.0"]


def test_the_bundled_demo_splits_into_its_three_largest_hospitals(tmp_path):
    files = split_sites_to_files(BUNDLED, site_column="site", n_sites=3, outdir=tmp_path)
    assert [f.name for f in files] == ["0__BH.csv", "1__A8.csv", "2__A2.csv"]
    source = rows_of(BUNDLED)
    for f, site in zip(files, ("BH", "A8", "A2")):
        assert rows_of(f) == [source[0]] + [r for r in source[1:] if r.split(",")[1] == site]


#: case -> (options, extra rows (None: replace all rows), file name, error, message)
BAD = {
    "too_few": ({}, [], "cohort.csv", InputError,
                r"cohort\.csv: site column: 1 sites have fewer than 2 samples \(e\.g\. A2\)"),
    "unknown_column": ({"site_column": "hospital"}, [], "cohort.csv", InputError,
                       r"cohort\.csv: column 'hospital' not found"),
    "too_many_sites": ({"n_sites": 5}, [], "cohort.csv", ParameterError,
                       r"cohort\.csv: --n-sites 5 but the site column has only 4 sites"),
    "no_site": ({}, ["S9,,LumA,50,,1,2"], "cohort.csv", InputError,
                r"cohort\.csv: site column: 1 samples have no site \(e\.g\. S9\)"),
    "ragged": ({}, ["S9,A2,LumA,50,1,2"], "cohort.csv", InputError,
               r"cohort\.csv: line 10 has 6 fields, the header has 7"),
    "h5ad": ({}, [], "cohort.h5ad", InputError, r"cohort\.h5ad: split-sites copies the rows of a CSV/TSV file"),
    "min_samples": ({"min_samples": 0}, [], "cohort.csv", ParameterError,
                    r"--min-samples must be a positive integer, not 0"),
    "collision": ({"n_sites": 2}, None, "cohort.csv", InputError,
                  r"cohort\.csv: sites 'A B' and 'A_B' of column 'site' would both be named 'A_B'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    options, extra, name, error, message = BAD[case]
    rows = [*ROWS.values(), *extra] if extra is not None else [
        f"S{i},{'A B' if i % 2 else 'A_B'},LumA,50,,1,2" for i in range(4)]
    data = write(tmp_path / name, [HEADER, *rows])
    out = tmp_path / "new" / "sites"
    with pytest.raises(error, match=message) as exc:
        split_sites_to_files(data, outdir=out, **({"site_column": "site", "n_sites": 4, "min_samples": 2} | options))
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "new").exists()


def test_existing_site_files_are_kept_unless_overwrite(tmp_path):
    data = write(tmp_path / "cohort.csv", [HEADER, *ROWS.values()])
    out = tmp_path / "sites"
    out.mkdir()
    (out / "1__A8.csv").write_text("mine\n")
    with pytest.raises(InputError, match=r"sites: already holds 1__A8\.csv; .* --overwrite"):
        split_sites_to_files(data, site_column="site", n_sites=2, outdir=out, min_samples=2)
    assert [p.name for p in out.iterdir()] == ["1__A8.csv"] and (out / "1__A8.csv").read_text() == "mine\n"
    split_sites_to_files(data, site_column="site", n_sites=2, outdir=out, min_samples=2, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["0__BH.csv", "1__A8.csv"]
    assert rows_of(out / "1__A8.csv") == [HEADER, ROWS["S2"], ROWS["S5"]]


def test_an_outdir_that_cannot_be_made_is_one_line(tmp_path):
    data = write(tmp_path / "cohort.csv", [HEADER, *ROWS.values()])
    (tmp_path / "afile").write_text("x\n")
    with pytest.raises(InputError, match=r"afile/sub: cannot write the site files \(--outdir\): Not a directory"):
        split_sites_to_files(data, site_column="site", n_sites=2, outdir=tmp_path / "afile" / "sub", min_samples=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "cohort.csv"]


@pytest.mark.multiprocess
def test_cli_prints_one_summary_line_or_one_error_line(tmp_path):
    data = write(tmp_path / "cohort.csv", [HEADER, *ROWS.values()])
    cmd = [PY, "-m", "fedsynth", "split-sites", "--data", str(data), "--site-column", "site",
           "--n-sites", "2", "--min-samples", "2", "--meta-columns", "age", "--outdir", str(tmp_path / "s")]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=PARTY_ENV, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"fedsynth split-sites: the 2 largest sites of {data} by 'site' -> "
                                      f"{tmp_path / 's' / '0__BH.csv'}, {tmp_path / 's' / '1__A8.csv'}"]
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "t"), "--min-samples", "3"], capture_output=True, text=True,
                         env=PARTY_ENV, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [f"fedsynth: error: {data}: site column: 1 sites have fewer than 3 samples "
                                       "(e.g. A8); lower --n-sites to keep only larger sites"]
    assert not (tmp_path / "t").exists()


# ------------------------------------------------------------ the samplesheet + matrix form (issue 13)
def test_samplesheet_form_splits_the_matrix_columns_and_the_samplesheet_rows(tmp_path):
    from fedsynth.workflows.split import split_samplesheet_sites_to_files
    from testkit import REPO

    fix = REPO / "tests" / "fixtures" / "rnaseq"
    matrix, sheet = fix / "salmon.merged.gene_counts.tsv", fix / "samplesheet.csv"
    pairs = split_samplesheet_sites_to_files(matrix, sheet, site_column="site", n_sites=2, outdir=tmp_path / "s")
    assert [(m.name, s.name) for m, s in pairs] == [
        ("0__hospA.salmon.merged.gene_counts.tsv", "0__hospA.samplesheet.csv"),
        ("1__hospB.salmon.merged.gene_counts.tsv", "1__hospB.samplesheet.csv")]
    real = [line.split("\t") for line in matrix.read_text().splitlines()]
    sheet_lines = sheet.read_text().splitlines()
    for (m, s), site in zip(pairs, ("hospA", "hospB")):
        mine = [line for line in sheet_lines[1:] if line.endswith(f",{site}")]
        assert s.read_text().splitlines() == [sheet_lines[0]] + mine  # every lane's row, verbatim
        ids = {line.split(",")[0] for line in mine}
        cols = [0, 1] + [j for j, h in enumerate(real[0]) if h in ids]
        assert [line.split("\t") for line in m.read_text().splitlines()] == [[r[j] for j in cols] for r in real]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(f.name for pair in pairs for f in pair)


def test_samplesheet_form_with_an_unknown_sample_writes_nothing(tmp_path):
    from fedsynth.workflows.split import split_samplesheet_sites_to_files
    from testkit import REPO

    fix = REPO / "tests" / "fixtures" / "rnaseq"
    sheet = tmp_path / "sheet.csv"
    lines = (fix / "samplesheet.csv").read_text().splitlines()
    sheet.write_text("\n".join(lines + [lines[1].replace("HOSPA_001", "GHOST_9")]) + "\n")
    with pytest.raises(InputError, match=r"sheet\.csv: 1 samples are not in .*GHOST_9"):
        split_samplesheet_sites_to_files(fix / "salmon.merged.gene_counts.tsv", sheet, site_column="site",
                                         n_sites=3, outdir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
