"""``--generator gaussian``: real `fedsynth train` / `simulate` processes over 127.0.0.1.

* Without DP, three federated sites release exactly the pooled statistics
  (checked against a plain numpy computation on the pooled matrix).
* On data drawn from a known class-conditional Gaussian with a rank-2
  covariance, the fitted model and its samples reproduce it.
* A 3-process `fedsynth simulate --generator gaussian` at epsilon 1 on the
  bundled data writes the model, the synthetic cohort and run.json with the
  generator and its budget split, and spends no more than epsilon.
* Counts input gives counts back; an unreachable budget and a bad
  ``--generator`` / ``--components`` fail with one line and no output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.generators import gaussian as ga, registry
from testkit import BUNDLED, PY, describe, free_port, start_process, wait_all

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(400)]

GAUSS = ["--generator", "gaussian"]


def load_blob(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr_text().splitlines() if ln.startswith("fedsynth: error:")]


def one_site(tmp_path, data, outdir, extra, name="solo", secret=None):
    """One `fedsynth train --world-size 1` process (a real one-party session)."""
    from testkit import train_cmd, with_classes, write_secret

    secret = secret or write_secret(tmp_path / f"{name}.key")
    return start_process(train_cmd(0, 1, free_port(), secret, data, outdir, with_classes(extra, [data])),
                         tmp_path / "logs", name)


def cli(tmp_path, args, name):
    return start_process([PY, "-m", "fedsynth", *map(str, args)], tmp_path / "logs", name)


# ---------------------------------------------------- (a) federated == pooled
def pooled_reference(csv: Path):
    """Class counts, means and within-class covariance of ``v = [x - l(x), l(x)]``, by plain numpy."""
    df = pd.read_csv(csv, dtype={"sample_id": str})
    labels = df["label"].astype(str).to_numpy()
    X = df.drop(columns=["sample_id", "label"]).to_numpy(float)
    level = X.mean(1, keepdims=True)
    V = np.hstack([X - level, level])
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    means = np.stack([V[y == k].mean(0) for k in range(len(classes))])
    R = V - means[y]
    return (np.bincount(y, minlength=len(classes)).astype(float), means,
            R.T @ R / (len(V) - len(classes)))


def test_no_dp_federated_statistics_equal_pooled(launch_parties, site_data, secret_file):
    extra = GAUSS + ["--no-dp", "--components", "3"]
    fed = launch_parties(site_data["sites"], secret_file, extra=extra, tag="fed")
    pooled = launch_parties([site_data["pooled"]], secret_file, extra=extra, tag="pooled")
    procs = fed + pooled
    assert wait_all(procs, 240) == [0, 0, 0, 0], describe(procs)

    blobs = [load_blob(p.outdir / "model.pt") for p in fed]
    ref = load_blob(pooled[0].outdir / "model.pt")
    for b in blobs + [ref]:
        assert b["generator"] == "gaussian" and b["config"]["generator"] == "gaussian"
        assert b["dp"]["private"] is False and b["dp"]["epsilon"] is None
    for b in blobs[1:]:  # every site holds the same model, bit for bit
        for name, t in blobs[0]["state_dict"].items():
            assert torch.equal(b["state_dict"][name], t), name

    fs, ps = blobs[0]["state_dict"], ref["state_dict"]
    counts, means, cov = pooled_reference(site_data["pooled"])
    D = cov.shape[0]
    # without DP every coordinate is selected and the block is the whole covariance (D <= NO_DP_BLOCK)
    assert blobs[0]["statistics"]["selected"] == list(range(D))
    # fixed point with 32 fractional bits: sums agree to ~1e-9
    np.testing.assert_allclose(blobs[0]["statistics"]["class_counts"], counts, atol=1e-6)
    for st in (fs, ps):
        np.testing.assert_allclose(st["class_means"].numpy(), means, atol=1e-6)
        assert st["block"].tolist() == list(range(D))
        np.testing.assert_allclose(st["block_covariance"].numpy(), cov, atol=1e-6)
        # the variances release gives the diagonal: Psi + diag(W W^T) is the pooled within-class variance
        W = st["loadings"].numpy()
        np.testing.assert_allclose(st["residual_variance"].numpy() + (W**2).sum(1), np.diag(cov), atol=1e-6)
    # and so the fitted models agree (W up to nothing: signs are fixed by the fit)
    for name in ("loadings", "residual_variance"):
        np.testing.assert_allclose(fs[name].numpy(), ps[name].numpy(), atol=1e-5, err_msg=name)
    assert fs["loadings"].shape[1] == 3


# ------------------------------------------------ (b) a known distribution
def known_gaussian(n=4000, genes=8, seed=7):
    rng = np.random.default_rng(seed)
    mu = np.array([np.linspace(4, 8, genes), np.linspace(4, 8, genes)[::-1]])
    L = rng.normal(0, 0.6, (genes, 2))
    C = L @ L.T + 0.1 * np.eye(genes)
    y = (rng.random(n) < 0.3).astype(int)
    X = mu[y] + rng.multivariate_normal(np.zeros(genes), C, size=n)
    return X, y, mu, C


def test_fitted_model_and_samples_reproduce_a_known_gaussian(tmp_path):
    from fedsynth.generators.modelfile import load_model

    X, y, mu, C = known_gaussian()
    names = np.array(["A", "B"])
    genes = [f"g{j}" for j in range(X.shape[1])]
    df = pd.DataFrame(X, columns=genes)
    df.insert(0, "label", names[y])
    df.insert(0, "sample_id", [f"s{i}" for i in range(len(X))])
    data = tmp_path / "known.csv"
    df.to_csv(data, index=False)

    out = tmp_path / "model"
    p = one_site(tmp_path, data, out, GAUSS + ["--no-dp", "--components", "2"])
    assert wait_all([p], 120) == [0], describe([p])
    generator, blob = load_model(out / "model.pt")
    model = generator.model
    assert blob["classes"] == ["A", "B"]
    np.testing.assert_allclose(blob["statistics"]["class_proportions"], [np.mean(y == 0), np.mean(y == 1)])
    assert np.abs(model.expression_means() - mu).max() < 0.06
    assert np.abs(model.expression_covariance() - C).max() < 0.1  # entries up to ~0.75; diagonal-only misses by ~0.5
    assert model.loadings.shape == (X.shape[1] + 1, 2)

    syn = tmp_path / "syn"
    s = cli(tmp_path, ["synthesize", "--model", out / "model.pt", "--n", 20000, "--seed", 3,
                       "--class-proportions", "A=0.5,B=0.5", "--outdir", syn], "synth")
    assert wait_all([s], 120) == [0], describe([s])
    sdf = pd.read_csv(syn / "synthetic.csv")
    assert list(sdf.columns[-len(genes):]) == genes
    for k, name in enumerate(names):
        part = sdf.loc[sdf["label"] == name, genes].to_numpy()
        assert len(part) == 10000
        assert np.abs(part.mean(0) - mu[k]).max() < 0.06
        assert np.abs(np.cov(part.T) - C).max() < 0.1


# ------------------------------------------ (c) 3-process simulate, epsilon 1
def test_simulate_gaussian_three_sites_epsilon_1(tmp_path):
    out = tmp_path / "sim"
    p = start_process([PY, "-m", "fedsynth", "simulate", "--data", BUNDLED, "--label-column", "pam50",
                       "--meta-columns", "age", "--site-column", "site", "--sites", "3", "--epsilon", "1",
                       *GAUSS, "--outdir", out], tmp_path / "logs", "simulate", new_session=True)
    assert wait_all([p], 300) == [0], describe([p])
    for name in ("model.pt", "synthetic.csv", "synthetic.h5ad", "run.json"):
        assert (out / name).is_file(), name

    run = json.loads((out / "run.json").read_text())
    assert run["generator"] == "gaussian" and run["mode"] == "federated"
    assert run["epsilon"] == 1.0 and 0 < run["epsilon_spent"] <= 1.0
    # about 160 training tumours, 5 classes, 51 coordinates: D < 2 N / K, so no selection (the variances after
    # the class means, from their residuals)
    assert [m["name"] for m in run["budget_split"]] == ["record count", "class counts", "record scale", "gene means",
                                                         "class means", "gene variances", "block moments"]
    assert all(m["noise_multiplier"] > 0 for m in run["budget_split"])
    assert len(run["sites"]) == 3 and run["models_identical"] is True
    assert run["generator_params"]["components"] == 4
    # epsilon 1 at delta 1e-5 is the selection's reference budget: g = ceil(N / K) (here all 51 coordinates)
    assert run["generator_params"]["selection_factor"] == pytest.approx(1.0)
    # each site's traffic is recorded: its secure-sum shares (8 bytes a value) and the TCP bytes it sent,
    # which include every share it contributed to the all-reduces
    for name, c in run["site_communication"].items():
        assert c["secure_sums"] == 7 and c["share_bytes"] == 8 * c["secure_sum_values"] > 0, name
        assert c["tcp_bytes_sent"] >= c["share_bytes"] and c["tcp_sockets"] >= 2, (name, c)

    blob = load_blob(out / "model.pt")
    dp = blob["dp"]
    assert blob["generator"] == "gaussian"
    assert dp["private"] is True and dp["epsilon"] == 1.0 and dp["delta"] == 1e-5
    # the colluder default protects against one curious co-site: t = 1 at k = 3, and the record says so
    assert dp["k"] == 3 and dp["max_colluders"] == 1 and run["max_colluders"] == 1
    assert dp["epsilon_vs_site"] == pytest.approx(dp["epsilon_spent"]) and run["epsilon_vs_site"] == dp["epsilon_vs_site"]
    assert dp["epsilon_vs_coalition"]["2"] > dp["epsilon"]
    # the bounds set from the released scales are the ones the record states, and the noise follows them
    scales = blob["statistics"]["scales"]
    assert 1.0 < scales["record"] < 5.0 and 0.5 < scales["centred"] < scales["record"]  # log2 bulk expression
    for name, bound in dp["clip_bounds"].items():
        assert dp["sensitivity"][name] == pytest.approx(bound), name
        assert dp["noise_std"][name] == pytest.approx(dp["noise_multipliers"][name] * bound), name
    assert dp["clip_bounds"]["gene means"] == pytest.approx(ga.gene_mean_bound(50, scales["record"], scales["level"]))
    # the level weight the record states follows from the released scales (1 at 51 coordinates, or the level unknown)
    assert scales["level_weight"] == ga.level_weight(scales["record"], scales["level"], 51)
    assert [s["name"] for s in dp["sites"]] == [s["name"] for s in run["sites"]]
    assert "n" not in dp["sites"][0] and abs(dp["n_total"] - sum(s["n"] for s in run["sites"])) < 6 * dp["n_total_sd"]
    assert {m["name"]: m["noise_multiplier"] for m in dp["mechanisms"]} == dp["noise_multipliers"]
    # the accountant, re-run on the recorded mechanisms, agrees with the record
    from fedsynth.privacy.accounting import Mechanism, compose

    assert compose([Mechanism(**m) for m in dp["mechanisms"]], dp["delta"]) == pytest.approx(dp["epsilon_spent"])

    syn = pd.read_csv(out / "synthetic.csv")
    genes = list(pd.read_csv(BUNDLED, nrows=1).columns[8:])
    assert set(genes) <= set(syn.columns) and len(syn) == run["n_synthetic"]
    assert set(syn["pam50"]) <= {"Basal", "Her2", "LumA", "LumB", "NormalLike"}
    assert np.isfinite(syn[genes].to_numpy()).all()
    ev = run["evaluation"]["tstr"]["logreg"]
    assert ev["macro_f1"] > run["evaluation"]["majority"]["macro_f1"]


def test_simulate_selects_by_released_spread_at_many_genes(tmp_path):
    """3 site processes at 400 genes: the class means cover a selection chosen by the released spreads.

    240 records, 4 classes whose effects sit on the 20 most variable genes: ``D = 401 >= 2 ceil(N / K)``,
    so the gene variances (spreads around the gene means) are released before the class means, the
    record lists them in that order with no class screen, every site's file is the same, and the
    synthetic classes are told apart better than the largest class alone.
    """
    rng = np.random.default_rng(11)
    n, G, K = 240, 400, 4
    y = rng.integers(0, K, n)
    spread = np.where(np.arange(G) < 20, 1.5, 0.6)
    effects = np.zeros((K, G))
    effects[:, :20] = rng.normal(0, 2.0, (K, 20))
    X = 6.0 + effects[y] + rng.normal(0, 1, (n, G)) * spread
    frame = pd.DataFrame(X, columns=[f"g{j:03d}" for j in range(G)])
    frame.insert(0, "site", np.array(["a", "b", "c"])[np.arange(n) % 3])
    frame.insert(0, "label", np.array(["k0", "k1", "k2", "k3"])[y])
    frame.insert(0, "sample_id", [f"s{i:03d}" for i in range(n)])
    data = tmp_path / "wide.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "sim"
    p = start_process([PY, "-m", "fedsynth", "simulate", "--data", data, "--label-column", "label",
                       "--site-column", "site", "--sites", "3", "--epsilon", "1", *GAUSS, "--outdir", out],
                      tmp_path / "logs", "simulate", new_session=True)
    assert wait_all([p], 300) == [0], describe([p])
    run = json.loads((out / "run.json").read_text())
    assert [m["name"] for m in run["budget_split"]] == ["record count", "class counts", "record scale", "gene means",
                                                         "gene variances", "class means", "block moments"]
    assert run["models_identical"] is True
    assert run["generator_params"]["selected_coordinates"] < G + 1
    blob = load_blob(out / "model.pt")
    assert blob["statistics"]["variances_centre"] == "gene means"
    assert "class screen" not in blob["dp"]["noise_multipliers"]
    ev = run["evaluation"]["tstr"]["logreg"]
    assert ev["macro_f1"] > run["evaluation"]["majority"]["macro_f1"]


# ----------------------------------------------------------- counts input
def test_counts_input_gives_counts_back(tmp_path, site_data):
    df = pd.read_csv(site_data["pooled"], dtype={"sample_id": str})
    genes = list(df.columns[2:])
    df[genes] = np.round(2.0 ** df[genes].to_numpy() / 4).astype(int)
    data = tmp_path / "counts.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "model"
    p = one_site(tmp_path, data, out, GAUSS + ["--epsilon", "2", "--input-kind", "counts"])
    assert wait_all([p], 120) == [0], describe([p])
    blob = load_blob(out / "model.pt")
    assert blob["input_kind"] == "counts"
    assert [m["name"] for m in blob["dp"]["mechanisms"]][-2:] == ["log library size mean", "log library size spread"]
    syn = tmp_path / "syn"
    s = cli(tmp_path, ["synthesize", "--model", out / "model.pt", "--n", 200, "--outdir", syn], "synth")
    assert wait_all([s], 120) == [0], describe([s])
    values = pd.read_csv(syn / "synthetic.csv")[genes].to_numpy()
    assert (values >= 0).all() and np.array_equal(values, np.round(values))
    real_lib = np.log(df[genes].to_numpy().sum(1))
    syn_lib = np.log(np.maximum(values.sum(1), 1))
    # the released mean log library size has noise s.d. z * (25 / 2) / n
    z = blob["dp"]["noise_multipliers"]["log library size mean"]
    assert abs(blob["statistics"]["log_library_size"]["mean"] - real_lib.mean()) < 4 * z * 12.5 / len(df)
    assert abs(np.median(syn_lib) - blob["statistics"]["log_library_size"]["mean"]) < 0.5


# ------------------------------------------------------------- bad inputs
def only_error(proc) -> str:
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr_text()[-3000:]
    assert proc.stderr_text().rstrip().splitlines()[-1] == lines[0]
    assert "Traceback" not in proc.stderr_text()
    return lines[0]


def test_unreachable_budget_refuses_to_start(tmp_path, site_data):
    out = tmp_path / "model"
    p = one_site(tmp_path, site_data["pooled"], out, GAUSS + ["--epsilon", "1e-6"])
    assert wait_all([p], 120) == [3], describe([p])
    line = only_error(p)
    assert "epsilon 1e-06 cannot be met" in line and "--epsilon" in line
    assert not (out / "model.pt").exists() and not (out / "run.json").exists()


@pytest.mark.parametrize("command", ["train", "simulate"])
@pytest.mark.parametrize("args, expect", [
    (["--generator", "gan"], f"--generator must be one of {', '.join(registry.names())} (got 'gan')"),
    (["--generator", "gaussian", "--components", "-1"], "--components must be >= 0 (got -1)"),
])
def test_bad_generator_options_one_line(tmp_path, site_data, command, args, expect):
    out = tmp_path / "out"
    if command == "train":
        p = one_site(tmp_path, site_data["pooled"], out, args)
    else:
        p = cli(tmp_path, ["simulate", "--data", site_data["with_site"], "--label-column", "pam50",
                           "--meta-columns", "age", "--site-column", "site", *args, "--outdir", out], "sim")
    assert wait_all([p], 120) == [2], describe([p])
    assert expect in only_error(p)
    assert not out.exists() or not any(out.iterdir())
