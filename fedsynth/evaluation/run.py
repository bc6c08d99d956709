"""Everything together: :func:`evaluate` (arrays) and :func:`evaluate_files`
(files in, ``metrics.json`` and ``report.html`` out: the ``fedsynth
evaluate`` command)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from fedsynth.data.io import atomic_write_json, atomic_write_text, read_expression
from fedsynth.data.preprocess import validate_and_normalise
from fedsynth.errors import InputError

from ._inputs import _as_labels, _as_matrix, _examples, _json_safe, _same_genes, check_compatible
from .attacks import distance_to_closest_record, membership_inference
from .biology import coexpression_recovery, de_recovery
from .fidelity import fidelity
from .report import render_report
from .utility import tstr
from .verdict import dp_summary, verdict

__all__ = ["evaluate", "evaluate_files"]


def evaluate(X_syn, y_syn, X_train, y_train, X_holdout, y_holdout, *, genes=None, dp=None, seed=0,
             top_k=None, return_artifacts=False):
    """Every metric of the report, from arrays.

    Parameters
    ----------
    X_syn, y_syn : synthetic matrix (samples x genes) and labels.
    X_train, y_train : the real records the generator was trained on (at a
        site: that site's own training records).
    X_holdout, y_holdout : real records from the same population the
        generator never saw (at least 4).
    genes : sequence of str, optional
        Gene names (for lists of genes in the report).
    dp : dict, optional
        The model's DP record (``model.pt``'s ``"dp"``).
    seed : int
        Seed of classifiers, subsamples and attacks.
    top_k : int, optional
        k of the DE recovery (default :func:`~fedsynth.evaluation.biology.default_top_k`).
    return_artifacts : bool
        Also return the arrays the report's plots need.

    Returns
    -------
    dict
        ``{"verdict", "utility" (:func:`tstr`), "fidelity" (:func:`fidelity`,
        synthetic vs real training), "fidelity_reference" (the same for the
        real holdout vs the real training data: what two real samples look
        like), "biology": {"de" (:func:`de_recovery`), "coexpression"
        (:func:`coexpression_recovery`), "de_reference",
        "coexpression_reference"}, "privacy": {"dp" (:func:`dp_summary`),
        "dcr" (:func:`~fedsynth.evaluation.attacks.distance_to_closest_record`),
        "membership_inference"
        (:func:`~fedsynth.evaluation.attacks.membership_inference`)}, "n",
        "seconds"}``; with ``return_artifacts`` also a dict of arrays.
    """
    X_syn = _as_matrix(X_syn, "synthetic matrix")
    X_train = _as_matrix(X_train, "real training matrix")
    X_holdout = _as_matrix(X_holdout, "real holdout matrix")
    y_syn = _as_labels(y_syn, len(X_syn), "synthetic labels")
    y_train = _as_labels(y_train, len(X_train), "real training labels")
    y_holdout = _as_labels(y_holdout, len(X_holdout), "real holdout labels")
    _same_genes(X_syn, X_train, "synthetic matrix", "real training matrix")
    _same_genes(X_holdout, X_train, "real holdout matrix", "real training matrix")
    genes = [str(g) for g in genes] if genes is not None else [f"gene{j + 1}" for j in range(X_train.shape[1])]
    if len(genes) != X_train.shape[1]:
        raise InputError(f"{len(genes)} gene names for {X_train.shape[1]} genes")
    secs = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        secs[name] = round(time.perf_counter() - t0, 3)
        return r

    m = {}
    m["utility"] = timed("utility", tstr, X_syn, y_syn, X_holdout, y_holdout, X_real_train=X_train,
                         y_real_train=y_train, seed=seed)
    m["fidelity"] = timed("fidelity", fidelity, X_syn, X_train, genes=genes, seed=seed)
    m["fidelity_reference"] = timed("fidelity_reference", fidelity, X_holdout, X_train, genes=genes, seed=seed)
    m["fidelity_reference"].pop("worst_genes")
    t0 = time.perf_counter()
    m["biology"] = {
        "de": de_recovery(X_syn, y_syn, X_train, y_train, genes=genes, k=top_k),
        "coexpression": coexpression_recovery(X_syn, y_syn, X_train, y_train),
        "de_reference": de_recovery(X_holdout, y_holdout, X_train, y_train, genes=genes, k=top_k),
        "coexpression_reference": coexpression_recovery(X_holdout, y_holdout, X_train, y_train),
    }
    secs["biology"] = round(time.perf_counter() - t0, 3)
    dcr, dists = timed("dcr", distance_to_closest_record, X_syn, X_train, X_holdout, seed=seed,
                       return_distances=True)
    mia, scores = timed("membership_inference", membership_inference, X_syn, X_train, X_holdout, seed=seed,
                        return_scores=True)
    m["privacy"] = {"dp": dp_summary(dp), "dcr": dcr, "membership_inference": mia}
    m["n"] = {"synthetic": int(len(X_syn)), "train": int(len(X_train)), "holdout": int(len(X_holdout)),
              "genes": int(X_train.shape[1])}
    m["seconds"] = secs
    m = _json_safe(m)
    m = {"verdict": verdict(m), **m}
    if not return_artifacts:
        return m
    art = {"X_syn": X_syn, "y_syn": y_syn, "X_train": X_train, "y_train": y_train, "X_holdout": X_holdout,
           "y_holdout": y_holdout, "genes": genes, "dcr_distances": dists, "mia_scores": scores}
    return m, art


def _load(path, label_column, meta_columns, input_kind, *, role):
    """Read and validate one input. The synthetic file need not carry the
    real data's metadata columns: any it has are set aside, any it lacks are
    ignored."""
    synthetic = role == "synthetic"
    try:
        raw = read_expression(path, label_column=label_column,
                              meta_columns=() if synthetic else tuple(meta_columns))
    except InputError as e:
        if f"'{label_column}' not found" in str(e):
            opt = "--synthetic-label-column" if synthetic else "--label-column"
            raise InputError(f"{e} (the {role} data's label column; set it with {opt})") from None
        raise
    if synthetic:
        drop = [c for c in meta_columns if c in raw.expr.columns]
        if drop:
            raw.meta = raw.meta.join(raw.expr[drop])
            raw.expr = raw.expr.drop(columns=drop)
    return validate_and_normalise(raw, input_kind=input_kind, label_column=label_column)


def evaluate_files(synthetic, train, holdout, *, outdir, label_column="label", synthetic_label_column="label",
                   meta_columns=(), input_kind="log", dp: dict | None = None, lifetime: dict | None = None,
                   overwrite=False, seed=0, top_k=None, title=None, report=True) -> dict:
    """Score a synthetic matrix against this site's real training and holdout data.

    Reads the three matrices (CSV/TSV/h5ad), checks they share genes and
    labels, runs :func:`evaluate` and writes ``outdir/metrics.json`` and
    (unless ``report=False``) ``outdir/report.html``, one self-contained
    file with every plot embedded. Counts are compared on the log1p-CPM
    scale the model learns. The real data never leaves this function's
    machine. Returns the metrics.

    Synthetic samples of a class that this site's real data (training and
    holdout) lacks are left out of the scores, with a warning in
    ``metrics["warnings"]``: a shared cohort may carry a rare subtype that
    only other hospitals hold.

    Parameters beyond the files: ``dp`` (the model's DP record: the
    ``"dp"`` dict of model.pt, which ``fedsynth evaluate --model`` reads and
    completes with the file's ``"generator"``; ``None`` reports no formal
    guarantee), ``lifetime`` (this site's lifetime budget: the ``"lifetime"``
    dict of the site's train run.json, which ``fedsynth evaluate
    --run-record`` reads; written to ``metrics["privacy"]["lifetime"]``,
    ``None`` without it, and shown in the report's privacy section),
    ``seed``, ``top_k`` (DE recovery; default 20, at most a fifth of the
    genes), ``title`` (report title), ``overwrite``.

    Raises
    ------
    InputError
        Unreadable files; different genes (the message names both files);
        no synthetic sample of a class the real data has; too few holdout records; existing outputs without
        ``overwrite``.
    """
    meta_columns = tuple(meta_columns)
    syn = _load(synthetic, synthetic_label_column, meta_columns, input_kind, role="synthetic")
    tr = _load(train, label_column, meta_columns, input_kind, role="training")
    te = _load(holdout, label_column, meta_columns, input_kind, role="holdout")
    warnings = []
    if syn.genes != tr.genes and sorted(syn.genes) == sorted(tr.genes) and len(set(tr.genes)) == len(tr.genes):
        syn = syn.subset_genes(tr.genes)
        warnings.append(f"{synthetic} lists the genes of {train} in another order; reordered to match")
    if te.genes != tr.genes and sorted(te.genes) == sorted(tr.genes) and len(set(tr.genes)) == len(tr.genes):
        te = te.subset_genes(tr.genes)
        warnings.append(f"{holdout} lists the genes of {train} in another order; reordered to match")
    check_compatible(syn.genes, tr.genes, [], [], syn_name=str(synthetic), real_name=str(train))
    check_compatible(te.genes, tr.genes, [], [], syn_name=str(holdout), real_name=str(train))
    # labels: a shared cohort may hold classes this site has not (a rare
    # subtype elsewhere); score only the site's own classes and say so
    real_classes = set(tr.labels.tolist()) | set(te.labels.tolist())
    foreign = ~np.isin(syn.labels, sorted(real_classes))
    if foreign.all():
        raise InputError(f"{synthetic}: none of its {syn.n_samples} samples has a class of the real data "
                         f"({train}, {holdout}: {_examples(sorted(real_classes))})")
    if foreign.any():
        dropped = Counter(syn.labels[foreign].tolist())
        syn = syn.subset_samples(~foreign)
        warnings.append(f"{synthetic}: scored {syn.n_samples} of {syn.n_samples + int(foreign.sum())} samples; "
                        "dropped " + ", ".join(f"{n} of {c}" for c, n in sorted(dropped.items()))
                        + " (class absent from this site's training and holdout data)")
    # (a rare class may be missing from a small holdout, which is fine)
    warnings += check_compatible(syn.genes, tr.genes, syn.labels, np.r_[tr.labels, te.labels],
                                 syn_name=str(synthetic), real_name=f"the real data ({train}, {holdout})")
    gone = sorted(set(tr.labels.tolist()) - set(te.labels.tolist()))
    if gone:
        warnings.append(f"{holdout} has no sample of {len(gone)} class(es) of {train}: {_examples(gone)}; "
                        "per-class scores cannot cover them")
    if te.n_samples < 4:
        raise InputError(f"{holdout}: only {te.n_samples} holdout samples; at least 4 are needed")
    out = Path(outdir)
    names = ["metrics.json"] + (["report.html"] if report else [])
    for name in names:
        if (out / name).exists() and not overwrite:
            raise InputError(f"{out / name}: file exists; refusing to overwrite it (pass --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    metrics, art = evaluate(syn.X, syn.labels, tr.X, tr.labels, te.X, te.labels, genes=tr.genes, dp=dp,
                            seed=seed, top_k=top_k, return_artifacts=True)
    # first in the file: like report.html, computed on this site's real records (scores, attack results)
    metrics = {"shareable": False,
               "note": "site-internal: computed on this site's real training and holdout data; do not share",
               **metrics}
    # the site's lifetime budget (its ledger's spend on these patients), beside the model's DP record
    metrics["privacy"]["lifetime"] = _json_safe(dict(lifetime)) if lifetime is not None else None
    metrics["warnings"] = warnings
    metrics["inputs"] = {"synthetic": str(synthetic), "train": str(train), "holdout": str(holdout),
                         "input_kind": input_kind, "label_column": label_column, "seed": seed}
    if report:
        t0 = time.perf_counter()
        html = render_report(metrics, art, title=title)
        metrics["seconds"]["report"] = round(time.perf_counter() - t0, 3)
        atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
