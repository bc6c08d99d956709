"""The DP Gaussian's releases, in one process: sizes, sensitivities, noise, de-noising.

* every size behind a default (:func:`selected_coordinates`,
  :func:`skipped_fraction`, :func:`block_size`, :func:`release_bounds`) is
  checked at two sizes against its formula and against what it must
  achieve there (no selection at 50 genes and a few hundred records; a
  selection and linear growth at 20,000 genes);
* every release's per-record contribution stays within its declared
  sensitivity, given everything released before it (the adaptive
  composition the accountant assumes): removing one record, with the
  earlier outputs held fixed, moves each release by at most ``Delta``;
* every release gets exactly the noise the accountant planned;
* the de-noising of class deviations leaves exact values alone, pulls
  pure noise towards 0 and keeps a signal that stands out of the noise;
  its spread prior finds the power and share of genes that made the data,
  at two sizes, and de-noises better than a per-gene estimate;
* the class-mean sums are divided by the share of a record their clip
  keeps, so the class deviations are not shrunk towards the gene means;
* the level, weighted in the gene means, gets a fraction of the noise it
  would get unweighted; with a selection no class's level moves every
  gene; the variance clip carries the known error of the means (each fails
  when its change is undone).
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
    assert g == (g0 if D >= ga.SELECTION_MIN_RATIO * g0 else D)
    assert ga.skipped_fraction(D, N, K) == pytest.approx(1 - g / D)
    p = ga.block_size(D, N, K, r)
    P = max(q for q in range(1, 4 * D) if q * (q + 1) / 2 <= D * (K + r))
    assert p == min(g, P)
    # what they must achieve: the block's released values stay below D (K + r), the size of the rest
    assert p * (p + 1) / 2 <= D * (K + r)
    s_v, s_r = 0.9, 0.7  # released scales (log1p-CPM-like); the bounds are in their units
    b = ga.release_bounds(G, N, K, r, (s_v, s_r))
    assert b["gene means"] == pytest.approx(ga.GENE_MEAN_CLIP * s_v * math.sqrt(D))
    assert b["class means"] == pytest.approx(ga.SELECTED_CLIP * s_r * math.sqrt(g))
    assert b["gene variances"] == pytest.approx(ga.VARIANCE_CLIP * s_r**2 * math.sqrt(D))
    assert b["block moments"] == pytest.approx((ga.RESIDUAL_CLIP * s_r) ** 2 * p)
    assert b["class counts"] == 1.0 and b["record scale"] == pytest.approx(math.sqrt(2))  # two histograms
    # the level weighted by w in the gene means: its clip share is c_l, within [1, sqrt(D)]
    s_l = 8.0  # a log2 bulk record's level
    w = ga.level_weight(s_v, s_l, D)
    assert w == pytest.approx(min(max(ga.LEVEL_SHARE * s_v * math.sqrt(D) / s_l, 1.0), math.sqrt(D)))
    bl = ga.release_bounds(G, N, K, r, (s_v, s_r), level=s_l)
    assert bl["gene means"] == pytest.approx(ga.GENE_MEAN_CLIP * math.sqrt(D * s_v**2 + (w**2 - 1) * s_l**2))
    # what it must achieve: at most sqrt(1 + c_l^2) times the unweighted clip (the profile's noise), and
    # the level's noise (bound / w) w times below a profile coordinate's
    assert bl["gene means"] <= b["gene means"] * math.sqrt(1 + ga.LEVEL_SHARE**2) * (1 + 1e-12)
    if G == 50:  # 51 coordinates: the level is a fiftieth of the norm already, no weight
        assert w == 1.0 and bl["gene means"] == pytest.approx(b["gene means"])
    else:  # 20,001 coordinates: the unweighted level would get the noise of one gene of 20,000
        assert w == pytest.approx(ga.LEVEL_SHARE * s_v * math.sqrt(D) / s_l) and w > 7
    assert ga.level_weight(s_v, None, D) == 1.0  # the level histogram did not clear its noise
    # the plan is made at the fallback scales, before anything is released
    b0 = ga.release_bounds(G, N, K, r)
    assert b0["gene means"] == pytest.approx(ga.GENE_MEAN_CLIP * ga.FALLBACK_SCALES[0] * math.sqrt(D))
    split = ga.budget_split("log", G, N, K)
    assert sum(split.values()) == pytest.approx(sum(ga.BUDGET_SPLIT.values()))
    order = list(ga.BUDGET_SPLIT)  # the same releases, in the order they are made: the variances after the
    if g == D:                     # class means where there is no selection
        order.remove("gene variances")
        order.insert(order.index("class means") + 1, "gene variances")
    assert list(split) == order
    if G == 50:  # 41 records per class, 51 coordinates: a selection would drop 10 PAM50 genes to save 20% noise
        assert g == D
        assert split == pytest.approx(dict(ga.BUDGET_SPLIT))
    else:  # 600 of 20,001 coordinates, and O(D (K + r)) released values in all
        f = 1 - 600 / D
        assert g == 600
        for name in ga.BUDGET_SPLIT:
            if name != "class means":
                assert split[name] == pytest.approx(ga.BUDGET_SPLIT[name] + ga.SELECTION_DEPENDENT.get(name, 0) * f)
        assert split["class means"] == pytest.approx(ga.BUDGET_SPLIT["class means"]
                                                     - sum(ga.SELECTION_DEPENDENT.values()) * f)
        # what it must achieve: 97% of the coordinates are measured by the gene means alone, which now get
        # more of the budget than the class means on the 3% selected
        assert split["gene means"] > split["class means"]
        values = K + D + D + K * g + p * (p + 1) // 2
        assert values <= 2 * D * (K + r)


def test_no_selection_when_every_class_has_more_records_than_coordinates():
    split = ga.budget_split("log", 50, 5000, 5)
    assert ga.selected_coordinates(51, 5000, 5) == 51
    assert split["class means"] == pytest.approx(ga.BUDGET_SPLIT["class means"])
    # without DP the block is the whole covariance up to NO_DP_BLOCK coordinates
    assert ga.block_size(51, 100, 5, 4, private=False) == 51
    assert ga.block_size(20001, 100, 5, 4, private=False) == ga.NO_DP_BLOCK


# ------------------------------------------------------------------ data
def structured(n=240, G=300, K=4, seed=3, outliers=True):
    """Heavy-tailed gene levels, a rank-3 covariance, class effects on a sparse subset, unequal classes."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(2.0, 2.0, G)
    L = rng.normal(0, 0.5, (G, 3))
    effects = np.zeros((K, G))
    for k in range(K):
        effects[k, rng.choice(G, 15, replace=False)] = rng.normal(0, 2.0, 15)
    y = rng.choice(K, size=n, p=np.array([0.4, 0.3, 0.2, 0.1])[:K] / np.array([0.4, 0.3, 0.2, 0.1])[:K].sum())
    X = level + effects[y] + rng.normal(0, 1, (n, 3)) @ L.T + rng.normal(0, 0.7, (n, G))
    if outliers:
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


