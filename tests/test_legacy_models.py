"""Model files written before the generator interface still load, sample and retrain alike.

``tests/fixtures/legacy/`` holds one ``--no-dp --seed 7`` model per generator,
made by main before issue #10's refactor (``tests/fixtures/make_legacy_models.py``
says how), and the synthetic samples that code drew from each. Today's code
must

* load each file and draw exactly those samples (same seed, same values), and
* retrain, from the same data, options and seed, a bit-identical model.

Real ``fedsynth`` processes (3 sites over 127.0.0.1), no mocks.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from testkit import PARTY_ENV, REPO

LEGACY = REPO / "tests" / "fixtures" / "legacy"
_spec = importlib.util.spec_from_file_location("make_legacy_models", REPO / "tests" / "fixtures" / "make_legacy_models.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)

pytestmark = pytest.mark.multiprocess


def _fedsynth(*args):
    res = subprocess.run([sys.executable, "-m", "fedsynth", *map(str, args)], env=PARTY_ENV, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _tensors(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("generator", make.GENERATORS)
def test_legacy_model_samples_as_before(generator, tmp_path):
    expected = np.load(LEGACY / "expected_samples.npz")
    _fedsynth("synthesize", "--model", LEGACY / f"{generator}.model.pt", "--n", make.N_SAMPLES,
              "--seed", make.SAMPLE_SEED, "--outdir", tmp_path)
    syn = pd.read_csv(tmp_path / "synthetic.csv", index_col=0)
    np.testing.assert_array_equal(syn["label"].to_numpy(str), expected[f"{generator}_y"])
    np.testing.assert_array_equal(syn.drop(columns="label").to_numpy(float), expected[f"{generator}_x"])


@pytest.mark.parametrize("generator", [g for g in make.GENERATORS if g != "gaussian"])
def test_no_dp_retraining_is_bit_identical(generator, tmp_path):
    model = make.simulate(generator, LEGACY / "brca_small.csv", tmp_path / "run")
    old, new = _tensors(LEGACY / f"{generator}.model.pt"), _tensors(model)
    assert sorted(old) == sorted(new)
    for name in old:
        assert torch.equal(old[name], new[name]), f"{generator}: {name} differs from the legacy model"


def test_no_dp_gaussian_retraining_gives_the_legacy_model(tmp_path):
    """Issue 12 changed the gaussian's releases (a variance release, a block of second moments instead of
    the whole matrix), so its file holds other tensors; without DP, on 51 coordinates (the block is the
    whole matrix), the fitted model is the legacy one up to the secure sum's fixed-point rounding."""
    model = make.simulate("gaussian", LEGACY / "brca_small.csv", tmp_path / "run")
    old, new = _tensors(LEGACY / "gaussian.model.pt"), _tensors(model)
    D = old["covariance"].shape[0]
    assert new["block"].tolist() == list(range(D))
    np.testing.assert_allclose(new["block_covariance"].numpy(), old["covariance"].numpy(), atol=1e-6)
    for name in ("class_means", "loadings", "residual_variance"):
        np.testing.assert_allclose(new[name].numpy(), old[name].numpy(), atol=1e-6, err_msg=name)
