"""The TSTR protocol is pinned (issue 12): StandardScaler fitted on the synthetic data, then
LogisticRegression(max_iter=2000), tested on real held-out samples. Any change to the scorer that
``fedsynth simulate`` and ``fedsynth evaluate`` use must fail here, so it cannot move benchmark figures."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

from fedsynth.evaluation import tstr
from fedsynth.evaluation import utility
from fedsynth.workflows import simulate


def _data(seed=0, n_syn=150, n_test=80, genes=30):
    rng = np.random.default_rng(seed)
    classes = np.array(["A", "B", "C", "D"])
    centres = rng.normal(0, 0.6, size=(4, genes))
    scale = rng.uniform(0.3, 3.0, size=genes)  # genes on different scales: the scaler matters
    y_syn = classes[rng.choice(4, n_syn, p=[0.4, 0.3, 0.2, 0.1])]
    y_te = classes[rng.choice(4, n_test, p=[0.4, 0.3, 0.2, 0.1])]
    idx = {c: i for i, c in enumerate(classes)}
    X_syn = (centres[[idx[c] for c in y_syn]] + rng.normal(size=(n_syn, genes))) * scale + 5
    # the real test data is shifted and rescaled against the synthetic: a scaler fitted on the real
    # data (or on both) would give different predictions
    X_te = (centres[[idx[c] for c in y_te]] + rng.normal(size=(n_test, genes))) * scale * 1.3 + 5.4
    return X_syn, y_syn, X_te, y_te


def _reference(X_syn, y_syn, X_te, y_te):
    sc = StandardScaler().fit(X_syn)
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(X_syn), y_syn)
    pred = clf.predict(sc.transform(X_te))
    return pred, accuracy_score(y_te, pred), f1_score(y_te, pred, average="macro", zero_division=0)


def test_tstr_logreg_is_the_pinned_protocol():
    for seed in range(3):
        X_syn, y_syn, X_te, y_te = _data(seed)
        pred, acc, f1 = _reference(X_syn, y_syn, X_te, y_te)
        got = tstr(X_syn, y_syn, X_te, y_te, models=("logreg",), seed=seed)["tstr"]["logreg"]
        assert got["accuracy"] == acc
        assert got["macro_f1"] == f1
        # and it is not a protocol that happens to agree: scaling on the real side would differ
        sc_real = StandardScaler().fit(X_te)
        alt = LogisticRegression(max_iter=2000).fit(sc_real.transform(X_syn), y_syn).predict(sc_real.transform(X_te))
        assert not np.array_equal(alt, pred)


def test_tstr_with_trtr_and_rf_keeps_the_logreg_figure():
    X_syn, y_syn, X_te, y_te = _data(5)
    _, acc, f1 = _reference(X_syn, y_syn, X_te, y_te)
    got = tstr(X_syn, y_syn, X_te, y_te, X_real_train=X_syn[:100], y_real_train=y_syn[:100], seed=7)
    assert got["tstr"]["logreg"]["accuracy"] == acc
    assert got["tstr"]["logreg"]["macro_f1"] == f1


def test_the_logreg_pipeline_itself():
    model = utility._make_model("logreg", 0)
    steps = model.steps
    assert [type(s).__name__ for _, s in steps] == ["StandardScaler", "LogisticRegression"]
    scaler, clf = steps[0][1], steps[1][1]
    assert scaler.get_params() == StandardScaler().get_params()
    assert clf.get_params() == LogisticRegression(max_iter=2000).get_params()


def test_simulate_and_evaluate_score_with_this_tstr():
    from fedsynth.evaluation import run as evaluate_run
    import fedsynth.evaluation as E

    assert simulate.tstr is utility.tstr  # fedsynth simulate
    assert evaluate_run.tstr is utility.tstr  # fedsynth evaluate
    assert E.tstr is utility.tstr