def run(X, y, K, plan, secure_sum, N, *, releaser=False):
    """``release_moments`` through the product's Releaser; ``N`` as released before (held fixed).

    With ``releaser``, also the Releaser, whose plan holds the bounds set from the released scales.
    """
    rel = Releaser(secure_sum, plan, "gaussian")
    rel.rounds["record count"] = 1  # released before fit, by the protocol
    st = ga.release_moments(rel, X, y, K, N, components=4, clip=plan.private)
    return (st, rel) if releaser else st


def test_every_release_is_within_its_declared_sensitivity_given_earlier_outputs():
    X, y = structured()
    K, N = 4, len(y)
    plan = plan_for(X.shape[1], N, K)
    full = Recorder()
    _, rel = run(X, y, K, plan, full, N, releaser=True)
    final = rel.plan.specs  # the bounds as set from the released scales, which the replays hold fixed
    assert final["gene means"].sensitivity != plan.specs["gene means"].sensitivity
    assert ga.selected_coordinates(301, N, K) < 301  # 60 records per class, 301 coordinates: a selection
    # the records that clipping binds hardest, and a few others
    norms = np.linalg.norm(ga.to_profile_level(X), axis=1)
    for i in list(np.argsort(-norms)[:4]) + [0, 1, 2]:
        keep = np.arange(N) != i
        without = Recorder(replay=full.values)
        run(X[keep], y[keep], K, plan, without, N)
        for name, v in full.values.items():
            spec = final[name]
            moved = float(np.linalg.norm(v - without.values[name]))
            assert moved <= spec.sensitivity * (1 + 1e-9), (name, i, moved, spec.sensitivity)
    # and the bounds bind: removing the record with the largest norm moves some release by its full Delta
    worst = int(np.argmax(norms))
    without = Recorder(replay=full.values)
    run(np.delete(X, worst, 0), np.delete(y, worst), K, plan, without, N)
    ratios = {n: float(np.linalg.norm(full.values[n] - without.values[n])) / final[n].sensitivity
              for n in full.values}
    assert max(ratios[n] for n in ("gene means", "class means", "gene variances")) > 0.99, ratios


