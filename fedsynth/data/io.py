"""Reading and writing expression matrices, and atomic output files.

Supported formats, chosen by file extension:

- ``.csv`` (comma) and ``.tsv`` / ``.txt`` (tab), each optionally gzipped
  (``.csv.gz``, ``.tsv.gz``, ``.txt.gz``);
- ``.h5ad`` (AnnData): ``obs`` are samples, ``var`` are genes; ``X``, a
  layer (``--layer counts``) or ``.raw`` (``--layer raw``).

nf-core/rnaseq's merged matrices (``salmon.merged.gene_counts.tsv``,
``rsem.merged.gene_counts.tsv``: ``gene_id``, annotation columns such as
``gene_name`` or ``transcript_id(s)``, then one column per sample) are read
genes-by-samples, their annotation kept beside the genes
(:attr:`RawTable.gene_annotation`), and their fractional estimated counts
marked as such (:attr:`RawTable.estimated_counts`) so that counts
validation rounds them as tximport/DESeq2 do. A samplesheet (``--samplesheet``,
nf-core style: a ``sample`` column, one row per sequencing run) supplies the
labels and the sample metadata. Ensembl version suffixes of gene IDs
(``ENSG00000000003.15``) are removed, so that sites on different Ensembl
releases match (:attr:`RawTable.notes` says so).

Every user-caused problem is raised as :class:`~fedsynth.errors.InputError`
(a bad file) or :class:`~fedsynth.errors.ParameterError` (a bad option), with
a one-line message that names the file and the problem.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from fedsynth.errors import InputError, ParameterError

__all__ = [
    "RawTable",
    "read_expression",
    "read_gene_annotation",
    "write_table",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
]

SUPPORTED_FORMATS = ".csv, .tsv, .txt (optionally .gz), .h5ad"
#: Gene annotation columns of a genes-by-samples matrix (nf-core/rnaseq: ``gene_name``; RSEM: ``transcript_id(s)``).
ANNOTATION_COLUMNS = ("gene_name", "gene_symbol", "gene_biotype", "transcript_id", "transcript_id(s)",
                      "transcript_ids")
#: The gene ID column's header in nf-core/rnaseq's matrices.
GENE_ID_COLUMN = "gene_id"
#: An Ensembl stable ID with a version (GENCODE's pseudo-autosomal copies end in ``_PAR_Y``).
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[GTPER]\d{11})\.\d+(_PAR_Y)?$")
ORIENTATIONS = ("auto", "samples-by-genes", "genes-by-samples")
_SEPARATORS = {"csv": ",", "tsv": "\t"}


@dataclass
class RawTable:
    """An expression matrix as read from a file, before validation.

    Attributes
    ----------
    expr : pandas.DataFrame
        Samples x genes, float64; index = sample IDs (str), columns = gene IDs (str).
    labels : pandas.Series or None
        Class label per sample (str, missing values as NaN), indexed by sample ID.
    meta : pandas.DataFrame
        Non-expression, non-label columns (e.g. ``er_status``, ``age``), indexed by sample ID.
    path : str
        The file the table was read from (used in error messages).
    gene_annotation : pandas.DataFrame or None
        Annotation columns of a genes-by-samples file (``gene_name``, ...), indexed by the
        gene IDs of ``expr``; ``input_id`` holds each gene's ID as the file wrote it.
    estimated_counts : str or None
        ``"salmon"``, ``"RSEM"`` or ``"nf-core/rnaseq"`` when the file is recognised as a
        merged matrix of estimated counts (fractional values are rounded as counts).
    notes : list of str
        What reading changed, for the logs and the run record (version suffixes removed, ...);
        for an ``.h5ad`` written by ``fedsynth preprocess``, what preprocessing recorded first
        (``uns["fedsynth"]["notes"]``).
    layers : tuple of str
        The layers an ``.h5ad`` file offers (``"raw"`` too when it has ``.raw``).
    """

    expr: pd.DataFrame
    labels: pd.Series | None
    meta: pd.DataFrame
    path: str
    gene_annotation: pd.DataFrame | None = None
    estimated_counts: str | None = None
    notes: list = field(default_factory=list)
    layers: tuple = ()


# --------------------------------------------------------------------------- reading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def _file_kind(path: Path) -> tuple[str, bool]:
    """Return (``"csv"`` | ``"tsv"`` | ``"h5ad"``, gzipped) or raise InputError."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    kind = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".h5ad": "h5ad"}.get(ext)
    if kind is None or (gz and kind == "h5ad"):
        raise InputError(f"{path}: unsupported file format; supported formats: {SUPPORTED_FORMATS}")
    return kind, gz


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")


