"""Tests for fedsynth.evaluation on constructed data with known answers."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedsynth.data.preprocess import split_holdout  # noqa: E402
from fedsynth.errors import InputError, ParameterError  # noqa: E402
from fedsynth.evaluation import (  # noqa: E402
    check_compatible,
    fidelity,
    tstr,
)


def gaussian_classes(n_per_class, n_genes=10, classes=("a", "b", "c"),
                     sep=6.0, seed=0):
    """Well-separated spherical Gaussian classes."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k, c in enumerate(classes):
        centre = np.zeros(n_genes)
        centre[k % n_genes] = sep
        X.append(rng.normal(size=(n_per_class, n_genes)) + centre)
        y += [c] * n_per_class
    return np.vstack(X), np.array(y)


@pytest.fixture(scope="module")
def separated():
    X, y = gaussian_classes(40)
    tr, te = split_holdout(len(y), y, fraction=0.25, seed=0)
    return X[tr], y[tr], X[te], y[te]


# --------------------------------------------------------------------- tstr


def test_tstr_synthetic_equal_to_real_train_matches_trtr(separated):
    Xtr, ytr, Xte, yte = separated
    res = tstr(Xtr, ytr, Xte, yte, X_real_train=Xtr, y_real_train=ytr)
    assert set(res["tstr"]) == {"logreg", "rf"}
    for m in ("logreg", "rf"):
        t, r = res["tstr"][m], res["trtr"][m]
        assert t == r  # same data, same seed: identical models
        assert t["accuracy"] > 0.9
        assert t["macro_f1"] > 0.9
        assert t["auroc"] > 0.95
    assert res["n_train_synthetic"] == len(ytr)
    assert res["n_train_real"] == len(ytr)
    assert res["n_test"] == len(yte)
    assert res["single_class"] is False
    assert res["single_class_real"] is False


def test_tstr_shuffled_labels_near_chance(separated):
    Xtr, ytr, Xte, yte = separated
    X, y = gaussian_classes(150, seed=1)
    y_shuf = np.random.default_rng(2).permutation(y)
    res = tstr(X, y_shuf, Xte, yte, models=("logreg",))
    assert res["trtr"] is None and res["n_train_real"] is None
    t = res["tstr"]["logreg"]
    assert abs(t["accuracy"] - 1 / 3) < 0.2
    assert abs(t["auroc"] - 0.5) < 0.2


def test_tstr_single_class_synthetic_does_not_crash(separated):
    Xtr, ytr, Xte, yte = separated
    res = tstr(Xtr[ytr == "a"], ytr[ytr == "a"], Xte, yte)
    assert res["single_class"] is True
    for m in ("logreg", "rf"):
        t = res["tstr"][m]
        assert t["accuracy"] == pytest.approx(np.mean(yte == "a"))
        assert t["auroc"] == pytest.approx(0.5)
    assert res["majority"]["label"] == "a"


def test_majority_baseline_known_labels():
    # Training side: "b" most frequent (3 of 5). Test: 2 of 5 are "b".
    X_syn = np.arange(10, dtype=float).reshape(5, 2)
    y_syn = np.array(["a", "b", "b", "c", "b"])
    X_test = np.zeros((5, 2))
    y_test = np.array(["a", "a", "b", "b", "c"])
    res = tstr(X_syn, y_syn, X_test, y_test, models=("logreg",))
    maj = res["majority"]
    assert maj["label"] == "b"
    assert maj["accuracy"] == pytest.approx(0.4)
    # F1: a = 0, b = 2 * 0.4 * 1 / 1.4 = 4/7 (precision 2/5, recall 1),
    # c = 0  ->  macro 4/21
    assert maj["macro_f1"] == pytest.approx(4 / 21)


def test_majority_tie_broken_alphabetically():
    X = np.zeros((4, 2))
    res = tstr(np.arange(8.0).reshape(4, 2), np.array(["z", "y", "z", "y"]),
               X, np.array(["y", "y", "z", "z"]), models=("rf",))
    assert res["majority"]["label"] == "y"
    assert res["majority"]["accuracy"] == pytest.approx(0.5)


def test_auroc_none_with_one_test_class(separated):
    Xtr, ytr, Xte, yte = separated
    keep = yte == "b"
    res = tstr(Xtr, ytr, Xte[keep], yte[keep])
    for m in ("logreg", "rf"):
        assert res["tstr"][m]["auroc"] is None
        assert res["tstr"][m]["accuracy"] > 0.9


