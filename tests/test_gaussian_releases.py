"""The DP Gaussian's releases, in one process: sizes, sensitivities, noise, de-noising.

* every size behind a default (:func:`selected_coordinates`,
  :func:`screen_fraction`, :func:`block_size`, :func:`release_bounds`) is
  checked at two sizes against its formula and against what it must
  achieve there (no screen at 50 genes and a few hundred records; a
  screen and linear growth at 20,000 genes);
* every release's per-record contribution stays within its declared
  sensitivity, given everything released before it (the adaptive
  composition the accountant assumes): removing one record, with the
  earlier outputs held fixed, moves each release by at most ``Delta``;
* every release gets exactly the noise the accountant planned;
* the de-noising of class deviations leaves exact values alone, pulls
  pure noise towards 0 and keeps a signal that stands out of the noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsynth.federation.schema import Schema
from fedsynth.generators import gaussian as ga
from fedsynth.privacy.release import Measurement, ReleasePlan, Releaser, with_record_count


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("G, N, K, r", [(50, 202, 5, 4), (20000, 3000, 5, 4)])
def test_sizes_follow_their_formulas(G, N, K, r):
    D = G + 1
    g = ga.selected_coordinates(D, N, K)
    g0 = math.ceil(N / K)
    assert g == (g0 if D >= ga.SCREEN_MIN_RATIO * g0 else D)
    assert ga.screen_fraction(D, N, K) == pytest.approx(1 - g / D)
    p = ga.block_size(D, N, K, r)
    P = max(q for q in range(1, 4 * D) if q * (q + 1) / 2 <= D * (K + r))
    assert p == min(g, P)
    # what they must achieve: the block's released values stay below D (K + r), the size of the rest
    assert p * (p + 1) / 2 <= D * (K + r)
    b = ga.release_bounds(G, N, K, r)
    assert b["gene means"] == pytest.approx(ga.GENE_MEAN_CLIP * math.sqrt(D))
    assert b["class screen"] == pytest.approx(ga.CLASS_MEAN_CLIP * math.sqrt(G))
    assert b["class means"] == pytest.approx(ga.SELECTED_CLIP * math.sqrt(g))
    assert b["gene variances"] == pytest.approx(ga.VARIANCE_CLIP * math.sqrt(D))
    assert b["block moments"] == pytest.approx(ga.RESIDUAL_CLIP**2 * p)
    split = ga.budget_split("log", G, N, K)
    assert sum(split.values()) == pytest.approx(sum(ga.BUDGET_SPLIT.values()) + ga.SCREEN_SHARE)
    if G == 50:  # 41 records per class, 51 coordinates: a screen would drop 10 PAM50 genes to save 20% noise
        assert g == D and "class screen" not in split
        assert split["class means"] == pytest.approx(ga.BUDGET_SPLIT["class means"] + ga.SCREEN_SHARE)
    else:  # 600 of 20,001 coordinates, and O(D (K + r)) released values in all
        assert g == 600 and split["class screen"] == pytest.approx(ga.SCREEN_SHARE * (1 - 600 / D))
        values = K + D + K * D + K * g + D + p * (p + 1) // 2
        assert values <= 2 * D * (K + r)


def test_no_screen_when_every_class_has_more_records_than_coordinates():
    split = ga.budget_split("log", 50, 5000, 5)
    assert "class screen" not in split
    assert split["class means"] == pytest.approx(ga.BUDGET_SPLIT["class means"] + ga.SCREEN_SHARE)
    # without DP the block is the whole covariance up to NO_DP_BLOCK coordinates
    assert ga.block_size(51, 100, 5, 4, private=False) == 51
    assert ga.block_size(20001, 100, 5, 4, private=False) == ga.NO_DP_BLOCK


# ------------------------------------------------------------------ data
def structured(n=240, G=300, K=4, seed=3):
    """Heavy-tailed gene levels, a rank-3 covariance, class effects on a sparse subset, unequal classes."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(2.0, 2.0, G)
    L = rng.normal(0, 0.5, (G, 3))
    effects = np.zeros((K, G))
    for k in range(K):
        effects[k, rng.choice(G, 15, replace=False)] = rng.normal(0, 2.0, 15)
    y = rng.choice(K, size=n, p=np.array([0.4, 0.3, 0.2, 0.1])[:K] / np.array([0.4, 0.3, 0.2, 0.1])[:K].sum())
    X = level + effects[y] + rng.normal(0, 1, (n, 3)) @ L.T + rng.normal(0, 0.7, (n, G))
    X[rng.random(X.shape) < 0.01] += 8.0  # a few outlying values, so that clipping matters
    return X, y


class Recorder:
    """A secure sum with no noise that records what each release asked for."""

    def __init__(self, replay=None):
        self.values, self.noise, self.replay = {}, {}, replay

    def released_noise_std(self, sd):
        return sd

    def sum(self, x, *, noise_std=0.0, step=""):
        name = step.split(": ", 1)[1]
        self.values[name] = x.numpy().copy()
        self.noise[name] = noise_std
        if self.replay is not None:  # hold the earlier outputs fixed
            return torch.from_numpy(self.replay[name])
        return x.clone()


