"""Validation, normalisation, gene harmonisation, site and holdout splitting.

:func:`validate_and_normalise` turns a :class:`~fedsynth.data.io.RawTable` into a
:class:`Cohort` (plain numpy arrays, log-scale expression) or raises a one-line
:class:`~fedsynth.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from fedsynth.errors import InputError, ParameterError
from fedsynth.data.io import RawTable

__all__ = [
    "Cohort",
    "validate_and_normalise",
    "constant_genes",
    "harmonise_genes",
    "split_sites",
    "split_holdout",
    "as_labels",
    "expression_as_validated",
]

log = logging.getLogger("fedsynth")

INPUT_KINDS = ("counts", "log")
LOG_MAX = 50.0  # log-scale values above this look like raw counts
INT_TOL = 1e-6
#: TPM (and CPM) columns sum to 1e6: counts input whose every sample sums to within this share of it is refused.
TPM_SUM, TPM_TOL = 1e6, 0.01


#: The largest log1p(CPM) a gene can have (all of a sample's reads on it).
LOG1P_CPM_MAX = math.log1p(TPM_SUM)
#: Public value range of an expression value per input kind (no data needed):
#: ``log``: log2-type expression (TPM/FPKM/RSEM, microarray) lies in [0, 20];
#: ``counts``: log1p(CPM) lies in [0, :data:`LOG1P_CPM_MAX`] (13.8), within [0, 14].
PUBLIC_RANGE = {"log": (0.0, 20.0), "counts": (0.0, 14.0)}

@dataclass
class Cohort:
    """One site's validated, normalised data.

    Attributes
    ----------
    X : numpy.ndarray
        float64, samples x genes, log-scale expression (log1p CPM for counts input).
    labels : numpy.ndarray
        Class label per sample (dtype object, str values).
    sample_ids, genes : list of str
    input_kind : str
        ``"counts"`` or ``"log"``: what the input file held.
    library_sizes : numpy.ndarray or None
        Raw per-sample count totals (counts input only).
    source : str
        The file the data came from.
    notes : list of str
        What reading and validation changed (rounded estimated counts, version suffixes removed).
    """

    X: np.ndarray
    labels: np.ndarray
    sample_ids: list[str]
    genes: list[str]
    input_kind: str
    library_sizes: np.ndarray | None
    source: str
    notes: list = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_genes(self) -> int:
        return self.X.shape[1]

    def to_anndata(self):
        """Return an ``anndata.AnnData`` (obs: ``label``; var: genes; uns: ``input_kind``, ``source``)."""
        import anndata

        obs = pd.DataFrame({"label": pd.Categorical(self.labels.astype(str))},
                           index=pd.Index(self.sample_ids, dtype=object))
        return anndata.AnnData(X=self.X.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(self.genes, dtype=object)),
                               uns={"input_kind": self.input_kind, "source": self.source})

    def subset_genes(self, genes: Sequence[str]) -> "Cohort":
        """Return a new Cohort with exactly ``genes``, in that order."""
        pos = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in pos]
        if missing:
            raise InputError(f"{self.source}: {len(missing)} requested genes are missing ({_examples(missing)})")
        cols = np.array([pos[g] for g in genes], dtype=np.intp)
        return replace(self, X=self.X[:, cols], genes=list(genes))

    def subset_samples(self, mask) -> "Cohort":
        """Return a new Cohort with the samples selected by a boolean mask or row positions."""
        rows = np.asarray(mask)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.intp)
        return replace(
            self,
            X=self.X[rows],
            labels=self.labels[rows],
            sample_ids=[self.sample_ids[i] for i in rows],
            library_sizes=None if self.library_sizes is None else self.library_sizes[rows],
        )


def _examples(values, k: int = 3) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:k]) + (", ..." if len(values) > k else "")


def _first_cell(mask: np.ndarray, rows: Sequence, cols: Sequence) -> str:
    i, j = np.argwhere(mask)[0]
    return f"sample {rows[i]}, gene {cols[j]}"


def _duplicates(values: Sequence) -> list:
    idx = pd.Index(values)
    return list(idx[idx.duplicated()].unique())


def validate_and_normalise(
    raw: RawTable,
    *,
    input_kind: str = "log",
    label_column: str,
    min_samples: int = 2,
    allowed_labels: Sequence[str] | None = None,
) -> Cohort:
    """Check a raw table and return a normalised :class:`Cohort`.

    Parameters
    ----------
    raw : RawTable
    input_kind : {"log", "counts"}
        ``"counts"``: values must be non-negative integers (tolerance 1e-6) and
        every sample needs a positive library size (row sum); X becomes
        ``log1p(counts / library_size * 1e6)`` (log1p CPM). Estimated counts
        from a recognised salmon/RSEM matrix (``raw.estimated_counts``) are
        rounded to the nearest integer first, as tximport and DESeq2 do
        (``round``); samples that all sum to 1e6 (within 1%) are TPM, not
        counts, and refused. ``"log"``: values are used as given; negative
        values are allowed, but a maximum above 50 is an error: raw counts,
        or (when only a few columns reach it) metadata columns to list with
        ``--meta-columns``.
    label_column : str
        Name of the label column, used in the message when labels are absent.
    min_samples : int
        Fewer samples than this is an error.
    allowed_labels : sequence of str, optional
        If given, any other label is an error.

    Raises
    ------
    InputError
        Empty matrix, no genes, NaN/inf values, duplicate sample or gene IDs,
        missing or unknown labels, invalid counts, log values above 50, too few
        samples, or every gene constant. Genes constant in only some columns are
        fine (they may vary at other sites); see :func:`constant_genes`.
    ParameterError
        Unknown ``input_kind``.
    """
    if input_kind not in INPUT_KINDS:
        raise ParameterError(f"--input-kind must be 'counts' or 'log', not '{input_kind}'")
    path = raw.path
    expr = raw.expr
    if expr.shape[0] == 0:
        raise InputError(f"{path}: the matrix is empty (no samples)")
    if expr.shape[1] == 0:
        raise InputError(f"{path}: no gene columns found")
    sample_ids = [str(s) for s in expr.index]
    genes = [str(g) for g in expr.columns]
    for what, ids in (("sample", sample_ids), ("gene", genes)):
        dup = _duplicates(ids)
        if dup:
            raise InputError(f"{path}: {len(dup)} {what} IDs appear more than once (e.g. {_examples(dup)})")

    values = expr.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{path}: {int(bad.sum())} values are NaN or infinite "
                         f"(first at {_first_cell(bad, sample_ids, genes)})")

    labels = _check_labels(raw, label_column, allowed_labels)

    notes = list(raw.notes)
    if input_kind == "counts":
        neg = values < 0
        if neg.any():
            raise InputError(f"{path}: {int(neg.sum())} negative values in counts input "
                             f"(first at {_first_cell(neg, sample_ids, genes)})")
        frac = np.abs(values - np.round(values)) > INT_TOL
        sums = values.sum(axis=1)
        if frac.any() and len(sums) and np.all(np.abs(sums / TPM_SUM - 1.0) < TPM_TOL):
            raise InputError(f"{path}: every sample sums to about 1e6: this looks like TPM, not counts; "
                             "give the estimated counts (nf-core/rnaseq's *.gene_counts.tsv), or pass "
                             "--input-kind log with log-scale values")
        if frac.any() and raw.estimated_counts and values.max() <= LOG_MAX:
            raise InputError(f"{path}: non-integer values no larger than {values.max():g}: these look like log-scale "
                             f"values, not {raw.estimated_counts} estimated counts; pass --input-kind log")
        if frac.any() and raw.estimated_counts:
            # no count in the note: it goes into run.json, which is shared, and how many values were fractional
            # follows the site's exact number of records, which only the noisy N may reveal
            notes.append(f"fractional {raw.estimated_counts} estimated counts rounded to the nearest integer, "
                         "as tximport and DESeq2 do")
            values = np.round(values)
        elif frac.any():
            hint = ("; pass --input-kind log if the data are log-scale" if not raw.layers else
                    f"; this file has layers {', '.join(raw.layers)}: pass --layer to read counts from one")
            raise InputError(f"{path}: {int(frac.sum())} non-integer values in counts input "
                             f"(first at {_first_cell(frac, sample_ids, genes)}){hint}")
        library_sizes = values.sum(axis=1)
        empty = np.flatnonzero(library_sizes <= 0)
        if len(empty):
            raise InputError(f"{path}: {len(empty)} samples have zero total counts "
                             f"(e.g. {_examples([sample_ids[i] for i in empty])})")
        X = np.log1p(values / library_sizes[:, None] * TPM_SUM)
    else:
        vmax = values.max()
        if vmax > LOG_MAX:
            _check_log_maximum(values, sample_ids, genes, path)
        library_sizes = None
        X = values

    if len(sample_ids) < min_samples:
        raise InputError(f"{path}: only {len(sample_ids)} samples; at least {min_samples} are needed")

    cohort = Cohort(X=X, labels=labels, sample_ids=sample_ids, genes=genes, input_kind=input_kind,
                    library_sizes=library_sizes, source=path, notes=notes)
    for note in notes:
        log.info("%s: %s", path, note)
    if cohort.n_samples > 1 and len(constant_genes(cohort)) == cohort.n_genes:
        raise InputError(f"{path}: all {cohort.n_genes} genes are constant across the {cohort.n_samples} samples")
    return cohort


#: At most this share of the columns (and at least one) above LOG_MAX reads as metadata, not counts.
META_SHARE = 0.05


def expression_as_validated(raw: RawTable, input_kind: str) -> pd.DataFrame:
    """``raw.expr`` as validation reads it: recognised estimated counts rounded (counts input), else as given.

    What ``preprocess`` and ``simulate`` write out, so that the next reader
    (which no longer knows the file was salmon's or RSEM's) finds integers.
    """
    if input_kind == "counts" and raw.estimated_counts:
        return raw.expr.round()
    return raw.expr


def _check_log_maximum(values: np.ndarray, sample_ids, genes, path) -> None:
    """Raise the InputError for log input above LOG_MAX: metadata columns if only a few reach it, else counts."""
    col_max = values.max(axis=0)
    high = np.flatnonzero(col_max > LOG_MAX)
    if len(high) <= max(1, int(META_SHARE * len(genes))) and len(high) < len(genes):
        names = [genes[j] for j in high]
        rest = float(np.delete(col_max, high).max())
        raise InputError(f"{path}: column(s) {', '.join(repr(n) for n in names[:5])}{', ...' if len(names) > 5 else ''} "
                         f"reach {float(col_max[high].max()):g} while the other {len(genes) - len(high)} stay at or "
                         f"below {rest:g}: they look like sample metadata, not genes; list them with "
                         f"--meta-columns {','.join(names)}")
    vmax = values.max()
    where = _first_cell(values == vmax, sample_ids, genes)
    raise InputError(f"{path}: maximum value {vmax:g} (at {where}) is above {LOG_MAX:g}; "
                     "looks like raw counts; pass --input-kind counts")


def _check_labels(raw: RawTable, label_column: str, allowed_labels) -> np.ndarray:
    path = raw.path
    if raw.labels is None:
        raise InputError(f"{path}: no labels; give the label column ('{label_column}') or a labels file")
    labels = raw.labels.reindex(raw.expr.index)
    missing = labels.isna().to_numpy() | np.array([str(v).strip() == "" for v in labels], dtype=bool)
    if missing.any():
        ids = [str(s) for s in raw.expr.index[missing]]
        raise InputError(f"{path}: {len(ids)} samples have no label in '{label_column}' (e.g. {_examples(ids)})")
    out = np.array([str(v) for v in labels], dtype=object)
    if allowed_labels is not None:
        unknown = sorted(set(out) - {str(a) for a in allowed_labels})
        if unknown:
            raise InputError(f"{path}: {len(unknown)} unknown labels in '{label_column}': {_examples(unknown, 10)} "
                             f"(allowed: {', '.join(map(str, allowed_labels))})")
    return out


def constant_genes(cohort: Cohort) -> list[str]:
    """Genes with the same value in every sample of ``cohort`` (in gene order)."""
    if cohort.n_samples == 0:
        return list(cohort.genes)
    const = np.all(cohort.X == cohort.X[0], axis=0)
    return [g for g, c in zip(cohort.genes, const) if c]


def harmonise_genes(cohorts_genes: Sequence[Sequence[str]], mode: str = "strict") -> list[str]:
    """Choose the gene list all sites will use.

    Parameters
    ----------
    cohorts_genes : sequence of sequences of str
        Each site's genes.
    mode : {"strict", "intersect"}
        ``"strict"``: every site must have the same set of genes. ``"intersect"``:
        use the genes all sites share.

    Returns
    -------
    list of str
        The genes, in the first site's order.
    """
    if mode not in ("strict", "intersect"):
        raise ParameterError(f"--genes must be 'strict' or 'intersect', not '{mode}'")
    if not cohorts_genes:
        raise ValueError("no sites given")
    first = list(cohorts_genes[0])
    shared = set(first).intersection(*map(set, cohorts_genes[1:]))
    common = [g for g in first if g in shared]
    if mode == "strict":
        seen = set(first)
        order = first + [g for gs in cohorts_genes[1:] for g in gs if g not in seen and not seen.add(g)]
        disagree = [g for g in order if g not in shared]
        if disagree:
            raise InputError(f"sites disagree on {len(disagree)} genes (e.g. {_examples(disagree)}); "
                             f"pass --genes intersect to use the {len(common)} shared genes")
    if not common:
        raise InputError("the sites share no genes")
    return common


def split_sites(
    df_expr: pd.DataFrame,
    labels,
    *,
    mode: str,
    n_sites: int | None = None,
    site_values=None,
    alpha: float = 0.5,
    seed: int = 0,
    min_per_site: int = 2,
    max_tries: int = 1000,
) -> list[tuple[str, np.ndarray]]:
    """Split one table's rows into simulated federation sites.

    Parameters
    ----------
    df_expr : pandas.DataFrame
        Samples x genes (only its length and index are used).
    labels : array-like
        Class label per row.
    mode : {"column", "even", "dirichlet"}
        ``"column"``: one site per distinct value of ``site_values``, largest
        first (ties by name); with ``n_sites`` keep only the ``n_sites`` largest.
        ``"even"``: random split into ``n_sites`` near-equal parts.
        ``"dirichlet"``: label skew: each class's samples are divided among
        ``n_sites`` sites in Dirichlet(``alpha``) proportions (smaller alpha =
        more skew); redrawn until every site has ``min_per_site`` samples.
    n_sites : int, optional
        Required for "even" and "dirichlet".
    site_values : array-like, optional
        Site name per row (required for "column").
    alpha : float
        Dirichlet concentration (> 0).
    seed : int
        The split is a deterministic function of the inputs and the seed.
    min_per_site : int
        Minimum samples per site; impossible splits raise InputError.
    max_tries : int
        Dirichlet redraws before giving up.

    Returns
    -------
    list of (str, numpy.ndarray)
        ``(site_name, sorted row positions)`` per site; names are the column
        values, or ``site0``, ``site1``, ...
    """
    n = len(df_expr)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples")
    if mode not in ("column", "even", "dirichlet"):
        raise ParameterError(f"--split must be 'column', 'even' or 'dirichlet', not '{mode}'")
    if n_sites is not None and (int(n_sites) != n_sites or n_sites < 1):
        raise ParameterError(f"--n-sites must be a positive integer, not {n_sites}")

    if mode == "column":
        return _split_by_column(df_expr, site_values, n_sites, min_per_site)

    if n_sites is None:
        raise ParameterError(f"--n-sites is required for the '{mode}' split")
    if n < n_sites * min_per_site:
        raise InputError(f"{n} samples cannot fill {n_sites} sites with at least {min_per_site} each")
    rng = np.random.default_rng(seed)
    names = [f"site{i}" for i in range(n_sites)]
    if mode == "even":
        parts = np.array_split(rng.permutation(n), n_sites)
        return [(name, np.sort(p)) for name, p in zip(names, parts)]

    if not alpha > 0:
        raise ParameterError(f"--alpha must be > 0, not {alpha}")
    classes = sorted(set(labels))
    for _ in range(max_tries):
        parts = [[] for _ in range(n_sites)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_sites, alpha)))[:-1] * len(idx)).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].extend(chunk)
        if min(len(p) for p in parts) >= min_per_site:
            return [(name, np.sort(np.array(p, dtype=np.intp))) for name, p in zip(names, parts)]
    raise InputError(f"no Dirichlet(alpha={alpha}) split of {n} samples gave every one of {n_sites} sites "
                     f"at least {min_per_site} samples in {max_tries} draws; raise --alpha or lower --n-sites")


def _split_by_column(df_expr, site_values, n_sites, min_per_site) -> list[tuple[str, np.ndarray]]:
    if site_values is None:
        raise ParameterError("the 'column' split needs a site column")
    sites = pd.Series(np.asarray(site_values, dtype=object))
    if len(sites) != len(df_expr):
        raise ValueError(f"{len(sites)} site values for {len(df_expr)} samples")
    missing = sites.isna().to_numpy()
    if missing.any():
        ids = [str(s) for s in df_expr.index[missing]]
        raise InputError(f"site column: {len(ids)} samples have no site (e.g. {_examples(ids)})")
    sites = sites.astype(str)
    counts = sites.value_counts()
    order = sorted(counts.index, key=lambda s: (-counts[s], s))
    if n_sites is not None:
        if n_sites > len(order):
            raise ParameterError(f"--n-sites {n_sites} but the site column has only {len(order)} sites")
        order = order[:n_sites]
    small = [s for s in order if counts[s] < min_per_site]
    if small:
        raise InputError(f"site column: {len(small)} sites have fewer than {min_per_site} samples "
                         f"(e.g. {_examples(small)}); lower --n-sites to keep only larger sites")
    values = sites.to_numpy()
    return [(s, np.flatnonzero(values == s)) for s in order]


def as_labels(y, n, what):
    """``y`` as a 1-D array of ``n`` str labels; InputError naming ``what`` otherwise."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"{what} must be a 1-D array of labels")
    if y.shape[0] != n:
        raise InputError(f"{what} has {y.shape[0]} labels for {n} samples")
    return y.astype(str)


