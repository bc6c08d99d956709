"""The report's verdict (useful? realistic? private?) and the DP record it shows.

:func:`verdict` turns the metrics of :func:`fedsynth.evaluation.evaluate`
into three traffic lights; its thresholds are the module constants below
(the report's "How to read" section quotes them). :func:`dp_summary` keeps
the DP record fields a report shows.
"""

from __future__ import annotations

from ._inputs import _json_safe

__all__ = ["dp_summary", "verdict"]

_DP_KEYS = ("generator", "private", "epsilon", "epsilon_spent", "epsilon_vs_site", "delta", "max_colluders", "k", "sigma",
            "stat_sigma", "noise_multipliers", "budget_split", "sample_rate", "clip_norm", "steps", "epochs",
            "accountant", "sites")


def dp_summary(dp):
    """The DP record fields a report shows (``None`` without a record)."""
    if dp is None:
        return None
    return _json_safe({k: dp[k] for k in _DP_KEYS if dp.get(k) is not None})


# Verdict thresholds (documented in the report's "How to read" section).
UTILITY_GOOD, UTILITY_FAIR = 0.9, 0.7  # TSTR / TRTR macro-F1
DISCRIMINATOR_GOOD, DISCRIMINATOR_FAIR = 0.6, 0.8  # discriminator AUROC
MIA_SIGNAL, MIA_LEAK = 0.55, 0.6  # worst membership-inference AUROC
EPSILON_STRONG, EPSILON_WEAK = 1.0, 10.0


def _g(x):
    return "?" if x is None else f"{x:g}"


def _f(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def verdict(metrics, *, model="logreg"):
    """Three traffic lights for the top of the report: useful? realistic? private?

    Each is ``{"level": "good" | "fair" | "poor" | "unknown", "question",
    "headline", "detail"}``:

    * utility (``model``'s TSTR macro-F1 over its TRTR macro-F1): good at
      >= 0.9, fair at >= 0.7 if also 0.1 above the majority-class baseline;
    * fidelity (the discriminator AUROC, read as max(AUROC, 0.5)): good at
      <= 0.6, fair at <= 0.8;
    * privacy: poor if the model is not differentially private, if any
      synthetic record copies a training record, or if the worst
      membership-inference AUROC is >= 0.6 with its 95% interval (widened
      for the number of attacks, Bonferroni) above 0.5; fair if that AUROC
      is >= 0.55 with that interval above 0.5, if epsilon is above 10, or
      if there is no DP record; good otherwise.
    """
    out = {}
    u = metrics["utility"]
    t = u["tstr"].get(model) or next(iter(u["tstr"].values()))
    r = (u["trtr"] or {}).get(model)
    maj = u["majority"]["macro_f1"]
    ratio = t["macro_f1"] / r["macro_f1"] if r and r["macro_f1"] > 0 else None
    if ratio is None:
        level = "unknown"
    elif ratio >= UTILITY_GOOD:
        level = "good"
    elif ratio >= UTILITY_FAIR and t["macro_f1"] > maj + 0.1:
        level = "fair"
    else:
        level = "poor"
    out["utility"] = {
        "level": level, "question": "Useful?",
        "headline": (f"macro-F1 {_f(t['macro_f1'])} trained on synthetic vs {_f(r['macro_f1'] if r else None)} "
                     f"trained on real" + (f" ({ratio:.0%})" if ratio is not None else "")),
        "detail": (f"{model}, tested on the real holdout; always predicting the most frequent class: "
                   f"{_f(maj)}; accuracy {_f(t['accuracy'])} vs {_f(r['accuracy'] if r else None)}"),
    }

    f = metrics["fidelity"]
    d = f.get("discriminator_auroc")
    ref = (metrics.get("fidelity_reference") or {}).get("discriminator_auroc")
    if d is None:
        level = "unknown"
    else:
        dd = max(d, 0.5)
        level = "good" if dd <= DISCRIMINATOR_GOOD else "fair" if dd <= DISCRIMINATOR_FAIR else "poor"
    out["fidelity"] = {
        "level": level, "question": "Realistic?",
        "headline": f"a classifier tells synthetic from real with AUROC {_f(d)} (0.5 = indistinguishable)",
        "detail": (f"real holdout vs real training: {_f(ref) if ref is None or ref >= 0.5 else 'below 0.5 (noise)'}; "
                   f"per-gene means r = {_f(f['mean_pearson'], 3)}, "
                   f"variances r = {_f(f['var_pearson'], 3)}, gene-gene correlations r = "
                   f"{_f(f['corr_matrix_pearson'], 3)}"),
    }

    p = metrics["privacy"]
    dp = p.get("dp")
    worst = (p.get("membership_inference") or {}).get("worst")
    dcr = p.get("dcr") or {}
    copies = dcr.get("exact_copies", 0)
    auc = worst["auroc"] if worst else None
    ci_key = "auroc_ci95_adjusted" if worst and worst.get("auroc_ci95_adjusted") else "auroc_ci95"
    low = worst[ci_key][0] if worst and worst.get(ci_key) else None
    leak = copies > 0 or (auc is not None and auc >= MIA_LEAK and low is not None and low > 0.5)
    signal = auc is not None and auc >= MIA_SIGNAL and low is not None and low > 0.5
    if dp is None:
        formal = "no DP record (pass the model file to see epsilon)"
    elif not dp.get("private", True):
        formal = "NOT differentially private (trained with --no-dp)"
    else:
        t = dp.get("max_colluders") or 0
        formal = (f"(epsilon {_g(dp.get('epsilon'))}, delta {_g(dp.get('delta'))})-DP, "
                  + (f"assuming at most {t} colluding site(s)" if t else "assuming no colluding sites"))
        if dp.get("epsilon_vs_site") is not None:
            formal += f" (epsilon against a participating site {dp['epsilon_vs_site']:.3g})"
    eps = dp.get("epsilon") if dp else None
    if leak or (dp is not None and not dp.get("private", True)):
        level = "poor"
    elif signal or dp is None or eps is None or eps > EPSILON_WEAK:
        level = "fair"
    else:
        level = "good"
    attack = f" ({worst['attack']})" if worst else ""
    ci = (f", 95% CI {_f(worst[ci_key][0])}-{_f(worst[ci_key][1])} allowing for "
          f"{len([a for a in p['membership_inference']['attacks'].values() if a.get('auroc') is not None])} "
          "attacks" if worst and worst.get(ci_key) else "")
    out["privacy"] = {
        "level": level, "question": "Private?",
        "headline": f"{formal}; strongest membership attack AUROC {_f(auc)}{attack}{ci} (0.5 = guessing)",
        "detail": (f"{copies} synthetic record(s) copy a training record; median distance from a synthetic "
                   f"record to the closest training record {_f(dcr.get('median_to_train_matched'))} vs closest "
                   f"holdout record {_f(dcr.get('median_to_holdout'))} (equally many of each; equal = no "
                   f"memorisation)"),
    }
    return out
