"""One site's part of federated DP training (what ``fedsynth train`` runs).

Given this site's :class:`~fedsynth.data.preprocess.Cohort` and an open
:class:`~fedsynth.federation.session.Session`, :func:`train_site` runs the protocol
that every site runs in lock step:

1. **Schema agreement** (public): gene lists, label names, input kind and
   each site's record count ``n_i``. Record counts are treated as public,
   as in Opacus, where the dataset size sets the sample rate.
2. **Budget** (no data touched): ``q = batch_size / N``, ``T = epochs / q``;
   noise multipliers from :func:`fedsynth.privacy.accounting.plan_budget`; every site
   computes the same plan, and all refuse together if it cannot be met.
3. **Statistics** (:func:`release_statistics`), each one secure sum with
   noise ``z_stat * sensitivity``: class counts, the mean centred gene
   profile and expression level, and the class anchors (clipped per-class
   mean deviations).
4. **DP-SGD** on each record's residual around its class anchor
   (:func:`residuals`): each site Poisson-samples its records at rate ``q``
   (record ``j`` is in step ``s`` iff ``PRF(seed_i, s, id_j) < q``), Opacus
   computes and clips each per-sample gradient to ``C``, and the sites
   securely sum their clipped sums with total noise ``N(0, z_sgd^2 C^2)``;
   every site applies the same update
   ``theta <- Adam(theta, (sum + noise) / (q N))``.

With ``no_dp`` there is no clipping and no noise: the update is the plain
sum of gradients over the union batch, so a federated run equals a
centralised run on the pooled data given the same seed (tested).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .privacy.accounting import WARN_NOISE_MULTIPLIER, BudgetPlan, PrivacyLedger, plan_budget, validate_budget
from .errors import InputError, ParameterError
from .model import CVAE, CVAEConfig
from .federation.secure_sum import SecureSum

log = logging.getLogger("fedsynth")

LOG_LIBSIZE_BOUND = 25.0
LOG_LIBSIZE_SPREAD_BOUND = 4.0


@dataclass
class TrainConfig:
    """Training and privacy parameters (the CLI's options, with defaults)."""

    epsilon: float = 1.0
    delta: float = 1e-5
    no_dp: bool = False
    max_colluders: int = 0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    clip: float = 1.0
    latent_dim: int = 4
    hidden_dim: int = 32
    stats_fraction: float = 0.85
    genes: str = "strict"
    classes: tuple[str, ...] | None = None
    seed: int | None = None
    #: which generator to fit (:mod:`fedsynth.generators`): cvae, gaussian or pgm
    generator: str = "cvae"
    #: gaussian: number of principal components of the within-class covariance
    components: int = 4
    #: pgm: bins per gene, fine histogram cells, public value range (None: by input kind),
    #: mirror-descent iterations, gene-pair tree, budget shares (edges, label x gene, pairs);
    #: see :class:`fedsynth.pgm.PGMConfig`
    pgm_bins: int = 3
    pgm_fine_bins: int = 12
    pgm_range: tuple[float, float] | None = None
    pgm_iters: int = 1000
    pgm_tree: bool = True
    pgm_split: tuple[float, float, float] = (0.3, 0.6, 0.1)
    #: pgm: the most genes one Private-PGM fit takes (more genes: fitted in chains of <= this many)
    pgm_block: int = 50

    def validate(self) -> None:
        from .generators import check_name

        check_name(self.generator)
        if self.components < 0:
            raise ParameterError(f"--components must be >= 0 (got {self.components})")
        if not self.no_dp:
            validate_budget(self.epsilon, self.delta)
        for name in ("epochs", "batch_size", "latent_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"--{name} must be > 0 (got {getattr(self, name)})")
        if self.max_colluders < 0:
            raise ParameterError(f"--max-colluders must be >= 0 (got {self.max_colluders})")
        if self.genes not in ("strict", "intersect"):
            raise ParameterError(f"--genes must be strict or intersect (got {self.genes})")
        if self.generator == "pgm":
            from .pgm import config_from

            config_from(self).validate()


@dataclass
class Schema:
    genes: list[str]
    classes: list[str]
    input_kind: str
    site_n: list[int]
    site_names: list[str]

    @property
    def n_total(self) -> int:
        return sum(self.site_n)


@dataclass
class TrainResult:
    model: CVAE
    meta: dict
    timings: dict = field(default_factory=dict)


# --------------------------------------------------------------- schema
def agree_schema(session, cohort, genes_mode: str, classes: tuple[str, ...] | None = None) -> Schema:
    """Exchange the public schema and check the sites agree; ranks in order.

    With ``classes`` (the public label vocabulary, ``--classes``) each site
    only checks its labels are among them and the sites compare the list; a
    site's own label set is never sent. Without it, each site's label set is
    exchanged (revealing which classes each site has) and the union is used.
    """
    own = sorted(set(map(str, cohort.labels)))
    if classes is not None:
        unknown = sorted(set(own) - set(classes))
        if unknown:
            raise InputError(f"{cohort.source}: labels not in --classes: {', '.join(unknown[:5])}")
    mine = {
        "genes": list(cohort.genes),
        "classes": sorted(classes) if classes is not None else own,
        "declared": classes is not None,
        "input_kind": cohort.input_kind,
        "n": int(cohort.n_samples),
        "site": session.site_name,
    }
    views = session.exchange("schema", mine, step="schema agreement")
    kinds = {v["input_kind"] for v in views}
    if len(kinds) > 1:
        raise InputError(
            "schema agreement: sites disagree on --input-kind ("
            + ", ".join(f"rank {r}: {v['input_kind']}" for r, v in enumerate(views))
            + ")"
        )
    if len({v["declared"] for v in views}) > 1 or (
        classes is not None and len({tuple(v["classes"]) for v in views}) > 1
    ):
        raise InputError("schema agreement: sites disagree on --classes (every site must give the same list, or none)")
    base = views[0]["genes"]
    shared = set(base).intersection(*[set(v["genes"]) for v in views[1:]])
    union = set().union(*[set(v["genes"]) for v in views])
    if genes_mode == "strict" and len(shared) != len(union):
        differ = sorted(union - shared)
        raise InputError(
            f"schema agreement: sites disagree on {len(differ)} genes "
            f"(e.g. {', '.join(differ[:5])}); pass --genes intersect to use the "
            f"{len(shared)} genes all sites share"
        )
    if not shared:
        raise InputError("schema agreement: the sites share no gene at all")
    genes = [g for g in base if g in shared]
    classes = sorted(set().union(*[set(v["classes"]) for v in views]))
    if not views[0]["declared"]:
        for r, v in enumerate(views):
            lacking = sorted(set(classes) - set(v["classes"]))
            if lacking:
                log.warning("schema agreement: rank %d (%s) has no samples of %s; the other sites' data "
                            "alone carry those classes", r, v["site"], ", ".join(lacking))
    if len(classes) < 2:
        raise InputError(f"schema agreement: only one label ({classes[0]}) across all sites")
    return Schema(genes, classes, views[0]["input_kind"], [v["n"] for v in views], [v["site"] for v in views])


# ------------------------------------------------------------- sampling

def join_schema(session, cohort, cfg: TrainConfig):
    """Every generator's first step at a site: agree the schema, keep its genes.

    Returns the agreed :class:`Schema` and the cohort restricted to (and
    ordered by) its genes; refuses ``--max-colluders`` >= k before anything
    is revealed beyond the schema.
    """
    schema = agree_schema(session, cohort, cfg.genes, cfg.classes)
    if list(cohort.genes) != schema.genes:
        cohort = cohort.subset_genes(schema.genes)
    k = session.world_size
    if cfg.max_colluders >= k:
        raise ParameterError(f"--max-colluders must be below the number of sites ({k})")
    return schema, cohort


def one_shot_budget(cfg: TrainConfig, n_total: int, weights: dict[str, float]):
    """Budget plan of a generator made of one-shot releases (``gaussian``, ``pgm``).

    Before any data is touched: refuses an impossible budget
    (:class:`~fedsynth.errors.BudgetError`, alike at every site), then
    calibrates one noise multiplier per release so that the releases,
    with privacy-loss shares ``weights``, compose to exactly ``(epsilon,
    delta)`` in the one RDP accountant
    (:func:`~fedsynth.privacy.accounting.plan_release_split`).

    Returns
    -------
    (z, ledger)
        ``z`` maps release names to noise multipliers (``None`` with
        ``--no-dp``); ``ledger`` is the :class:`PrivacyLedger` holding them.
    """
    from .privacy.accounting import Mechanism, plan_release_split

    if cfg.no_dp:
        log.warning("--no-dp: NOTHING IS PRIVATE. The model and synthetic data may reveal patients.")
        return None, PrivacyLedger(math.inf, cfg.delta)
    validate_budget(cfg.epsilon, cfg.delta, n_total)
    z = plan_release_split(cfg.epsilon, cfg.delta, weights)
    ledger = PrivacyLedger(cfg.epsilon, cfg.delta, [Mechanism(name, v) for name, v in z.items()])
    log.info("budget: epsilon %.3g, delta %.2g -> %s", cfg.epsilon, cfg.delta,
             ", ".join(f"{n} z={v:.3g}" for n, v in z.items()))
    return z, ledger


def one_shot_dp_record(cfg: TrainConfig, schema: Schema, k: int, z: dict[str, float] | None,
                       ledger: PrivacyLedger, **extra) -> dict:
    """The model file's ``dp`` record for one-shot releases (same keys as the CVAE's).

    Checks the ledger against the target first (a spend above it is a bug,
    never a warning). ``extra`` adds generator-specific entries (budget
    split, clip bounds, noise standard deviations).
    """
    spent = math.inf if cfg.no_dp else ledger.spent()
    if not cfg.no_dp and spent > cfg.epsilon * (1 + 1e-9):
        raise RuntimeError(f"accountant reports epsilon {spent} above the target {cfg.epsilon}")
    return {
        "private": not cfg.no_dp,
        "epsilon": None if cfg.no_dp else cfg.epsilon,
        "epsilon_spent": None if cfg.no_dp else spent,
        "delta": cfg.delta,
        "sigma": None,
        "stat_sigma": None if cfg.no_dp else max(z.values()),
        "noise_multipliers": z,
        **extra,
        "sample_rate": None,
        "clip_norm": None,
        "steps": 0,
        "epochs": None,
        **federation_record(cfg, schema, k, ledger),
        "noise_source": "os.urandom Gaussian noise, split over k - max_colluders sites",
    }


def federation_record(cfg: TrainConfig, schema: Schema, k: int, ledger: PrivacyLedger) -> dict:
    """The part of every generator's ``dp`` record that names the federation and the accountant."""
    return {
        "k": k,
        "max_colluders": cfg.max_colluders,
        "sites": [{"rank": r, "name": nm, "n": n} for r, (nm, n) in enumerate(zip(schema.site_names, schema.site_n))],
        "mechanisms": [] if cfg.no_dp else ledger.to_dict()["mechanisms"],
        "accountant": "opacus RDP",
    }


def _unit_hash(seed: int, step: int, ids: list[str], salt: str) -> np.ndarray:
    """Uniform(0,1) numbers, one per record, from SHA-256(seed, step, id)."""
    out = np.empty(len(ids))
    for j, sid in enumerate(ids):
        h = hashlib.sha256(f"{salt}:{seed}:{step}:{sid}".encode()).digest()
        out[j] = int.from_bytes(h[:8], "big") / 2.0**64
    return out


def poisson_mask(seed: int, step: int, ids: list[str], rate: float) -> np.ndarray:
    """Poisson sampling: each record independently with probability ``rate``."""
    return _unit_hash(seed, step, ids, "sample") < rate


def record_noise(seed: int, step: int, ids: list[str], dim: int) -> torch.Tensor:
    """Per-record reparameterisation noise, identical wherever the record lives."""
    rows = []
    for sid in ids:
        h = hashlib.sha256(f"eps:{seed}:{step}:{sid}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(h[:8], "big") >> 1)
        rows.append(torch.randn(dim, generator=g))
    return torch.stack(rows) if rows else torch.zeros(0, dim)


def clip_rows(x: np.ndarray, bound: float) -> np.ndarray:
    """Scale each row to L2 norm at most ``bound``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


# ------------------------------------------------------------ statistics
def row_centre(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each record into its mean level and its centred profile (local, free)."""
    level = X.mean(axis=1)
    return X - level[:, None], level


def clip_bounds(n_genes: int) -> tuple[float, float]:
    """Public L2 clip bounds for the gene-mean and class-mean sums.

    Centred log-expression profiles have per-gene spreads of a few units, so
    ``[profile, level]`` rows have norm about ``4 sqrt(G + 1)``; deviations
    from the mean are clipped harder, to ``0.4 sqrt(G)``: that shrinks the
    class offsets but keeps their direction, which is what a classifier and
    the CVAE's anchors need, at a tenth of the noise (on TCGA-BRCA PAM50 at
    epsilon 1, 0.4 sqrt(G) beat 0.7 sqrt(G) in TSTR macro-F1; see
    BENCHMARKS.md).
    """
    return 4.0 * math.sqrt(n_genes + 1), 0.4 * math.sqrt(n_genes)


def stat_names(input_kind: str) -> list[str]:
    names = ["class counts", "gene means", "class means"]
    if input_kind == "counts":
        names += ["log library size mean", "log library size spread"]
    return names


def release_statistics(agg: SecureSum, cohort, schema: Schema, z_stat: float, *, clip: bool = True) -> dict:
    """Noisy secure sums of the statistics the generator is anchored on.

    Each is a Gaussian mechanism with noise ``z_stat * sensitivity``:

    * class counts ``c_k`` (sensitivity 1);
    * mean of ``clip_2([x - level(x), level(x)], R_1)`` over all records, giving
      the gene profile mean ``m`` and the mean level ``l`` (sensitivity ``R_1``);
    * per class ``k``, the sum of ``clip_2(x - level(x) - m, R_2)`` over its
      records, divided by ``max(c_k, 2 z_stat)``: the class anchors ``a_k``
      (sensitivity ``R_2``, as each record belongs to one class);
    * for counts input, the mean and spread of the clipped log library size.

    Without DP (``clip=False``) nothing is clipped and nothing is noised.
    """
    n = schema.n_total
    n_classes = len(schema.classes)
    y = np.array([schema.classes.index(str(v)) for v in cohort.labels], dtype=int)
    onehot = np.eye(n_classes)[y]

    def noisy_sum(values, sensitivity: float, step: str) -> np.ndarray:
        std = z_stat * sensitivity if z_stat else 0.0
        return agg.sum(torch.tensor(np.asarray(values, dtype=float)), noise_std=std, step=step).numpy()

    counts = np.maximum(noisy_sum(onehot.sum(0), 1.0, "statistics: class counts"), 1.0)
    r1, r2 = clip_bounds(len(schema.genes)) if clip else (math.inf, math.inf)
    profile, level = row_centre(cohort.X)
    both = np.hstack([profile, level[:, None]])
    sums = noisy_sum(clip_rows(both, r1).sum(0), r1, "statistics: gene means") / n
    mean_profile, mean_level = sums[:-1], float(sums[-1])
    dev = clip_rows(profile - mean_profile, r2)
    class_sums = noisy_sum(onehot.T @ dev, r2, "statistics: class means")
    # a class whose noisy count is within noise of zero gets its anchor shrunk
    # towards the mean instead of divided by ~0
    anchors = mean_profile[None, :] + class_sums / np.maximum(counts, 2.0 * z_stat)[:, None]
    stats = {
        "class_counts": counts.tolist(),
        "class_proportions": (counts / counts.sum()).tolist(),
        "mean_profile": mean_profile.tolist(),
        "mean_level": mean_level,
        "class_anchors": anchors.tolist(),
        "clip_bounds": [r1, r2] if clip else None,
    }
    if schema.input_kind == "counts":
        ll = np.clip(np.log(cohort.library_sizes), 0.0, LOG_LIBSIZE_BOUND)
        m = float(noisy_sum([ll.sum()], LOG_LIBSIZE_BOUND, "statistics: library size")[0]) / n
        sq = np.clip((ll - m) ** 2, 0.0, LOG_LIBSIZE_SPREAD_BOUND)
        v = float(noisy_sum([sq.sum()], LOG_LIBSIZE_SPREAD_BOUND, "statistics: library size spread")[0]) / n
        stats["log_library_size"] = {"mean": m, "sd": math.sqrt(min(max(v, 0.01), LOG_LIBSIZE_SPREAD_BOUND))}
    return stats


def residuals(cohort, classes: list[str], stats: dict) -> np.ndarray:
    """What the CVAE models: each record's profile minus its class anchor."""
    profile, _ = row_centre(cohort.X)
    y = np.array([classes.index(str(v)) for v in cohort.labels], dtype=int)
    return profile - np.asarray(stats["class_anchors"])[y]


# --------------------------------------------------------------- training
def _flat_grads(params, attr: str) -> torch.Tensor:
    return torch.cat([getattr(p, attr).reshape(-1) if getattr(p, attr) is not None
                      else torch.zeros(p.numel()) for p in params])


def train_site(session, cohort, cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run this site's part of the protocol; returns the released model and its record."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from tqdm import tqdm

    cfg.validate()
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    timings = {}
    t0 = time.monotonic()
    schema, cohort = join_schema(session, cohort, cfg)
    timings["schema"] = time.monotonic() - t0

    k, n_total = session.world_size, schema.n_total
    rate = min(1.0, cfg.batch_size / n_total)
    steps = int(math.ceil(cfg.epochs / rate))
    names = stat_names(schema.input_kind)
    if cfg.no_dp:
        plan = BudgetPlan(math.inf, cfg.delta, 0.0, 0.0, rate, steps, [])
        ledger = PrivacyLedger(math.inf, cfg.delta)
        log.warning("--no-dp: NOTHING IS PRIVATE. The model and synthetic data may reveal patients.")
    else:
        validate_budget(cfg.epsilon, cfg.delta, n_total)
        plan = plan_budget(cfg.epsilon, cfg.delta, stat_names=names, sample_rate=rate,
                           steps=steps, stats_fraction=cfg.stats_fraction)
        ledger = plan.ledger()
        if plan.sgd_multiplier > WARN_NOISE_MULTIPLIER:
            log.warning("DP-SGD noise multiplier %.3g is very large for %d records: the CVAE will learn "
                        "little beyond the class anchors; more data, a larger --epsilon or fewer --epochs help",
                        plan.sgd_multiplier, n_total)
        log.info("budget: epsilon %.3g, delta %.2g -> statistics z=%.3g, DP-SGD z=%.3g, q=%.3g, %d steps",
                 cfg.epsilon, cfg.delta, plan.stat_multiplier, plan.sgd_multiplier, rate, steps)

    agg = SecureSum(session, max_colluders=cfg.max_colluders)
    t1 = time.monotonic()
    stats = release_statistics(agg, cohort, schema, plan.stat_multiplier, clip=not cfg.no_dp)
    timings["statistics"] = time.monotonic() - t1

    # identical initial weights at every site (public randomness)
    seed = cfg.seed if cfg.seed is not None else session.shared_seed
    torch.manual_seed(seed)
    model = CVAE(CVAEConfig(len(schema.genes), len(schema.classes), cfg.latent_dim, cfg.hidden_dim))
    params = [p for p in model.parameters() if p.requires_grad]
    sampling_seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "big")
    if cfg.seed is not None and not cfg.no_dp:
        log.warning("--seed fixes Poisson sampling: the DP guarantee assumes nobody else knows the seed")
    u_all = torch.tensor(residuals(cohort, schema.classes, stats), dtype=torch.float32)
    y_idx = torch.tensor([schema.classes.index(str(v)) for v in cohort.labels])
    y_all = torch.nn.functional.one_hot(y_idx, len(schema.classes)).float()
    ids = [str(s) for s in cohort.sample_ids]
    expected_batch = rate * n_total

    adam = torch.optim.Adam(params, lr=cfg.lr)
    if cfg.no_dp:
        net, dpopt = model, None
    else:
        net = GradSampleModule(model, loss_reduction="sum")
        dpopt = DPOptimizer(adam, noise_multiplier=0.0, max_grad_norm=cfg.clip,
                            expected_batch_size=int(round(expected_batch)), loss_reduction="sum")
    noise_std = plan.sgd_multiplier * cfg.clip

    t2 = time.monotonic()
    steps_per_epoch = int(math.ceil(1.0 / rate))
    bar = tqdm(total=cfg.epochs, desc=f"[{session.site_name}] epochs", unit="epoch",
               disable=not progress, leave=False)
    step, losses = 0, []
    while step < steps:
        mask = poisson_mask(sampling_seed, step, ids, rate)
        idx = np.flatnonzero(mask)
        (dpopt or adam).zero_grad(set_to_none=True)
        if len(idx):
            bid = [ids[j] for j in idx]
            eps = record_noise(sampling_seed, step, bid, cfg.latent_dim)
            loss = net(u_all[idx], y_all[idx], eps)
            loss.sum().backward()
            losses.append(float(loss.detach().mean()))
            if dpopt is not None:
                dpopt.clip_and_accumulate()
                local = _flat_grads(params, "summed_grad")
            else:
                local = _flat_grads(params, "grad")
        else:
            local = torch.zeros(sum(p.numel() for p in params))
        total = agg.sum(local, noise_std=0.0 if cfg.no_dp else noise_std,
                        step=f"aggregation of DP-SGD step {step + 1}/{steps}")
        grad = (total / expected_batch).to(torch.float32)
        offset = 0
        for p in params:
            p.grad = grad[offset:offset + p.numel()].view_as(p).clone()
            if dpopt is not None:
                p.summed_grad = None
                p.grad_sample = None
            offset += p.numel()
        adam.step()
        step += 1
        if step % steps_per_epoch == 0 or step == steps:
            bar.update(min(cfg.epochs, round(step * rate)) - bar.n)
            if losses:
                bar.set_postfix(local_loss=f"{np.mean(losses[-steps_per_epoch:]):.3g}")
    bar.close()
    timings["training"] = time.monotonic() - t2
    if dpopt is not None:
        model = net._module
    model.eval()

    spent = ledger.spent() if not cfg.no_dp else math.inf
    if spent > plan.epsilon * (1 + 1e-9):
        raise RuntimeError(f"accountant reports epsilon {spent} above the target {plan.epsilon}")
    dp = {
        "private": not cfg.no_dp,
        "epsilon": None if cfg.no_dp else cfg.epsilon,
        "epsilon_spent": None if cfg.no_dp else spent,
        "delta": cfg.delta,
        "sigma": plan.sgd_multiplier,
        "stat_sigma": plan.stat_multiplier,
        "sample_rate": rate,
        "clip_norm": cfg.clip if not cfg.no_dp else None,
        "steps": steps,
        "epochs": cfg.epochs,
        **federation_record(cfg, schema, k, ledger),
        "noise_source": "os.urandom-seeded torch generator, split over k - max_colluders sites",
    }
    meta = {
        "genes": schema.genes,
        "classes": schema.classes,
        "input_kind": schema.input_kind,
        "statistics": stats,
        "dp": dp,
        "train_config": asdict(cfg),
        "secure_sum_calls": agg.calls,
    }
    return TrainResult(model, meta, timings)