def _read_delimited(path: Path, kind: str, gz: bool, str_columns: Sequence[str] = (),
                    first_str: bool = True, all_str: bool = False) -> pd.DataFrame:
    """Read a delimited file keeping the header verbatim (duplicate names are not renamed).

    Columns named in ``str_columns``, the first column if ``first_str``, or all
    columns if ``all_str`` are read as str (so IDs like ``001`` survive).
    """
    sep = _SEPARATORS[kind]
    try:
        opener = gzip.open if gz else open
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
        if not header:
            raise InputError(f"{path}: file is empty")
        as_str = {i for i, name in enumerate(header) if all_str or name in str_columns or (i == 0 and first_str)}
        df = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=1,
            names=list(range(len(header))),
            dtype={i: str for i in as_str},
            compression="gzip" if gz else None,
            encoding="utf-8",
        )
    except InputError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, UnicodeDecodeError,
            EOFError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot parse as {kind.upper()}: {_first_line(exc)}") from None
    df.columns = header
    return df


def _read_sheet(path: str | os.PathLike, what: str) -> tuple[Path, pd.DataFrame]:
    """A CSV/TSV of sample information (``what``: "a labels file", "a samplesheet"), every column as str."""
    p = Path(path)
    _check_exists(p)
    kind, gz = _file_kind(p)
    if kind == "h5ad":
        raise InputError(f"{p}: {what} must be CSV or TSV")
    return p, _read_delimited(p, kind, gz, all_str=True)


def _read_labels_file(path: str | os.PathLike) -> pd.Series:
    """Read a two-column (sample id, label) file with a header row."""
    p, df = _read_sheet(path, "a labels file")
    if df.shape[1] < 2:
        raise InputError(f"{p}: a labels file needs two columns (sample id, label); found {df.shape[1]}")
    ids = df.iloc[:, 0]
    if ids.isna().any():
        raise InputError(f"{p}: {int(ids.isna().sum())} rows have no sample ID")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise InputError(f"{p}: {len(dup)} sample IDs appear more than once (e.g. {_examples(dup)})")
    return pd.Series(df.iloc[:, 1].to_numpy(dtype=object), index=pd.Index(ids, dtype=object), name="label")


def _examples(values, k: int = 3) -> str:
    values = [str(v) for v in values]
    more = ", ..." if len(values) > k else ""
    return ", ".join(values[:k]) + more


def _attach_labels(expr: pd.DataFrame, labels: pd.Series, path: Path, labels_path) -> pd.Series:
    missing = expr.index[~expr.index.isin(labels.index)]
    if len(missing):
        raise InputError(
            f"{labels_path}: {len(missing)} samples of {path} have no label (e.g. {_examples(missing)})"
        )
    return labels.reindex(expr.index)


def _numeric_or_meta(df: pd.DataFrame, path: Path, meta_columns: Sequence[str]) -> tuple[list[int], list[int]]:
    """Split column positions into genes (numeric) and metadata (non-numeric or named)."""
    genes, meta = [], []
    for i, name in enumerate(df.columns):
        col = df.iloc[:, i]
        if name in meta_columns:
            meta.append(i)
        elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            genes.append(i)
        else:
            present = col.dropna()
            parsed = pd.to_numeric(present, errors="coerce")
            bad = present[parsed.isna()]
            if len(bad) and parsed.notna().mean() >= 0.5:
                raise InputError(
                    f"{path}: column '{name}' is mostly numeric but has {len(bad)} non-numeric values "
                    f"(e.g. '{bad.iloc[0]}' at sample {bad.index[0]}); "
                    f"fix the values or list the column as metadata"
                )
            meta.append(i)
    return genes, meta


