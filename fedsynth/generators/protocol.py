"""One site's part of a federated run, for any generator (what ``fedsynth train`` runs).

Every site runs, in lock step over an open
:class:`~fedsynth.federation.session.Session`:

1. **schema agreement** (public: genes, labels, input kind, site names; no
   record count; :func:`~fedsynth.federation.schema.join_schema`);
2. **release plan** (no data touched): the generator declares its releases
   (:meth:`~fedsynth.generators.base.Generator.releases`), the record count
   goes first (:func:`~fedsynth.privacy.release.with_record_count`), and
   :meth:`~fedsynth.privacy.release.ReleasePlan.calibrate` sizes their noise
   so that everything composes to exactly ``(epsilon, delta)``; a target
   that cannot be met refuses the run at every site alike. Until ``N`` is
   known the plan uses this site's guess ``k * n_own``, only to size what
   depends on ``N`` (DP-SGD's rate and steps) for the lifetime check;
3. **record count**: the noisy total ``N`` is released
   (:func:`~fedsynth.privacy.release.released_count`), the plan is made
   again with it (the one-shot noise stays as planned), and the lifetime
   check is repeated on the final plan;
4. **fit**: the generator releases through the one
   :class:`~fedsynth.privacy.release.Releaser` (secure sum + noise + ledger
   entry) and fits on the noisy values;
5. **DP record**, built from the ledger.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace

from ..errors import ParameterError
from ..federation.schema import Schema, join_schema
from ..federation.secure_sum import SecureSum
from ..privacy.accounting import validate_budget
from ..privacy.lifetime import LifetimeLedger, default_dir
from ..privacy.release import RECORD_COUNT, ReleasePlan, Releaser, released_count, with_record_count
from . import registry
from .base import FitContext, Generator, option, option_fields

log = logging.getLogger("fedsynth")

#: the ``dp`` record's ``noise_source``: true of every generator, since every release goes through
#: :class:`~fedsynth.privacy.release.Releaser` -> :meth:`SecureSum.sum <fedsynth.federation.secure_sum.SecureSum.sum>`
NOISE_SOURCE = ("Gaussian noise drawn from os.urandom (Box-Muller, fedsynth.federation.secure_sum.csprng_normal) "
                "at every site, variance sigma^2/(k - max_colluders) each; DP-SGD's Poisson sampling is keyed by "
                "fresh os.urandom bytes that are never stored")


def _parse_classes(text: str) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in str(text).split(",") if c.strip()) or None


@dataclass
class TrainConfig:
    """The options every generator shares; ``options`` holds the chosen generator's own.

    Build it with :meth:`from_options` from option values by name (the CLI's,
    Nextflow's and Galaxy's names: one table, :mod:`fedsynth.workflows.options`).
    """

    generator: str = option(registry.DEFAULT, "Generator: " + "; ".join(
        f"{n}: {registry.summary(n)}" for n in registry.names()) + ". Every generator spends the same --epsilon "
        "in one accountant.", choices=tuple(registry.names()), metavar="|".join(registry.names()), label="Generator",
        group="generator")
    epsilon: float = option(1.0, "Total privacy budget epsilon for everything the run reveals.", exclusive_minimum=0,
                            error="--epsilon must be a number greater than 0",
                            label="Privacy budget epsilon", group="privacy")
    delta: float = option(1e-5, "Privacy parameter delta (< 1/N).", exclusive_minimum=0, exclusive_maximum=1,
                          label="Privacy parameter delta", group="privacy")
    no_dp: bool = option(False, "Train WITHOUT differential privacy (baseline only: output is not private).",
                         label="Turn differential privacy off (NOT private)", group="privacy")
    max_colluders: int | None = option(
        None, "t: sites that may pool their views; each site adds noise variance sigma^2 C^2/(k-t), so the "
        "k-t others' noise alone carries the budget. Default: 1 with two or more sites (0 with one), so that "
        "epsilon also holds against one curious participating site; with t=0 a site that subtracts its own "
        "noise sees epsilon 1.46/1.25/1.13 at k=2/3/5 for a target of 1. The price: the released noise is "
        "k/(k-t) times the planned variance (1.5x at k=3), so utility falls a little.",
        minimum=0, label="Sites that may collude (t)", group="privacy")
    genes: str = option("strict", "strict: all sites must have the same genes. intersect: use the genes all "
                        "sites share.", choices=("strict", "intersect"), label="Genes", group="federation")
    classes: tuple[str, ...] | None = option(
        None, "Comma-separated label vocabulary shared by all sites (e.g. LumA,LumB,Basal,Her2,NormalLike); "
        "every site gives the same list. Required with DP: a site's own label set is never revealed. "
        "Only with --no-dp may it be left out; then the sites exchange their label sets.",
        parse=_parse_classes, format=lambda v: ",".join(v or ()), pattern=r"^[^'\"]*$",
        pattern_help="Comma-separated labels, no quotes", label="Label vocabulary shared by all sites", group="federation")
    seed: int | None = option(None, "With --no-dp: fixes initialisation and sampling, so runs repeat exactly "
                              "(testing). With DP: fixes only the initial weights; the DP-SGD sampling always "
                              "mixes in fresh OS randomness. Written to no output. Default: initial weights from "
                              "a seed the sites agree on.", label="Seed", group="federation")
    step_timeout: float = option(120.0, "Deadline in seconds for every blocking step after joining (key "
                                 "agreement, each aggregation).", exclusive_minimum=0, label="Deadline of each blocking step (s)", group="federation")
    rendezvous_timeout: float = option(300.0, "Deadline in seconds for all sites to join the session.", exclusive_minimum=0,
                                       label="Deadline for all sites to join (s)", group="federation")
    ledger_dir: str | None = option(
        None, "This site's lifetime privacy ledger: a folder that outlives runs (not a Nextflow work directory "
        "or Galaxy's file store). Default: $FEDSYNTH_LEDGER_DIR, else ~/.local/share/fedsynth/ledger; "
        "simulate: a throw-away one.", metavar="DIR", label="Lifetime ledger folder", group="site")
    lifetime_epsilon: float | None = option(
        None, "Refuse a run that would take this site's patients above this total epsilon over all runs "
        "recorded in --ledger-dir (default: no cap; the spend is still recorded and reported).", minimum=0,
        label="Lifetime epsilon of this site's patients", group="site")
    #: the chosen generator's own config (its ``Config`` dataclass)
    options: object = field(default=None)

    def __post_init__(self):
        registry.check_name(self.generator)
        if self.options is None:
            self.options = registry.get(self.generator).Config()

    @classmethod
    def from_options(cls, values: dict) -> "TrainConfig":
        """From option values by name (already parsed); missing ones take their defaults."""
        common = {name: values[info.name or name] for name, info, _ in option_fields(cls)
                  if (info.name or name) in values}
        gen_cls = registry.get(common.get("generator", registry.DEFAULT))
        own = {name: values[info.name or name] for name, info, _ in option_fields(gen_cls.Config)
               if (info.name or name) in values}
        return cls(**common, options=gen_cls.Config(**own))

    def validate(self, *, classes_from_data: bool = False) -> None:
        """Refuse a bad option with a one-line error; ``classes_from_data``: the caller (simulate) fills ``classes``."""
        registry.check_name(self.generator)
        if not self.no_dp:
            validate_budget(self.epsilon, self.delta)
            if not self.classes and not classes_from_data:
                raise ParameterError("--classes is required with DP: give the label vocabulary all sites share "
                                     "(e.g. --classes LumA,LumB,Basal,Her2,NormalLike), so that no site's label "
                                     "set is revealed")
        if self.max_colluders is not None and self.max_colluders < 0:
            raise ParameterError(f"--max-colluders must be >= 0 (got {self.max_colluders})")
        if self.genes not in ("strict", "intersect"):
            raise ParameterError(f"--genes must be strict or intersect (got {self.genes})")
        registry.get(self.generator).validate(self.options)

    def to_dict(self) -> dict:
        """The model file's ``train_config``: the shared options and the generator's.

        No site-local setting (the lifetime ledger), and not ``seed`` (only
        whether one was given): with DP it keys nothing secret any more
        (:func:`fedsynth.generators.cvae.sampling_key`), but a model file is
        shared and ``--seed`` values are reused across runs.
        """
        drop = {name for name, info, _ in option_fields(type(self)) if info.group == "site"} | {"options", "seed"}
        out = {k: v for k, v in asdict(self).items() if k not in drop}
        return {**out, "seed_given": self.seed is not None, "options": asdict(self.options)}


def resolve_colluders(max_colluders: int | None, k: int) -> int:
    """``--max-colluders`` for a run of ``k`` sites: the user's ``t``, or by default ``min(1, k - 1)``.

    Why 1 by default. Each site adds ``N(0, sigma^2 / (k - t))``. Against
    outsiders (and any ``t`` colluders) the ``k - t`` other draws carry
    ``sigma^2``, as planned. A participating site knows its own draw, so
    what it sees of the others carries ``sigma^2 (k - 1) / (k - t)``
    (:func:`~fedsynth.privacy.accounting.coalition_noise_scale`): less than
    planned when ``t = 0``. Against one curious co-site, for every
    generator at a target epsilon of 1 (delta 1e-5; the ledger's releases
    composed with each multiplier scaled by ``sqrt((k - 1) / (k - t))``):

    ====  ===========  ===========
    k     t = 0        t = 1
    ====  ===========  ===========
    2     1.46         1.00
    3     1.25         1.00
    5     1.13         1.00
    ====  ===========  ===========

    So ``t = 1`` keeps the stated epsilon against a participating site; the
    cost is noise variance ``k / (k - 1)`` times the planned one in the
    released sums (2x at k = 2, 1.5x at k = 3, 1.25x at k = 5). With one
    site there is no co-site and ``t`` must be 0.
    """
    if max_colluders is None:
        return min(1, k - 1)
    return int(max_colluders)


@dataclass
class FitResult:
    """A fitted generator, the model file's metadata, and wall seconds per phase."""

    generator: Generator
    meta: dict
    timings: dict = field(default_factory=dict)
    #: this site's lifetime spend (site-local: run.json only, never the shared model file)
    lifetime: dict | None = None