def test_every_release_gets_the_noise_the_accountant_planned():
    X, y = structured()
    plan = plan_for(X.shape[1], len(y), 4)
    rec = Recorder()
    _, rel = run(X, y, 4, plan, rec, len(y), releaser=True)
    declared = [n for n in plan.specs if n != "record count"]
    assert list(rec.noise) == declared
    for name in declared:
        # the multiplier as calibrated, times the bound each release was made with
        assert rel.plan.multipliers[name] == plan.multipliers[name], name
        assert rec.noise[name] == pytest.approx(plan.multipliers[name] * rel.plan.specs[name].sensitivity), name
        assert rec.noise[name] > 0, name
    assert rel.record()["sensitivity"]["gene means"] == rel.plan.specs["gene means"].sensitivity
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
    assert st["class_mean_prior"] is None


def test_within_class_variances_from_the_spreads_are_exact_without_noise():
    X, y = structured(outliers=False)
    V = ga.to_profile_level(X)
    K, N = 4, len(y)
    m = V.mean(0)
    mu = np.stack([V[y == k].mean(0) for k in range(K)])
    props = np.bincount(y, minlength=K) / N
    Q = ((V - m) ** 2).sum(0)
    within = ((V - mu[y]) ** 2).sum(0) / (N - K)
    np.testing.assert_allclose(ga.within_from_spreads(Q, N, np.zeros(V.shape[1]), props, mu), within, rtol=1e-9)
    # the spreads around m + e (m the pooled mean): Q grows by exactly N e^2, which is taken off
    e = np.full(V.shape[1], 0.3)
    Qe = ((V - (m + e)) ** 2).sum(0)
    np.testing.assert_allclose(ga.within_from_spreads(Qe, N, e**2, props, mu), within, rtol=1e-9)


@pytest.mark.parametrize("G, n", [(1000, 600), (2000, 600)])
def test_the_selection_takes_the_largest_released_spreads_and_finds_class_signal(G, n):
    """The ``g`` selected coordinates are those of largest released spread, and they hold the class signal.

    What it must achieve: class effects on 15 genes per class (6% or 3% of the genes) raise those genes'
    spread; at epsilon 1 the selection holds, over 6 data sets, a median of at least 1.5 times the
    between-class sum of squares that ``g`` coordinates chosen at random would (about 2 times measured;
    random or reversed rankings fail).
    """
    captured, share = [], []
    for seed in range(6):
        X, y = structured(n=n, G=G, K=4, seed=seed, outliers=False)
        K, N = 4, len(y)
        st = run(X, y, K, plan_for(G, N, K), Noisy(np.random.default_rng(seed)), N)
        assert st["variances_centre"] == "gene means"
        assert st["class_mean_prior"]["power"] in ga.SPREAD_PRIOR_POWERS  # de-noised by the spread prior
        sel = np.asarray(st["selected"])
        assert sel[-1] == G and len(sel) == ga.selected_coordinates(G + 1, N, K) < G + 1
        # the profile coordinates of largest released spread (m's known error is alike for all of them)
        Q = np.asarray(st["released"]["gene variances"])[:-1]
        np.testing.assert_array_equal(sel[:-1], np.sort(np.argsort(-Q, kind="stable")[:len(sel) - 1]))
        V = ga.to_profile_level(X)
        mu = np.stack([V[y == k].mean(0) for k in range(K)])
        bss = (np.bincount(y, minlength=K)[:, None] * (mu - V.mean(0)) ** 2).sum(0)[:-1]
        captured.append(bss[sel[:-1]].sum() / bss.sum())
        share.append((len(sel) - 1) / G)
    assert np.median(captured) > 1.5 * np.median(share), (captured, share)


# ------------------------------------------------------------ de-noising
def test_releases_summed_a_slice_of_records_at_a_time_are_the_same_sums(monkeypatch):
    """The variances are summed ROW_CHUNK records at a time (memory only): same values, with a selection or not."""
    X, y = structured()
    plan = plan_for(X.shape[1], len(y), 4)
    Xs, ys = X[:, :20], y  # 21 coordinates, 60 records per class: no selection, residuals from mu
    plan_s = plan_for(20, len(y), 4)
    for data, p in (((X, y), plan), ((Xs, ys), plan_s)):
        whole, sliced = Recorder(), Recorder()
        monkeypatch.setattr(ga, "ROW_CHUNK", len(y))
        st = run(*data, 4, p, whole, len(y))
        monkeypatch.setattr(ga, "ROW_CHUNK", 7)  # 240 records: 34 slices and a remainder of 2
        run(*data, 4, p, sliced, len(y))
        assert "gene variances" in whole.values
        assert list(whole.values) == list(sliced.values)
        for name, v in whole.values.items():
            np.testing.assert_allclose(sliced.values[name], v, rtol=1e-10, atol=1e-10, err_msg=name)
    assert st["variances_centre"] == "class means"


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


