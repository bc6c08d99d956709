"""``fedsynth train``: this site's part of a federated run, from files to files.

Reads and validates this site's matrix, joins the authenticated session,
runs :func:`~fedsynth.generators.protocol.fit_at_site` with the chosen
generator, and writes ``OUTDIR/model.pt`` and ``OUTDIR/run.json``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from ..data.io import atomic_write_json
from ..errors import FedsynthError
from ..federation.session import Session, announce_failure, parse_rendezvous, read_secret
from ..generators.modelfile import save_model
from ..generators.protocol import fit_at_site
from .common import load_cohort, prepare_outdir
from .options import train_config
from .records import privacy_phrase, run_record

log = logging.getLogger("fedsynth")


@dataclass
class SiteRun:
    """Where a site's run put its outputs, and its run record."""

    outdir: object
    run: dict

    def summary(self) -> str:
        dp = self.run["dp"]
        return (f"fedsynth train [{self.run['site']}]: done in {self.run['wall_seconds']['total']:.1f}s; "
                f"{privacy_phrase(dp)}; {len(dp['sites'])} sites, {'about ' if dp['private'] else ''}{dp['n_total']} samples "
                f"-> {self.outdir}/model.pt")


def train_site(*, rank: int, world_size: int, rendezvous: str, secret_file, data, data_kw: dict,
               option_values: dict, site_name: str | None, outdir, overwrite: bool = False,
               progress: bool = True) -> SiteRun:
    """Run this site's part of federated training (module doc).

    ``option_values`` are the training options by name (:mod:`fedsynth.workflows.options`).
    A bad option or input is announced to the other sites (they stop at
    once instead of waiting for the deadline; they are told its error code
    and step, not its message) and raised.
    """
    site_name = site_name or f"site{rank}"
    os.environ["FEDSYNTH_SITE"] = site_name
    t0 = time.monotonic()
    parse_rendezvous(rendezvous)
    try:
        cfg = train_config(option_values)
        cfg.validate()
        secret = read_secret(secret_file)
        out = prepare_outdir(outdir, ["model.pt", "run.json"], overwrite)
        cohort, _ = load_cohort(data, data_kw)
    except FedsynthError as e:
        announce_failure(rendezvous, rank, e, step="setup")  # the code and step only, not the message
        raise
    log.info("%s: %d samples x %d genes", data, cohort.n_samples, cohort.n_genes)
    timings = {"load": time.monotonic() - t0}
    t1 = time.monotonic()
    with Session(rank, world_size, rendezvous, secret, site_name=site_name,
                 rendezvous_timeout=cfg.rendezvous_timeout, step_timeout=cfg.step_timeout) as session:
        timings["session"] = time.monotonic() - t1
        result = fit_at_site(session, cohort, cfg, progress=progress)
        traffic = session.traffic()
    timings.update(result.timings)
    save_model(out / "model.pt", result.generator, result.meta)
    timings["total"] = time.monotonic() - t0
    run = run_record("train", cfg, result.meta, sites=result.meta["dp"]["sites"], wall_seconds=timings,
                     site=site_name, rank=rank, communication=traffic, lifetime=result.lifetime,
                     input_notes=cohort.notes)
    atomic_write_json(out / "run.json", run)
    return SiteRun(out, run)