def test_auroc_class_missing_from_training(separated):
    # Synthetic lacks class "c": its probability column is 0, AUROC still
    # defined over the three test classes and below the full-data value.
    Xtr, ytr, Xte, yte = separated
    keep = ytr != "c"
    res = tstr(Xtr[keep], ytr[keep], Xte, yte, models=("logreg",))
    full = tstr(Xtr, ytr, Xte, yte, models=("logreg",))
    auc = res["tstr"]["logreg"]["auroc"]
    assert 0.5 <= auc < full["tstr"]["logreg"]["auroc"]
    assert res["tstr"]["logreg"]["accuracy"] == pytest.approx(
        np.mean(yte != "c"), abs=0.1)


def test_tstr_rejects_bad_input(separated):
    Xtr, ytr, Xte, yte = separated
    with pytest.raises(ParameterError, match="unknown model"):
        tstr(Xtr, ytr, Xte, yte, models=("svm",))
    with pytest.raises(InputError, match="genes"):
        tstr(Xtr[:, :5], ytr, Xte, yte)
    with pytest.raises(InputError, match="labels"):
        tstr(Xtr, ytr[:-1], Xte, yte)
    bad = Xtr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        tstr(bad, ytr, Xte, yte)
    with pytest.raises(ParameterError, match="together"):
        tstr(Xtr, ytr, Xte, yte, X_real_train=Xtr)


# ----------------------------------------------------------------- fidelity


def test_fidelity_identical_is_perfect():
    X, _ = gaussian_classes(20, n_genes=8)
    X = X + np.arange(8) * 2.0  # distinct gene means
    f = fidelity(X, X.copy())
    for key in ("mean_pearson", "mean_spearman", "var_pearson",
                "var_spearman", "corr_matrix_pearson"):
        assert f[key] == pytest.approx(1.0, abs=1e-12), key
    assert f["wasserstein_mean"] == 0.0
    assert f["n_genes"] == 8 and f["n_genes_corr"] == 8


def test_fidelity_known_shift_and_constant_gene():
    rng = np.random.default_rng(0)
    X_real = rng.normal(size=(200, 6)) * np.arange(1, 7) + np.arange(6)
    X_syn = X_real + 0.5  # shift every gene: W1 = 0.5, correlations intact
    X_syn[:, 2] = 3.0  # constant in synthetic: excluded from corr matrix
    f = fidelity(X_syn, X_real)
    assert f["n_genes_corr"] == 5
    assert f["corr_matrix_pearson"] == pytest.approx(1.0, abs=1e-12)
    w_const = np.mean(np.abs(X_real[:, 2] - 3.0))  # W1 to a point mass
    assert f["wasserstein_mean"] == pytest.approx((5 * 0.5 + w_const) / 6)


def test_fidelity_corr_matrix_matches_direct_computation():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(30, 12))
    B = A + rng.normal(size=(30, 12))
    iu = np.triu_indices(12, 1)
    want = np.corrcoef(np.corrcoef(A.T)[iu], np.corrcoef(B.T)[iu])[0, 1]
    assert fidelity(A, B)["corr_matrix_pearson"] == pytest.approx(want)


def test_fidelity_undefined_correlations_are_none():
    f = fidelity(np.ones((5, 2)), np.ones((7, 2)))
    assert f["mean_pearson"] is None and f["var_spearman"] is None
    assert f["corr_matrix_pearson"] is None and f["n_genes_corr"] == 0
    assert f["wasserstein_mean"] == 0.0


# --------------------------------------------------------- check_compatible


def test_check_compatible_ok_and_warns_on_missing_real_label():
    genes = ["g1", "g2", "g3"]
    assert check_compatible(genes, list(genes), ["a", "b"], ["b", "a"],
                            syn_name="syn.csv", real_name="real.csv") == []
    w = check_compatible(genes, genes, ["a"], ["a", "b"],
                         syn_name="syn.csv", real_name="real.csv")
    assert len(w) == 1 and "'b'" in w[0] and "real.csv" in w[0]


def test_check_compatible_gene_mismatch_message():
    real = [f"g{i}" for i in range(10)]
    syn = real[:7] + ["x1", "x2", "x3"]
    with pytest.raises(InputError) as e:
        check_compatible(syn, real, ["a"], ["a"],
                         syn_name="syn.csv", real_name="real.csv")
    msg = str(e.value)
    assert "syn.csv" in msg and "real.csv" in msg
    assert "6 genes differ" in msg
    assert "'x1'" in msg and "'g7'" in msg


def test_check_compatible_gene_order_message():
    with pytest.raises(InputError) as e:
        check_compatible(["g2", "g1"], ["g1", "g2"], ["a"], ["a"],
                         syn_name="syn.csv", real_name="real.csv")
    msg = str(e.value)
    assert "syn.csv" in msg and "real.csv" in msg
    assert "different order" in msg and "2 genes" in msg