def _prior_draw(rng, K, g, power, share):
    """Class deviations whose variance follows a power of heavy-tailed spreads on a share of the genes."""
    q = rng.lognormal(0.0, 1.0, g)
    carries = rng.random(g) < share
    tau2 = (q / q.mean()) ** power
    theta = rng.normal(0.0, 1.0, (K, g)) * np.sqrt(tau2) * carries
    nv = np.geomspace(0.3, 3.0, K)  # small classes are noisier
    return q, theta, theta + rng.normal(0.0, 1.0, (K, g)) * np.sqrt(nv)[:, None], nv


@pytest.mark.parametrize("K, g", [(5, 200), (10, 1000)])
def test_spread_prior_finds_its_power_and_share_and_beats_the_per_gene_weight(K, g):
    """At two sizes, the fitted prior is the one that made the data, and it de-noises better.

    What it must achieve: the power within 0.5 and the share of genes with signal within 0.15 of the
    truth (1.5 and 0.3); the squared error of the de-noised deviations at most 0.9 times that of the
    per-gene moment weight (which fits one number per gene to ``K`` values). With spreads that say
    nothing about the signal, the fitted power is at most 0.5 and the error at most 0.95 times.
    """
    rng = np.random.default_rng(K)
    for power, share, ratio in ((1.5, 0.3, 0.9), (0.0, 0.3, 0.95)):
        errs = []
        for _ in range(3):
            q, theta, dev, nv = _prior_draw(rng, K, g, power, share)
            if power == 0.0:  # the spreads of other genes: no relation to the signal
                q = rng.permutation(q) * rng.lognormal(0.0, 1.0, g)
            w, prior = ga.spread_prior_weights(dev, nv, q)
            assert abs(prior["power"] - power) <= 0.5, prior
            if power > 0:
                assert abs(prior["signal_share"] - share) <= 0.15, prior
            assert np.all((w >= 0) & (w <= 1))
            new, _ = ga.denoise_deviations(dev, nv, w)
            old, _ = ga.denoise_deviations(dev, nv)
            errs.append((((new - theta) ** 2).sum(), ((old - theta) ** 2).sum()))
        e = np.array(errs).sum(0)
        assert e[0] <= ratio * e[1], (power, e)
    # without noise, or with too few coordinates, nothing is shrunk
    assert np.all(ga.spread_prior_weights(dev, np.zeros(K), q)[0] == 1)
    assert ga.spread_prior_weights(dev[:, :2], nv, q[:2])[1]["power"] is None


def test_gene_mean_shrinkage_uses_the_known_noise():
    rng = np.random.default_rng(1)
    truth = rng.normal(5, 2, 1000)
    noisy = truth + rng.normal(0, 2, 1000)
    shrunk, err = ga.shrink_towards_mean(noisy, 4.0)
    assert np.mean((shrunk - truth) ** 2) < 0.7 * np.mean((noisy - truth) ** 2)
    assert err == pytest.approx(np.mean((shrunk - truth) ** 2), rel=0.2)
    assert ga.shrink_towards_mean(noisy, 0.0)[0] is noisy


# ------------------------------------------------------------ scales
def test_typical_scale_finds_the_records_scale_and_refuses_noise():
    rng = np.random.default_rng(4)
    for scale in (0.7, 2.5):  # log1p-CPM-like and log2-bulk-like records
        V = rng.normal(0, scale, (400, 800))
        V[:, -1] = 4.0 * scale  # the level
        hist = ga.scale_histogram(V)
        nb = len(ga.SCALE_BINS) - 1
        assert hist.shape == (2 * nb,) and hist[:nb].sum() == hist[nb:].sum() == 400  # one count per record in each
        noisy = hist + rng.normal(0, 10, hist.shape)
        est = ga.typical_scale(noisy[:nb], 10.0)
        assert est == pytest.approx(np.sqrt((V**2).mean()), rel=0.1)  # within half a quarter-octave bin
        assert ga.typical_scale(noisy[nb:], 10.0) == pytest.approx(4.0 * scale, rel=0.1)
    # a histogram whose peak does not stand out of its noise says nothing
    noise = rng.normal(0, 30, len(ga.SCALE_BINS) - 1)
    assert ga.typical_scale(noise, 30.0) is None
    # ... and pure noise yields a (false) scale in about SCALE_FALSE_PEAK of draws, not more (a fixed
    # threshold of 3 s.d. over 46 windows gave 5.5%: one brca run in 17 with clips 14 times too large)
    draws = int(30 / ga.SCALE_FALSE_PEAK)
    false = np.mean([ga.typical_scale(h, 40.0) is not None
                     for h in rng.normal(0, 40, (draws, len(ga.SCALE_BINS) - 1))])
    assert false < 3.0 * ga.SCALE_FALSE_PEAK, false


