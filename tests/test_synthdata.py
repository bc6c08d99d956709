"""bench/synthdata.py: the generated matrices of the high-dimensional benchmark (issue 12). No processes."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
spec = importlib.util.spec_from_file_location("synthdata", BENCH / "synthdata.py")
sd = importlib.util.module_from_spec(spec)
sys.modules.setdefault("synthdata", sd)
spec.loader.exec_module(sd)


@pytest.fixture(scope="module")
def bulk():
    return sd.generate(genes=1000, samples=600, classes=5, sites=3, seed=0, preset="bulk")


def _within(df):
    X = df.iloc[:, 3:].to_numpy(float)
    y = df["label"].to_numpy()
    R = X.copy()
    for c in np.unique(y):
        R[y == c] -= R[y == c].mean(0)
    return X, y, R


def test_params_file_has_both_presets():
    for name in ("bulk", "singlecell"):
        p = sd.load_params(name)
        for key in ("mean_quantiles", "sd_log_poly", "rank", "eigen_decay_beta", "communality_quantiles",
                    "class_effect_fraction", "effect_quantiles", "factor_shift_sd", "class_proportions",
                    "site_shift_tau"):
            assert key in p, (name, key)
        assert 1 <= p["rank"] <= sd.MAX_RANK


def test_shape_columns_and_determinism(bulk):
    assert bulk.shape == (600, 3 + 1000)
    assert list(bulk.columns[:3]) == ["sample_id", "label", "site"]
    assert bulk["site"].nunique() == 3 and bulk["label"].nunique() == 5
    assert bulk["sample_id"].is_unique
    again = sd.generate(genes=1000, samples=600, classes=5, sites=3, seed=0, preset="bulk")
    assert bulk.equals(again)
    other = sd.generate(genes=1000, samples=600, classes=5, sites=3, seed=1, preset="bulk")
    assert not np.allclose(bulk.iloc[:, 3:].to_numpy(), other.iloc[:, 3:].to_numpy())


def test_streamed_csv_equals_frame(tmp_path):
    import pandas as pd

    df = sd.generate(genes=40, samples=600, classes=3, sites=2, seed=3, preset="singlecell")
    path = sd.write_csv(tmp_path / "m.csv.gz", genes=40, samples=600, classes=3, sites=2, seed=3,
                        preset="singlecell")
    back = pd.read_csv(path)
    assert list(back.columns) == list(df.columns)
    assert np.allclose(back.iloc[:, 3:].to_numpy(), df.iloc[:, 3:].to_numpy(), atol=1e-4)
    assert (back["label"] == df["label"]).all() and (back["site"] == df["site"]).all()
    assert (back.iloc[:, 3:].to_numpy() >= 0).all()  # the single-cell preset is clipped at 0


def test_unequal_classes(bulk):
    counts = bulk["label"].value_counts()
    p = sd.load_params("bulk")
    assert counts.max() / counts.min() > 3
    assert counts["class0"] == counts.max()
    # the largest class's share follows the real largest class's share (brca: LumA 231 / 522)
    assert abs(counts["class0"] / len(bulk) - p["class_proportions"][0]) < 0.05


def test_low_rank_structure(bulk):
    _, y, R = _within(bulk)
    sub = R[:, :200]
    C = np.corrcoef(sub, rowvar=False)
    lam = np.sort(np.linalg.eigvalsh(C))[::-1]
    edge = (1 + np.sqrt(200 / (len(R) - 5))) ** 2  # Marchenko-Pastur edge of pure noise
    r = sd.load_params("bulk")["rank"]
    assert lam[0] > 3 * edge
    assert (lam > edge).sum() >= min(r, 3)
    assert (lam[r + 2:] < 1.2 * edge).all()  # beyond the factors: the noise bulk


def test_sparse_class_effects_singlecell():
    from scipy import stats

    p = sd.load_params("singlecell")
    model = sd.make_model(500, 4, 2, 0, "singlecell", factor_shift_sd=0.0)  # gene-specific effects only
    df = sd.generate(genes=500, samples=1000, classes=4, sites=2, seed=0, preset="singlecell",
                     factor_shift_sd=0.0)
    assert abs(model["affected"].mean() - p["class_effect_fraction"]) < 0.06
    X, y, _ = _within(df)
    groups = [X[y == c] for c in np.unique(y)]
    pv = stats.f_oneway(*groups).pvalue
    pv = np.where(np.isnan(pv), 1.0, pv)
    pi1 = 1 - (pv > 0.5).mean() / 0.5  # Storey's estimate, as the fit uses
    # not every effect is large enough to show at this n: the estimate can only fall short, not exceed
    assert pi1 < p["class_effect_fraction"] + 0.1
    assert pi1 > 0.3
    unaffected = ~model["affected"]
    assert (pv[unaffected] < 1e-3).mean() < 0.05  # genes without effects look null (clip aside)


def test_separable_but_not_by_the_majority(bulk):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = _within(bulk)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    acc = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
           .predict(Xte) == yte).mean()
    majority = (yte == "class0").mean()
    assert acc > majority + 0.2
    # the factor-aligned part of the class effects alone is realistic, not trivially separable
    f = sd.generate(genes=1000, samples=600, classes=5, sites=3, seed=0, preset="bulk", effect_rest_scale=0.0)
    X, y, _ = _within(f)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    acc_f = (make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
             .predict(Xte) == yte).mean()
    assert majority + 0.1 < acc_f < 0.99


def test_no_gene_by_gene_matrix_in_the_model():
    m = sd.make_model(20_000, 5, 3, 0, "bulk")
    biggest = max(v.size for v in m.values() if isinstance(v, np.ndarray))
    assert biggest <= 20_000 * max(5, 3, m["rank"])


def test_held_out_shapes_put_the_class_signal_where_they_say():
    """bench/high_dim.py's held-out-shaped data sets: hard1000 shifts only the factor scores (every class
    effect lies in the span of the loadings), sparse1000 only a sparse set of genes (no factor shift)."""
    spec_hd = importlib.util.spec_from_file_location("high_dim_for_test", BENCH / "high_dim.py")
    hd = importlib.util.module_from_spec(spec_hd)
    spec_hd.loader.exec_module(hd)
    assert set(hd.HELD_OUT_SHAPE) == {"hard1000", "sparse1000"}
    hard = sd.make_model(1000, 5, 1, 0, "bulk", **hd.HELD_OUT_SHAPE["hard1000"])
    Q, _ = np.linalg.qr(hard["L"])
    outside = hard["D"] - (hard["D"] @ Q) @ Q.T
    assert np.abs(outside).max() < 1e-9 * np.abs(hard["D"]).max()
    assert np.abs(hard["D"]).max() > 0.1
    sparse = sd.make_model(1000, 5, 1, 0, "bulk", **hd.HELD_OUT_SHAPE["sparse1000"])
    moved = np.abs(sparse["D"]).max(0) > 0
    assert np.array_equal(moved, sparse["affected"])
    assert 0.07 < moved.mean() < 0.13
    # the nuisance factors are there in both: every gene loads on them
    assert (np.linalg.norm(sparse["L"], axis=1) > 0).mean() > 0.9
