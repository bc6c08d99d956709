"""The conditional VAE and the released model file.

The CVAE models the residual ``u`` of each record's centred profile around
its DP class anchor (see :mod:`fedsynth.train`). With one-hot label ``y``:

* encoder ``q(z | u, y) = N(m(u, y), diag(exp(l(u, y))))``,
* decoder ``p(u | z, y) = N(f(z, y), diag(exp(v(y))))`` with class-specific
  gene log-variances ``v(y) = W_v y + b_v`` (a Linear layer on the label, so
  Opacus' hooks compute its per-sample gradients; no bare ``nn.Parameter``),
* per-sample loss ``-log p(u | z, y) + KL(q || N(0, I))``.

No BatchNorm (Opacus refuses it). The model file (``torch.save`` of a plain
dict) holds the weights, everything needed to sample (genes, classes, class
proportions, gene means, count model) and the DP record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import InputError

MODEL_FORMAT = "fedsynth-model-v1"


@dataclass
class CVAEConfig:
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


def save_model(path, *, model, meta: dict) -> None:
    """Write the model file atomically (weights + sampling info + DP record).

    ``model`` is any generator's model (``.cfg`` dataclass, ``.state_dict()``
    of tensors); ``meta["generator"]`` names the generator (default cvae).
    """
    from .data.io import atomic_path

    blob = {
        "format": MODEL_FORMAT,
        "generator": meta.get("generator", "cvae"),
        "config": asdict(model.cfg),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        **meta,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_model(path) -> tuple[object, dict]:
    """Read a model file; InputError if it is not a fedsynth model.

    Returns the generator's model (a :class:`CVAE` for ``cvae``; see
    :mod:`fedsynth.generators`) and the file's content.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such model file") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: not a readable fedsynth model ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a fedsynth model file (expected format {MODEL_FORMAT})")
    from .generators import load

    return load(blob, path), blob