def test_typical_scale_does_not_take_a_noise_window_over_a_weak_real_peak():
    """50 genes, about 200 records, epsilon 1: the real peak is within noise, and a noise window may outrank it.

    The first histogram is the profile half released in a CI run of ``-profile test_matrix`` (brca, sites
    BH / A8 / A2, epsilon 1; per-bin noise s.d. 35.9): the records' peak (log2 r.m.s. 1.4, bins 29-31) was
    at 3.65 s.d., a noise window at bin 44 at 4.06 s.d.; taking it gave ``s_v = 35.7`` for a true 2.6, every
    clip 14 times too large, and synthetic values up to 218 that the report's evaluation refused.
    """
    released = np.array([
        -4.4, 9.5, 34.6, 30.9, 28.6, 80.0, -28.0, -0.4, 33.6, 21.8, 39.0, -1.0, 19.0, -1.4, 21.1, -22.6,
        37.7, 35.3, -4.4, -44.1, -32.1, 34.2, 21.1, -52.0, 62.9, -23.1, 101.5, 19.9, -37.2, 96.7, 54.7, 75.9,
        4.1, -38.4, -2.4, 17.2, -63.9, -17.7, -1.6, 26.1, -20.6, 16.7, -7.0, 47.5, 126.7, 78.8, 16.3, -67.1])
    est = ga.typical_scale(released, 35.94)
    assert est is None or abs(math.log2(est) - 1.4) < 0.5, est
    # the same situation drawn many times: brca-like records (202 x 50 genes, level 8, spread 2.6: a bump
    # of 202 counts) under that noise. A scale more than an octave off must come in fewer than 1 run in
    # 2,000 (the threshold of 3.5 s.d. gave about 1 in 200)
    V = ga.to_profile_level(np.random.default_rng(5).normal(8.0, 2.6, (202, 50)))
    bump = ga.scale_histogram(V)[:len(ga.SCALE_BINS) - 1]
    truth = np.median(np.log2(np.sqrt((V**2).mean(1))))
    rng = np.random.default_rng(6)
    ests = [ga.typical_scale(h, 35.94) for h in bump + rng.normal(0, 35.94, (100_000, len(bump)))]
    far = np.mean([e is not None and abs(math.log2(e) - truth) > 1.0 for e in ests])
    assert far < 5e-4, far


def test_typical_scale_finds_records_crowded_into_one_bin_at_a_small_budget():
    """Single cells crowd into one quarter octave; at epsilon 0.5 a 3-bin window's noise hides that peak.

    The profile half of pbmc68k_reduced's 559 training records (split seed 100): 37 / 458 / 64 in bins
    22-24 (log2 r.m.s. about -0.1), per-bin noise s.d. 68.1 at epsilon 0.5. The 3-bin window alone
    (4.6 s.d. over 48 windows) cleared in about 68% of draws, and the rest fell back to the bulk
    tumours' scale, three times pbmc's, which made every clip three times too large. The narrower
    windows of :data:`SCALE_WINDOWS` find it in about 97%, at the same rate of false scales from noise.
    """
    nb = len(ga.SCALE_BINS) - 1
    crowd = np.zeros(nb)
    crowd[22:25] = (37, 458, 64)
    truth = ga.typical_scale(crowd, 0.0)
    assert math.log2(truth) == pytest.approx(-0.11, abs=0.02)
    rng = np.random.default_rng(8)
    ests = [ga.typical_scale(h, 68.1) for h in crowd + rng.normal(0, 68.1, (4000, nb))]
    found = np.mean([e is not None and abs(math.log2(e) - math.log2(truth)) < 0.25 for e in ests])
    far = np.mean([e is not None and abs(math.log2(e) - math.log2(truth)) > 1.0 for e in ests])
    assert found > 0.93, found
    assert far < 2e-3, far
    # the scan is widest first: where the 3-bin window clears, the scale is its weighted centre, as before
    wide = np.zeros(nb)
    wide[28:32] = (17, 99, 69, 17)
    centres = (ga.SCALE_BINS[:-1] + ga.SCALE_BINS[1:]) / 2
    assert math.log2(ga.typical_scale(wide, 1.0)) == pytest.approx((wide[28:31] @ centres[28:31]) / wide[28:31].sum())


class Noisy(Recorder):
    """A secure sum that adds the planned noise (one process, the pooled values)."""

    def __init__(self, rng):
        super().__init__()
        self.rng = rng

    def sum(self, x, *, noise_std=0.0, step=""):
        x = super().sum(x, noise_std=noise_std, step=step)
        return x + torch.from_numpy(self.rng.normal(0.0, noise_std, tuple(x.shape)))