def split_holdout(n, labels, *, fraction=0.2, seed=0):
    """Split ``n`` samples into a training and a held-out test part.

    Stratified by label (:class:`sklearn.model_selection.StratifiedShuffleSplit`)
    when every class has at least two members and the test and training parts
    are each large enough to hold one sample of every class; otherwise a plain
    random split. The same arguments always give the same split.

    Parameters
    ----------
    n : int
        Number of samples.
    labels : sequence of str, length ``n``
        Label of each sample.
    fraction : float, default 0.2
        Fraction of samples held out for testing, ``0 < fraction < 1``. The
        test part has ``ceil(fraction * n)`` samples (at least one, and at
        least one sample is left for training).
    seed : int, default 0
        Random seed.

    Returns
    -------
    train_idx, test_idx : ndarray of int
        Sorted, disjoint sample indices whose union is ``range(n)``.

    Raises
    ------
    ParameterError
        If ``fraction`` is not strictly between 0 and 1, or ``n`` < 2.
    InputError
        If ``labels`` does not have ``n`` entries.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ParameterError(f"n must be an integer, got {n!r}")
    n = int(n)
    if n < 2:
        raise ParameterError(f"n must be at least 2 to split, got {n}")
    if not (isinstance(fraction, (int, float, np.floating))
            and 0.0 < float(fraction) < 1.0):
        raise ParameterError(
            f"fraction must be strictly between 0 and 1, got {fraction!r}")
    y = as_labels(labels, n, "labels")
    n_test = min(max(1, math.ceil(float(fraction) * n)), n - 1)
    counts = Counter(y.tolist())
    n_classes = len(counts)
    stratify = (min(counts.values()) >= 2 and n_test >= n_classes
                and n - n_test >= n_classes)
    if stratify:
        # imported here: scikit-learn takes about a second to load and only
        # this function of the data layer needs it
        from sklearn.model_selection import StratifiedShuffleSplit

        sss = StratifiedShuffleSplit(n_splits=1, test_size=n_test,
                                     random_state=seed)
        train_idx, test_idx = next(sss.split(np.zeros((n, 1)), y))
    else:
        perm = np.random.default_rng(seed).permutation(n)
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    return (np.sort(train_idx).astype(np.int64),
            np.sort(test_idx).astype(np.int64))