def _samples_by_genes(df, path, label_column, meta_columns, sample_id_column) -> tuple:
    header = list(df.columns)
    for name in list(meta_columns) + [c for c in (label_column, sample_id_column) if c is not None]:
        if name not in header:
            raise InputError(f"{path}: column '{name}' not found")
    id_pos = header.index(sample_id_column) if sample_id_column is not None else 0
    ids = df.iloc[:, id_pos]
    if ids.isna().any():
        first = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError(f"{path}: {int(ids.isna().sum())} rows have no sample ID (first at data row {first + 1})")
    keep = [i for i in range(len(header)) if i != id_pos]
    labels = None
    if label_column is not None:
        label_pos = header.index(label_column)
        labels = pd.Series(df.iloc[:, label_pos].to_numpy(dtype=object), index=pd.Index(ids, dtype=object),
                           name=label_column)
        keep.remove(label_pos)
    rest = df.iloc[:, keep]
    rest.index = pd.Index(ids, dtype=object)
    gene_pos, meta_pos = _numeric_or_meta(rest, path, meta_columns)
    expr = rest.iloc[:, gene_pos].astype(np.float64)
    expr.columns = pd.Index([str(c) for c in expr.columns], dtype=object)
    return expr, labels, rest.iloc[:, meta_pos]