def test_the_level_gets_less_noise_than_a_profile_coordinate(monkeypatch):
    """An error in the level moves every gene of every record: weighted, it is a fraction of the unweighted error.

    Fails when the level is released like any coordinate (``w = 1``): at 2,000 genes and 300 records the
    gene means' level then has the noise of one gene's mean, about 1.5 times the records' scale. The
    class means' level, which the class-mean release corrects, is no worse for the weight.
    """
    X, y = structured(n=300, G=2000, K=4, seed=7)
    X += 8.0 - X.mean()  # log2 bulk: a level of 8
    K, N = 4, len(y)
    V = ga.to_profile_level(X)
    truth = np.stack([V[y == k].mean(0)[-1] for k in range(K)])

    def level_errors(seed):
        plan = plan_for(X.shape[1], N, K)
        st = run(X, y, K, plan, Noisy(np.random.default_rng(seed)), N)
        assert st["scales"]["level"] == pytest.approx(8.0, rel=0.1)
        return (abs(st["gene_means"][-1] - V[:, -1].mean()),
                float(np.sqrt(np.mean((np.asarray(st["class_means"])[:, -1] - truth) ** 2))), st)
    errs = [level_errors(s) for s in range(6)]
    assert all(st["scales"]["level_weight"] > 3 for *_, st in errs)
    monkeypatch.setattr(ga, "LEVEL_SHARE", 0.0)  # w = 1: the level released like a profile coordinate
    plain = [level_errors(s) for s in range(6)]
    assert all(st["scales"]["level_weight"] == 1.0 for *_, st in plain)
    (m, c), (m0, c0) = np.median([e[:2] for e in errs], 0), np.median([e[:2] for e in plain], 0)
    assert m < 0.5 * m0, (m, m0)
    assert c < 1.1 * c0, (c, c0)


def test_with_a_selection_no_class_level_shifts_every_gene():
    """With a selection each class keeps the pooled level; without one, the classes' levels are estimated.

    A class's level error moves all ``G`` of its genes. Fails when the level is de-noised alone by its
    own empirical-Bayes weight with a selection too (the rule without one): at 2,000 genes and 300
    records, where the classes' real levels differ by about 0.01, pure noise passes that weight (fitted
    to ``K = 4`` values) in some of the 8 draws, and a class's every gene moves with it.
    """
    X, y = structured(n=300, G=2000, K=4, seed=7)
    X += 8.0 - X.mean()
    K, N = 4, len(y)
    for seed in range(8):
        st = run(X, y, K, plan_for(X.shape[1], N, K), Noisy(np.random.default_rng(seed)), N)
        assert len(st["selected"]) < X.shape[1] + 1
        mu = np.asarray(st["class_means"])
        assert np.ptp(mu[:, -1]) == 0.0, mu[:, -1] - mu[:, -1].mean()
    # no selection: 50 genes and 3,000 records, classes whose levels differ by 0.5 steps
    Xs, ys = structured(n=3000, G=50, K=4, seed=3, outliers=False)
    Xs += 0.5 * ys[:, None]
    st = run(Xs, ys, K, plan_for(50, 3000, K), Noisy(np.random.default_rng(0)), 3000)
    assert len(st["selected"]) == 51
    lv = np.asarray(st["class_means"])[:, -1]
    truth = np.array([Xs[ys == k].mean() for k in range(K)])
    assert np.ptp(truth) > 1.0 and np.ptp(lv) > 1.0
    assert np.abs((lv - lv.mean()) - (truth - truth.mean())).max() < 0.35, (lv, truth)


@pytest.mark.parametrize("D", [51, 20001])
def test_variance_bound_follows_its_formula(D):
    s_r = 1.3
    assert ga.variance_bound(s_r, np.zeros(D)) == pytest.approx(ga.VARIANCE_CLIP * s_r**2 * math.sqrt(D))
    # what it must achieve: a residual that carries mu's error e_j is clipped as one that does not
    e2 = np.full(D, 2.0 * s_r**2)
    assert ga.variance_bound(s_r, e2) == pytest.approx(3.0 * ga.variance_bound(s_r, np.zeros(D)))


def test_the_variance_clip_carries_the_known_error_of_the_means(monkeypatch):
    """Where ``mu``'s error is comparable to the records' spread, the squared residuals are clipped no harder.

    Fails with the bound at ``c_v s_r^2 sqrt(D)`` (mu's error left out): at 2,000 genes and 300 records
    (a gene mean's noise is then several times a gene's spread) the clip keeps under half as much of the
    squared residuals (same data, same noise draws), and subtracting ``e_j^2`` after it leaves variances
    near zero (the 20,000-gene collapse of BENCHMARKS.md section 7).
    """
    X, y = structured(n=300, G=2000, K=4, seed=7, outliers=False)
    X += 8.0 - X.mean()
    K, N = 4, len(y)
    V = ga.to_profile_level(X)

    def kept(seed):
        """The share of the residuals' mean square that the clipped (noise-free) variance sums keep."""
        rec = Noisy(np.random.default_rng(seed))
        st = run(X, y, K, plan_for(X.shape[1], N, K), rec, N)
        assert st["variances_centre"] == "gene means"  # 2,001 coordinates: a selection, spreads around m
        R2 = (V - np.asarray(st["gene_means"])) ** 2
        return float(rec.values["gene variances"].sum() / R2.sum())
    new = [kept(s) for s in range(3)]
    monkeypatch.setattr(ga, "variance_bound", lambda s_r, e: ga.VARIANCE_CLIP * s_r**2 * math.sqrt(len(e)))
    old = [kept(s) for s in range(3)]
    assert all(a > 1.5 * b for a, b in zip(new, old)), (new, old)


