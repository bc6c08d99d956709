"""Secure sums with distributed Gaussian noise, over CrypTen arithmetic shares.

For a vector ``x_i`` held by each site ``i`` of ``k``, :meth:`SecureSum.sum`
reveals only

.. math::

    S = \\sum_{i=0}^{k-1} (x_i + \\eta_i), \\qquad
    \\eta_i \\sim \\mathcal{N}\\left(0, \\frac{\\sigma_{tot}^2}{k - t} I\\right),

where ``t`` is ``max_colluders``: the ``k - t`` honest sites alone contribute
noise of variance at least ``sigma_tot**2``, which is what the accountant
assumes. Each site encodes ``x_i + eta_i`` in fixed point (32 fractional
bits) and adds a pseudo-random sharing of zero
(:meth:`~fedsynth.federation.session.Session.przs_mask`: one ChaCha20 stream
per pairwise key, all k-1 of them), so its share is uniformly random in
Z_{2^64} to anyone who lacks any one of its pairwise keys: a coalition of
``t <= k - 2`` other sites, ring neighbours included, learns nothing from it. CrypTen's arithmetic shared
tensor reveals the sum with one gloo all-reduce of the shares; nothing else
leaves the site.

Noise is drawn straight from the operating system's cryptographic source
(``os.urandom``, :func:`csprng_normal`), since Opacus' ``secure_mode``
(torchcsprng) is unavailable here.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from . import crypten_compat as _crypten_compat
from ..errors import InputError, ParameterError

#: The revealed sum is decoded from an int64 with 32 fractional bits: it must stay below 2^63 / 2^32.
SUM_LIMIT = 2.0**31


def max_abs_per_site(k: int) -> float:
    """Largest ``|value|`` one of ``k`` sites may share (its own noise included): ``2^30 / k``.

    Each site's fixed-point share is ``round(v * 2^32)`` in int64, and the
    shares are added modulo ``2^64``; the total decodes correctly only while
    ``|sum| < 2^31``. With every site below ``2^31 / k`` the sum of ``k``
    values cannot wrap; the bound takes half of that (a factor 2 of
    headroom), so ``k`` values that each just pass still sum to below
    ``2^30``. Without a bound that follows ``k`` (a fixed ``2^29`` before)
    five or more sites near the limit could wrap the sum silently.
    """
    return SUM_LIMIT / 2.0 / max(int(k), 1)


def csprng_normal(n: int, std: float) -> torch.Tensor:
    """``n`` draws of ``N(0, std^2)`` straight from ``os.urandom`` (Box-Muller).

    Not a seeded torch generator: torch's CPU generator takes 32-bit seeds,
    so it could only ever produce 2**32 noise vectors.
    """
    u = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n)
    u1 = (u[0] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    u2 = ((u[1] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # in (0, 1]
    return torch.from_numpy(np.sqrt(-2.0 * np.log(u2)) * np.cos(2.0 * np.pi * u1) * std)


class SecureSum:
    """Noisy secure sums across the sites of a :class:`~fedsynth.federation.session.Session`.

    Parameters
    ----------
    session
        An open session (its process group is CrypTen's).
    max_colluders
        ``t``: how many sites may pool their views; ``0 <= t < k``.
    """

    def __init__(self, session, *, max_colluders: int = 0):
        k = session.world_size
        if not 0 <= max_colluders < k:
            raise ParameterError(
                f"--max-colluders must be in 0..{k - 1} for {k} sites (got {max_colluders})"
            )
        self.session = session
        self.world_size = k
        self.max_colluders = max_colluders
        self.calls = 0
        self.values_summed = 0

    def local_noise_std(self, total_std: float) -> float:
        """This site's share of the noise: ``sigma_tot / sqrt(k - t)``."""
        return total_std / math.sqrt(self.world_size - self.max_colluders)

    def released_noise_std(self, total_std: float) -> float:
        """s.d. of the noise in the revealed sum: ``k`` local draws, ``sigma_tot sqrt(k / (k - t))``.

        At least ``sigma_tot`` (what the guarantee needs from the honest
        sites alone); equal to it when ``t = 0``.
        """
        return self.local_noise_std(total_std) * math.sqrt(self.world_size) if total_std > 0 else 0.0

    def sum(self, x: torch.Tensor, *, noise_std: float = 0.0, step: str) -> torch.Tensor:
        """Reveal ``sum_i (x_i + eta_i)`` to every site (float64, shape of ``x``).

        ``noise_std`` is the standard deviation of the *total* noise; pass 0
        only for values that are public by design or in a non-private run.
        """
        crypten = _crypten_compat.import_crypten()
        from crypten.encoder import FixedPointEncoder
        from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor

        local = x.detach().to(torch.float64).reshape(-1).clone()
        if noise_std > 0:
            local += csprng_normal(local.numel(), self.local_noise_std(noise_std))
        peak = float(local.abs().max()) if local.numel() else 0.0
        bound = max_abs_per_site(self.world_size)
        if not peak < bound:  # also NaN; the value itself is not named (error text may cross sites)
            raise InputError(f"{step}: a value of this site (noise included) is not below the fixed-point bound "
                             f"{bound:.6g} = 2^30/k for k={self.world_size} sites (the sum must stay below 2^31); "
                             "scale or normalise the input")
        encoder = FixedPointEncoder(precision_bits=_crypten_compat.PRECISION_BITS)
        with self.session.step(step):
            share = self.session.przs_mask(local.numel(), self.session.next_mask_counter()) + encoder.encode(local)
            shared = ArithmeticSharedTensor.from_shares(
                share, precision=_crypten_compat.PRECISION_BITS
            )
            total = shared.get_plain_text()
        del crypten
        self.calls += 1
        self.values_summed += local.numel()
        return total.reshape(x.shape)
