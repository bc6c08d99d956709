"""Train's ``--seed`` is written to no output, and with DP it does not fix the sampling (issue #11, item 2).

Sample IDs are public, so a sampling key anyone could know would tell which
DP-SGD steps used a given patient and void the amplification by
subsampling. With DP the key mixes in fresh OS randomness; with ``--no-dp``
``--seed`` keeps runs bit-identical (also tests/test_legacy_models.py).

The multiprocess tests run ``fedsynth simulate`` (3 real site processes,
the ``fedsynth train`` every hospital runs) on the 12-gene, 3-site slice of
the bundled TCGA-BRCA file that the legacy fixtures use.
"""

from __future__ import annotations

import json
import numbers
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from testkit import PARTY_ENV, REPO

SEED = 918273645

_spec_path = REPO / "tests" / "fixtures" / "make_legacy_models.py"


def _small_data(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_legacy_models", _spec_path)
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    return make.small_data(tmp_path / "brca_small.csv")


def _patterns(seed: int) -> dict[str, bytes]:
    """The seed as text and as 4- and 8-byte little/big-endian integers."""
    return {"text": str(seed).encode(), "hex": format(seed, "x").encode(),
            "<q": struct.pack("<q", seed), ">q": struct.pack(">q", seed),
            "<i": struct.pack("<i", seed), ">i": struct.pack(">i", seed)}


def _walk(obj, path="$"):
    """Every leaf of a decoded structure (dicts, lists, tensors), with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}[key]", k
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(obj, torch.Tensor):
        yield path, obj
    else:
        yield path, obj


def _decoded_hits(obj, seed: int) -> list[str]:
    hits = []
    for path, v in _walk(obj):
        if isinstance(v, torch.Tensor):
            if v.numel() and bool((v.double() == float(seed)).any()):
                hits.append(path)
        elif isinstance(v, np.ndarray):
            if v.dtype.kind in "iuf" and (v == seed).any() or v.dtype.kind in "OUS" and str(seed) in str(v.tolist()):
                hits.append(path)
        elif isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_)) and v == seed:
            hits.append(path)
        elif isinstance(v, (str, bytes)) and str(seed) in (v if isinstance(v, str) else v.decode("latin-1")):
            hits.append(path)
    return hits


def _simulate(data, out, *extra):
    args = [sys.executable, "-m", "fedsynth", "simulate", "--data", str(data), "--label-column", "pam50",
            "--site-column", "site", "--sites", "3", "--holdout", "0", "--epochs", "2", "--generator", "cvae",
            "--outdir", str(out), "--overwrite", *map(str, extra)]
    res = subprocess.run(args, env=PARTY_ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _state(out) -> dict:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def _equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------ in process
def test_sampling_key_is_fresh_with_dp_and_the_seed_without():
    from fedsynth.generators.cvae import poisson_mask, sampling_key

    ids = [f"TCGA-{i:04d}" for i in range(400)]
    a, b = sampling_key(SEED, True), sampling_key(SEED, True)
    assert a != b and str(SEED) not in a + b
    assert not np.array_equal(poisson_mask(a, 0, ids, 0.3), poisson_mask(b, 0, ids, 0.3))
    assert sampling_key(None, True) != sampling_key(None, True)
    # --no-dp --seed: the seed itself, as before (legacy models retrain bit for bit)
    assert sampling_key(SEED, False) == sampling_key(SEED, False) == str(SEED)
    np.testing.assert_array_equal(poisson_mask(sampling_key(7, False), 3, ids, 0.3), poisson_mask(7, 3, ids, 0.3))


def test_train_config_and_run_options_hold_no_seed():
    from fedsynth.workflows import options

    cfg = options.train_config({"seed": SEED})
    for record in (cfg.to_dict(), options.record(cfg)):
        assert "seed" not in record and record["seed_given"] is True
        assert str(SEED) not in json.dumps(record)
    assert options.record(options.train_config({}))["seed_given"] is False


# ------------------------------------------------------------ real runs
@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_dp_seed_in_no_output_and_sampling_not_fixed(tmp_path):
    data = _small_data(tmp_path)
    runs = [_simulate(data, tmp_path / f"dp{i}", "--seed", SEED, "--epsilon", "4") for i in range(2)]

    out = runs[0]
    files = ["model.pt", "run.json", "synthetic.csv", "synthetic.h5ad"]
    for name in files:
        raw = (out / name).read_bytes()
        for label, pat in _patterns(SEED).items():
            assert pat not in raw, f"{name} holds the seed ({label})"
    blob = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert _decoded_hits(blob, SEED) == []
    assert blob["train_config"]["seed_given"] is True and "seed" not in blob["train_config"]
    run = json.loads((out / "run.json").read_text())
    assert _decoded_hits(run, SEED) == []
    assert run["options"]["seed_given"] is True and "seed" not in run["options"]
    import anndata

    adata = anndata.read_h5ad(out / "synthetic.h5ad")
    assert _decoded_hits(dict(adata.uns), SEED) == []

    # same --seed, DP on: the same initial weights (public), yet different training
    torch.manual_seed(SEED)
    from fedsynth.generators.cvae import CVAE, CVAEConfig

    init = CVAE(CVAEConfig(**blob["config"])).state_dict()
    a, b = _state(runs[0]), _state(runs[1])
    assert not _equal(a, b), "two DP runs with the same --seed trained identical models"
    assert not _equal(a, init), "training did not move the weights: test is vacuous"


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_no_dp_seed_reproduces_exactly(tmp_path):
    data = _small_data(tmp_path)
    a, b = (_state(_simulate(data, tmp_path / f"nodp{i}", "--seed", SEED, "--no-dp")) for i in range(2))
    assert _equal(a, b), "two --no-dp runs with the same --seed differ"
    run = json.loads((tmp_path / "nodp0" / "run.json").read_text())
    assert _decoded_hits(run, SEED) == [] and run["options"]["seed_given"] is True