def plan_releases(generator: Generator, schema: Schema, cfg: TrainConfig, *, final: bool = True) -> ReleasePlan:
    """The calibrated plan of the record count and ``generator``'s declared releases (no data touched).

    ``schema.n_total`` is the released ``N`` (``final``) or this site's
    guess of it, used before the count is released.
    """
    specs = with_record_count(generator.releases(schema))
    if cfg.no_dp:
        if not final:
            log.warning("--no-dp: NOTHING IS PRIVATE. The model and synthetic data may reveal patients.")
        return ReleasePlan.not_private(specs, delta=cfg.delta)
    # delta < 1/N is checked on the released N only: a refusal on a site's own guess would tell the others about it
    plan = ReleasePlan.calibrate(specs, epsilon=cfg.epsilon, delta=cfg.delta, n_total=schema.n_total if final else None,
                                 one_shot_fraction=generator.one_shot_fraction())
    if final:
        log.info("budget: epsilon %.3g, delta %.2g -> %s", cfg.epsilon, cfg.delta,
                 ", ".join(f"{n} z={z:.3g}" for n, z in plan.multipliers.items()))
    return plan


def federation_record(cfg: TrainConfig, schema: Schema, k: int) -> dict:
    """The part of the ``dp`` record that names the federation (``max_colluders`` as resolved).

    Sites by rank and name only: no site's record count is known to any
    other site; ``n_total`` is the released noisy total and ``n_total_sd``
    its noise s.d.
    """
    return {"k": k, "max_colluders": resolve_colluders(cfg.max_colluders, k),
            "sites": [{"rank": r, "name": nm} for r, nm in enumerate(schema.site_names)],
            "n_total": schema.n_total, "n_total_sd": schema.n_total_sd}


