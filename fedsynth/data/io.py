"""Reading and writing expression matrices, and atomic output files.

Supported formats, chosen by file extension:

- ``.csv`` (comma) and ``.tsv`` / ``.txt`` (tab), each optionally gzipped
  (``.csv.gz``, ``.tsv.gz``, ``.txt.gz``);
- ``.h5ad`` (AnnData): ``obs`` are samples, ``var`` are genes.

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
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from fedsynth.errors import InputError, ParameterError

__all__ = [
    "RawTable",
    "read_expression",
    "write_table",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
]

SUPPORTED_FORMATS = ".csv, .tsv, .txt (optionally .gz), .h5ad"
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
    """

    expr: pd.DataFrame
    labels: pd.Series | None
    meta: pd.DataFrame
    path: str


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


def _read_labels_file(path: str | os.PathLike) -> pd.Series:
    """Read a two-column (sample id, label) file with a header row."""
    p = Path(path)
    _check_exists(p)
    kind, gz = _file_kind(p)
    if kind == "h5ad":
        raise InputError(f"{p}: a labels file must be CSV or TSV")
    df = _read_delimited(p, kind, gz, all_str=True)
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


def _genes_by_samples(df, path) -> pd.DataFrame:
    gene_ids = df.iloc[:, 0]
    if gene_ids.isna().any():
        raise InputError(f"{path}: {int(gene_ids.isna().sum())} rows have no gene ID")
    values = df.iloc[:, 1:]
    bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
    if bad:
        raise InputError(f"{path}: {len(bad)} sample columns are not numeric (e.g. {_examples(bad)})")
    expr = values.astype(np.float64).T
    expr.index = pd.Index([str(c) for c in values.columns], dtype=object)
    expr.columns = pd.Index(gene_ids.astype(str), dtype=object)
    return expr


def _read_h5ad(path: Path, label_column, meta_columns, sample_id_column) -> tuple:
    import anndata

    try:
        adata = anndata.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a corrupt file
        raise InputError(f"{path}: cannot parse as H5AD: {_first_line(exc)}") from None
    obs = adata.obs
    for name in list(meta_columns) + [c for c in (label_column, sample_id_column) if c is not None]:
        if name not in obs.columns:
            raise InputError(f"{path}: column '{name}' not found in obs")
    if adata.X is None:
        raise InputError(f"{path}: the file has no expression matrix (X)")
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    ids = obs[sample_id_column].astype(str) if sample_id_column is not None else obs.index.astype(str)
    index = pd.Index(ids, dtype=object)
    expr = pd.DataFrame(X.astype(np.float64), index=index,
                        columns=pd.Index(adata.var_names.astype(str), dtype=object))
    labels = None
    if label_column is not None:
        col = obs[label_column].astype(object)
        labels = pd.Series([v if pd.isna(v) else str(v) for v in col], index=index, dtype=object,
                           name=label_column)
    meta = obs.drop(columns=[c for c in (label_column, sample_id_column) if c is not None])
    meta.index = index
    return expr, labels, meta


def read_expression(
    path: str | os.PathLike,
    *,
    label_column: str | None = None,
    labels_file: str | os.PathLike | None = None,
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
        Column (CSV/TSV header or H5AD ``obs`` column) holding the class labels.
    labels_file : str or PathLike, optional
        CSV/TSV with a header row and two columns: sample ID, label. Every sample
        of the matrix must have a label; extra IDs in the labels file are ignored.
        Give either ``label_column`` or ``labels_file``, not both.
    orientation : {"auto", "samples-by-genes", "genes-by-samples"}
        Layout of a CSV/TSV file. In ``"samples-by-genes"`` rows are samples; in
        ``"genes-by-samples"`` rows are genes (first column: gene IDs) and the
        header holds sample IDs, and labels can only come from ``labels_file``.
        ``"auto"`` decides as follows:

        1. ``label_column`` is given: it must be a header, and rows are samples;
        2. else ``labels_file`` is given: the axis (row IDs or column headers) that
           shares more IDs with the labels file holds the samples (a tie is an error);
        3. else for ``.h5ad``: samples-by-genes;
        4. else an InputError asks for an explicit ``--orientation``.

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
    if label_column is not None and labels_file is not None:
        raise ParameterError("give either --label-column or --labels-file, not both")
    _check_exists(p)
    kind, gz = _file_kind(p)
    labels_from_file = _read_labels_file(labels_file) if labels_file is not None else None

    if kind == "h5ad":
        if orientation == "genes-by-samples":
            raise ParameterError(f"--orientation genes-by-samples does not apply to {p}: H5AD obs are samples")
        expr, labels, meta = _read_h5ad(p, label_column, meta_columns, sample_id_column)
    else:
        str_columns = tuple(c for c in (label_column, sample_id_column) if c is not None)
        df = _read_delimited(p, kind, gz, str_columns=str_columns, first_str=sample_id_column is None)
        if orientation == "auto":
            orientation = _auto_orientation(df, p, label_column, labels_from_file, sample_id_column)
        if orientation == "genes-by-samples":
            if label_column is not None:
                raise ParameterError("--label-column cannot be used with genes-by-samples; use --labels-file")
            if sample_id_column is not None or meta_columns:
                raise ParameterError("--sample-id-column and --meta-columns apply to samples-by-genes files only")
            expr, labels = _genes_by_samples(df, p), None
            meta = pd.DataFrame(index=expr.index)
        else:
            expr, labels, meta = _samples_by_genes(df, p, label_column, meta_columns, sample_id_column)

    if labels_from_file is not None:
        labels = _attach_labels(expr, labels_from_file, p, labels_file)
    return RawTable(expr=expr, labels=labels, meta=meta, path=str(p))


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
        adata = anndata.AnnData(X=expr.to_numpy(dtype=np.float32), obs=obs, var=pd.DataFrame(index=genes),
                                uns=dict(uns or {}))
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