def plan_for(G, N, K, r=4, epsilon=1.0):
    gen = ga.GaussianGenerator(ga.GaussianGenerator.Config(components=r))
    schema = Schema(genes=[f"g{j}" for j in range(G)], classes=[str(k) for k in range(K)], input_kind="log",
                    site_names=["a"], n_total=N)
    specs = with_record_count(gen.releases(schema))
    return ReleasePlan.calibrate(specs, epsilon=epsilon, delta=1e-5)


def run(X, y, K, plan, secure_sum, N):
    """``release_moments`` through the product's Releaser; ``N`` as released before (held fixed)."""
    rel = Releaser(secure_sum, plan, "gaussian")
    rel.rounds["record count"] = 1  # released before fit, by the protocol
    return ga.release_moments(rel, X, y, K, N, components=4, clip=plan.private)


def test_every_release_is_within_its_declared_sensitivity_given_earlier_outputs():
    X, y = structured()
    K, N = 4, len(y)
    plan = plan_for(X.shape[1], N, K)
    full = Recorder()
    run(X, y, K, plan, full, N)
    assert "class screen" in full.values  # 60 records per class, 301 coordinates: screened
    # the records that clipping binds hardest, and a few others
    norms = np.linalg.norm(ga.to_profile_level(X), axis=1)
    for i in list(np.argsort(-norms)[:4]) + [0, 1, 2]:
        keep = np.arange(N) != i
        without = Recorder(replay=full.values)
        run(X[keep], y[keep], K, plan, without, N)
        for name, v in full.values.items():
            spec = plan.specs[name]
            moved = float(np.linalg.norm(v - without.values[name]))
            assert moved <= spec.sensitivity * (1 + 1e-9), (name, i, moved, spec.sensitivity)
    # and the bounds bind: removing the record with the largest norm moves some release by its full Delta
    worst = int(np.argmax(norms))
    without = Recorder(replay=full.values)
    run(np.delete(X, worst, 0), np.delete(y, worst), K, plan, without, N)
    ratios = {n: float(np.linalg.norm(full.values[n] - without.values[n])) / plan.specs[n].sensitivity
              for n in full.values}
    assert max(ratios[n] for n in ("gene means", "class screen", "class means", "gene variances")) > 0.99, ratios


def test_every_release_gets_the_noise_the_accountant_planned():
    X, y = structured()
    plan = plan_for(X.shape[1], len(y), 4)
    rec = Recorder()
    run(X, y, 4, plan, rec, len(y))
    declared = [n for n in plan.specs if n != "record count"]
    assert list(rec.noise) == declared
    for name in declared:
        assert rec.noise[name] == pytest.approx(plan.noise_sd(name)) and rec.noise[name] > 0, name
    # the model file keeps the per-gene releases as revealed, before post-processing
    st = run(X, y, 4, plan, Recorder(), len(y))
    for name, value in st["released"].items():
        np.testing.assert_array_equal(np.asarray(value), rec.values[name], err_msg=name)


def test_without_dp_nothing_is_clipped_and_statistics_are_exact():
    X, y = structured()
    K, N = 4, len(y)
    plan = ReleasePlan.not_private(with_record_count(ga.GaussianGenerator().releases(
        Schema([f"g{j}" for j in range(X.shape[1])], [str(k) for k in range(K)], "log", ["a"], n_total=N))), delta=1e-5)
    st = run(X, y, K, plan, Recorder(), N)
    V = ga.to_profile_level(X)
    mu = np.stack([V[y == k].mean(0) for k in range(K)])
    np.testing.assert_allclose(st["class_means"], mu, atol=1e-9)
    np.testing.assert_allclose(st["variances"], ((V - mu[y]) ** 2).sum(0) / (N - K), atol=1e-9)
    assert st["selected"] == list(range(V.shape[1]))


# ------------------------------------------------------------ de-noising
def test_denoising_leaves_exact_values_and_shrinks_noise():
    rng = np.random.default_rng(0)
    dev = rng.normal(0, 1, (5, 200))
    out, w = ga.denoise_deviations(dev, np.zeros(5))
    assert np.array_equal(out, dev) and np.all(w == 1)
    # pure noise of known variance: pulled towards 0 (most of it removed)
    noise = rng.normal(0, 1, (5, 200))
    out, _ = ga.denoise_deviations(noise, np.ones(5))
    assert np.linalg.norm(out) < 0.4 * np.linalg.norm(noise)
    # a sparse signal well above the noise: kept, and the estimate is closer to it than the raw values
    signal = np.zeros((5, 200))
    signal[:, :10] = rng.choice([-6.0, 6.0], (5, 10))
    raw = signal + rng.normal(0, 1, (5, 200))
    out, _ = ga.denoise_deviations(raw, np.ones(5))
    assert np.linalg.norm(out - signal) < 0.8 * np.linalg.norm(raw - signal)
    assert np.abs(out[:, :10] - signal[:, :10]).mean() < 1.0


def test_gene_mean_shrinkage_uses_the_known_noise():
    rng = np.random.default_rng(1)
    truth = rng.normal(5, 2, 1000)
    noisy = truth + rng.normal(0, 2, 1000)
    shrunk, err = ga.shrink_towards_mean(noisy, 4.0)
    assert np.mean((shrunk - truth) ** 2) < 0.7 * np.mean((noisy - truth) ** 2)
    assert err == pytest.approx(np.mean((shrunk - truth) ** 2), rel=0.2)
    assert ga.shrink_towards_mean(noisy, 0.0)[0] is noisy