def fit_at_site(session, cohort, cfg: TrainConfig, *, progress: bool = True) -> FitResult:
    """Run this site's part of the protocol (module doc); every site ends with the same model.

    Before the first release the run is checked against, and recorded in,
    this site's lifetime ledger (:mod:`fedsynth.privacy.lifetime`), which
    then journals every release before it is made.
    """
    cfg.validate()
    cfg = replace(cfg, max_colluders=resolve_colluders(cfg.max_colluders, session.world_size))
    t0 = time.monotonic()
    schema, cohort = join_schema(session, cohort, genes_mode=cfg.genes, classes=cfg.classes,
                                 max_colluders=cfg.max_colluders)
    timings = {"schema": time.monotonic() - t0}
    generator = registry.create(cfg.generator, cfg.options, FitContext(
        site=session.site_name, progress=progress, seed=cfg.seed, shared_seed=session.shared_seed,
        epsilon=None if cfg.no_dp else cfg.epsilon, delta=cfg.delta))
    guess = replace(schema, n_total=max(cohort.n_samples * session.world_size, len(schema.classes), 2))
    plan = plan_releases(generator, guess, cfg, final=False)
    ledger = LifetimeLedger(cfg.ledger_dir or default_dir(), cohort.sample_ids)
    lifetime = ledger.begin(plan.mechanisms(), delta=cfg.delta, limit=cfg.lifetime_epsilon, generator=generator.name,
                            private=plan.private)
    release = Releaser(SecureSum(session, max_colluders=cfg.max_colluders), plan, generator.name, ledger.record)
    count = release(RECORD_COUNT, [float(cohort.n_samples)])
    schema = replace(schema, n_total=released_count(count, len(schema.classes)), n_total_sd=count.noise_sd)
    log.info("released record count N = %d (noise s.d. %.3g)", schema.n_total, schema.n_total_sd)
    plan = plan_releases(generator, schema, cfg)
    release.replan(plan)
    generator.check_plan(plan)
    lifetime = ledger.check(plan.mechanisms(), delta=cfg.delta, limit=cfg.lifetime_epsilon, private=plan.private)
    log.info("lifetime ledger %s: these patients had spent epsilon %s; after this run %s%s", ledger.dir,
             *(f"{v:.3g}" if v is not None else "unbounded (a run without DP)"
               for v in (lifetime["spent_before"], lifetime["spent_after"])),
             "" if cfg.lifetime_epsilon is None else f" of {cfg.lifetime_epsilon:g}")
    generator.fit(release, cohort, schema)
    timings.update(generator.timings)
    dp = {**release.record(), **generator.dp_extra(), **federation_record(cfg, schema, session.world_size),
          "noise_source": NOISE_SOURCE}
    meta = {
        "generator": generator.name,
        "generator_params": generator.params(),
        "genes": schema.genes,
        "classes": schema.classes,
        "input_kind": schema.input_kind,
        "statistics": generator.statistics,
        "dp": dp,
        "train_config": cfg.to_dict(),
        "secure_sum_calls": release.calls,
    }
    return FitResult(generator, meta, timings, lifetime)