def test_check_compatible_extra_synthetic_label():
    with pytest.raises(InputError) as e:
        check_compatible(["g"], ["g"], ["a", "zz"], ["a"],
                         syn_name="syn.csv", real_name="real.csv")
    msg = str(e.value)
    assert "'zz'" in msg and "syn.csv" in msg and "real.csv" in msg


# ------------------------------------------------------------ split_holdout


def test_split_holdout_stratified_and_deterministic():
    y = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    tr, te = split_holdout(100, y, fraction=0.2, seed=7)
    tr2, te2 = split_holdout(100, y, fraction=0.2, seed=7)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert len(te) == 20
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(100))
    assert [int(np.sum(y[te] == c)) for c in "abc"] == [10, 6, 4]
    _, te3 = split_holdout(100, y, fraction=0.2, seed=8)
    assert not np.array_equal(te, te3)


def test_split_holdout_singleton_class_falls_back_to_random():
    y = np.array(["a"] * 9 + ["b"])
    tr, te = split_holdout(10, y, fraction=0.3, seed=0)
    assert len(te) == 3 and len(tr) == 7
    assert set(tr) | set(te) == set(range(10))
    np.testing.assert_array_equal(te, split_holdout(10, y, fraction=0.3,
                                                    seed=0)[1])


def test_split_holdout_bad_parameters():
    with pytest.raises(ParameterError, match="fraction"):
        split_holdout(10, ["a"] * 10, fraction=1.0)
    with pytest.raises(InputError):
        split_holdout(10, ["a"] * 9)


# ------------------------------------------------ utility: AP and per class


def test_tstr_average_precision_per_class_and_relative_f1(separated):
    from sklearn.metrics import f1_score

    Xtr, ytr, Xte, yte = separated
    res = tstr(Xtr, ytr, Xte, yte, X_real_train=Xtr, y_real_train=ytr, models=("logreg",))
    t = res["tstr"]["logreg"]
    assert t["average_precision"] > 0.95
    assert set(t["per_class"]) == {"a", "b", "c"}
    for c, v in t["per_class"].items():
        assert v["support"] == int(np.sum(yte == c))
        assert v["auroc"] > 0.95 and v["average_precision"] > 0.9
    assert np.mean([v["f1"] for v in t["per_class"].values()]) == pytest.approx(t["macro_f1"])
    assert res["relative_macro_f1"]["logreg"] == pytest.approx(1.0)
    # shuffled synthetic labels: per-class F1 agrees with scikit-learn
    y_shuf = np.random.default_rng(0).permutation(ytr)
    r2 = tstr(Xtr, y_shuf, Xte, yte, X_real_train=Xtr, y_real_train=ytr, models=("logreg",))
    assert r2["relative_macro_f1"]["logreg"] < 0.8
    assert r2["tstr"]["logreg"]["macro_f1"] == pytest.approx(
        f1_score(yte, _predict_logreg(Xtr, y_shuf, Xte), average="macro", zero_division=0))


def _predict_logreg(X, y, X_test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("clf", LogisticRegression(max_iter=2000))]).fit(X, y).predict(X_test)


# -------------------------------------------- fidelity: MMD, discriminator


def test_mmd_identical_is_zero_and_grows_with_shift():
    from fedsynth.evaluation import mmd_rbf

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 10))
    assert mmd_rbf(X, X.copy())["mmd2"] == pytest.approx(0.0, abs=1e-10)
    same = mmd_rbf(rng.normal(size=(200, 10)), X)
    assert abs(same["mmd2_unbiased"]) < 0.01
    small = mmd_rbf(X + 0.5, X)["mmd2"]
    large = mmd_rbf(X + 2.0, X)["mmd2"]
    assert same["mmd2"] < small < large


def test_discriminator_identical_is_half_and_separable_is_one():
    from fedsynth.evaluation import discriminator_auroc

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 8))
    same = discriminator_auroc(X, X.copy())
    # a record and its copy are kept in one fold: ties, exactly 0.5
    assert same["logreg"] == pytest.approx(0.5) and same["extra_trees"] == pytest.approx(0.5)
    fresh = discriminator_auroc(rng.normal(size=(150, 8)), X)
    assert abs(fresh["max"] - 0.5) < 0.15
    far = discriminator_auroc(X + 4.0, X)
    assert far["max"] > 0.99 and far["n_per_class"] == 150 and far["n_splits"] == 5


