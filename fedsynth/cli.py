"""The ``fedsynth`` command line: a thin click shell over the package.

Every command reports a user error as one line, ``fedsynth: error: ...``,
with a non-zero exit status, and writes its outputs atomically.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # see __main__.py; set before torch loads

from .workflows import FedsynthError, SessionError
from .workflows import options as train_table
from .workflows.common import prepare_outdir
from .workflows.evaluate import evaluate_site
from .workflows.preprocess import preprocess_file
from .workflows.simulate import run_simulation
from .workflows.split import split_samplesheet_sites_to_files, split_sites_to_files
from .workflows.synthesize import OUTPUTS as SYNTHETIC_OUTPUTS
from .workflows.synthesize import synthesize_to
from .workflows.train import train_site

log = logging.getLogger("fedsynth")


def setup_logging(site: str | None = None, verbose: bool = False) -> None:
    """Log to stderr as ``HH:MM:SS fedsynth [site] LEVEL: message``."""
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
        click.option("--label-column", default=None,
                     help="Column holding the class label: of the matrix (or h5ad obs), or of --samplesheet."),
        click.option("--samplesheet", type=click.Path(), default=None,
                     help="nf-core-style samplesheet (CSV/TSV): sample IDs in 'sample' (else the first column), "
                          "the label in --label-column, other columns as sample metadata. Rows repeating a "
                          "sample (one per sequencing run) are merged. For matrices such as nf-core/rnaseq's "
                          "salmon.merged.gene_counts.tsv (gene_id, gene_name, one column per sample)."),
        click.option("--labels-file", type=click.Path(), default=None,
                     help="CSV/TSV (sample_id,label) with the labels, instead of --label-column."),
        click.option("--layer", default=None,
                     help="For .h5ad: read this layer instead of X (e.g. counts, with --input-kind counts); "
                          "'raw' reads .raw."),
        click.option("--orientation", type=click.Choice(["auto", "samples-by-genes", "genes-by-samples"]),
                     default="auto", show_default=True,
                     help="Layout of a CSV/TSV. auto: samples-by-genes if --label-column is a column header; "
                          "with --labels-file, the axis whose IDs match the labels file; h5ad is always obs=samples."),
        click.option("--meta-columns", default="", help="Comma-separated numeric columns that are not genes (e.g. age). "
                     "Non-numeric columns are never genes."),
        click.option("--sample-id-column", default=None, help="Column with sample IDs (default: the first column)."),
        click.option("--input-kind", type=click.Choice(["log", "counts"]), default="log", show_default=True,
                     help="log: log-scale expression used as given. counts: raw integer counts, normalised to "
                          "log1p(CPM); synthetic counts are drawn back with a Poisson count model. salmon/RSEM "
                          "estimated counts (nf-core/rnaseq *.gene_counts.tsv) are rounded as tximport/DESeq2 "
                          "do; TPM is refused."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def train_options(fn):
    """The training options, from the one table (:mod:`fedsynth.workflows.options`)."""
    for opt in reversed(train_table.train_options()):
        kw = {"help": opt.help, "show_default": opt.default is not None and opt.kind != "flag"}
        if opt.kind == "flag":
            fn = click.option(opt.flag, is_flag=True, help=opt.help)(fn)
            continue
        if opt.choices and opt.name != "generator":
            kw["type"] = click.Choice(list(opt.choices))
        elif opt.kind in ("int", "float"):
            kw["type"] = int if opt.kind == "int" else float
        if opt.info.metavar:
            kw["metavar"] = opt.info.metavar
        default = opt.text(opt.default) if opt.info.format is not None else opt.default
        fn = click.option(opt.flag, default=default, **kw)(fn)
    return fn


def _data_kw(kw: dict) -> dict:
    """Pop the data options out of a command's keywords."""
    return {name: kw.pop(name) for name in ("label_column", "labels_file", "samplesheet", "layer", "orientation",
                                            "meta_columns", "sample_id_column", "input_kind")}


def _train_config(kw: dict):
    """The TrainConfig from a command's keywords (the table's options; the rest stays in ``kw``)."""
    names = {opt.name for opt in train_table.train_options()}
    return train_table.train_config({name: kw.pop(name) for name in list(kw) if name in names})


