"""Generator ``marginals``: genes independent given the class (a floor for benchmarks).

One release: for every gene ``g``, the ``K x b`` table of class by
equal-width bin of the public value range ``[lo, hi]``
(:data:`~fedsynth.data.preprocess.PUBLIC_RANGE`; values outside are clipped
into the end bins),

.. math::

    T_g[k, j] = \\#\\{i : y_i = k,\\ \\mathrm{bin}(x_{ig}) = j\\} + \\mathcal{N}(0, (z \\sqrt{G})^2),

since one record adds one to each of the ``G`` tables (L2 sensitivity
``sqrt(G)``). For counts input the library-size model is released too
(:mod:`fedsynth.privacy.library_size`).

**Fit** (post-processing): ``P(bin_g = j | y = k) = max(T_g[k, j], 0)``
normalised (uniform where a row has no mass); the class counts are the
mean over genes of the tables' row sums, ``c_k = (1/G) sum_g sum_j T_g[k, j]``,
whose noise s.d. is ``z sqrt(b)`` (averaging ``G`` independent sums of ``b``
cells of s.d. ``z sqrt(G)``).

**Sampling**: for each gene independently a bin from ``P(bin_g | y)``,
then a value uniform within the bin. No gene-gene structure at all: any
generator that does not beat this has learnt nothing beyond per-gene
class-conditional distributions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data.preprocess import PUBLIC_RANGE
from ..errors import ParameterError
from ..privacy import library_size
from ..privacy.release import ReleaseSpec
from .base import Generator, option

TABLES = "class x gene histograms"
#: budget shares: the tables, and for counts input the library-size mean and spread
SHARES = (1.0, 0.05, 0.05)


@dataclass
class MarginalsShape:
    """The model file's ``config``."""

    n_genes: int
    n_classes: int
    bins: int
    lo: float
    hi: float


class MarginalsGenerator(Generator):
    """Independent per-gene histograms given the class (module doc)."""

    name = "marginals"
    summary = "independent genes given the class: DP class x gene histograms (a floor for benchmarks)"
    stream = 0x3A7

    @dataclass
    class Config:
        bins: int = option(8, "marginals: equal-width bins per gene over the public value range (2..64).",
                           name="marginals_bins", minimum=2, maximum=64, label="Bins per gene")

    @classmethod
    def validate(cls, config) -> None:
        if not 2 <= config.bins <= 64:
            raise ParameterError(f"--marginals-bins must be in 2..64 (got {config.bins})")

    def releases(self, schema) -> list[ReleaseSpec]:
        specs = [ReleaseSpec(TABLES, math.sqrt(len(schema.genes)), SHARES[0])]
        if schema.input_kind == "counts":
            specs += library_size.specs(*SHARES[1:])
        return specs

    def fit(self, release, cohort, schema) -> None:
        lo, hi = PUBLIC_RANGE[schema.input_kind]
        b, K = self.config.bins, len(schema.classes)
        y = schema.label_index(cohort.labels)
        codes = np.clip(((cohort.X - lo) / (hi - lo) * b).astype(np.int64), 0, b - 1)  # (n, G)
        local = np.zeros((cohort.X.shape[1], K, b))
        for k in range(K):
            rows = codes[y == k]
            for j in range(b):
                local[:, k, j] = (rows == j).sum(0)
        tables = release(TABLES, local).value
        counts = np.maximum(tables.sum(2).mean(0), 1.0)
        probs = np.maximum(tables, 0.0)
        mass = probs.sum(2, keepdims=True)
        self.probs = np.where(mass > 0, probs / np.where(mass > 0, mass, 1.0), 1.0 / b)
        self.shape = MarginalsShape(len(schema.genes), K, b, lo, hi)
        self.statistics = {"class_counts": counts.tolist(), "class_proportions": (counts / counts.sum()).tolist()}
        if schema.input_kind == "counts":
            self.statistics["log_library_size"] = library_size.release(release, cohort.library_sizes,
                                                                       schema.n_total)

    def sample(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per gene, a bin from ``P(bin | y)`` and a value uniform within it."""
        s = self.shape
        cdf = np.cumsum(self.probs[:, y, :], axis=2)  # (G, n, b)
        u = rng.random((s.n_genes, len(y), 1))
        codes = np.minimum((u > cdf).sum(2), s.bins - 1).T  # (n, G)
        width = (s.hi - s.lo) / s.bins
        return s.lo + (codes + rng.random(codes.shape)) * width

    def model_config(self) -> dict:
        return asdict(self.shape)

    def state_dict(self) -> dict:
        return {"probs": torch.from_numpy(np.ascontiguousarray(self.probs))}

    @classmethod
    def from_state(cls, blob: dict) -> "MarginalsGenerator":
        shape = MarginalsShape(**blob["config"])
        gen = cls.restored(cls.Config(bins=shape.bins), None, blob)
        gen.shape, gen.probs = shape, blob["state_dict"]["probs"].numpy()
        return gen