def test_discriminator_survives_a_synthetic_cohort_of_few_distinct_records():
    """A degenerate synthetic cohort (a few records repeated) is scored, not a crash in cross-validation."""
    from fedsynth.evaluation import discriminator_auroc
    rng = np.random.default_rng(2)
    X = rng.normal(size=(24, 30))
    few = np.repeat(rng.normal(size=(3, 30)), 20, axis=0)  # 60 rows, 3 distinct: fewer groups than folds
    d = discriminator_auroc(few, X, seed=0)
    assert d["n_splits"] == 3 and d["max"] > 0.9
    one = np.repeat(rng.normal(size=(1, 30)), 60, axis=0)  # one record repeated: told apart by identity
    d = discriminator_auroc(one, X, seed=0)
    assert d["max"] == 1.0 and d["n_splits"] == 0
    d = discriminator_auroc(np.repeat(X[:1], 60, axis=0), X, seed=0)  # ... unless the real side shows it too
    assert d["max"] == 0.5


def test_fidelity_identical_has_zero_distances_and_half_discriminator():
    X, _ = gaussian_classes(30, n_genes=8)
    f = fidelity(X, X.copy(), genes=[f"g{i}" for i in range(8)])
    assert f["mmd2"] == pytest.approx(0.0, abs=1e-10)
    assert f["discriminator_auroc"] == pytest.approx(0.5)
    assert f["wasserstein_std_mean"] == 0.0 and f["wasserstein_std_max"] == 0.0
    assert len(f["worst_genes"]) == 8 and f["worst_genes"][0]["gene"].startswith("g")


def test_fidelity_worst_gene_is_the_broken_one():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    Y = X.copy()
    Y[:, 4] += 3.0
    f = fidelity(Y, X, genes=list("ABCDEF"), discriminator=False, mmd=False)
    assert f["worst_genes"][0]["gene"] == "E"
    assert f["worst_genes"][0]["wasserstein_std"] == pytest.approx(3.0 / X[:, 4].std())
    assert f["mmd2"] is None and f["discriminator"] is None


# -------------------------------------------------------------- biology


def test_welch_t_matches_scipy():
    from scipy import stats

    from fedsynth.evaluation import welch_t

    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 5)) * np.arange(1, 6)
    g = np.arange(40) < 13
    X[g, 0] += 2
    t, p = welch_t(X, g)
    ref = stats.ttest_ind(X[g], X[~g], equal_var=False)
    np.testing.assert_allclose(t, ref.statistic)
    np.testing.assert_allclose(p, ref.pvalue)


