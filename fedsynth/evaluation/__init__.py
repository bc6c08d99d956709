"""Evaluation of a synthetic data set on real data (``fedsynth evaluate``)."""

from .attacks import ATTACKS, auroc_ci, distance_to_closest_record, leading_axes, membership_inference
from .fidelity import (
    bh_qvalues,
    check_compatible,
    coexpression_genes,
    coexpression_recovery,
    de_recovery,
    default_top_k,
    discriminator_auroc,
    dp_summary,
    evaluate,
    evaluate_files,
    fidelity,
    mmd_rbf,
    tstr,
    verdict,
    welch_t,
)
from .report import SECTIONS, render_report
