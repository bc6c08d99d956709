"""One matrix holding every site's samples -> one file per site.

The Nextflow pipeline's ``--mode local`` (and ``-profile test``) plays k
hospitals on one host: :func:`split_sites_to_files` keeps the k largest
sites of a site column and writes each one's rows, copied verbatim, to its
own file. It is ``fedsynth split-sites`` on the command line.

With a samplesheet (:func:`split_samplesheet_sites_to_files`, nf-core's
samplesheet + matrix form) the site column is the samplesheet's, and each
site gets its own samplesheet rows and its own sample columns of the matrix.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import re
from pathlib import Path
from typing import Sequence

from fedsynth.data.io import atomic_path, read_expression
from fedsynth.data.preprocess import split_sites
from fedsynth.errors import FedsynthError, InputError, ParameterError

__all__ = ["split_sites_to_files", "split_samplesheet_sites_to_files"]


def split_sites_to_files(
    data: str | os.PathLike,
    *,
    site_column: str,
    n_sites: int,
    outdir: str | os.PathLike,
    min_samples: int = 4,
    overwrite: bool = False,
    meta_columns: Sequence[str] = (),
    sample_id_column: str | None = None,
) -> list[Path]:
    """Write the ``n_sites`` largest sites of ``data`` to ``outdir``, one file each.

    Parameters
    ----------
    data : str or PathLike
        A samples-by-genes CSV or TSV/TXT file, optionally gzipped, with a
        column naming each sample's site.
    site_column : str
        That column. Its values (stripped of surrounding blanks) are the site
        names; every sample needs one.
    n_sites : int
        How many sites to keep: the largest ones, ties broken by name.
    outdir : str or PathLike
        Created if missing. Site ``s`` of rank ``r`` (0 = the largest) goes to
        ``OUTDIR/<r>__<s>.<csv|tsv>[.gz]``; characters of ``s`` other than
        letters, digits, ``.``, ``_`` and ``-`` become ``_``.
    min_samples : int
        Fewest samples a kept site may have.
    overwrite : bool
        Replace site files that already exist in ``outdir`` (other files there
        are left alone).
    meta_columns, sample_id_column
        As for :func:`fedsynth.data.io.read_expression`: numeric columns that
        are not genes, and the sample ID column (default: the first one).

    Returns
    -------
    list of pathlib.Path
        The files written, by rank.

    Each file holds the header and the site's rows exactly as read (every
    column, same delimiter, same order; gzipped if the input was); no value
    is parsed or changed. The files appear together at the end: on any error
    nothing is written.

    Raises
    ------
    InputError
        Unreadable or unsupported file, unknown column, a row with a wrong
        number of fields, a sample without a site, fewer than ``min_samples``
        samples in a kept site, an existing site file (without ``overwrite``).
    ParameterError
        ``n_sites`` or ``min_samples`` below 1, more sites asked for than the
        column has.
    """
    path = Path(data)
    _check_split_args(path, "the rows of a CSV/TSV file", site_column, "column", n_sites, min_samples)
    raw = read_expression(path, orientation="samples-by-genes", meta_columns=(site_column, *meta_columns),
                          sample_id_column=sample_id_column)
    delim, gz = _delimiter(path)
    header, body = _read_rows(path, delim, gz)
    col = header.index(site_column)
    try:
        parts = split_sites(raw.expr, [""] * len(body), mode="column", n_sites=n_sites,
                            site_values=[row[col].strip() or None for row in body], min_per_site=min_samples)
    except FedsynthError as exc:
        raise type(exc)(f"{path}: {exc}") from None

    names = _safe_names(parts, path, site_column)
    ext = ("csv" if delim == "," else "tsv") + (".gz" if gz else "")
    out = Path(outdir)
    files = [out / f"{rank}__{safe}.{ext}" for rank, safe in enumerate(names)]
    _write_files(out, [(f, header, [body[i] for i in rows], delim, gz) for f, (_, rows) in zip(files, parts)],
                 overwrite)
    return files


def _check_split_args(path: Path, copies: str, site_column, column: str, n_sites, min_samples) -> None:
    """The checks both split forms make before reading: a delimited file, a site column, positive counts."""
    if path.name.lower().endswith(".h5ad"):
        raise InputError(f"{path}: split-sites copies {copies} (optionally .gz), not .h5ad")
    if not site_column:
        raise ParameterError(f"--site-column must name the {column} that holds each sample's site")
    for flag, value in (("--n-sites", n_sites), ("--min-samples", min_samples)):
        if int(value) != value or value < 1:
            raise ParameterError(f"{flag} must be a positive integer, not {value}")


def _safe_names(parts, path, site_column) -> list[str]:
    names = {}
    for site, _ in parts:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", site)
        if safe in names:
            raise InputError(f"{path}: sites {names[safe]!r} and {site!r} of column {site_column!r} "
                             f"would both be named {safe!r}; rename one")
        names[safe] = site
    return list(names)


def _write_files(out: Path, tables, overwrite: bool) -> None:
    """Write every ``(file, header, rows, delim, gz)`` under a temporary name; rename all when all are written."""
    files = [t[0] for t in tables]
    clash = [f for f in files if f.exists()]
    if clash and not (overwrite and all(f.is_file() for f in clash)):
        raise InputError(f"{out}: already holds {', '.join(f.name for f in clash)}; choose another --outdir"
                         + ("" if overwrite else " or pass --overwrite"))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: not a directory (--outdir)")
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        # every file is written under a temporary name; all are renamed when all are written
        with contextlib.ExitStack() as stack:
            for file, header, rows, delim, gz in tables:
                tmp = stack.enter_context(atomic_path(file))
                _write_rows(tmp, header, rows, delim, gz)
    except BaseException as exc:
        for d in created:  # leaf first; only folders this call made, and only if empty
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(exc, OSError):
            raise InputError(f"{out}: cannot write the site files (--outdir): {exc.strerror or exc}") from None
        raise


def _delimiter(path: Path) -> tuple[str, bool]:
    gz = path.name.lower().endswith(".gz")
    return ("," if path.name.lower().removesuffix(".gz").endswith(".csv") else "\t"), gz


def split_samplesheet_sites_to_files(
    data: str | os.PathLike,
    samplesheet: str | os.PathLike,
    *,
    site_column: str,
    n_sites: int,
    outdir: str | os.PathLike,
    min_samples: int = 4,
    overwrite: bool = False,
) -> list[tuple[Path, Path]]:
    """Split a matrix and its samplesheet into the ``n_sites`` largest sites of a samplesheet column.

    Parameters
    ----------
    data : str or PathLike
        The matrix, CSV/TSV (optionally gzipped): genes-by-samples as
        nf-core/rnaseq writes it (``gene_id``, annotation columns, one column
        per sample) or samples-by-genes.
    samplesheet : str or PathLike
        Its samplesheet (:func:`fedsynth.data.io.read_expression`'s
        ``samplesheet``); ``site_column`` is one of its columns.
    site_column, n_sites, outdir, min_samples, overwrite
        As for :func:`split_sites_to_files`.

    Returns
    -------
    list of (pathlib.Path, pathlib.Path)
        Per site, by rank: ``OUTDIR/<r>__<s>.<matrix file name>`` (the gene
        columns and the site's sample columns, or the site's rows, copied
        verbatim) and ``OUTDIR/<r>__<s>.samplesheet.<csv|tsv>`` (the site's
        samplesheet rows, every sequencing run, copied verbatim). The matrix
        keeps its file name after the prefix, so a salmon or RSEM matrix is
        still recognised as one.

    Raises
    ------
    InputError
        As :func:`split_sites_to_files`, and samples of the matrix missing
        from the samplesheet or the other way round.
    """
    mpath, spath = Path(data), Path(samplesheet)
    _check_split_args(mpath, "the columns of a CSV/TSV matrix", site_column, "samplesheet column", n_sites,
                      min_samples)
    raw = read_expression(mpath, samplesheet=spath, label_column=site_column)  # the matching of samples, checked
    sites = raw.labels.reindex(raw.expr.index)
    try:
        parts = split_sites(raw.expr, [""] * len(sites), mode="column", n_sites=n_sites,
                            site_values=[None if v is None or str(v).strip() == "" else str(v).strip()
                                         for v in sites], min_per_site=min_samples)
    except FedsynthError as exc:
        raise type(exc)(f"{spath}: {exc}") from None
    names = _safe_names(parts, spath, site_column)

    m_delim, m_gz = _delimiter(mpath)
    m_header, m_body = _read_rows(mpath, m_delim, m_gz)
    s_delim, s_gz = _delimiter(spath)
    s_header, s_body = _read_rows(spath, s_delim, s_gz)
    s_id = s_header.index("sample") if "sample" in s_header else 0
    samples_in_header = set(raw.expr.index) <= set(m_header)
    s_ext = ("csv" if s_delim == "," else "tsv") + (".gz" if s_gz else "")
    out = Path(outdir)
    tables, files = [], []
    for rank, (safe, (_, rows)) in enumerate(zip(names, parts)):
        mine = {str(raw.expr.index[i]) for i in rows}
        if samples_in_header:  # genes-by-samples: the gene and annotation columns, then this site's samples
            keep = [j for j, h in enumerate(m_header) if h in mine or h not in set(raw.expr.index)]
            m_rows = [[row[j] for j in keep] for row in m_body]
            header = [m_header[j] for j in keep]
        else:
            header, m_rows = m_header, [row for row in m_body if row[0].strip() in mine]
        matrix = out / f"{rank}__{safe}.{mpath.name}"
        sheet = out / f"{rank}__{safe}.samplesheet.{s_ext}"
        tables += [(matrix, header, m_rows, m_delim, m_gz),
                   (sheet, s_header, [r for r in s_body if r[s_id].strip() in mine], s_delim, s_gz)]
        files.append((matrix, sheet))
    _write_files(out, tables, overwrite)
    return files


def _read_rows(path: Path, delim: str, gz: bool) -> tuple[list[str], list[list[str]]]:
    """The header and data rows of a delimited file, as strings (blank lines skipped)."""
    try:
        with (gzip.open if gz else open)(path, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delim)
            header = next(reader)
            body = []
            for row in reader:
                if row and len(row) != len(header):
                    raise InputError(f"{path}: line {reader.line_num} has {len(row)} fields, "
                                     f"the header has {len(header)}")
                if row:
                    body.append(row)
    except (csv.Error, UnicodeDecodeError, EOFError, OSError, StopIteration) as exc:
        raise InputError(f"{path}: cannot read its rows: {str(exc).strip() or type(exc).__name__}") from None
    return header, body


def _write_rows(path: Path, header: list[str], rows: list[list[str]], delim: str, gz: bool) -> None:
    """Write header and rows with ``delim``; gzip (no name, no time stamp: same bytes every run) if ``gz``."""
    with open(path, "wb") as raw:
        binary = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
            writer = csv.writer(text, delimiter=delim, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
