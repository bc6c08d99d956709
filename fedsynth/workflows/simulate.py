"""``fedsynth simulate``: k sites as k real processes on this machine.

Splits one matrix into sites (by a column, evenly, or label-skewed), holds
out a stratified share of every site for evaluation, writes each site's
training part to a private temporary folder, generates a session secret,
and starts ``fedsynth train`` once per site on 127.0.0.1 -- the same
command every hospital runs. Then it checks that all sites ended with the
same model, draws the synthetic cohort and scores it on the held-out real
samples (train on synthetic, test on real).

Baselines through the same code path: ``--sites 1`` (centralised DP on the
pooled data), ``--no-dp`` (not private), ``--local-only`` (each site alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..data.io import atomic_write_json, read_expression, write_table
from ..data.preprocess import expression_as_validated, split_holdout, split_sites, validate_and_normalise
from ..errors import FedsynthError, InputError, ParameterError
from ..evaluation import tstr
from ..generators.protocol import TrainConfig
from . import options
from .common import prepare_outdir, read_options
from .records import run_record
from .synthesize import OUTPUTS as SYNTHETIC_OUTPUTS
from .synthesize import synthesize, synthesize_to

log = logging.getLogger("fedsynth")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_secret(folder: Path) -> Path:
    """A fresh 256-bit session secret in ``folder/session.key`` (mode 0600)."""
    path = folder / "session.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def model_digest(path: Path) -> str:
    """SHA-256 over a model's weights (identical models give identical digests)."""
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for name, t in sorted(blob["state_dict"].items()):
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def run_sites(site_files, workdir: Path, secret: Path, train_args: list[str], *,
              step_timeout: float, names: list[str], progress_rank: int | None = 0) -> list[Path]:
    """Start one ``fedsynth train`` process per site; wait; return their outdirs."""
    port = free_port()
    k = len(site_files)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    procs, outs = [], []
    for r, data in enumerate(site_files):
        out = workdir / f"out_{r}"
        cmd = [sys.executable, "-m", "fedsynth", "train", "--rank", str(r), "--world-size", str(k),
               "--rendezvous", f"tcp://127.0.0.1:{port}", "--secret-file", str(secret),
               "--data", str(data), "--label-column", "label", "--site-name", names[r],
               "--outdir", str(out), "--progress" if r == progress_rank else "--no-progress", *train_args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        outs.append(out)
    failed_at = None
    while any(p.poll() is None for p in procs):
        if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
            failed_at = time.monotonic()
        # the survivors must exit by themselves within their deadline; this is a backstop
        if failed_at is not None and time.monotonic() - failed_at > step_timeout + 60:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    for p in procs:
        for line in p.stdout.read().splitlines():
            print(f"  {line}", file=sys.stderr)
    codes = [p.returncode for p in procs]
    if any(codes):
        bad = ", ".join(f"{names[r]} (rank {r}) exit {c}" for r, c in enumerate(codes) if c)
        raise FedsynthError(f"simulate: site processes failed: {bad}; see their messages above")
    return outs


def _split(raw_expr, labels, site_values, *, sites, split, alpha, seed):
    if sites == 1:
        return [("pooled", np.arange(len(raw_expr)))]
    mode = "column" if site_values is not None else split
    return split_sites(raw_expr, labels, mode=mode, n_sites=sites, site_values=site_values,
                       alpha=alpha, seed=seed, min_per_site=4)


def run_simulation(data, *, data_kw: dict, sites: int, site_column: str | None, split: str, alpha: float,
                   holdout: float, split_seed: int, local_only: bool, n_synthetic: int | None, outdir,
                   overwrite: bool, cfg: TrainConfig) -> dict:
    """Split, train k sites as k processes, synthesize, evaluate; returns run.json's content."""
    read_kw = read_options(data_kw)
    input_kind = data_kw.get("input_kind", "log")
    t_start = time.monotonic()
    if sites < 1:
        raise ParameterError(f"--sites must be >= 1 (got {sites})")
    if not 0 <= holdout < 1:
        raise ParameterError(f"--holdout must be in [0, 1) (got {holdout})")
    if local_only and sites == 1:
        raise ParameterError("--local-only needs --sites >= 2")
    meta_cols = list(read_kw.get("meta_columns", ()))
    if site_column and site_column not in meta_cols and not read_kw.get("samplesheet"):
        meta_cols.append(site_column)  # with a samplesheet the site is one of its columns
    label_column = read_kw.get("label_column") or "label"
    outputs = ["run.json"] + ([] if local_only else ["model.pt", *SYNTHETIC_OUTPUTS])
    out = prepare_outdir(outdir, outputs + (["local"] if local_only else []), overwrite)

    raw = read_expression(data, **(read_kw | {"meta_columns": tuple(meta_cols)}))
    # validate the whole file once, so a bad input fails before any process starts
    cohort = validate_and_normalise(raw, input_kind=input_kind, label_column=label_column)
    if site_column and site_column not in raw.meta.columns:
        where = read_kw.get("samplesheet") or data
        raise InputError(f"{where}: --site-column {site_column!r} is not a column")
    expr = expression_as_validated(raw, input_kind)  # salmon/RSEM estimated counts rounded once, here
    labels = raw.labels.astype(str)
    site_values = raw.meta[site_column].astype(str) if site_column else None
    parts = _split(expr, labels.to_numpy(), site_values, sites=sites, split=split, alpha=alpha, seed=split_seed)

    timings = {"split": time.monotonic() - t_start}
    work = Path(tempfile.mkdtemp(prefix="fedsynth-sim-"))
    try:
        secret = write_secret(work)
        train_files, test_idx, names, site_n = [], [], [], []
        for name, rows in parts:
            if holdout > 0:
                tr, te = split_holdout(len(rows), labels.iloc[rows].to_numpy(), fraction=holdout, seed=split_seed)
                tr, te = rows[tr], rows[te]
            else:
                tr, te = rows, rows[:0]
            path = work / f"site_{len(names)}.csv"
            write_table(expr.iloc[tr], labels.iloc[tr], path)
            train_files.append(path)
            test_idx.append(te)
            names.append(name)
            site_n.append(len(tr))
        log.info("%d site(s): %s", len(parts), ", ".join(f"{n} ({c} train)" for n, c in zip(names, site_n)))
        # the simulation knows the whole label vocabulary: declare it, so no site's label set is revealed
        if cfg.classes is None:
            cfg = dataclasses.replace(cfg, classes=tuple(sorted(set(labels))))
        if cfg.ledger_dir is None:  # simulated sites are not a hospital's patients: a throw-away ledger
            cfg = dataclasses.replace(cfg, ledger_dir=str(work / "ledger"))
        train_args = ["--input-kind", input_kind, *options.to_args(cfg)]
        all_train = np.concatenate([p[1] for p in parts])
        held = np.concatenate(test_idx) if test_idx else np.array([], int)
        all_train = np.setdiff1d(all_train, held)
        X_test, y_test = expr.iloc[held], labels.iloc[held]
        X_train, y_train = expr.iloc[all_train], labels.iloc[all_train]
        n_syn = n_synthetic or len(all_train)

        def scale(frame):
            """Score on the scale the model learns: log1p CPM for counts."""
            m = frame.to_numpy(dtype=float)
            if input_kind == "counts":
                m = np.log1p(m / np.maximum(m.sum(1, keepdims=True), 1.0) * 1e6)
            return m

        def evaluate(expr, lab):
            if not len(held):
                return None
            return tstr(scale(expr), lab.to_numpy(), scale(X_test), y_test.to_numpy(),
                        X_real_train=scale(X_train), y_real_train=y_train.to_numpy(), seed=split_seed)

        t1 = time.monotonic()
        if local_only:
            local = {}
            for i, (f, name) in enumerate(zip(train_files, names)):
                od = run_sites([f], work / f"local_{i}", secret, train_args,
                               step_timeout=cfg.step_timeout, names=[name])[0]
                dest = out / "local" / name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(od / "model.pt", dest / "model.pt")
                syn, lab, _ = synthesize(od / "model.pt", n_syn, seed=split_seed)
                local[name] = {"n": site_n[i], "evaluation": evaluate(syn, lab)}
            timings["training"] = time.monotonic() - t1
            run = {"command": "simulate", "mode": "local-only", "generator": cfg.generator,
                   "options": options.record(cfg), "epsilon": cfg.epsilon, "delta": cfg.delta,
                   "private": not cfg.no_dp,
                   "sites": [{"name": n, "n": c} for n, c in zip(names, site_n)], "local": local,
                   "wall_seconds": {k: round(v, 3) for k, v in timings.items()}}
            atomic_write_json(out / "run.json", run)
            return run
        site_outs = run_sites(train_files, work, secret, train_args, step_timeout=cfg.step_timeout, names=names)
        timings["training"] = time.monotonic() - t1
        digests = {model_digest(o / "model.pt") for o in site_outs}
        if len(digests) != 1:
            raise FedsynthError("simulate: the sites ended with different models; this is a bug, please report it")
        site_runs = [json.loads((o / "run.json").read_text()) for o in site_outs]
        shutil.copy2(site_outs[0] / "model.pt", out / "model.pt.tmp")
        os.replace(out / "model.pt.tmp", out / "model.pt")
        t2 = time.monotonic()
        syn, lab, meta = synthesize_to(out, out / "model.pt", n_syn, seed=split_seed, label_column=label_column,
                                       overwrite=True, annotation=raw.gene_annotation)
        timings["synthesize"] = time.monotonic() - t2
        t3 = time.monotonic()
        evaluation = evaluate(syn, lab)
        timings["evaluate"] = time.monotonic() - t3
        timings["total"] = time.monotonic() - t_start
        run = run_record(
            "simulate", cfg, meta,
            sites=[{"name": n, "n": c, "n_holdout": int(len(t))} for n, c, t in zip(names, site_n, test_idx)],
            wall_seconds=timings, mode="centralised" if len(parts) == 1 else "federated", models_identical=True,
            model_sha256=digests.pop(), n_synthetic=n_syn, evaluation=evaluation, input_notes=cohort.notes,
            site_wall_seconds={r["site"]: r["wall_seconds"] for r in site_runs},
            site_communication={r["site"]: r.get("communication") for r in site_runs},
            site_lifetime={r["site"]: r.get("lifetime") for r in site_runs})
        atomic_write_json(out / "run.json", run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return run
