"""Generator ``cvae``: a conditional VAE trained with DP-SGD around DP class anchors.

**Releases** (declared in :meth:`CVAEGenerator.releases`, each a secure sum
with noise ``z * Delta``; the statistics share ``--stats-fraction`` of
epsilon equally, DP-SGD takes the rest):

* class counts ``c_k`` (``Delta = 1``);
* the mean of ``clip_2([x - l(x), l(x)], R_1)`` over all records, giving the
  gene profile mean ``m`` and the mean level ``l`` (``Delta = R_1``), where
  ``l(x) = mean_g x_g``;
* per class ``k``, the sum of ``clip_2(x - l(x) - m, R_2)`` over its records
  (``Delta = R_2``: a record is in one class), divided by
  ``max(c_k, 2 z_counts)``: the class anchors ``a_k`` (a class whose noisy
  count is within noise of zero is shrunk towards ``m``);
* for counts input, the library-size model (:mod:`fedsynth.privacy.library_size`);
* DP-SGD (``Delta = C``, rate ``q = batch / N``, ``T = ceil(epochs / q)`` steps).

``R_1 = 4 sqrt(G + 1)``, ``R_2 = 0.4 sqrt(G)`` (:func:`clip_bounds`; the
measurements behind them are in BENCHMARKS.md).

**Model.** The CVAE models the residual ``u`` of each record's centred
profile around its class anchor, ``u = x - l(x) - a_y``. With one-hot label
``y``:

* encoder ``q(z | u, y) = N(m(u, y), diag(exp(l(u, y))))``,
* decoder ``p(u | z, y) = N(f(z, y), diag(exp(v(y))))`` with class-specific
  gene log-variances ``v(y) = W_v y + b_v`` (a Linear layer on the label, so
  Opacus' hooks compute its per-sample gradients; no bare ``nn.Parameter``),
* per-sample loss ``-log p(u | z, y) + KL(q || N(0, I))``.

No BatchNorm (Opacus refuses it).

**DP-SGD.** Each site Poisson-samples its records at rate ``q`` (record
``j`` is in step ``s`` iff ``PRF(key, s, id_j) < q``, with a key of fresh
OS randomness that is never stored: :func:`sampling_key`), Opacus computes and
clips each per-sample gradient to ``C``, and the release of the clipped
sums carries total noise ``N(0, z_sgd^2 C^2)``; every site applies the same
update ``theta <- Adam(theta, (sum + noise) / (q N))``. Without DP there is
no clipping and no noise: the update is the plain sum of gradients over the
union batch, so a federated run equals a centralised run on the pooled data
given the same seed (tested; without DP ``--seed`` is the sampling key).

**Sampling.** ``x = l + a_y + f(z, y) + exp(v(y)/2) e``, ``z, e ~ N(0, I)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError
from ..privacy import library_size
from ..privacy.accounting import WARN_NOISE_MULTIPLIER
from ..privacy.clip import clip_rows
from ..privacy.release import ReleaseSpec
from .base import Generator, option

log = logging.getLogger("fedsynth")

SGD = "dp-sgd"


# ------------------------------------------------------------------ model
@dataclass
class CVAEConfig:
    """Shape of the network (the model file's ``config``)."""

    n_genes: int
    n_classes: int
    latent_dim: int = 8
    hidden_dim: int = 64


class LabelVariance(nn.Module):
    """Class-specific per-gene log-variance of the decoder."""

    def __init__(self, n_classes: int, n_genes: int):
        super().__init__()
        self.linear = nn.Linear(n_classes, n_genes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, y_onehot: torch.Tensor) -> torch.Tensor:
        return self.linear(y_onehot).clamp(-6.0, 4.0)


class CVAE(nn.Module):
    """Conditional VAE; ``forward`` returns the per-sample loss vector."""

    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        self.cfg = cfg
        g, c, h, d = cfg.n_genes, cfg.n_classes, cfg.hidden_dim, cfg.latent_dim
        self.enc = nn.Sequential(nn.Linear(g + c, h), nn.ELU(), nn.Linear(h, 2 * d))
        self.dec = nn.Sequential(nn.Linear(d + c, h), nn.ELU(), nn.Linear(h, g))
        self.logvar = LabelVariance(c, g)
        # start as "anchor + unit noise": DP noise must move the residual model away from 0
        nn.init.zeros_(self.dec[-1].weight)
        nn.init.zeros_(self.dec[-1].bias)

    def forward(self, u: torch.Tensor, y_onehot: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss; ``eps`` is the reparameterisation noise (drawn if None)."""
        stats = self.enc(torch.cat([u, y_onehot], dim=1))
        m, l = stats.chunk(2, dim=1)
        l = l.clamp(-8.0, 8.0)
        eps = torch.randn_like(m) if eps is None else eps
        z = m + eps * torch.exp(0.5 * l)
        mean = self.dec(torch.cat([z, y_onehot], dim=1))
        v = self.logvar(y_onehot)
        nll = 0.5 * (((u - mean) ** 2) * torch.exp(-v) + v + math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (torch.exp(l) + m**2 - 1.0 - l).sum(1)
        return nll + kl

    @torch.no_grad()
    def sample(self, y_onehot: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = y_onehot.shape[0]
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        mean = self.dec(torch.cat([z, y_onehot], dim=1))
        sd = torch.exp(0.5 * self.logvar(y_onehot))
        return mean + sd * torch.randn(mean.shape, generator=generator)


# ------------------------------------------------------------- helpers
def row_centre(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each record into its mean level and its centred profile (local, free)."""
    level = X.mean(axis=1)
    return X - level[:, None], level


def clip_bounds(n_genes: int) -> tuple[float, float]:
    """Public L2 clip bounds ``(R_1, R_2) = (4 sqrt(G + 1), 0.4 sqrt(G))``.

    Centred log-expression profiles have per-gene spreads of a few units, so
    ``[profile, level]`` rows have norm about ``4 sqrt(G + 1)``; deviations
    from the mean are clipped harder: that shrinks the class offsets but
    keeps their direction, which is what a classifier and the anchors need,
    at a tenth of the noise.
    """
    return 4.0 * math.sqrt(n_genes + 1), 0.4 * math.sqrt(n_genes)


def sampling_key(seed: int | None, private: bool) -> str:
    """The key of DP-SGD's Poisson sampling and of the per-record reparameterisation noise.

    With DP: ``SHA-256(seed-or-nothing || 32 bytes of os.urandom)``, fresh at
    every run and never stored. Sample IDs are public (TCGA barcodes), so a
    key anyone could know (a ``--seed`` written into the model or typed on a
    shared command line) would tell which steps used which record, and the
    amplification by subsampling the accountant counts on would be lost.
    Without DP and with ``--seed``: the seed itself, so that ``--no-dp
    --seed`` runs repeat bit for bit (tests/test_legacy_models.py).
    """
    if seed is not None and not private:
        return str(int(seed))
    material = (b"" if seed is None else str(int(seed)).encode()) + os.urandom(32)
    return hashlib.sha256(material).hexdigest()


def _unit_hash(key: str, step: int, ids: list[str], salt: str) -> np.ndarray:
    """Uniform(0,1) numbers, one per record, from SHA-256(key, step, id)."""
    out = np.empty(len(ids))
    for j, sid in enumerate(ids):
        h = hashlib.sha256(f"{salt}:{key}:{step}:{sid}".encode()).digest()
        out[j] = int.from_bytes(h[:8], "big") / 2.0**64
    return out


def poisson_mask(key: str, step: int, ids: list[str], rate: float) -> np.ndarray:
    """Poisson sampling: each record independently with probability ``rate`` (``key``: :func:`sampling_key`)."""
    return _unit_hash(key, step, ids, "sample") < rate


def record_noise(key: str, step: int, ids: list[str], dim: int) -> torch.Tensor:
    """Per-record reparameterisation noise under :func:`sampling_key`'s key (never stored either)."""
    rows = []
    for sid in ids:
        h = hashlib.sha256(f"eps:{key}:{step}:{sid}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(h[:8], "big") >> 1)
        rows.append(torch.randn(dim, generator=g))
    return torch.stack(rows) if rows else torch.zeros(0, dim)


def _flat_grads(params, attr: str) -> torch.Tensor:
    return torch.cat([getattr(p, attr).reshape(-1) if getattr(p, attr) is not None
                      else torch.zeros(p.numel()) for p in params])


# ------------------------------------------------------------- generator
class CVAEGenerator(Generator):
    """DP-SGD conditional VAE around DP class anchors (module doc)."""

    name = "cvae"
    summary = "conditional VAE trained with DP-SGD around DP class anchors"

    @dataclass
    class Config:
        epochs: int = option(10, "cvae: passes over the data (expected).", minimum=1, label="Epochs")
        batch_size: int = option(128, "cvae: expected batch size over all sites; sample rate q = batch-size / N.",
                                 minimum=1, label="Expected batch size over all sites")
        lr: float = option(3e-3, "cvae: Adam learning rate.", exclusive_minimum=0, label="Adam learning rate")
        clip: float = option(1.0, "cvae: per-sample gradient clip norm C.", exclusive_minimum=0,
                             label="Per-sample gradient clip norm C")
        latent_dim: int = option(4, "cvae: latent dimension.", minimum=1, label="Latent dimension")
        hidden_dim: int = option(32, "cvae: hidden layer width.", minimum=1, label="Hidden layer width")
        stats_fraction: float = option(0.85, "cvae: share of epsilon for the released statistics (class counts, "
                                       "gene means, class anchors, library sizes); the rest goes to DP-SGD.",
                                       exclusive_minimum=0, exclusive_maximum=1,
                                       label="Share of epsilon for the statistics")

    @classmethod
    def validate(cls, config) -> None:
        for name in ("epochs", "batch_size", "latent_dim", "hidden_dim"):
            if getattr(config, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(config, name)})")
        for name in ("lr", "clip"):
            if not getattr(config, name) > 0:
                raise ParameterError(f"--{name} must be > 0 (got {getattr(config, name)})")

    def one_shot_fraction(self) -> float:
        return self.config.stats_fraction

    def _schedule(self, n_total: int) -> tuple[float, int]:
        rate = min(1.0, self.config.batch_size / n_total)
        return rate, int(math.ceil(self.config.epochs / rate))

    def releases(self, schema) -> list[ReleaseSpec]:
        r1, r2 = clip_bounds(len(schema.genes))
        specs = [ReleaseSpec("class counts", 1.0, 1.0), ReleaseSpec("gene means", r1, 1.0),
                 ReleaseSpec("class means", r2, 1.0)]
        if schema.input_kind == "counts":
            specs += library_size.specs(1.0, 1.0)
        rate, steps = self._schedule(schema.n_total)
        return specs + [ReleaseSpec(SGD, self.config.clip, None, rate, steps)]

    def check_plan(self, plan) -> None:
        z = plan.multipliers[SGD]
        if plan.private and z > WARN_NOISE_MULTIPLIER:
            log.warning("DP-SGD noise multiplier %.3g is very large: the CVAE will learn little beyond the class "
                        "anchors; more data, a larger --epsilon or fewer --epochs help", z)

    # ---------------------------------------------------------------- fit
    def _statistics(self, release, cohort, schema, *, clip: bool) -> dict:
        n = schema.n_total
        y = schema.label_index(cohort.labels)
        onehot = np.eye(len(schema.classes))[y]
        counts_m = release("class counts", onehot.sum(0))
        counts = np.maximum(counts_m.value, 1.0)
        r1, r2 = clip_bounds(len(schema.genes)) if clip else (math.inf, math.inf)
        profile, level = row_centre(cohort.X)
        both = np.hstack([profile, level[:, None]])
        sums = release("gene means", clip_rows(both, r1).sum(0)).value / n
        mean_profile, mean_level = sums[:-1], float(sums[-1])
        dev = clip_rows(profile - mean_profile, r2)
        class_sums = release("class means", onehot.T @ dev).value
        anchors = mean_profile[None, :] + class_sums / np.maximum(counts, 2.0 * counts_m.noise_sd)[:, None]
        stats = {
            "class_counts": counts.tolist(),
            "class_proportions": (counts / counts.sum()).tolist(),
            "mean_profile": mean_profile.tolist(),
            "mean_level": mean_level,
            "class_anchors": anchors.tolist(),
            "clip_bounds": [r1, r2] if clip else None,
        }
        if schema.input_kind == "counts":
            stats["log_library_size"] = library_size.release(release, cohort.library_sizes, n)
        return stats

    def fit(self, release, cohort, schema) -> None:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from tqdm import tqdm

        cfg, ctx = self.config, self.context
        private = release.plan.private
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        t1 = time.monotonic()
        stats = self._statistics(release, cohort, schema, clip=private)
        self.timings["statistics"] = time.monotonic() - t1
        self.statistics = stats

        n_total = schema.n_total
        rate, steps = self._schedule(n_total)
        # identical initial weights at every site (public randomness: --seed, else the session's shared seed)
        torch.manual_seed(ctx.seed if ctx.seed is not None else ctx.shared_seed)
        model = CVAE(CVAEConfig(len(schema.genes), len(schema.classes), cfg.latent_dim, cfg.hidden_dim))
        params = [p for p in model.parameters() if p.requires_grad]
        if private:
            torch.seed()  # nothing after the initial weights may follow from --seed
        key = sampling_key(ctx.seed, private)
        if ctx.seed is not None and private:
            log.info("--seed fixes the initial weights only: with DP the Poisson sampling key mixes in fresh OS "
                     "randomness, so this run is not reproducible (--no-dp runs are)")
        profile, _ = row_centre(cohort.X)
        y_idx = torch.tensor(schema.label_index(cohort.labels))
        u_all = torch.tensor(profile - np.asarray(stats["class_anchors"])[y_idx.numpy()], dtype=torch.float32)
        y_all = torch.nn.functional.one_hot(y_idx, len(schema.classes)).float()
        ids = [str(s) for s in cohort.sample_ids]
        expected_batch = rate * n_total

        adam = torch.optim.Adam(params, lr=cfg.lr)
        if not private:
            net, dpopt = model, None
        else:
            net = GradSampleModule(model, loss_reduction="sum")
            dpopt = DPOptimizer(adam, noise_multiplier=0.0, max_grad_norm=cfg.clip,
                                expected_batch_size=int(round(expected_batch)), loss_reduction="sum")

        t2 = time.monotonic()
        steps_per_epoch = int(math.ceil(1.0 / rate))
        bar = tqdm(total=cfg.epochs, desc=f"[{ctx.site}] epochs", unit="epoch", disable=not ctx.progress, leave=False)
        step, losses = 0, []
        while step < steps:
            idx = np.flatnonzero(poisson_mask(key, step, ids, rate))
            (dpopt or adam).zero_grad(set_to_none=True)
            if len(idx):
                eps = record_noise(key, step, [ids[j] for j in idx], cfg.latent_dim)
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
            total = torch.from_numpy(release(SGD, local).value)
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
        self.timings["training"] = time.monotonic() - t2
        self.model = (net._module if dpopt is not None else model).eval()

    def dp_extra(self) -> dict:
        return {"epochs": self.config.epochs}

    # ------------------------------------------------------------- model
    def sample(self, y: np.ndarray, rng: torch.Generator) -> np.ndarray:
        """``x = l + a_y + f(z, y) + exp(v(y)/2) e`` (module doc)."""
        onehot = torch.nn.functional.one_hot(torch.tensor(y), self.model.cfg.n_classes).float()
        u = self.model.sample(onehot, rng).double().numpy()
        st = self.statistics
        return np.asarray(st["class_anchors"])[y] + u + st["mean_level"]

    @classmethod
    def make_rng(cls, seed: int, n: int) -> torch.Generator:
        """The torch stream this generator has always sampled with: seeded, then past the label permutation."""
        gen = torch.Generator().manual_seed(int(seed))
        torch.randperm(n, generator=gen)
        return gen

    @classmethod
    def from_state(cls, blob: dict) -> "CVAEGenerator":
        model = CVAE(CVAEConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
        return cls.restored(cls.Config(latent_dim=model.cfg.latent_dim, hidden_dim=model.cfg.hidden_dim),
                            model.eval(), blob)