def _genes_by_samples(df, path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Samples x genes from a genes-by-samples table, and its annotation columns (or None)."""
    gene_ids = df.iloc[:, 0]
    if gene_ids.isna().any():
        raise InputError(f"{path}: {int(gene_ids.isna().sum())} rows have no gene ID")
    header = list(df.columns)
    annot_pos = _annotation_positions(header)
    sample_pos = [i for i in range(1, len(header)) if i not in annot_pos]
    if not sample_pos:
        kept = f" after the gene ID and annotation columns ({', '.join(header[i] for i in annot_pos)})" if annot_pos else ""
        raise InputError(f"{path}: no sample columns{kept}")
    values = df.iloc[:, sample_pos]
    bad = [header[i] for i in sample_pos if not pd.api.types.is_numeric_dtype(df.iloc[:, i])]
    if bad:
        hint = (f"; annotation columns are recognised by name ({', '.join(ANNOTATION_COLUMNS)})"
                if header[0] == GENE_ID_COLUMN else "")
        raise InputError(f"{path}: {len(bad)} sample columns are not numeric (e.g. {_examples(bad)}){hint}")
    ids = pd.Index(gene_ids.astype(str), dtype=object)
    expr = values.astype(np.float64).T
    expr.index = pd.Index([str(c) for c in values.columns], dtype=object)
    expr.columns = ids
    return expr, _annotation_frame(df, annot_pos, ids)


def _annotation_positions(header: Sequence[str]) -> list[int]:
    """Positions of the annotation columns after a genes-by-samples table's gene ID column."""
    return [i for i in range(1, len(header)) if header[i] in ANNOTATION_COLUMNS]


def _annotation_frame(df: pd.DataFrame, positions: list[int], ids) -> pd.DataFrame | None:
    """The annotation columns at ``positions``, indexed by the gene IDs (None if there are none)."""
    if not positions:
        return None
    return pd.DataFrame({df.columns[i]: df.iloc[:, i].astype(object).to_numpy() for i in positions},
                        index=pd.Index(ids, dtype=object))


def _estimated_counts_source(path: Path, header: Sequence[str]) -> str | None:
    """Which tool wrote ``path``, if it is one of nf-core/rnaseq's merged estimated-counts matrices.

    Recognised by layout and name: a first column ``gene_id``, and then
    nf-core/rnaseq's second column (``gene_name``; RSEM's ``transcript_id(s)``)
    or a file name that says counts (``*gene_counts*``, ``*transcript_counts*``)
    or names the quantifier. TPM files (``*tpm*``) never are; TPM or log values
    in this layout are still refused by counts validation (column sums of 1e6,
    maxima of log scale).
    """
    name = path.name.lower()
    if not header or header[0] != GENE_ID_COLUMN or "tpm" in name:
        return None
    if "transcript_id(s)" in header or "rsem" in name:
        return "RSEM"
    if "salmon" in name:
        return "salmon"
    if "gene_counts" in name or "transcript_counts" in name or header[1:2] == ["gene_name"]:
        return "nf-core/rnaseq"
    return None


def _unversioned(ids: list[str], path: Path) -> tuple[list[str], str] | None:
    """``ids`` without Ensembl version suffixes and the note saying so; None if none had one."""
    stripped = [(_ENSEMBL_VERSION.sub(r"\1\2", g)) for g in ids]
    changed = sum(a != b for a, b in zip(ids, stripped))
    if not changed:
        return None  # duplicates are validation's to report
    twice = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(twice):
        raise InputError(f"{path}: {len(twice)} gene IDs appear more than once (e.g. {_examples(twice)})")
    dup = pd.Index(stripped)[pd.Index(stripped).duplicated()].unique()
    if len(dup):
        originals = [g for g, s in zip(ids, stripped) if s == dup[0]]
        raise InputError(f"{path}: {len(dup)} gene IDs appear more than once without their Ensembl version "
                         f"(e.g. {', '.join(originals[:2])})")
    first = next(i for i, (a, b) in enumerate(zip(ids, stripped)) if a != b)
    return stripped, (f"gene IDs: Ensembl version suffixes removed from {changed} of {len(ids)} IDs "
                      f"(e.g. {ids[first]} -> {stripped[first]}), so that sites on other Ensembl releases match")


def _with_unversioned_index(annotation: pd.DataFrame | None, ids: list[str], stripped: list[str]) -> pd.DataFrame:
    """``annotation`` (or an empty frame) re-indexed by ``stripped``, the IDs as written in ``input_id``."""
    out = pd.DataFrame(index=pd.Index(ids, dtype=object)) if annotation is None else annotation.copy()
    out.insert(0, "input_id", ids)
    out.index = pd.Index(stripped, dtype=object)
    return out


def _strip_ensembl_versions(expr: pd.DataFrame, annotation: pd.DataFrame | None, path: Path):
    """Remove Ensembl version suffixes from the gene IDs; returns (expr, annotation, note or None)."""
    ids = [str(g) for g in expr.columns]
    found = _unversioned(ids, path)
    if found is None:
        return expr, annotation, None
    stripped, note = found
    expr = expr.copy()
    expr.columns = pd.Index(stripped, dtype=object)
    return expr, _with_unversioned_index(annotation, ids, stripped), note


def _read_samplesheet(path, label_column: str | None) -> tuple[pd.Series | None, pd.DataFrame]:
    """Labels and sample metadata from an nf-core-style samplesheet; returns (labels, meta).

    The sample ID column is ``sample`` if there is one, else the first column.
    Rows that repeat a sample (one per sequencing run) are merged; their label
    must agree. Metadata columns whose values differ between a sample's rows
    (e.g. ``fastq_1``) are dropped.
    """
    p, df = _read_sheet(path, "a samplesheet")
    header = list(df.columns)
    id_col = "sample" if "sample" in header else header[0]
    if label_column is not None and label_column not in header:
        raise InputError(f"{p}: column '{label_column}' not found (columns: {_examples(header, 8)})")
    ids = df[id_col]
    if ids.isna().any():
        raise InputError(f"{p}: {int(ids.isna().sum())} rows have no sample ID in '{id_col}'")
    ids = ids.str.strip()
    df = df.assign(**{id_col: ids})
    groups = df.groupby(id_col, sort=False)
    if label_column is not None:
        n_labels = groups[label_column].nunique(dropna=False)
        clash = n_labels[n_labels > 1]
        if len(clash):
            sample = clash.index[0]
            values = sorted(str(v) for v in df.loc[df[id_col] == sample, label_column].unique())
            raise InputError(f"{p}: sample {sample} has rows with different '{label_column}' values "
                             f"({', '.join(values)}); a sample's rows (one per sequencing run) must agree")
    first = groups.first()
    constant = [c for c in header if c != id_col and (groups[c].nunique(dropna=False) <= 1).all()]
    meta = first[[c for c in constant if c != label_column]]
    meta.index = pd.Index(first.index.astype(str), dtype=object)
    labels = None
    if label_column is not None:
        labels = pd.Series(first[label_column].to_numpy(dtype=object), index=meta.index, name=label_column)
    return labels, meta


def _match_samplesheet(expr: pd.DataFrame, ss_index: pd.Index, path: Path, ss_path) -> None:
    """Every sample of the matrix is in the samplesheet and every samplesheet sample in the matrix."""
    missing = expr.index[~expr.index.isin(ss_index)]
    if len(missing):
        raise InputError(f"{ss_path}: {len(missing)} samples of {path} are not in the samplesheet "
                         f"(e.g. {_examples(missing)})")
    unknown = ss_index[~ss_index.isin(expr.index)]
    if len(unknown):
        raise InputError(f"{ss_path}: {len(unknown)} samples are not in {path} (e.g. {_examples(unknown)})")


def _read_h5ad(path: Path, label_column, meta_columns, sample_id_column, layer: str | None = None) -> tuple:
    import anndata

    try:
        adata = anndata.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(f"{path}: cannot parse as H5AD: {_first_line(exc)}") from None
    obs = adata.obs
    for name in list(meta_columns) + [c for c in (label_column, sample_id_column) if c is not None]:
        if name not in obs.columns:
            raise InputError(f"{path}: column '{name}' not found in obs")
    available = tuple(adata.layers.keys()) + (("raw",) if adata.raw is not None else ())
    var_names, raw_var = adata.var_names, None
    if layer is None:
        X = adata.X
        if X is None:
            raise InputError(f"{path}: the file has no expression matrix (X)")
    elif layer in adata.layers:
        X = adata.layers[layer]
    elif layer == "raw" and adata.raw is not None:
        X, var_names, raw_var = adata.raw.X, adata.raw.var_names, adata.raw.var
    else:
        offered = ", ".join(available) if available else "none"
        raise InputError(f"{path}: no layer '{layer}' (--layer; this file has: {offered})")
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    ids = obs[sample_id_column].astype(str) if sample_id_column is not None else obs.index.astype(str)
    index = pd.Index(ids, dtype=object)
    expr = pd.DataFrame(X.astype(np.float64), index=index,
                        columns=pd.Index(var_names.astype(str), dtype=object))
    labels = None
    if label_column is not None:
        col = obs[label_column].astype(object)
        labels = pd.Series([v if pd.isna(v) else str(v) for v in col], index=index, dtype=object,
                           name=label_column)
    meta = obs.drop(columns=[c for c in (label_column, sample_id_column) if c is not None])
    meta.index = index
    annotation = _h5ad_annotation(path, adata.var if raw_var is None else raw_var)
    recorded = adata.uns.get("fedsynth", {}).get("notes", []) if isinstance(adata.uns.get("fedsynth"), dict) else []
    return expr, labels, meta, available, annotation, [str(n) for n in np.atleast_1d(recorded)]


def _h5ad_annotation(path: Path, var: pd.DataFrame) -> pd.DataFrame | None:
    """The gene annotation columns of an H5AD's ``var`` (as :func:`write_table` stores them), or None."""
    cols = [c for c in var.columns if c in ANNOTATION_COLUMNS or c == "input_id"]
    if not cols:
        return None
    out = var[cols].astype(object).copy()
    out.index = pd.Index(var.index.astype(str), dtype=object)
    return out


def read_gene_annotation(path: str | os.PathLike) -> pd.DataFrame | None:
    """The gene annotation of a matrix file (nf-core/rnaseq TSV, or an H5AD ``var``), or None.

    Indexed by gene ID without Ensembl version suffix; an ``input_id`` column
    keeps the ID as the file wrote it where that differs. Only the gene ID and
    annotation columns are used: no sample value is read.
    """
    p = Path(path)
    _check_exists(p)
    kind, gz = _file_kind(p)
    if kind == "h5ad":
        import anndata

        try:
            adata = anndata.read_h5ad(p, backed="r")
            var = adata.var.copy()
            adata.file.close()
        except Exception as exc:
            raise InputError(f"{p}: cannot parse as H5AD: {_first_line(exc)}") from None
        annotation = _h5ad_annotation(p, var)
        ids = [str(g) for g in var.index]
    else:
        df = _read_delimited(p, kind, gz, all_str=True)
        header = list(df.columns)
        if header[:1] != [GENE_ID_COLUMN]:
            raise InputError(f"{p}: no gene annotation: the first column is not '{GENE_ID_COLUMN}'")
        ids = df.iloc[:, 0].astype(str).tolist()
        annotation = _annotation_frame(df, _annotation_positions(header), ids)
    if annotation is not None and "input_id" in annotation.columns:
        return annotation
    found = _unversioned(ids, p)
    return annotation if found is None else _with_unversioned_index(annotation, ids, found[0])


def read_expression(
    path: str | os.PathLike,
    *,
    label_column: str | None = None,
    labels_file: str | os.PathLike | None = None,
    samplesheet: str | os.PathLike | None = None,
    layer: str | None = None,
    orientation: str = "auto",
    meta_columns: Sequence[str] = (),
    sample_id_column: str | None = None,
) -> RawTable:
    """Read an expression matrix (CSV/TSV, optionally gzipped, or H5AD).

    Parameters
    ----------
    path : str or PathLike
        The matrix file; the format comes from the extension.
    label_column : str, optional
        Column (CSV/TSV header or H5AD ``obs`` column) holding the class labels;
        with ``samplesheet``, the samplesheet's column.
    labels_file : str or PathLike, optional
        CSV/TSV with a header row and two columns: sample ID, label. Every sample
        of the matrix must have a label; extra IDs in the labels file are ignored.
        Give either ``label_column`` or ``labels_file``, not both.
    samplesheet : str or PathLike, optional
        nf-core-style CSV/TSV, one row per sample or per sequencing run: the
        sample IDs in ``sample`` (else the first column), the labels in
        ``label_column``, other columns become sample metadata. Repeated rows of
        a sample are merged. Its samples and the matrix's must be the same.
    layer : str, optional
        For ``.h5ad``: read ``layers[layer]`` instead of ``X``; ``"raw"`` reads
        ``.raw`` (when the file has no layer of that name).
    orientation : {"auto", "samples-by-genes", "genes-by-samples"}
        Layout of a CSV/TSV file. In ``"samples-by-genes"`` rows are samples; in
        ``"genes-by-samples"`` rows are genes (first column: gene IDs) and the
        header holds sample IDs, and labels can only come from ``labels_file``.
        ``"auto"`` decides as follows:

        1. ``label_column`` is given (without ``samplesheet``): it must be a
           header, and rows are samples;
        2. else the first header is ``gene_id`` (nf-core/rnaseq): genes-by-samples;
        3. else ``labels_file`` or ``samplesheet`` is given: the axis (row IDs or column headers) that
           shares more IDs with the labels file holds the samples (a tie is an error);
        4. else for ``.h5ad``: samples-by-genes;
        5. else an InputError asks for an explicit ``--orientation``.

        H5AD files are always read with ``obs`` as samples.
    meta_columns : sequence of str
        Columns that are sample metadata even though numeric (e.g. ``age``). In a
        samples-by-genes CSV/TSV every non-numeric column is metadata anyway;
        every other numeric column is a gene.
    sample_id_column : str, optional
        Column holding sample IDs (samples-by-genes only); default: the first
        column (CSV/TSV) or ``obs_names`` (H5AD).

    Returns
    -------
    RawTable

    Raises
    ------
    InputError
        Missing, unsupported or unparseable file; unknown column; samples without
        a label in ``labels_file``; ambiguous orientation.
    ParameterError
        Unknown ``orientation``, or an option that does not fit the orientation.
    """
    p = Path(path)
    if orientation not in ORIENTATIONS:
        raise ParameterError(f"--orientation must be one of {', '.join(ORIENTATIONS)}, not '{orientation}'")
    if samplesheet is not None and labels_file is not None:
        raise ParameterError("give either --samplesheet (with --label-column) or --labels-file, not both")
    if label_column is not None and labels_file is not None:
        raise ParameterError("give either --label-column or --labels-file, not both")
    if samplesheet is not None and label_column is None:
        raise ParameterError("--samplesheet needs --label-column: the samplesheet column with the class labels")
    _check_exists(p)
    kind, gz = _file_kind(p)
    if layer is not None and kind != "h5ad":
        raise ParameterError(f"--layer applies to .h5ad files, not {p}")
    ss_meta = None
    if samplesheet is not None:
        labels_from_file, ss_meta = _read_samplesheet(samplesheet, label_column)
        matrix_label = None  # the label is the samplesheet's column
    else:
        labels_from_file = _read_labels_file(labels_file) if labels_file is not None else None
        matrix_label = label_column
    annotation, estimated, layers, earlier = None, None, (), []

    if kind == "h5ad":
        if orientation == "genes-by-samples":
            raise ParameterError(f"--orientation genes-by-samples does not apply to {p}: H5AD obs are samples")
        expr, labels, meta, layers, annotation, earlier = _read_h5ad(p, matrix_label, meta_columns,
                                                                     sample_id_column, layer)
    else:
        str_columns = tuple(c for c in (matrix_label, sample_id_column) if c is not None)
        df = _read_delimited(p, kind, gz, str_columns=str_columns, first_str=sample_id_column is None)
        if orientation == "auto":
            if matrix_label is None and list(df.columns)[:1] == [GENE_ID_COLUMN]:
                orientation = "genes-by-samples"  # nf-core/rnaseq's layout
            else:
                orientation = _auto_orientation(df, p, matrix_label, labels_from_file, sample_id_column)
        if orientation == "genes-by-samples":
            if matrix_label is not None:
                raise ParameterError("--label-column cannot be used with genes-by-samples; use --labels-file "
                                     "or --samplesheet")
            if sample_id_column is not None or meta_columns:
                raise ParameterError("--sample-id-column and --meta-columns apply to samples-by-genes files only")
            (expr, annotation), labels = _genes_by_samples(df, p), None
            estimated = _estimated_counts_source(p, list(df.columns))
            meta = pd.DataFrame(index=expr.index)
        else:
            expr, labels, meta = _samples_by_genes(df, p, matrix_label, meta_columns, sample_id_column)

    if samplesheet is not None:
        _match_samplesheet(expr, labels_from_file.index, p, samplesheet)
        labels = labels_from_file.reindex(expr.index)
        extra = ss_meta.reindex(expr.index)
        meta = pd.concat([meta, extra[[c for c in extra.columns if c not in meta.columns]]], axis=1)
    elif labels_from_file is not None:
        labels = _attach_labels(expr, labels_from_file, p, labels_file)
    expr, annotation, note = _strip_ensembl_versions(expr, annotation, p)
    return RawTable(expr=expr, labels=labels, meta=meta, path=str(p), gene_annotation=annotation,
                    estimated_counts=estimated, notes=earlier + ([note] if note else []), layers=layers)


def _auto_orientation(df, path, label_column, labels_from_file, sample_id_column) -> str:
    if label_column is not None:
        if label_column not in df.columns:
            raise InputError(f"{path}: column '{label_column}' not found")
        return "samples-by-genes"
    if labels_from_file is not None:
        id_pos = list(df.columns).index(sample_id_column) if sample_id_column in df.columns else 0
        known = set(labels_from_file.index)
        in_rows = int(df.iloc[:, id_pos].isin(known).sum())
        in_cols = sum(1 for c in df.columns if c in known)
        if in_rows == in_cols == 0:
            raise InputError(f"{path}: no sample ID of the labels file appears in the rows or the header")
        if in_rows != in_cols:
            return "samples-by-genes" if in_rows > in_cols else "genes-by-samples"
        raise InputError(f"{path}: cannot tell rows from columns; pass --orientation")
    raise InputError(f"{path}: cannot tell whether rows are samples or genes; pass --orientation "
                     "(or --label-column / --labels-file)")


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file (if created) is removed and ``path`` is
    left untouched. The temporary name keeps the final extension, so writers
    that infer the format from it behave the same.

    Parameters
    ----------
    path : str or PathLike
        The final output file.
    overwrite : bool
        If False and ``path`` exists, raise InputError before writing anything.
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise InputError(f"{final}: file exists; refusing to overwrite it (pass --overwrite)")
    if not final.parent.is_dir():
        raise InputError(f"{final}: directory {final.parent} does not exist")
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON (indent 2, key order kept, no NaN/inf) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _check_uns(value, key: str = "uns") -> None:
    """Raise TypeError if ``value`` cannot be stored in an H5AD ``uns``."""
    scalar = (str, bool, int, float, np.integer, np.floating, np.bool_)
    if isinstance(value, scalar):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{key}: keys must be str, got {k!r}")
            _check_uns(v, f"{key}.{k}")
        return
    if isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value):
        return
    raise TypeError(f"{key}: {type(value).__name__} cannot be stored in an H5AD file")


