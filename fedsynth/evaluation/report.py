"""The evaluation report: one self-contained HTML file.

:func:`render_report` turns the metrics of :func:`fedsynth.evaluation.evaluate`
(and the arrays it returns with ``return_artifacts=True``) into a single
HTML page: a verdict block on top (useful? realistic? private?), then
Utility, Fidelity, Biology and Privacy sections with tables and plots, and a
"How to read this report" section with every definition and threshold.

Self-contained: inline CSS, no scripts, no external resources; every plot is
a PNG drawn with matplotlib's Agg canvas (object API, so the caller's
pyplot backend is untouched) and embedded as a base64 ``data:`` URI. Every
string that comes from the data (labels, gene and file names) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import io

import numpy as np

from .attacks import leading_axes
from .verdict import (
    DISCRIMINATOR_FAIR,
    DISCRIMINATOR_GOOD,
    EPSILON_WEAK,
    MIA_LEAK,
    MIA_SIGNAL,
    UTILITY_FAIR,
    UTILITY_GOOD,
)

__all__ = ["SECTIONS", "SITE_INTERNAL", "render_report"]

SITE_INTERNAL = "Contains this site's real data: do not share"
"""The report's banner and title suffix: its plots show real training records (PCA scatter,
per-gene means and variances), so it stays at the site, unlike the synthetic data, model and run record."""

SECTIONS = ("Verdict", "Data", "Utility", "Fidelity", "Biology", "Privacy", "How to read this report")
"""The report's section headings (``<h2>``), in order."""

_MAX_POINTS = 2000  # points per scatter panel
_MAX_HEATMAP_GENES = 50
_DPI = 90
_LEVEL = {"good": ("#1a7f37", "GOOD"), "fair": ("#9a6700", "FAIR"), "poor": ("#cf222e", "POOR"),
          "unknown": ("#57606a", "N/A")}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#1f2328;line-height:1.45}