def test_bh_qvalues_known():
    from fedsynth.evaluation import bh_qvalues

    q = bh_qvalues([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


def _de_data(shifts, n=100, genes=20, seed=0):
    """Classes 'a' and 'b'; gene j is shifted by shifts[j] in class 'a'."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2 * n, genes))
    y = np.array(["a"] * n + ["b"] * n)
    for j, s in shifts.items():
        X[:n, j] += s
    return X, y


def test_de_recovery_identical_is_perfect():
    from fedsynth.evaluation import de_recovery

    X, y = _de_data({0: 5, 1: 4.5, 2: 4, 3: 3.5})
    d = de_recovery(X, y, X, y, k=4)
    for c in ("a", "b"):
        pc = d["per_class"][c]
        assert pc["precision_at_k"] == 1.0 and pc["recall_at_k"] == 1.0
        assert pc["overlap_at_k"] == 1.0 and pc["t_spearman"] == pytest.approx(1.0)
        assert sorted(pc["recovered"]) == ["gene1", "gene2", "gene3", "gene4"]
    assert d["mean_recall_at_k"] == 1.0


def test_de_recovery_known_precision_and_recall():
    from fedsynth.evaluation import de_recovery

    genes = [f"G{j}" for j in range(20)]
    X_real, y_real = _de_data({0: 5, 1: 4.5, 2: 4, 3: 3.5}, seed=0)
    # synthetic: genes 0 and 1 right, gene 5 wrongly DE, genes 2 and 3 lost
    X_syn, y_syn = _de_data({0: 5, 1: 4.5, 5: 4}, seed=1)
    pc = de_recovery(X_syn, y_syn, X_real, y_real, genes=genes, k=4)["per_class"]["a"]
    assert pc["top_real"] == ["G0", "G1", "G2", "G3"]
    assert sorted(pc["top_synthetic"]) == ["G0", "G1", "G5"]
    assert pc["precision_at_k"] == pytest.approx(2 / 3)
    assert pc["recall_at_k"] == pytest.approx(2 / 4)
    # the same genes with the wrong direction are not recovered
    X_flip, _ = _de_data({0: -5, 1: 4.5, 5: 4}, seed=1)
    pc = de_recovery(X_flip, y_syn, X_real, y_real, genes=genes, k=4)["per_class"]["a"]
    assert pc["recovered"] == ["G1"]


def test_de_recovery_skips_tiny_class_and_defaults_k():
    from fedsynth.evaluation import de_recovery, default_top_k

    X, y = _de_data({0: 3})
    y = y.astype(object)
    y[0] = "lonely"
    d = de_recovery(X, y, X, y)
    assert "skipped" in d["per_class"]["lonely"]
    assert d["k"] == default_top_k(20) == 4
    assert default_top_k(978) == 20 and default_top_k(3) == 1


def test_coexpression_identical_and_independent():
    from fedsynth.evaluation import coexpression_recovery

    rng = np.random.default_rng(3)
    Z = rng.normal(size=(300, 3))
    X = np.repeat(Z, 4, axis=1) + 0.3 * rng.normal(size=(300, 12))  # 3 modules of 4 genes
    y = np.array(["a", "b"] * 150)
    same = coexpression_recovery(X, y, X, y)
    assert same["edge_recovery"] == 1.0
    assert same["within_class_corr_similarity"] == pytest.approx(1.0)
    assert same["n_genes"] == 12 and same["n_edges"] == 10
    indep = rng.normal(size=(300, 12))  # no modules
    other = coexpression_recovery(indep, y, X, y)
    assert other["edge_recovery"] < 0.4
    assert other["within_class_corr_similarity"] < 0.3


# ----------------------------------------------------- evaluate and verdict


def _population(n, seed, genes=12):
    rng = np.random.default_rng(seed)
    y = rng.choice(["LumA", "Basal", "Her2"], n)
    centre = {"LumA": 0.0, "Basal": 2.5, "Her2": -2.5}
    X = rng.normal(size=(n, genes)) + np.array([centre[c] for c in y])[:, None] * (np.arange(genes) < 4)
    return X + 6.0, y


@pytest.fixture(scope="module")
def cohort():
    return _population(240, 1), _population(120, 2)


def test_evaluate_fresh_sample_is_useful_realistic_and_private(cohort):
    from fedsynth.evaluation import evaluate

    (Xt, yt), (Xh, yh) = cohort
    Xs, ys = _population(240, 3)
    dp = {"private": True, "epsilon": 1.0, "delta": 1e-5, "max_colluders": 0, "k": 3}
    m = evaluate(Xs, ys, Xt, yt, Xh, yh, dp=dp)
    v = m["verdict"]
    assert v["utility"]["level"] == "good"
    assert v["fidelity"]["level"] == "good"
    assert v["privacy"]["level"] == "good", v["privacy"]
    assert m["privacy"]["dp"]["epsilon"] == 1.0
    assert m["privacy"]["membership_inference"]["worst"]["auroc"] < 0.6
    assert set(m["seconds"]) >= {"utility", "fidelity", "biology", "dcr", "membership_inference"}
    assert m["n"] == {"synthetic": 240, "train": 240, "holdout": 120, "genes": 12}


def test_evaluate_copy_of_training_data_is_flagged(cohort):
    from fedsynth.evaluation import evaluate

    (Xt, yt), (Xh, yh) = cohort
    m = evaluate(Xt.copy(), yt.copy(), Xt, yt, Xh, yh,
                 dp={"private": False, "epsilon": None, "delta": 1e-5})
    assert m["verdict"]["privacy"]["level"] == "poor"
    assert "NOT differentially private" in m["verdict"]["privacy"]["headline"]
    assert m["privacy"]["dcr"]["exact_copies"] == len(Xt)
    assert m["privacy"]["membership_inference"]["worst"]["auroc"] == 1.0
    # copies are perfectly "useful" and indistinguishable: the verdict must
    # not let that hide the leak
    assert m["verdict"]["utility"]["level"] == "good"


def test_verdict_poor_utility_and_realism(cohort):
    from fedsynth.evaluation import evaluate

    (Xt, yt), (Xh, yh) = cohort
    rng = np.random.default_rng(9)
    Xs = rng.normal(size=Xt.shape) * 3 + 20  # far away, labels meaningless
    m = evaluate(Xs, rng.permutation(yt), Xt, yt, Xh, yh)
    assert m["verdict"]["utility"]["level"] == "poor"
    assert m["verdict"]["fidelity"]["level"] == "poor"
    assert m["verdict"]["privacy"]["level"] == "fair"  # nothing leaks, but no DP record