def write_table(
    expr: pd.DataFrame,
    labels: pd.Series | None,
    path: str | os.PathLike,
    *,
    label_column: str = "label",
    overwrite: bool = False,
    uns: dict | None = None,
    var: pd.DataFrame | None = None,
    layers: dict | None = None,
) -> None:
    """Write a samples x genes matrix with an optional label column, atomically.

    Parameters
    ----------
    expr : pandas.DataFrame
        Samples x genes; the index holds sample IDs.
    labels : pandas.Series or None
        One label per row of ``expr`` (matched by position).
    path : str or PathLike
        ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) or ``.h5ad``. CSV/TSV get a
        ``sample_id`` column, then ``label_column``, then one column per gene.
        H5AD gets float32 ``X``, ``obs[label_column]`` (categorical) and ``uns``.
    label_column : str
        Name of the label column (CSV/TSV) or ``obs`` column (H5AD).
    overwrite : bool
        Replace an existing file; otherwise an existing file is an InputError.
    uns : dict, optional
        Unstructured metadata, stored in H5AD files only; values must be str,
        numbers, lists of those, or nested dicts of those.
    var : pandas.DataFrame, optional
        Gene annotation (H5AD only), one row per column of ``expr`` in that order.
    layers : dict, optional
        H5AD only: more matrices the shape of ``expr`` (e.g. ``{"counts": ...}``).
    """
    p = Path(path)
    kind, gz = _file_kind(p)
    if labels is not None and len(labels) != len(expr):
        raise ValueError(f"{len(labels)} labels for {len(expr)} samples")
    if labels is not None and label_column in expr.columns:
        raise ParameterError(f"--label-column '{label_column}' is also a gene name")
    sample_ids = pd.Index([str(i) for i in expr.index], dtype=object)
    genes = pd.Index([str(g) for g in expr.columns], dtype=object)
    if kind == "h5ad":
        import anndata

        if uns is not None:
            _check_uns(uns)
        obs = pd.DataFrame(index=sample_ids)
        if labels is not None:
            obs[label_column] = pd.Categorical([str(v) for v in labels])
        var_frame = pd.DataFrame(index=genes)
        if var is not None:
            for name in var.columns:
                var_frame[str(name)] = ["" if pd.isna(v) else str(v) for v in var[name]]
        adata = anndata.AnnData(X=expr.to_numpy(dtype=np.float32), obs=obs, var=var_frame, uns=dict(uns or {}),
                                layers={k: np.asarray(v) for k, v in (layers or {}).items()})
        with atomic_path(p, overwrite=overwrite) as tmp:
            adata.write_h5ad(tmp)
        return
    values = expr.to_numpy()
    # integer matrices (counts) stay integers in text output
    values = values.astype(np.int64) if np.issubdtype(values.dtype, np.integer) else values.astype(np.float64)
    out = pd.DataFrame(values, index=sample_ids, columns=genes)
    if labels is not None:
        out.insert(0, label_column, [str(v) for v in labels])
    out.index.name = "sample_id"
    with atomic_path(p, overwrite=overwrite) as tmp:
        out.to_csv(tmp, sep=_SEPARATORS[kind], compression="gzip" if gz else None)