def test_variances_that_the_noise_swamped_fall_back_to_the_centred_scale():
    """Released variances averaging <= 0 (a tiny cohort) give the records' centred scale, not zero spread."""
    X, y = structured()
    K, N = 4, len(y)
    st = run(X, y, K, plan_for(X.shape[1], N, K), Recorder(), N)
    s_r = st["scales"]["centred"]
    st["variances"] = -np.abs(np.asarray(st["variances"]))  # what noise and mu's error can leave
    model = ga.fit(st, 4, X.shape[1])
    total = model.residual_variance + (model.loadings**2).sum(1)
    assert np.all(model.residual_variance > 0.1 * s_r**2)
    assert np.mean(total) == pytest.approx(s_r**2, rel=0.01)


def test_centred_scale_removes_the_means_and_their_known_noise():
    rng = np.random.default_rng(5)
    D, n = 2000, 300
    m = rng.gamma(2.0, 1.0, D)  # ||m||^2 / D about 6, against a centred scale of 1.3^2 = 1.7
    V = m + rng.normal(0, 1.3, (n, D))
    s_v = float(np.sqrt((V**2).sum(1).mean() / D))
    m_hat = V.mean(0) + rng.normal(0, 0.8, D)
    est = ga.centred_scale(s_v, m_hat, 0.8**2)
    assert est == pytest.approx(1.3, rel=0.07)
    # ignoring the means' noise would overstate ||m|| and understate the scale
    assert ga.centred_scale(s_v, m_hat, 0.0) < 0.85 * est
    # the floor, when the level dominates and the difference is within noise
    assert ga.centred_scale(1.0, np.full(D, 2.0), 0.0) == pytest.approx(0.25)


