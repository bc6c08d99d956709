"""Membership-inference attacks and distance to closest record on constructed
cases with known answers: a fresh sample from the population leaks nothing,
a copy of the training set leaks everything."""

import numpy as np
import pytest

from fedsynth.errors import InputError, ParameterError
from fedsynth.evaluation.attacks import (
    ATTACKS,
    auroc_ci,
    distance_to_closest_record,
    membership_inference,
)

LOADINGS = np.random.default_rng(1).normal(size=(5, 30))


def population(n, seed, genes=30):
    """A low-rank Gaussian 'expression' population (correlated genes)."""
    rng = np.random.default_rng(seed)
    W = LOADINGS if genes == 30 else np.random.default_rng(1).normal(size=(5, genes))
    return rng.normal(size=(n, 5)) @ W + 0.5 * rng.normal(size=(n, genes)) + 8.0


@pytest.fixture(scope="module")
def real():
    return population(300, seed=10), population(300, seed=11)  # members, non-members


# ------------------------------------------------------------ fresh sample


def test_fresh_sample_from_population_gives_auroc_near_half(real):
    train, holdout = real
    fresh = population(300, seed=12)  # the generator never saw anyone
    mia = membership_inference(fresh, train, holdout, seed=0)
    assert set(mia["attacks"]) == set(ATTACKS)
    for name, e in mia["attacks"].items():
        assert abs(e["auroc"] - 0.5) < 0.08, (name, e["auroc"])
        lo, hi = e["auroc_ci95"]
        assert lo < 0.5 < hi or abs(e["auroc"] - 0.5) < 0.05, (name, e["auroc_ci95"])
        assert e["advantage"] < 0.2
    assert mia["n_members"] == 300 and mia["n_non_members"] == 300
    assert mia["worst"]["auroc"] == max(e["auroc"] for e in mia["attacks"].values())


def test_fresh_sample_dcr_shows_no_memorisation(real):
    train, holdout = real
    d = distance_to_closest_record(population(300, seed=13), train, holdout)
    assert d["exact_copies"] == 0
    assert d["median_ratio"] == pytest.approx(1.0, abs=0.1)
    assert d["closer_to_train_expected"] == pytest.approx(0.5)
    assert abs(d["closer_to_train_excess"]) < 0.25
    assert d["n_train_matched"] == d["n_holdout"] == 300


# ------------------------------------------------------------ copies


def test_copy_of_training_set_makes_every_attack_fire(real):
    train, holdout = real
    mia = membership_inference(train.copy(), train, holdout, seed=0)
    a = mia["attacks"]
    assert a["distance"]["auroc"] == 1.0
    assert a["distance_ratio"]["auroc"] == 1.0
    assert a["domias_kde"]["auroc"] > 0.65
    assert a["classifier"]["auroc"] > 0.75
    for e in a.values():
        assert e["auroc_ci95"][0] > 0.5
    assert a["distance"]["tpr_at_fpr_0.1"] == 1.0
    assert mia["worst"]["auroc"] == 1.0


def test_copy_of_training_set_dcr_is_zero(real):
    train, holdout = real
    d = distance_to_closest_record(train.copy(), train, holdout)
    assert d["median_to_train"] == pytest.approx(0.0, abs=1e-6)
    assert d["exact_copies"] == len(train) and d["exact_copy_fraction"] == 1.0
    assert d["closer_to_train"] == 1.0 and d["closer_to_train_excess"] == 1.0
    assert d["median_to_holdout"] > 1.0


def test_noisy_copies_are_still_caught(real):
    train, holdout = real
    rng = np.random.default_rng(5)
    noisy = train + 0.1 * rng.normal(size=train.shape)
    mia = membership_inference(noisy, train, holdout, seed=0)
    assert mia["attacks"]["distance"]["auroc"] > 0.95
    d = distance_to_closest_record(noisy, train, holdout)
    assert d["exact_copies"] == 0
    assert d["median_ratio"] < 0.5


def test_many_genes_use_principal_components_and_still_fire():
    train, holdout = population(120, 20, genes=200), population(60, 21, genes=200)
    mia = membership_inference(train.copy(), train, holdout, seed=1)
    assert mia["attacks"]["classifier"]["auroc"] > 0.75
    assert mia["attacks"]["distance"]["auroc"] == 1.0


def test_unequal_sizes_share_expectation(real):
    train, holdout = real
    d = distance_to_closest_record(population(200, 14), train, holdout[:100])
    assert d["closer_to_train_expected"] == pytest.approx(300 / 400)
    assert d["n_train_matched"] == 100


# ------------------------------------------------------------ details


def test_roc_curve_shape_and_determinism(real):
    train, holdout = real
    fresh = population(100, seed=15)
    a = membership_inference(fresh, train, holdout, seed=3)
    b = membership_inference(fresh, train, holdout, seed=3)
    for name in ATTACKS:
        assert a["attacks"][name]["auroc"] == b["attacks"][name]["auroc"]
        roc = a["attacks"][name]["roc"]
        assert len(roc["fpr"]) == len(roc["tpr"]) == 101
        assert roc["tpr"][0] >= 0 and roc["tpr"][-1] == 1.0
        assert all(x <= y + 1e-9 for x, y in zip(roc["tpr"], roc["tpr"][1:]))


def test_small_holdout_reduces_folds_and_density_dimension():
    train, holdout = population(40, 30), population(6, 31)
    mia = membership_inference(population(40, 32), train, holdout, n_folds=5, seed=0)
    assert mia["n_folds"] == 3  # at most n_holdout // 2
    assert mia["n_components"] <= 2  # a reference fold of 4 records
    assert mia["attacks"]["distance"]["auroc"] is not None


def test_auroc_ci_known_values():
    lo, hi = auroc_ci(0.5, 100, 100)
    assert lo == pytest.approx(0.5 - 1.96 * 0.0408, abs=0.002)
    assert hi == pytest.approx(0.5 + 1.96 * 0.0408, abs=0.002)
    lo, hi = auroc_ci(1.0, 50, 50)
    assert hi == 1.0 and 0.95 < lo < 1.0
    assert auroc_ci(None, 5, 5) is None


def test_bad_inputs_are_refused(real):
    train, holdout = real
    with pytest.raises(InputError, match="gene counts differ"):
        membership_inference(train[:, :10], train, holdout)
    with pytest.raises(InputError, match="at least 4 holdout"):
        membership_inference(train, train, holdout[:3])
    with pytest.raises(ParameterError, match="unknown"):
        membership_inference(train, train, holdout, attacks=("telepathy",))
    with pytest.raises(ParameterError, match="n_folds"):
        membership_inference(train, train, holdout, n_folds=1)
    bad = train.copy()
    bad[0, 0] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        distance_to_closest_record(bad, train, holdout)


def test_leading_axes_randomized_matches_exact_on_structured_data():
    from fedsynth.evaluation.attacks import leading_axes

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3)) * [20, 10, 5] @ rng.normal(size=(3, 700)) + rng.normal(size=(600, 700))
    mean, axes, s = leading_axes(X, 3)  # both sides > 500: randomized SVD
    _, s_exact, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(axes * vt[:3], axis=1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(s, s_exact[:3], rtol=1e-6)
    np.testing.assert_allclose(mean, X.mean(axis=0))