h1{margin-bottom:4px} h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:36px}
h3{margin-top:22px} .muted{color:#57606a;font-size:90%}
table{border-collapse:collapse;margin:8px 0 14px 0;font-size:92%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right} th{background:#f6f8fa}
td.l,th.l{text-align:left}
.cards{display:flex;gap:14px;flex-wrap:wrap}
.card{flex:1 1 300px;border:2px solid #d0d7de;border-radius:8px;padding:10px 14px}
.badge{display:inline-block;color:#fff;font-weight:bold;border-radius:4px;padding:1px 8px;margin-left:6px}
.card .q{font-size:130%;font-weight:bold} .card .h{font-size:105%;margin:6px 0}
img{max-width:100%;display:block;margin:8px 0}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px}
.internal{background:#cf222e;color:#fff;font-weight:bold;font-size:120%;text-align:center;padding:10px 14px;
border-radius:6px;margin-bottom:14px}
code{background:#f6f8fa;padding:0 3px}
"""


# ---------------------------------------------------------------- helpers
def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _n(x, d=3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{x:,}"
    return f"{x:.{d}f}"


def _table(header, rows, left=1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned. Cells are escaped."""
    h = "".join(f"<th class='l'>{_e(c)}</th>" if i < left else f"<th>{_e(c)}</th>" for i, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td class='l'>{_e(c)}</td>" if i < left else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig, alt) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{_png(fig)}'>"


def _figure(w, h):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _colors(classes):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(classes)}


def _sub(rng, n, cap):
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


# ---------------------------------------------------------------- plots
def _plot_utility(m):
    u = m["utility"]
    models = list(u["tstr"])
    fig = _figure(5.2 * len(models), 3.4)
    for i, mod in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        t = u["tstr"][mod]["per_class"]
        r = (u["trtr"] or {}).get(mod, {}).get("per_class", {})
        classes = list(t)
        x = np.arange(len(classes) + 1)
        tv = [t[c]["f1"] for c in classes] + [u["tstr"][mod]["macro_f1"]]
        rv = [r.get(c, {}).get("f1", np.nan) for c in classes] + [
            (u["trtr"] or {}).get(mod, {}).get("macro_f1", np.nan)]
        ax.bar(x - 0.2, rv, 0.4, label="train on real (TRTR)", color="#8c959f")
        ax.bar(x + 0.2, tv, 0.4, label="train on synthetic (TSTR)", color="#0969da")
        ax.axhline(u["majority"]["macro_f1"], color="#cf222e", ls="--", lw=1, label="majority class (macro-F1)")
        ax.set_xticks(x, classes + ["macro"], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("F1 on the real holdout")
        ax.set_title(mod, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="upper center", ncol=3, fontsize=8, frameon=False)
    return _img(fig, "per-class F1, train on synthetic vs train on real")


def _plot_pca(a):
    Xr, yr, Xs, ys = a["X_train"], a["y_train"], a["X_syn"], a["y_syn"]
    mean, comps, s = leading_axes(Xr, 2)
    total = float(np.sum((Xr - mean) ** 2))
    var = s ** 2 / max(total, 1e-300)
    Pr, Ps = (Xr - mean) @ comps.T, (Xs - mean) @ comps.T
    if Pr.shape[1] < 2:
        Pr, Ps = np.c_[Pr, np.zeros(len(Pr))], np.c_[Ps, np.zeros(len(Ps))]
    rng = np.random.default_rng(0)
    classes = sorted(set(yr.tolist()) | set(ys.tolist()))
    col = _colors(classes)
    both = np.vstack([Pr, Ps])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    pad = 0.08 * (hi - lo + 1e-12)
    fig = _figure(10, 4.2)
    for i, (P, y, name) in enumerate(((Pr, yr, "real (training)"), (Ps, ys, "synthetic"))):
        ax = fig.add_subplot(1, 2, i + 1)
        idx = _sub(rng, len(P), _MAX_POINTS)
        for c in classes:
            k = idx[y[idx] == c]
            ax.scatter(P[k, 0], P[k, 1], s=9, alpha=0.7, color=col[c], label=f"{c}", linewidths=0)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel(f"PC1 of the real data ({var[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({var[1]:.0%})" if len(var) > 1 else "PC2")
        ax.set_title(f"{name}, n = {len(P):,}", fontsize=10)
        if i == 1:
            ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    return _img(fig, "PCA of real and synthetic data coloured by class")


def _plot_marginals(a, m):
    Xr, Xs = a["X_train"], a["X_syn"]
    f = m["fidelity"]
    fig = _figure(10, 4.2)
    for i, (stat, name, key) in enumerate(((np.mean, "mean", "mean_pearson"), (np.var, "variance", "var_pearson"))):
        ax = fig.add_subplot(1, 2, i + 1)
        r, s = stat(Xr, axis=0), stat(Xs, axis=0)
        ax.scatter(r, s, s=8, alpha=0.6, color="#0969da", linewidths=0)
        lo, hi = float(min(r.min(), s.min())), float(max(r.max(), s.max()))
        ax.plot([lo, hi], [lo, hi], color="#57606a", lw=1, ls="--")
        ax.set_xlabel(f"real per-gene {name}")
        ax.set_ylabel(f"synthetic per-gene {name}")
        ax.set_title(f"gene {name}s: Pearson r = {_n(f[key])}, Spearman = "
                     f"{_n(f[key.replace('pearson', 'spearman')])}", fontsize=10)
    fig.tight_layout()
    return _img(fig, "per-gene mean and variance, real vs synthetic")


def _heatmap_genes(Xr, Xs, genes):
    from scipy.cluster.hierarchy import leaves_list, linkage

    ok = np.flatnonzero((np.ptp(Xr, axis=0) > 0) & (np.ptp(Xs, axis=0) > 0))
    top = ok[np.argsort(-Xr[:, ok].var(axis=0), kind="stable")[:_MAX_HEATMAP_GENES]]
    if top.size < 2:
        return top, None, None
    Cr = np.corrcoef(Xr[:, top].T)
    Cs = np.corrcoef(Xs[:, top].T)
    dist = 1 - Cr[np.triu_indices(top.size, 1)]
    order = leaves_list(linkage(np.clip(dist, 0, 2), method="average")) if top.size > 2 else np.arange(top.size)
    return top[order], Cr[np.ix_(order, order)], Cs[np.ix_(order, order)]


def _plot_corr(a, m):
    top, Cr, Cs = _heatmap_genes(a["X_train"], a["X_syn"], a["genes"])
    if Cr is None:
        return "<p class='muted'>Too few varying genes for a correlation heatmap.</p>"
    names = [a["genes"][j] for j in top]
    fig = _figure(15, 5.2)
    for i, (C, title, cmap) in enumerate(((Cr, "real (training)", "RdBu_r"), (Cs, "synthetic", "RdBu_r"),
                                          (Cs - Cr, "synthetic - real", "PuOr_r"))):
        ax = fig.add_subplot(1, 3, i + 1)
        im = ax.imshow(C, vmin=-1, vmax=1, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        if i == 0:  # gene names once, on the real panel
            fs = 5 if len(names) > 30 else 7
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=fs)
            ax.set_yticks(range(len(names)), names, fontsize=fs)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    return _img(fig, "gene-gene correlation heatmaps, real and synthetic")


def _plot_de(m):
    de = m["biology"]["de"]
    per = {c: d for c, d in de["per_class"].items() if "skipped" not in d}
    if not per:
        return "<p class='muted'>No class has enough samples for a DE test.</p>"
    classes = list(per)
    x = np.arange(len(classes))
    fig = _figure(max(5, 1.3 * len(classes) + 2), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    series = (("precision_at_k", "precision@k", "#0969da"), ("recall_at_k", "recall@k", "#1a7f37"),
              ("overlap_at_k", "plain top-k overlap", "#8c959f"))
    for i, (key, name, color) in enumerate(series):
        v = [per[c][key] if per[c][key] is not None else np.nan for c in classes]
        bars = ax.bar(x + (i - 1) * 0.27, v, 0.27, label=name, color=color)
        ax.bar_label(bars, labels=["n/a" if np.isnan(b) else f"{b:.1f}" for b in v], fontsize=6, padding=1)
    ax.axhline(de["k"] / max(m["n"]["genes"], 1), color="#cf222e", ls="--", lw=1, label="chance overlap (k / genes)")
    ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"top-{de['k']} DE genes")
    ax.set_title("DE genes recovered per class (one-vs-rest Welch t, BH q < "
                 f"{de['alpha']})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _img(fig, "differentially expressed genes recovered per class")


def _plot_privacy(a, m):
    mia = m["privacy"]["membership_inference"]
    fig = _figure(11, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    for name, e in mia["attacks"].items():
        if e.get("auroc") is None:
            continue
        ax.plot(e["roc"]["fpr"], e["roc"]["tpr"], lw=1.6, label=f"{name} (AUROC {e['auroc']:.2f})")
    ax.plot([0, 1], [0, 1], color="#57606a", ls="--", lw=1, label="guessing")
    ax.set_xlabel("false positive rate (non-members accused)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title(f"membership inference: {mia['n_members']:,} members vs "
                 f"{mia['n_non_members']:,} non-members", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_aspect("equal")
    ax = fig.add_subplot(1, 2, 2)
    d = a["dcr_distances"]
    hi = float(np.percentile(np.r_[d["to_train"], d["to_holdout"]], 99)) or 1.0
    bins = np.linspace(0, hi, 40)
    ax.hist(d["to_holdout"], bins=bins, alpha=0.55, color="#8c959f", label="to closest holdout record")
    ax.hist(d["to_train"], bins=bins, alpha=0.55, color="#cf222e", label="to closest training record (size-matched)")
    ax.set_xlabel("distance from a synthetic record (z-scored genes)")
    ax.set_ylabel("synthetic records")
    ax.set_title("distance to closest record", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _img(fig, "membership-inference ROC curves and distance to closest record")


# ---------------------------------------------------------------- sections
def _verdict(m):
    cards = []
    for key in ("utility", "fidelity", "privacy"):
        v = m["verdict"][key]
        color, word = _LEVEL.get(v["level"], _LEVEL["unknown"])
        cards.append(
            f"<div class='card' style='border-color:{color}'><div class='q'>{_e(v['question'])}"
            f"<span class='badge' style='background:{color}'>{word}</span></div>"
            f"<div class='h'>{_e(v['headline'])}</div><div class='muted'>{_e(v['detail'])}</div></div>")
    return ("<section id='verdict'><h2>Verdict</h2><div class='cards'>" + "".join(cards) + "</div>"
            "<p class='muted'>Thresholds: see <em>How to read this report</em> at the end.</p></section>")


def _data(m):
    n = m["n"]
    rows = [["synthetic", _n(n["synthetic"]), (m.get("inputs") or {}).get("synthetic", "")],
            ["real training (members)", _n(n["train"]), (m.get("inputs") or {}).get("train", "")],
            ["real holdout (non-members)", _n(n["holdout"]), (m.get("inputs") or {}).get("holdout", "")]]
    out = "<section id='data'><h2>Data</h2>" + _table(["data set", "samples", "file"], rows, left=1)
    out += f"<p>{_n(n['genes'])} genes"
    inp = m.get("inputs") or {}
    if inp.get("input_kind") == "counts":
        out += "; counts compared as log1p CPM"
    out += ".</p>"
    for w in m.get("warnings") or []:
        out += f"<p class='warn'>{_e(w)}</p>"
    return out + "</section>"


def _utility(m):
    u = m["utility"]
    rows = []
    for mod in u["tstr"]:
        t, r = u["tstr"][mod], (u["trtr"] or {}).get(mod) or {}
        rows.append([mod, _n(t["macro_f1"]), _n(r.get("macro_f1")), _n(u["relative_macro_f1"].get(mod)),
                     _n(t["accuracy"]), _n(r.get("accuracy")), _n(t["auroc"]), _n(r.get("auroc")),
                     _n(t["average_precision"]), _n(r.get("average_precision"))])
    rows.append(["majority class", _n(u["majority"]["macro_f1"]), "", "", _n(u["majority"]["accuracy"]),
                 "", "0.500", "", "", ""])
    out = ("<section id='utility'><h2>Utility</h2>"
           "<p>Classifiers of the class label trained on the synthetic data (TSTR) or on the real training data "
           f"(TRTR), both tested on the {_n(u['n_test'])} real holdout samples. Macro-F1 first: on skewed "
           f"cohorts accuracy flatters (always predicting <code>{_e(u['majority']['label'])}</code> scores "
           f"{_n(u['majority']['accuracy'])} accuracy here).</p>")
    out += _table(["model", "TSTR macro-F1", "TRTR macro-F1", "relative F1", "TSTR accuracy", "TRTR accuracy",
                   "TSTR AUROC", "TRTR AUROC", "TSTR avg precision", "TRTR avg precision"], rows)
    out += _plot_utility(m)
    for mod in u["tstr"]:
        t, r = u["tstr"][mod]["per_class"], ((u["trtr"] or {}).get(mod) or {}).get("per_class", {})
        rows = [[c, _n(v["support"]), _n(v["precision"]), _n(v["recall"]), _n(v["f1"]),
                 _n(r.get(c, {}).get("f1")), _n(v["auroc"]), _n(r.get(c, {}).get("auroc")),
                 _n(v["average_precision"]), _n(r.get(c, {}).get("average_precision"))] for c, v in t.items()]
        out += f"<h3>Per class, {_e(mod)}</h3>" + _table(
            ["class", "holdout n", "TSTR precision", "TSTR recall", "TSTR F1", "TRTR F1", "TSTR AUROC",
             "TRTR AUROC", "TSTR AP", "TRTR AP"], rows)
    if u.get("single_class"):
        out += "<p class='warn'>The synthetic data hold one class only: no classifier could be trained.</p>"
    return out + "</section>"


def _fidelity(m, a):
    f, ref = m["fidelity"], m.get("fidelity_reference") or {}
    keys = (("mean_pearson", "per-gene mean, Pearson r", 3), ("mean_spearman", "per-gene mean, Spearman", 3),
            ("var_pearson", "per-gene variance, Pearson r", 3), ("var_spearman", "per-gene variance, Spearman", 3),
            ("corr_matrix_pearson", "gene-gene correlation similarity", 3),
            ("mmd2", "MMD² (RBF, median heuristic; biased)", 4), ("mmd2_unbiased", "MMD² (unbiased)", 4),
            ("discriminator_auroc", "discriminator AUROC (max)", 3),
            ("wasserstein_mean", "per-gene Wasserstein, mean", 3),
            ("wasserstein_std_mean", "per-gene Wasserstein / real SD, mean", 3),
            ("wasserstein_std_max", "per-gene Wasserstein / real SD, max", 3))
    rows = [[name, _n(f.get(k), d), _n(ref.get(k), d)] for k, name, d in keys]
    disc = f.get("discriminator") or {}
    for mod in [k for k in disc if k not in ("max", "n_per_class", "n_splits")]:
        rows.append([f"discriminator AUROC, {mod}", _n(disc[mod]), _n((ref.get("discriminator") or {}).get(mod))])
    out = ("<section id='fidelity'><h2>Fidelity</h2>"
           "<p>Synthetic vs real training data, beside the same metric for the real holdout vs the real "
           "training data: what two real samples of these sizes look like (the best a generator can hope "
           "for; small holdouts make it noisy).</p>")
    out += _table(["metric", "synthetic vs real", "real holdout vs real (reference)"], rows)
    out += "<h3>PCA</h3>" + _plot_pca(a)
    out += "<h3>Per-gene means and variances</h3>" + _plot_marginals(a, m)
    out += (f"<h3>Gene-gene correlations</h3><p class='muted'>The {_MAX_HEATMAP_GENES} most variable genes "
            "(at most), ordered by clustering the real correlations.</p>" + _plot_corr(a, m))
    worst = f.get("worst_genes") or []
    if worst:
        out += "<h3>Worst reproduced genes</h3>" + _table(
            ["gene", "Wasserstein / real SD", "real mean", "synthetic mean", "real SD", "synthetic SD"],
            [[w["gene"], _n(w["wasserstein_std"]), _n(w["mean_real"]), _n(w["mean_synthetic"]),
              _n(w["sd_real"]), _n(w["sd_synthetic"])] for w in worst])
    return out + "</section>"


def _biology(m):
    b = m["biology"]
    de, ref = b["de"], b.get("de_reference") or {"per_class": {}}
    rows = []
    for c, d in de["per_class"].items():
        if "skipped" in d:
            rows.append([c, "skipped: " + d["skipped"], "", "", "", "", "", "", ""])
            continue
        r = ref["per_class"].get(c, {})
        rows.append([c, _n(d["n_de_real"]), _n(d["n_de_synthetic"]), _n(d["precision_at_k"]),
                     _n(d["recall_at_k"]), _n(r.get("recall_at_k")), _n(d["overlap_at_k"]), _n(d["t_spearman"]),
                     ", ".join(d["recovered"]) or "none"])
    out = ("<section id='biology'><h2>Biology</h2>"
           f"<h3>Differentially expressed genes (top {de['k']} per class)</h3>"
           f"<p>Each class vs the rest, Welch's t-test per gene, Benjamini-Hochberg q &lt; {de['alpha']}, in the "
           "real training data and in the synthetic data separately. Precision@k: share of the synthetic top-k "
           "that are real top-k genes with the same direction; recall@k: share of the real top-k found so. "
           "The reference column is the recall of the real holdout (an independent real sample).</p>")
    out += _table(["class", "DE genes real", "DE genes synthetic", "precision@k", "recall@k",
                   "recall@k, real holdout", "plain top-k overlap", "t-statistic Spearman", "recovered genes"],
                  rows)
    out += (f"<p>Means over classes: precision@k {_n(de['mean_precision_at_k'])}, recall@k "
            f"{_n(de['mean_recall_at_k'])}, t-statistic Spearman {_n(de['mean_t_spearman'])}.</p>")
    out += _plot_de(m)
    co, cref = b["coexpression"], b.get("coexpression_reference") or {}
    out += ("<h3>Co-expression</h3>"
            f"<p>Network: the {_n(co['n_edges'])} gene pairs with the strongest absolute correlation "
            f"among {_n(co['n_genes'])} genes ({_n(co['n_pairs'])} pairs).</p>")
    rows = [["edges recovered (same sign)", _n(co["edge_recovery"]), _n(cref.get("edge_recovery"))],
            ["within-class correlation similarity (mean)", _n(co["within_class_corr_similarity"]),
             _n(cref.get("within_class_corr_similarity"))]]
    for c, v in co["per_class"].items():
        rows.append([f"within-class correlation similarity, {c}", _n(v), _n((cref.get("per_class") or {}).get(c))])
    out += _table(["metric", "synthetic vs real", "real holdout vs real (reference)"], rows)
    return out + "</section>"


def _lifetime(lt):
    """The site's lifetime budget (its train run.json's ``lifetime``): spent before, after, cap, remaining."""
    if lt is None:
        return ""
    unbounded = bool(lt.get("unbounded"))

    def eps(v):
        if v is None:
            return "unbounded" if unbounded else "n/a"
        return f"{v:.4g}"

    limit = lt.get("limit")
    if limit is None:
        remaining = "no cap"
    elif lt.get("remaining") is None:
        remaining = "none (unbounded)" if unbounded else "n/a"
    else:
        remaining = f"{lt['remaining']:.4g}"
    rows = [["epsilon spent before this run", eps(lt.get("spent_before"))],
            ["epsilon spent after this run", eps(lt.get("spent_after"))],
            ["cap (--lifetime-epsilon)", "no cap" if limit is None else f"{limit:.4g}"],
            ["remaining", remaining]]
    if lt.get("ledger"):
        rows.append(["ledger", lt["ledger"]])
    out = ("<h3>Lifetime budget of this site's patients</h3>"
           "<p>From this site's lifetime ledger, as its training run recorded it (<code>run.json</code>): "
           "everything released on these patients in all runs, composed (the model's DP record above covers "
           "this run alone).</p>")
    if unbounded:
        out += ("<p class='warn'>Lifetime budget unbounded (a run without DP was made on these patients): "
                "no finite epsilon bounds what all runs together reveal about them.</p>")
    return out + _table(["field", "value"], rows)


def _privacy(m, a):
    p = m["privacy"]
    dp = p.get("dp")
    out = "<section id='privacy'><h2>Privacy</h2><h3>Formal guarantee (the model's DP record)</h3>"
    if dp is None:
        out += "<p class='warn'>No model file given: no DP record to show.</p>"
    elif not dp.get("private", True):
        out += "<p class='warn'>This model was trained WITHOUT differential privacy (<code>--no-dp</code>).</p>"
    if dp is not None:
        def cell(v):
            if isinstance(v, float):
                return f"{v:.4g}"
            if isinstance(v, dict):
                return ", ".join(f"{k_} {cell(x)}" for k_, x in v.items())
            return v

        if dp.get("private", True) and dp.get("epsilon_spent") is not None:
            t = dp.get("max_colluders") or 0
            vs = dp.get("epsilon_vs_site")
            out += (f"<p>epsilon against outsiders and up to {t} colluding site(s): {dp['epsilon_spent']:.3g}<br>"
                    "epsilon against a participating site (it knows its own noise draw): "
                    + (f"{vs:.3g}" if vs is not None else "n/a (one site)")
                    + ("" if vs is None or vs <= dp["epsilon_spent"] * (1 + 1e-6) else
                       " <span class='warn'>above the target: rerun with --max-colluders 1 or more</span>")
                    + "</p>")
        rows = [[k, cell(v)] for k, v in dp.items() if k != "sites"]
        if dp.get("sites"):
            rows.append(["sites", ", ".join(f"{s.get('name', '?')}" + (f" (n={s['n']})" if "n" in s else "")
                                            for s in dp["sites"])])
        out += _table(["field", "value"], rows)
    d = p["dcr"]
    out += _lifetime(p.get("lifetime"))
    out += "<h3>Distance to closest record</h3>" + _table(
        ["metric", "value"],
        [["synthetic records copying a training record", f"{d['exact_copies']} ({d['exact_copy_fraction']:.1%})"],
         ["median distance to closest training record (all)", _n(d["median_to_train"])],
         [f"median distance to closest training record ({d['n_train_matched']} sampled)",
          _n(d["median_to_train_matched"])],
         [f"median distance to closest holdout record ({d['n_holdout']})", _n(d["median_to_holdout"])],
         ["ratio of the two (1 = no memorisation)", _n(d["median_ratio"])],
         [f"share nearest to a training record (the nearest records are {d['distinct_nearest']} distinct "
          "real records: few means the share rests on a few 'hub' records and is noisy)",
          _n(d["closer_to_train"])],
         ["expected share without memorisation", _n(d["closer_to_train_expected"])],
         ["excess share (0 = none, 1 = all)", _n(d["closer_to_train_excess"])]])
    mia = p["membership_inference"]
    rows = []
    for name, e in mia["attacks"].items():
        if e.get("auroc") is None:
            rows.append([name, e["family"], "skipped: " + e.get("skipped", ""), "", "", ""])
            continue
        ci = e["auroc_ci95"]
        rows.append([name, e["family"], _n(e["auroc"]), f"{ci[0]:.3f}-{ci[1]:.3f}", _n(e["advantage"]),
                     _n(e["tpr_at_fpr_0.1"])])
    out += ("<h3>Membership inference</h3>"
            f"<p>Members: {_n(mia['n_members'])} training records; non-members: {_n(mia['n_non_members'])} "
            f"holdout records, which also serve as the attacker's reference data ({mia['n_folds']}-fold "
            "cross-fitted: a record is never scored against a reference that contains it). AUROC 0.5 = guessing.</p>")
    out += _table(["attack", "family", "AUROC", "95% CI", "advantage (max TPR-FPR)", "TPR at 10% FPR"], rows, 2)
    out += _plot_privacy(a, m)
    return out + "</section>"


def _methods():
    items = [
        "<b>Verdict.</b> Useful? logistic regression TSTR macro-F1 / TRTR macro-F1: GOOD at &ge; "
        f"{UTILITY_GOOD}, FAIR at &ge; {UTILITY_FAIR} if also 0.1 above the majority-class macro-F1, else "
        f"POOR. Realistic? discriminator AUROC (read as at least 0.5): GOOD at &le; {DISCRIMINATOR_GOOD}, "
        f"FAIR at &le; {DISCRIMINATOR_FAIR}, else POOR. Private? POOR if the model is not differentially "
        "private, if a synthetic record copies a training record, or if the strongest membership attack has "
        f"AUROC &ge; {MIA_LEAK} with its 95% interval above 0.5 (the interval widened for the number of "
        f"attacks, Bonferroni); FAIR if that AUROC is &ge; {MIA_SIGNAL} with that interval above 0.5, if epsilon &gt; {EPSILON_WEAK:g}, or without a DP record; else GOOD.",
        "<b>Utility.</b> Logistic regression (standardised genes) and a random forest (100 trees) trained on "
        "the synthetic or the real training data, tested on the real holdout. Macro-F1 is the unweighted mean "
        "of per-class F1; AUROC and average precision are one-vs-rest, averaged over the holdout's classes. "
        "Relative F1 = TSTR / TRTR macro-F1 (the CAMDA 2025 challenge's measure).",
        "<b>Fidelity.</b> Correlations across genes of per-gene means and variances; similarity of the "
        "gene-gene correlation matrices (Pearson r of their upper triangles); MMD² with a Gaussian kernel whose "
        "bandwidth is the median distance between records (genes z-scored by the real data; at most 1,000 "
        "records per side); discriminator AUROC: 5-fold cross-validated classifiers (logistic regression on all "
        "genes, extremely randomised trees on at most 50 principal components) telling equally many real and "
        "synthetic records apart, identical records kept in one fold; per-gene 1-Wasserstein distance.",
        "<b>Biology.</b> One-vs-rest Welch t-tests per class with Benjamini-Hochberg q-values; a side's top-k "
        "are its k most significant genes by |t| among those with q below the threshold; a gene is recovered "
        "when it is top-k on both sides with the same direction. Co-expression: the strongest correlated gene "
        "pairs (5% of pairs, 10 to 1,000) of the real data found among the synthetic data's strongest pairs "
        "with the same sign; within-class correlation similarity removes the class-driven part.",
        "<b>Privacy.</b> Distance to closest record on genes z-scored by the real data. Attacks, each scoring "
        "every member and non-member: <i>distance</i> (minus the distance to the closest synthetic record), "
        "<i>distance_ratio</i> (that distance over the distance to the closest reference record), "
        "<i>domias_kde</i> (DOMIAS density ratio: Gaussian-KDE log density of the synthetic data minus that of "
        "the reference data, on the synthetic data's first principal components), <i>classifier</i> "
        "(extremely randomised trees telling synthetic from reference records; score = probability of "
        "synthetic). The strongest of several attacks is biased upwards: read it with its interval "
        "(Hanley-McNeil). Differential privacy bounds every attack; these attacks only show what some "
        "concrete attacks achieve. The lifetime budget (shown when the site's training <code>run.json</code> is given "
        "with <code>--run-record</code>) is the site ledger's composition of every release ever made on these "
        "patients, in all runs, at the run's delta.",
        "<b>Where the data are.</b> The real training and holdout data are read only on the machine that "
        "produced this report; in a federation each site evaluates on its own holdout.",
    ]
    return ("<section id='methods'><h2>How to read this report</h2>" + "".join(f"<p>{i}</p>" for i in items)
            + "</section>")


def render_report(metrics, artifacts, *, title=None) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    metrics : dict
        Output of :func:`fedsynth.evaluation.evaluate` (optionally with
        ``warnings`` and ``inputs`` added, as :func:`~fedsynth.evaluation.evaluate_files` does).
    artifacts : dict
        The arrays :func:`~fedsynth.evaluation.evaluate` returns with
        ``return_artifacts=True``.
    title : str, optional
        Page title (default "fedsynth evaluation").
    """
    title = title or "fedsynth evaluation"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    secs = metrics.get("seconds") or {}
    inp = metrics.get("inputs") or {}
    sub = f"Generated {when} by fedsynth"
    if inp.get("seed") is not None:
        sub += f", seed {inp['seed']}"
    if secs:
        sub += f"; metrics computed in {sum(secs.values()):.1f} s"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(SITE_INTERNAL)} | {_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<div class='internal' role='alert'>{_e(SITE_INTERNAL)}</div>",
        f"<h1>{_e(title)}</h1><p class='muted'>{_e(sub)}</p>",
        "<p class='warn'>This report plots real training records of this site (PCA scatter, per-gene means and "
        "variances) and scores them against the synthetic data: it is not protected by differential privacy. "
        "Share only synthetic.csv / synthetic.h5ad, model.pt and run.json.</p>",
        _verdict(metrics), _data(metrics), _utility(metrics), _fidelity(metrics, artifacts),
        _biology(metrics), _privacy(metrics, artifacts), _methods(),
        "</body></html>",
    ]
    return "\n".join(parts)