def test_statistics_follow_the_scale_of_the_data():
    """log2 and 2 x log2 input: every bound, and so every clipped statistic, scales with the data."""
    X, y = structured()
    K, N = 4, len(y)
    plan = plan_for(X.shape[1], N, K)
    st1, rel1 = run(X, y, K, plan, Recorder(), N, releaser=True)
    st2, rel2 = run(2.0 * X, y, K, plan, Recorder(), N, releaser=True)
    assert st2["scales"]["record"] == pytest.approx(2 * st1["scales"]["record"], rel=1e-12)
    assert st2["scales"]["centred"] == pytest.approx(2 * st1["scales"]["centred"], rel=1e-12)
    for name in ("gene means", "class means"):
        assert rel2.plan.specs[name].sensitivity == pytest.approx(2 * rel1.plan.specs[name].sensitivity, rel=1e-12)
    for name in ("gene variances", "block moments"):
        assert rel2.plan.specs[name].sensitivity == pytest.approx(4 * rel1.plan.specs[name].sensitivity, rel=1e-12)
    assert st2["selected"] == st1["selected"]
    np.testing.assert_allclose(st2["class_means"], 2 * np.asarray(st1["class_means"]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st2["variances"], 4 * np.asarray(st1["variances"]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("G, N, K", [(765, 559, 10), (20000, 3000, 5)])
def test_selection_grows_with_the_budget(G, N, K):
    D = G + 1
    L = math.log(1e5)
    for eps in (0.5, 1.0, 4.0):
        F = ga.selection_factor(eps, 1e-5)
        rho = (math.sqrt(L + eps) - math.sqrt(L)) ** 2  # the zCDP budget of (epsilon, delta)
        assert F == pytest.approx(math.sqrt(rho / ga.SELECTION_REFERENCE))
        g = ga.selected_coordinates(D, N, K, F)
        g0 = math.ceil(F * N / K)
        assert g == (g0 if D >= ga.SELECTION_MIN_RATIO * g0 else D)
    assert ga.selection_factor(1.0, 1e-5) == pytest.approx(1.0)
    assert ga.selection_factor(4.0, 1e-5) == pytest.approx(3.78, abs=0.01)
    assert ga.selection_factor(0.5, 1e-5) == pytest.approx(0.51, abs=0.01)
    # a smaller delta is more noise at the same epsilon: fewer coordinates
    assert ga.selection_factor(1.0, 1e-8) < 1.0
    # what it must achieve: the class-mean noise per coordinate, ~ sqrt(g) / F, falls as the budget grows
    sizes = [ga.selected_coordinates(D, N, K, ga.selection_factor(e, 1e-5)) for e in (0.5, 1.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    noise = [math.sqrt(g) / ga.selection_factor(e, 1e-5) for g, e in zip(sizes, (0.5, 1.0, 2.0))]
    assert noise[0] > noise[1] > noise[2]
    # without DP every coordinate
    assert ga.selected_coordinates(D, N, K, ga.selection_factor(None, 1e-5)) == D


class WrongCounts(Recorder):
    """No noise anywhere, but class counts far off (three of four come back negative, so clamped to 1)."""

    def sum(self, x, *, noise_std=0.0, step=""):
        x = super().sum(x, noise_std=noise_std, step=step)
        if step.endswith(": class counts"):
            return x - torch.tensor([0.0, 500.0, 500.0, 500.0], dtype=x.dtype)
        return x


def test_the_pooled_mean_of_the_class_sums_is_over_the_released_record_count(monkeypatch):
    """The class sums' pooled mean measures the gene means' error: its divisor is the released ``N``.

    Fails when it is the sum of the clamped class counts (here ``n_0 + 3`` for ``N = 240``): the
    correction of ``m`` then comes out about 2.5 times too large, and every class's deviation from the
    pooled mean carries that share of the gene-mean error.
    """
    from fedsynth.privacy.clip import clip_rows

    X, y = structured(n=240, G=300, K=4, seed=5)
    K, N = 4, len(y)
    seen = []
    combine = ga._combine
    monkeypatch.setattr(ga, "_combine", lambda e, d, v: seen.append(d.copy()) or combine(e, d, v))
    st = run(X, y, K, plan_for(X.shape[1], N, K), WrongCounts(), N)
    assert np.asarray(st["class_counts"])[1:].max() < 0  # the counts are wrong, as meant
    sel = np.asarray(st["selected"])
    m = np.asarray(st["gene_means"])
    bound = ga.SELECTED_CLIP * st["scales"]["centred"] * math.sqrt(len(sel))
    a = st["scales"]["class_mean_clip_factor"]  # the clip's shrink, removed (:func:`clip_factor`)
    expected = clip_rows(ga.to_profile_level(X)[:, sel] - m[sel], bound).sum(0) / N / a
    assert np.allclose(seen[0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("g", [50, 5000])
def test_clip_factor_follows_its_formula(g):
    s_r, e2 = 1.3, 0.4
    R = ga.SELECTED_CLIP * s_r * math.sqrt(g)
    a = ga.clip_factor(R, g * (s_r**2 + e2))
    assert a == pytest.approx(ga.SELECTED_CLIP * s_r / math.sqrt(s_r**2 + e2))
    assert ga.clip_factor(10 * R, g * (s_r**2 + e2)) == 1.0  # a clip that does not bind keeps everything
    assert ga.clip_factor(math.inf, 1.0) == 1.0 and ga.clip_factor(R, 0.0) == 1.0
    # what it must achieve: the mean share of Gaussian rows of that spread that the clip keeps
    rows = np.random.default_rng(g).normal(0.0, math.sqrt(s_r**2 + e2), (400, g))
    kept = np.minimum(1.0, R / np.linalg.norm(rows, axis=1)).mean()
    assert a == pytest.approx(kept, rel=0.05)


def test_the_class_deviations_are_not_shrunk_towards_the_gene_means_by_their_clip(monkeypatch):
    """The class-mean release's clip binds for most records; its sums are divided by :func:`clip_factor`.

    Almost no noise (epsilon 1e4), so the de-noiser keeps the deviations: the model's class differences on
    the selected coordinates match the real ones (slope near 1). Fails when the sums are not divided (the
    slope is then the clip's share, about 0.5): class means shrunk towards ``m`` by half.
    """
    X, y = structured(n=240, G=300, K=4, seed=5, outliers=False)
    K, N = 4, len(y)
    V = ga.to_profile_level(X)
    true = np.stack([V[y == k].mean(0) for k in range(K)])

    def slope():
        st = run(X, y, K, plan_for(X.shape[1], N, K, epsilon=1e4), Recorder(), N)
        sel = np.asarray(st["selected"])[:-1]
        mu = np.asarray(st["class_means"])
        d_model, d_true = (mu[1:, sel] - mu[0, sel]).ravel(), (true[1:, sel] - true[0, sel]).ravel()
        return float(d_model @ d_true / (d_true @ d_true)), st
    b, st = slope()
    assert st["scales"]["class_mean_clip_factor"] < 0.8  # the clip binds, as meant
    assert 0.85 < b < 1.15, b
    monkeypatch.setattr(ga, "clip_factor", lambda R, ms: 1.0)
    b0, _ = slope()
    assert b0 < 0.75, b0