# ----------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fedsynth")
def main():
    """fedsynth: federated, differentially private synthetic RNA-seq.

    Sites (hospitals) fit one generator together (--generator: a conditional
    VAE, a class-conditional Gaussian, ...) over an authenticated CrypTen
    session: only noisy sums over all sites are ever revealed, and the
    released model and its samples are (epsilon, delta)-DP for every patient.

    Unit of privacy: one sample (row) of one site. The guarantee assumes one
    row per patient and no patient at two sites: merge a patient's rows into
    one before training, and let sites that may share patients coordinate
    (agree which site keeps each) first.

    Shareable outputs: synthetic.csv / synthetic.h5ad, model.pt, run.json.
    Site-internal: evaluate's report.html and metrics.json, preprocess's
    validated matrices (they hold or show this site's real data).

    \b
    Commands, in the order a site uses them:
      preprocess   validate and normalise a matrix (also run inside train)
      train        this site's part of a federated run (all sites run it)
      synthesize   draw synthetic samples from a released model
      evaluate     score synthetic data on this site's own real data (report.html)
      simulate     run k sites as k local processes on one machine (demo, benchmarks)
      split-sites  split one matrix into its largest sites by a column (pipeline's local mode)
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
    setup_logging()
    click.echo(preprocess_file(data, _data_kw(kw), out=out, holdout=holdout, holdout_out=holdout_out, seed=seed,
                               overwrite=overwrite))


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
    OUTDIR/model.pt (weights, sampling info, DP record) and OUTDIR/run.json,
    both shareable.

    Unit of privacy: one sample (row) of one site. The guarantee assumes one
    row per patient and no patient at two sites: merge a patient's rows into
    one before training, and let sites that may share patients coordinate
    (agree which site keeps each) first.
    """
    site_name = site_name or f"site{rank}"
    setup_logging(site_name)
    data_kw = _data_kw(kw)
    run = train_site(rank=rank, world_size=world_size, rendezvous=rendezvous, secret_file=secret_file, data=data,
                     data_kw=data_kw, option_values=kw, site_name=site_name, outdir=outdir, overwrite=overwrite,
                     progress=progress)
    click.echo(run.summary())


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(), help="A model.pt written by train or simulate.")
@click.option("--n", type=int, required=True, help="Number of synthetic samples.")
@click.option("--class-proportions", default=None,
              help="e.g. LumA=0.5,Basal=0.5 (default: the model's DP class proportions).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed for sampling.")
@click.option("--label-column", default="label", show_default=True,
              help="Name of the label column written (give your input's, e.g. condition, so that "
                   "synthetic.samplesheet.csv fits your contrasts file).")
@click.option("--annotation", type=click.Path(), default=None,
              help="A matrix with this site's gene annotation (nf-core/rnaseq gene_counts.tsv, or a preprocessed "
                   ".h5ad): its gene_id as written (with version) and gene_name go into the outputs. Only its gene "
                   "columns are read.")
