"""``--generator marginals``: the fourth generator, added as one module plus one registry line.

Real ``fedsynth simulate`` runs (3 site processes over 127.0.0.1) on the
3-site TCGA-BRCA fixture (12 genes):

* without DP, the federated tables are exactly the pooled ones (one site
  holding every record);
* at epsilon 1 the one release carries noise ``z sqrt(G)`` with ``z`` the
  accountant's, and the budget is spent, not exceeded;
* its own option (``--marginals-bins``) reaches the model and the run record.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.privacy.accounting import Mechanism, compose
from testkit import PARTY_ENV, REPO

DATA = REPO / "tests" / "fixtures" / "legacy" / "brca_small.csv"
pytestmark = pytest.mark.multiprocess


def simulate(outdir, *args):
    res = subprocess.run([sys.executable, "-m", "fedsynth", "simulate", "--data", DATA, "--label-column", "pam50",
                          "--holdout", "0", "--generator", "marginals", "--outdir", outdir, *map(str, args)],
                         env=PARTY_ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.load(outdir / "model.pt", weights_only=True), json.loads((outdir / "run.json").read_text())


def test_no_dp_federated_tables_equal_pooled(tmp_path):
    fed, run = simulate(tmp_path / "fed", "--site-column", "site", "--sites", 3, "--no-dp", "--marginals-bins", 6)
    pooled, _ = simulate(tmp_path / "pooled", "--sites", 1, "--no-dp", "--marginals-bins", 6)
    assert fed["dp"]["k"] == 3 and pooled["dp"]["k"] == 1
    assert torch.equal(fed["state_dict"]["probs"], pooled["state_dict"]["probs"])
    assert fed["statistics"]["class_counts"] == pooled["statistics"]["class_counts"]
    # the pooled class counts are the true ones
    truth = pd.read_csv(DATA)["pam50"].value_counts()
    assert dict(zip(fed["classes"], fed["statistics"]["class_counts"])) == {c: float(truth.get(c, 0)) or 1.0
                                                                          for c in fed["classes"]}
    assert fed["config"]["bins"] == 6 and run["options"]["marginals_bins"] == 6


def test_epsilon_1_noise_matches_the_accountant(tmp_path):
    blob, run = simulate(tmp_path / "dp", "--site-column", "site", "--sites", 3, "--epsilon", 1, "--n-synthetic", 300)
    dp, G = blob["dp"], len(blob["genes"])
    count, mech = dp["mechanisms"]
    assert count["name"] == "record count" and dp["sensitivity"]["record count"] == 1.0
    assert mech["name"] == "class x gene histograms" and mech["steps"] == 1
    assert dp["noise_std"][mech["name"]] == pytest.approx(mech["noise_multiplier"] * math.sqrt(G))
    assert dp["sensitivity"][mech["name"]] == pytest.approx(math.sqrt(G))
    spent = compose([Mechanism(**count), Mechanism(**mech)], dp["delta"])
    assert spent == pytest.approx(dp["epsilon_spent"]) and 0.98 < spent <= 1.0
    probs = blob["state_dict"]["probs"].numpy()
    assert probs.shape == (G, len(blob["classes"]), 8) and np.allclose(probs.sum(2), 1.0)
    syn = pd.read_csv(tmp_path / "dp" / "synthetic.csv", index_col=0)
    assert len(syn) == 300 and list(syn.columns[1:]) == blob["genes"]
    assert syn[blob["genes"]].to_numpy().min() >= 0.0 and syn[blob["genes"]].to_numpy().max() <= 20.0
    assert run["generator"] == "marginals" and run["models_identical"] is True
