"""How useful, how faithful and how private a synthetic data set is, on real data.

Everything ``fedsynth evaluate`` measures, one module per concern; each
imports only :mod:`fedsynth.errors`, :mod:`fedsynth.data` and the modules
listed above it:

:mod:`._inputs`
    Shared input checks; :func:`check_compatible` refuses a synthetic/real
    pair whose genes or labels do not match.
:mod:`.attacks`
    Privacy: distance to closest record
    (:func:`distance_to_closest_record`) and membership-inference attacks
    (:func:`membership_inference`).
:mod:`.utility`
    :func:`tstr`: train on synthetic, test on real (beside train on real),
    logistic regression and random forest; accuracy, macro-F1, AUROC,
    average precision, per class; majority-class baseline.
:mod:`.fidelity`
    :func:`fidelity`: per-gene mean/variance agreement, gene-gene
    correlation similarity, MMD (:func:`mmd_rbf`), discriminator AUROC
    (:func:`discriminator_auroc`), per-gene Wasserstein distances.
:mod:`.biology`
    :func:`de_recovery`, :func:`coexpression_recovery`: each class's top
    differentially expressed genes and the co-expression network recovered.
:mod:`.verdict`
    :func:`verdict`: useful? realistic? private?; :func:`dp_summary`.
:mod:`.report`
    :func:`render_report`: one self-contained HTML page.
:mod:`.run`
    :func:`evaluate`: all of the above, a real-vs-real reference for every
    fidelity and biology metric, and the verdict; :func:`evaluate_files`:
    the same from files, writing ``metrics.json`` and ``report.html`` (the
    ``fedsynth evaluate`` command).

All functions take plain numpy arrays: expression matrices are
``samples x genes`` floats, labels are 1-D arrays of ``str``. User-caused
problems raise :class:`~fedsynth.errors.InputError` (bad data) or
:class:`~fedsynth.errors.ParameterError` (bad parameter). Every classifier
runs single-threaded (``n_jobs=1``).
"""

from ._inputs import check_compatible
from .attacks import ATTACKS, auroc_ci, distance_to_closest_record, leading_axes, membership_inference
from .biology import bh_qvalues, coexpression_genes, coexpression_recovery, de_recovery, default_top_k, welch_t
from .fidelity import DISCRIMINATORS, discriminator_auroc, fidelity, mmd_rbf
from .report import SECTIONS, render_report
from .run import evaluate, evaluate_files
from .utility import MODELS, tstr
from .verdict import dp_summary, verdict

__all__ = [
    "ATTACKS", "DISCRIMINATORS", "MODELS", "SECTIONS", "auroc_ci", "bh_qvalues", "check_compatible",
    "coexpression_genes", "coexpression_recovery", "de_recovery", "default_top_k", "discriminator_auroc",
    "distance_to_closest_record", "dp_summary", "evaluate", "evaluate_files", "fidelity", "leading_axes",
    "membership_inference", "mmd_rbf", "render_report", "tstr", "verdict", "welch_t",
]