@click.option("--outdir", required=True, type=click.Path(),
              help="Writes synthetic.csv and synthetic.h5ad here; for a model trained on counts also "
                   "synthetic.gene_counts.tsv and synthetic.samplesheet.csv (nf-core/rnaseq's layout).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@user_errors
def synthesize(model_path, n, class_proportions, seed, label_column, annotation, outdir, overwrite):
    """Draw N synthetic samples from a released model (no other site needed)."""
    setup_logging()
    out = prepare_outdir(outdir, list(SYNTHETIC_OUTPUTS), overwrite)
    expr, labels, meta = synthesize_to(out, model_path, n, class_proportions=class_proportions, seed=seed,
                                       label_column=label_column, overwrite=overwrite, annotation_from=annotation)
    click.echo(f"fedsynth synthesize: {len(expr)} samples x {expr.shape[1]} genes "
               f"({', '.join(f'{c}: {(labels == c).sum()}' for c in meta['classes'])}) -> {out}")


@main.command()
@click.option("--synthetic", required=True, type=click.Path(), help="Synthetic matrix (synthetic.csv/.h5ad).")
@click.option("--train", "train_path", required=True, type=click.Path(),
              help="This site's real training data (what the model was trained on).")
@click.option("--holdout", required=True, type=click.Path(), help="This site's real held-out data (never trained on).")
@click.option("--model", "model_path", type=click.Path(), default=None, help="The model.pt, for its DP record.")
@click.option("--run-record", type=click.Path(), default=None,
              help="This site's run.json from `fedsynth train`, for its lifetime budget: the report shows the "
                   "epsilon these patients had spent before that run and after it, the --lifetime-epsilon cap "
                   "and what remains (metrics.json: privacy.lifetime).")
@click.option("--label-column", default="label", show_default=True, help="Label column of the real data.")
@click.option("--synthetic-label-column", default=None, help="Label column of the synthetic data (default: --label-column).")
@click.option("--meta-columns", default="", help="Comma-separated numeric columns that are not genes.")
@click.option("--input-kind", type=click.Choice(["log", "counts"]), default="log", show_default=True,
              help="Scale of all three matrices; counts are compared as log1p CPM.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the classifiers and attacks.")
@click.option("--outdir", required=True, type=click.Path(), help="Writes metrics.json and report.html here.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@user_errors
def evaluate(synthetic, train_path, holdout, model_path, run_record, label_column, synthetic_label_column,
             meta_columns, input_kind, seed, outdir, overwrite):
    """Score synthetic data on this site's own real data (which never leaves the site).

    Utility (train on synthetic, test on real holdout, beside train on real),
    fidelity, privacy attacks, the model's DP record (--model) and this
    site's lifetime budget (--run-record); writes OUTDIR/metrics.json and a
    self-contained OUTDIR/report.html.
    """
    setup_logging()
    metrics = evaluate_site(synthetic, train_path, holdout, model=model_path, run_record=run_record, outdir=outdir,
                            label_column=label_column,
                            synthetic_label_column=synthetic_label_column or label_column,
                            meta_columns=[c for c in meta_columns.split(",") if c], input_kind=input_kind,
                            overwrite=overwrite, seed=seed)
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
    and OUTDIR/run.json (epsilon, delta, each site's n (simulate holds all the data), wall seconds per
    phase, train-on-synthetic/test-on-real scores on the held-out samples).

    Unit of privacy: one sample (row) of one site. The guarantee assumes one
    row per patient and no patient at two sites: merge a patient's rows into
    one before training, and let sites that may share patients coordinate
    (agree which site keeps each) first.
    """
    setup_logging("simulate")
    data_kw = _data_kw(kw)
    cfg = _train_config(kw)
    cfg.validate(classes_from_data=True)  # unknown generator or bad option: one line, before any process starts
    run = run_simulation(data, data_kw=data_kw, sites=sites, site_column=site_column, split=split, alpha=alpha,
                         holdout=holdout, split_seed=split_seed, local_only=local_only, n_synthetic=n_synthetic,
                         outdir=outdir, overwrite=overwrite, cfg=cfg)
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
              help="One samples x genes CSV/TSV (optionally .gz) holding every site's samples; with --samplesheet, "
                   "the matrix (e.g. nf-core/rnaseq's salmon.merged.gene_counts.tsv).")
@click.option("--samplesheet", type=click.Path(), default=None,
              help="The matrix's samplesheet; --site-column is then its column, and every site gets its own "
                   "samplesheet rows and sample columns.")
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
def split_sites_command(data, samplesheet, site_column, n_sites, min_samples, meta_columns, sample_id_column, outdir,
                        overwrite):
    """Split one matrix into its K largest sites, one file per site.

    For the pipeline's --mode local (K hospitals on one host). Each file holds
    the header and the site's rows as read: every column, the same delimiter,
    gzipped if --data is; no value is changed. With --samplesheet each site
    gets OUTDIR/<rank>__<site>.<matrix name> (the gene columns and its own
    sample columns) and OUTDIR/<rank>__<site>.samplesheet.csv (its rows, every
    sequencing run). On any error nothing is written.
    """
    if samplesheet:
        pairs = split_samplesheet_sites_to_files(data, samplesheet, site_column=site_column, n_sites=n_sites,
                                                 outdir=outdir, min_samples=min_samples, overwrite=overwrite)
        click.echo(f"fedsynth split-sites: the {len(pairs)} largest sites of {samplesheet} by {site_column!r} -> "
                   + ", ".join(f"{m} + {s.name}" for m, s in pairs))
        return
    files = split_sites_to_files(data, site_column=site_column, n_sites=n_sites, outdir=outdir,
                                 min_samples=min_samples, overwrite=overwrite,
                                 meta_columns=[c.strip() for c in meta_columns.split(",") if c.strip()],
                                 sample_id_column=sample_id_column)
    click.echo(f"fedsynth split-sites: the {len(files)} largest sites of {data} by {site_column!r} -> "
               + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
