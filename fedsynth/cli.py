"""The ``fedsynth`` command line: a thin click shell over the package.

Every command reports a user error as one line, ``fedsynth: error: ...``,
with a non-zero exit status, and writes its outputs atomically.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # see __main__.py; set before torch loads

from .errors import FedsynthError, InputError, SessionError

log = logging.getLogger("fedsynth")


def setup_logging(site: str | None = None, verbose: bool = False) -> None:
    tag = f" [{site}]" if site else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s fedsynth{tag} %(levelname)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("fedsynth")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def user_errors(fn):
    """Turn FedsynthError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FedsynthError as e:
            site = kwargs.get("site_name") or os.environ.get("FEDSYNTH_SITE")
            where = f"[{site}] " if site else ""
            click.echo(f"fedsynth: error: {where}{e}", err=True)
            sys.stderr.flush()
            sys.stdout.flush()
            if isinstance(e, SessionError):
                # never wait for gloo's destructors on a broken session
                os._exit(e.exit_code)
            sys.exit(e.exit_code)

    return wrapper


# ---------------------------------------------------------------- options
def data_options(fn):
    """Options shared by every command that reads an expression matrix."""
    opts = [
        click.option("--label-column", default=None, help="Column (or h5ad obs column) holding the class label."),
        click.option("--labels-file", type=click.Path(), default=None,
                     help="CSV/TSV (sample_id,label) with the labels, instead of --label-column."),
        click.option("--orientation", type=click.Choice(["auto", "samples-by-genes", "genes-by-samples"]),
                     default="auto", show_default=True,
                     help="Layout of a CSV/TSV. auto: samples-by-genes if --label-column is a column header; "
                          "with --labels-file, the axis whose IDs match the labels file; h5ad is always obs=samples."),
        click.option("--meta-columns", default="", help="Comma-separated numeric columns that are not genes (e.g. age). "
                     "Non-numeric columns are never genes."),
        click.option("--sample-id-column", default=None, help="Column with sample IDs (default: the first column)."),
        click.option("--input-kind", type=click.Choice(["log", "counts"]), default="log", show_default=True,
                     help="log: log-scale expression used as given. counts: raw integer counts, normalised to "
                          "log1p(CPM); synthetic counts are drawn back with a Poisson count model."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def train_options(fn):
    """Training and privacy options shared by train and simulate."""
    from .generators import HELP as GENERATOR_HELP

    opts = [
        click.option("--generator", default="cvae", show_default=True, metavar="cvae|gaussian|pgm",
                     help=GENERATOR_HELP + " Every generator spends the same --epsilon in one accountant."),
        click.option("--components", type=int, default=4, show_default=True,
                     help="gaussian: principal components r of the within-class covariance "
                          "(low rank + diagonal; 0: diagonal only)."),
        click.option("--pgm-bins", type=int, default=3, show_default=True,
                     help="pgm: bins per gene (DP quantile bins, 2..16)."),
        click.option("--pgm-fine-bins", type=int, default=12, show_default=True,
                     help="pgm: cells of the public-range histogram the DP bin edges come from."),
        click.option("--pgm-range", default=None, metavar="LO,HI",
                     help="pgm: public value range of the genes (default: 0,20 for log input, 0,14 for counts)."),
        click.option("--pgm-iters", type=int, default=1000, show_default=True,
                     help="pgm: mirror-descent iterations of the Private-PGM fit."),
        click.option("--pgm-tree", type=click.Choice(["mst", "none"]), default="mst", show_default=True,
                     help="pgm: also release gene-pair marginals on a spanning tree (mst), or only label x gene."),
        click.option("--pgm-split", default="0.3,0.6,0.1", show_default=True, metavar="EDGES,MARGINALS,PAIRS",
                     help="pgm: relative shares of epsilon for the bin edges, label x gene and gene-pair releases."),
        click.option("--pgm-block", type=int, default=50, show_default=True,
                     help="pgm: most genes per Private-PGM fit; more genes are cut into chains of at most "
                          "this many, fitted one by one."),
        click.option("--epsilon", type=float, default=1.0, show_default=True,
                     help="Total privacy budget epsilon for everything the run reveals."),
        click.option("--delta", type=float, default=1e-5, show_default=True, help="Privacy parameter delta (< 1/N)."),
        click.option("--no-dp", is_flag=True, help="Train WITHOUT differential privacy (baseline only: output is not private)."),
        click.option("--max-colluders", type=int, default=0, show_default=True,
                     help="t: sites that may pool their views; each site adds noise variance sigma^2 C^2/(k-t)."),
        click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the data (expected)."),
        click.option("--batch-size", type=int, default=128, show_default=True,
                     help="Expected batch size over all sites; sample rate q = batch-size / N."),
        click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate."),
        click.option("--clip", type=float, default=1.0, show_default=True, help="Per-sample gradient clip norm C."),
        click.option("--latent-dim", type=int, default=4, show_default=True, help="CVAE latent dimension."),
        click.option("--hidden-dim", type=int, default=32, show_default=True, help="CVAE hidden layer width."),
        click.option("--stats-fraction", type=float, default=0.85, show_default=True,
                     help="Share of epsilon for the released statistics (class counts, gene means, library sizes)."),
        click.option("--genes", type=click.Choice(["strict", "intersect"]), default="strict", show_default=True,
                     help="strict: all sites must have the same genes. intersect: use the genes all sites share."),
        click.option("--classes", default=None,
                     help="Comma-separated label vocabulary shared by all sites (e.g. LumA,LumB,Basal,Her2,NormalLike). "
                          "Without it, each site's own label set is revealed to the others during schema agreement."),
        click.option("--seed", type=int, default=None,
                     help="Fix sampling and initialisation (reproducibility/testing). Default: fresh OS randomness."),
        click.option("--step-timeout", type=float, default=120.0, show_default=True,
                     help="Deadline in seconds for every blocking step after joining (key agreement, each aggregation)."),
        click.option("--rendezvous-timeout", type=float, default=300.0, show_default=True,
                     help="Deadline in seconds for all sites to join the session."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _train_config(kw):
    from .train import TrainConfig

    return TrainConfig(
        epsilon=kw["epsilon"], delta=kw["delta"], no_dp=kw["no_dp"], max_colluders=kw["max_colluders"],
        epochs=kw["epochs"], batch_size=kw["batch_size"], lr=kw["lr"], clip=kw["clip"],
        latent_dim=kw["latent_dim"], hidden_dim=kw["hidden_dim"], stats_fraction=kw["stats_fraction"],
        genes=kw["genes"], seed=kw["seed"], generator=kw["generator"], components=kw["components"],
        **_pgm_config(kw),
        classes=tuple(c.strip() for c in kw["classes"].split(",") if c.strip()) if kw.get("classes") else None,
    )


def _pgm_config(kw) -> dict:
    from .pgm import parse_range, parse_split

    return {"pgm_bins": kw["pgm_bins"], "pgm_fine_bins": kw["pgm_fine_bins"], "pgm_range": parse_range(kw["pgm_range"]),
            "pgm_iters": kw["pgm_iters"], "pgm_tree": kw["pgm_tree"] != "none", "pgm_split": parse_split(kw["pgm_split"]),
            "pgm_block": kw["pgm_block"]}


def load_cohort(path, kw, *, min_samples=2):
    """Read and validate one matrix with the data options."""
    from .data.io import read_expression
    from .data.preprocess import validate_and_normalise

    if not kw["label_column"] and not kw["labels_file"]:
        raise click.UsageError("give --label-column or --labels-file")
    meta = tuple(c for c in kw["meta_columns"].split(",") if c)
    raw = read_expression(path, label_column=kw["label_column"], labels_file=kw["labels_file"],
                          orientation=kw["orientation"], meta_columns=meta,
                          sample_id_column=kw["sample_id_column"])
    return validate_and_normalise(raw, input_kind=kw["input_kind"],
                                  label_column=kw["label_column"] or "label", min_samples=min_samples), raw


def prepare_outdir(outdir, names, overwrite):
    """Create ``outdir``; refuse to overwrite existing outputs unless asked."""
    from .errors import InputError

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clash = [n for n in names if (out / n).exists()]
        if clash:
            raise InputError(f"{out}: already holds {', '.join(clash)}; choose another --outdir or pass --overwrite")
    return out


# ----------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fedsynth")
def main():
    """fedsynth: federated, differentially private synthetic RNA-seq.

    Sites (hospitals) fit one generator together (--generator: a conditional
    VAE, a class-conditional Gaussian, ...) over an authenticated CrypTen
    session: only noisy sums over all sites are ever revealed, and the
    released model and its samples are (epsilon, delta)-DP for every patient.

    \b
    Commands, in the order a site uses them:
      preprocess   validate and normalise a matrix (also run inside train)
      train        this site's part of a federated run (all sites run it)
      synthesize   draw synthetic samples from a released model
      simulate     run k sites as k local processes on one machine (demo, benchmarks)
    """


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Expression matrix: CSV/TSV(.gz) or .h5ad.")
@data_options
@click.option("--out", "out", required=True, type=click.Path(),
              help="Validated matrix (.h5ad, .csv or .tsv): the training part when --holdout is given.")
@click.option("--holdout", type=float, default=0.0, show_default=True,
              help="Share of samples to hold out (stratified by label) for this site's own evaluation.")
@click.option("--holdout-out", type=click.Path(), default=None, help="Where to write the held-out samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout split.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@user_errors
def preprocess(data, out, holdout, holdout_out, seed, overwrite, **kw):
    """Validate a matrix; optionally split off a holdout; write AnnData/CSV.

    Checks: readable format, no NaN/inf, unique sample and gene IDs, a label
    for every sample, non-negative integers for counts, not every gene
    constant. Values are written as given (counts stay counts; train
    normalises them), with the label in obs['label'] (h5ad) or a `label`
    column (CSV/TSV), and uns['fedsynth'] recording the input kind.
    """
    import pandas as pd

    from .evaluate import split_holdout
    from .data.io import write_table

    setup_logging()
    if not 0 <= holdout < 1:
        raise click.BadParameter(f"must be in [0, 1) (got {holdout})", param_hint="--holdout")
    if (holdout > 0) != (holdout_out is not None):
        raise click.UsageError("--holdout and --holdout-out go together")
    cohort, raw = load_cohort(data, kw)
    for path in [out] + ([holdout_out] if holdout_out else []):
        if Path(path).exists() and not overwrite:
            raise InputError(f"{path}: file exists; refusing to overwrite it (pass --overwrite)")
    expr = raw.expr.loc[cohort.sample_ids, cohort.genes]
    labels = pd.Series(cohort.labels, index=expr.index)
    parts = [(out, np.arange(cohort.n_samples))]
    if holdout > 0:
        train_idx, test_idx = split_holdout(cohort.n_samples, cohort.labels, fraction=holdout, seed=seed)
        parts = [(out, train_idx), (holdout_out, test_idx)]
    uns = {"fedsynth": {"input_kind": cohort.input_kind, "source": str(data)}}
    for path, rows in parts:
        write_table(expr.iloc[rows], labels.iloc[rows], path, overwrite=overwrite, uns=uns)
    split = f" ({len(parts[0][1])} kept, {len(parts[1][1])} held out -> {holdout_out})" if holdout > 0 else ""
    click.echo(f"fedsynth preprocess: {cohort.n_samples} samples x {cohort.n_genes} genes, "
               f"{len(set(cohort.labels))} labels, input kind {cohort.input_kind}{split} -> {out}")


@main.command()
@click.option("--rank", type=int, required=True, help="This site's rank, 0..K-1 (rank 0 hosts the rendezvous).")
@click.option("--world-size", type=int, required=True, help="Number of sites K.")
@click.option("--rendezvous", required=True, help="tcp://HOST:PORT where rank 0 listens.")
@click.option("--secret-file", required=True, type=click.Path(),
              help="File with the pre-shared session secret (>= 16 bytes, not readable by others).")
@click.option("--data", required=True, type=click.Path(), help="This site's expression matrix.")
@data_options
@train_options
@click.option("--site-name", default=None, help="Name for logs (default: site<rank>).")
@click.option("--outdir", required=True, type=click.Path(), help="Output folder: model.pt and run.json.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs in --outdir.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@user_errors
def train(rank, world_size, rendezvous, secret_file, data, site_name, outdir, overwrite, progress, **kw):
    """Run this site's part of federated DP training.

    Every site runs this with its own --rank and data and the same
    --world-size, --rendezvous, secret and training options. Writes
    OUTDIR/model.pt (weights, sampling info, DP record) and OUTDIR/run.json.
    """
    from .data.io import atomic_write_json
    from .model import save_model
    from .federation.session import Session, announce_failure, parse_rendezvous, read_secret
    from .generators import train as train_site

    site_name = site_name or f"site{rank}"
    os.environ["FEDSYNTH_SITE"] = site_name
    setup_logging(site_name)
    t0 = time.monotonic()
    parse_rendezvous(rendezvous)
    try:
        cfg = _train_config(kw)
        cfg.validate()
        secret = read_secret(secret_file)
        out = prepare_outdir(outdir, ["model.pt", "run.json"], overwrite)
        cohort, _ = load_cohort(data, kw)
    except FedsynthError as e:
        announce_failure(rendezvous, rank, f"{site_name}: {e}")
        raise
    log.info("%s: %d samples x %d genes", data, cohort.n_samples, cohort.n_genes)
    timings = {"load": time.monotonic() - t0}
    t1 = time.monotonic()
    with Session(rank, world_size, rendezvous, secret, site_name=site_name,
                 rendezvous_timeout=kw["rendezvous_timeout"], step_timeout=kw["step_timeout"]) as session:
        timings["session"] = time.monotonic() - t1
        result = train_site(session, cohort, cfg, progress=progress)
        traffic = session.traffic()
    timings.update(result.timings)
    save_model(out / "model.pt", model=result.model, meta=result.meta)
    dp = result.meta["dp"]
    timings["total"] = time.monotonic() - t0
    run = {
        "command": "train",
        "generator": result.meta.get("generator", "cvae"),
        "generator_params": result.meta.get("generator_params"),
        "budget_split": [{"name": m["name"], "noise_multiplier": m["noise_multiplier"]}
                         for m in result.meta["dp"].get("mechanisms", [])],
        "site": site_name,
        "rank": rank,
        "epsilon": dp["epsilon"],
        "epsilon_spent": dp["epsilon_spent"],
        "delta": dp["delta"],
        "private": dp["private"],
        "max_colluders": dp["max_colluders"],
        "sites": dp["sites"],
        "wall_seconds": {k: round(v, 3) for k, v in timings.items()},
        "communication": traffic,
        "dp": dp,
    }
    atomic_write_json(out / "run.json", run)
    spent = "NOT PRIVATE (--no-dp)" if not dp["private"] else f"epsilon {dp['epsilon_spent']:.3f} of {dp['epsilon']:g}, delta {dp['delta']:g}"
    click.echo(f"fedsynth train [{site_name}]: done in {timings['total']:.1f}s; {spent}; "
               f"{len(dp['sites'])} sites, {sum(s['n'] for s in dp['sites'])} samples -> {out / 'model.pt'}")


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(), help="A model.pt written by train or simulate.")
@click.option("--n", type=int, required=True, help="Number of synthetic samples.")
@click.option("--class-proportions", default=None,
              help="e.g. LumA=0.5,Basal=0.5 (default: the model's DP class proportions).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for sampling.")
@click.option("--label-column", default="label", show_default=True, help="Name of the label column written.")
@click.option("--outdir", required=True, type=click.Path(), help="Writes synthetic.csv and synthetic.h5ad here.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@user_errors
def synthesize(model_path, n, class_proportions, seed, label_column, outdir, overwrite):
    """Draw N synthetic samples from a released model (no other site needed)."""
    setup_logging()
    out = prepare_outdir(outdir, ["synthetic.csv", "synthetic.h5ad"], overwrite)
    expr, labels, meta = synthesize_to(out, model_path, n, class_proportions, seed, label_column, overwrite)
    click.echo(f"fedsynth synthesize: {len(expr)} samples x {expr.shape[1]} genes "
               f"({', '.join(f'{c}: {(labels == c).sum()}' for c in meta['classes'])}) -> {out}")


def synthesize_to(out, model_path, n, class_proportions, seed, label_column, overwrite):
    """Sample and write OUT/synthetic.csv and OUT/synthetic.h5ad."""
    from .data.io import write_table
    from .synthesize import synthesize as draw

    expr, labels, meta = draw(model_path, n, class_proportions=class_proportions, seed=seed)
    dp = meta["dp"]
    uns = {"fedsynth": {"private": bool(dp["private"]), "epsilon": float(dp["epsilon"] or -1),
                        "delta": float(dp["delta"]), "max_colluders": int(dp["max_colluders"]),
                        "input_kind": meta["input_kind"], "seed": int(seed)}}
    write_table(expr, labels, out / "synthetic.csv", label_column=label_column, overwrite=overwrite)
    write_table(expr, labels, out / "synthetic.h5ad", label_column=label_column, overwrite=overwrite, uns=uns)
    return expr, labels, meta


@main.command()
@click.option("--synthetic", required=True, type=click.Path(), help="Synthetic matrix (synthetic.csv/.h5ad).")
@click.option("--train", "train_path", required=True, type=click.Path(),
              help="This site's real training data (what the model was trained on).")
@click.option("--holdout", required=True, type=click.Path(), help="This site's real held-out data (never trained on).")
@click.option("--model", "model_path", type=click.Path(), default=None, help="The model.pt, for its DP record.")
@click.option("--label-column", default="label", show_default=True, help="Label column of the real data.")
@click.option("--synthetic-label-column", default=None, help="Label column of the synthetic data (default: --label-column).")
@click.option("--meta-columns", default="", help="Comma-separated numeric columns that are not genes.")
@click.option("--input-kind", type=click.Choice(["log", "counts"]), default="log", show_default=True,
              help="Scale of all three matrices; counts are compared as log1p CPM.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the classifiers and attacks.")
@click.option("--outdir", required=True, type=click.Path(), help="Writes metrics.json and report.html here.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@user_errors
def evaluate(synthetic, train_path, holdout, model_path, label_column, synthetic_label_column, meta_columns,
             input_kind, seed, outdir, overwrite):
    """Score synthetic data on this site's own real data (which never leaves the site).

    Utility (train on synthetic, test on real holdout, beside train on real),
    fidelity, and the model's DP record; writes OUTDIR/metrics.json and a
    self-contained OUTDIR/report.html.
    """
    from .evaluate import evaluate_files

    setup_logging()
    metrics = evaluate_files(synthetic, train_path, holdout, outdir=outdir, label_column=label_column,
                             synthetic_label_column=synthetic_label_column or label_column,
                             meta_columns=[c for c in meta_columns.split(",") if c], input_kind=input_kind,
                             model=model_path, overwrite=overwrite, seed=seed)
    for warning in metrics["warnings"]:
        click.echo(f"fedsynth evaluate: warning: {warning}", err=True)
    lr = metrics["utility"]["tstr"]["logreg"]
    real = metrics["utility"]["trtr"]["logreg"]
    click.echo(f"fedsynth evaluate: TSTR logreg accuracy {lr['accuracy']:.3f}, macro-F1 {lr['macro_f1']:.3f} "
               f"(real: {real['accuracy']:.3f}, {real['macro_f1']:.3f}) -> {Path(outdir) / 'report.html'}")


@main.command()
@click.option("--data", required=True, type=click.Path(), help="One matrix holding every site's samples.")
@data_options
@click.option("--sites", type=int, default=3, show_default=True,
              help="Number of sites k (with --site-column: the k largest sites). 1 = centralised baseline.")
@click.option("--site-column", default=None, help="Split by this column (e.g. the hospital); otherwise --split.")
@click.option("--split", type=click.Choice(["even", "dirichlet"]), default="even", show_default=True,
              help="Without --site-column: random even split, or label-skewed Dirichlet split.")
@click.option("--alpha", type=float, default=0.5, show_default=True,
              help="Dirichlet concentration for --split dirichlet (smaller: more skewed).")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Share of every site's samples held out for evaluation (0: no evaluation).")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the site split, holdout and sampling.")
@click.option("--local-only", is_flag=True, help="Baseline: every site trains alone (k separate 1-site runs).")
@click.option("--n-synthetic", type=int, default=None, help="Synthetic samples to draw (default: number of training samples).")
@train_options
@click.option("--outdir", required=True, type=click.Path(), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs in --outdir.")
@user_errors
def simulate(data, sites, site_column, split, alpha, holdout, split_seed, local_only, n_synthetic, outdir,
             overwrite, **kw):
    """Run K sites as K local processes over one CrypTen session (demo, benchmarks).

    Splits --data into sites, holds out --holdout of each site, and starts one
    `fedsynth train` process per site on 127.0.0.1 with a fresh session
    secret. Writes OUTDIR/model.pt, OUTDIR/synthetic.csv, OUTDIR/synthetic.h5ad
    and OUTDIR/run.json (epsilon, delta, each site's n, wall seconds per
    phase, train-on-synthetic/test-on-real scores on the held-out samples).
    """
    from .simulate import run_simulation

    setup_logging("simulate")
    from .generators import module as generator_module

    generator_module(kw["generator"])  # unknown or not installed: one line, before any process starts
    _train_config(kw).validate()
    if not kw["label_column"] and not kw["labels_file"]:
        raise click.UsageError("give --label-column or --labels-file")
    read_kw = {"label_column": kw.pop("label_column"), "labels_file": kw.pop("labels_file"),
               "orientation": kw.pop("orientation"), "sample_id_column": kw.pop("sample_id_column"),
               "meta_columns": tuple(c for c in kw.pop("meta_columns").split(",") if c)}
    input_kind = kw.pop("input_kind")
    run = run_simulation(data, read_kw=read_kw, input_kind=input_kind, sites=sites, site_column=site_column,
                         split=split, alpha=alpha, holdout=holdout, split_seed=split_seed, local_only=local_only,
                         n_synthetic=n_synthetic, outdir=outdir, overwrite=overwrite, train_kw=kw)
    private = "NOT PRIVATE (--no-dp)" if not run["private"] else f"epsilon {run['epsilon']:g}, delta {run['delta']:g}"
    if local_only:
        click.echo(f"fedsynth simulate: local-only baselines for {len(run['sites'])} sites, {private} -> {outdir}")
        return
    score = ""
    if run["evaluation"]:
        lr = run["evaluation"]["tstr"]["logreg"]
        score = f"; TSTR logreg accuracy {lr['accuracy']:.3f}, macro-F1 {lr['macro_f1']:.3f}"
    click.echo(f"fedsynth simulate: {len(run['sites'])} site(s), {sum(s['n'] for s in run['sites'])} training "
               f"samples, {private}{score}; {run['wall_seconds']['total']:.0f}s -> {outdir}")


@main.command("split-sites")
@click.option("--data", required=True, type=click.Path(),
              help="One samples x genes CSV/TSV (optionally .gz) holding every site's samples.")
@click.option("--site-column", required=True, help="Column naming each sample's site (e.g. the hospital).")
@click.option("--n-sites", type=int, required=True, help="Keep the K largest sites (ties by name); rank 0 is the largest.")
@click.option("--min-samples", type=int, default=4, show_default=True, help="Fewest samples a kept site may have.")
@click.option("--meta-columns", default="",
              help="Comma-separated numeric columns that are not genes (as for preprocess), e.g. age.")
@click.option("--sample-id-column", default=None, help="Column holding the sample IDs (default: the first one).")
@click.option("--outdir", required=True, type=click.Path(),
              help="Folder for OUTDIR/<rank>__<site>.csv|tsv[.gz] (created if missing).")
@click.option("--overwrite", is_flag=True, help="Replace site files that already exist in --outdir.")
@user_errors
def split_sites_command(data, site_column, n_sites, min_samples, meta_columns, sample_id_column, outdir, overwrite):
    """Split one matrix into its K largest sites, one file per site.

    For the pipeline's --mode local (K hospitals on one host). Each file holds
    the header and the site's rows as read: every column, the same delimiter,
    gzipped if --data is; no value is changed. On any error nothing is written.
    """
    from .workflows.split import split_sites_to_files

    files = split_sites_to_files(data, site_column=site_column, n_sites=n_sites, outdir=outdir,
                                 min_samples=min_samples, overwrite=overwrite,
                                 meta_columns=[c.strip() for c in meta_columns.split(",") if c.strip()],
                                 sample_id_column=sample_id_column)
    click.echo(f"fedsynth split-sites: the {len(files)} largest sites of {data} by {site_column!r} -> "
               + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
