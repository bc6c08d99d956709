"""Every fix fedsynth needs in CrypTen 0.4.1, in one place.

Import CrypTen only through :func:`import_crypten`; each workaround below has
a test in ``tests/test_crypten_compat.py`` that fails if it stops working (or
stops being needed).

1. ``import crypten`` fails on torch >= 2.9: ``crypten.nn.onnx_converter``
   imports ``torch.onnx._internal.registration``, which moved to
   ``torch.onnx._internal.torchscript_exporter.registration``. We alias the
   old module name before importing.
2. ``FixedPointEncoder.decode`` divides negative values by ``scale - 1``
   and returns some of them exactly 1.0 too low; it also decodes to float32,
   which loses the low bits of a 32-bit-precision sum. We replace it by an
   exact floor division in float64:
   ``decode(t) = floor(t / s) + (t mod s) / s`` with ``s = 2**precision``.
3. CrypTen creates its own process group from environment variables, with
   torch's default 30-minute timeout, and without ``RENDEZVOUS`` every party
   invents its own file rendezvous and all hang. We never let it: fedsynth
   creates the process group itself (with deadlines, see
   :mod:`fedsynth.federation.session`) and :func:`adopt_process_group` wraps it in a
   CrypTen communicator.
4. CrypTen's ``_setup_prng`` sends each party's pairwise PRZS seed to its
   neighbour in clear, so a passive eavesdropper on the gloo traffic can
   recompute every mask and read every input. :func:`seed_generators`
   installs seeds that fedsynth derived from an authenticated key agreement
   instead; CrypTen's own seeding is never run.
5. CrypTen's PRZS masks come from torch's CPU generator (Mersenne
   Twister), which uses only 32 bits of its seed; fedsynth's secure sums
   take their masks from :meth:`fedsynth.federation.session.Session.przs_mask`
   (ChaCha20 keyed by 256-bit pairwise keys) instead, and use CrypTen's
   arithmetic shared tensor, fixed-point encoder and reveal.
6. CrypTen installs a top-level package named ``configs``; fedsynth's own
   modules avoid that name.
"""

from __future__ import annotations

import importlib
import sys

import torch

#: Fixed-point precision used for every secret-shared value (bits after the
#: binary point). CrypTen's default of 16 bits gives ~9% relative error near
#: 1e-4; 32 bits leaves 31 integer bits, i.e. |values| < 2**31 per sum.
PRECISION_BITS = 32

_crypten = None


def _alias_onnx_registration() -> None:
    old = "torch.onnx._internal.registration"
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        new = importlib.import_module(
            "torch.onnx._internal.torchscript_exporter.registration"
        )
        sys.modules[old] = new


def exact_decode(self, tensor):
    """Exact fixed-point decode (replaces ``FixedPointEncoder.decode``).

    For an encoded int64 ``t`` and scale ``s = 2**p``, returns the float64
    value ``floor(t / s) + (t mod s) / s``; torch's ``%`` with a positive
    divisor is non-negative, so this is exact for every sign.
    """
    if tensor is None:
        return None
    scale = self._scale
    if scale == 1:
        return tensor.data
    whole = torch.div(tensor, scale, rounding_mode="floor")
    frac = torch.remainder(tensor, scale)
    return (whole.double() + frac.double() / scale).data


def import_crypten():
    """Import CrypTen 0.4.1 with fedsynth's fixes applied; returns the module."""
    global _crypten
    if _crypten is not None:
        return _crypten
    _alias_onnx_registration()
    import crypten
    from crypten.encoder import FixedPointEncoder

    FixedPointEncoder.decode = exact_decode
    _crypten = crypten
    return crypten


def adopt_process_group(rank: int, world_size: int) -> None:
    """Make CrypTen use the already initialised default process group.

    ``DistributedCommunicator.__init__`` does nothing when torch.distributed
    is initialised already, leaving the object without its groups; we fill in
    exactly the attributes it would have set (no trusted third party).
    """
    import_crypten()
    import torch.distributed as dist
    from crypten.communicator import distributed_communicator as dc

    comm = dc.DistributedCommunicator.__new__(dc.DistributedCommunicator)
    comm.world_size = world_size
    comm.rank = rank
    comm.reset_communication_stats()
    comm._name = f"rank{rank}"
    comm.main_group = dist.group.WORLD
    comm.ttp_group = dist.group.WORLD
    comm.ttp_initialized = False
    dc.DistributedCommunicator.instance = comm


def seed_generators(prev_seed: int, next_seed: int, local_seed: int, global_seed: int) -> None:
    """Install CrypTen's four PRZS generators from seeds fedsynth derived.

    ``next`` is shared with rank+1 and ``prev`` with rank-1 (CrypTen's
    convention: my ``next`` generator equals my successor's ``prev``).
    """
    crypten = import_crypten()
    cpu = torch.device("cpu")
    for key, seed in (
        ("prev", prev_seed),
        ("next", next_seed),
        ("local", local_seed),
        ("global", global_seed),
    ):
        g = torch.Generator(device=cpu)
        g.manual_seed(seed)
        crypten.generators[key] = {cpu: g}


def shutdown() -> None:
    """Forget CrypTen's communicator (the process group is torn down by the session)."""
    if _crypten is None:
        return
    from crypten.communicator import distributed_communicator as dc

    dc.DistributedCommunicator.instance = None
