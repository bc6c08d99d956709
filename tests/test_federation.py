"""Federated runs end to end: real `fedsynth train` processes over 127.0.0.1.

Three sites from the bundled TCGA-BRCA data (the three largest tissue
source sites, 40 samples each, 50 genes; see conftest ``site_data``).
Every party is a separate OS process; failures (wrong secret, a killed or
missing party, a schema mismatch) are produced for real, not simulated.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from testkit import PY, assert_no_counts, describe, start_process, wait_all, write_secret

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(400)]

#: the CVAE (DP-SGD: sample rate, steps, weights to compare), short
FAST = ["--generator", "cvae", "--epochs", "2", "--batch-size", "32"]


def load_blob(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def wait_for_text(proc, text: str, timeout: float) -> float:
    """Poll a process's stderr until ``text`` appears; returns the time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.stderr_text():
            return time.monotonic()
        if proc.poll() is not None:
            pytest.fail(f"rank {proc.rank} exited ({proc.returncode}) before logging {text!r}:\n"
                        f"{proc.stderr_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"rank {proc.rank} did not log {text!r} within {timeout:g}s:\n{proc.stderr_text()[-3000:]}")


def error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr_text().splitlines() if ln.startswith("fedsynth: error:")]


def no_outputs(procs) -> list[Path]:
    """Model/run files that exist in any party's outdir (should be none after a failure)."""
    return [p.outdir / f for p in procs for f in ("model.pt", "run.json") if (p.outdir / f).exists()]


# ------------------------------------------------------------------ DP run
def test_dp_run_identical_models_and_dp_record(launch_parties, site_data, secret_file):
    procs = launch_parties(site_data["sites"], secret_file,
                           extra=FAST + ["--epsilon", "3", "--max-colluders", "1"])
    codes = wait_all(procs, 240)
    assert codes == [0, 0, 0], describe(procs)

    blobs = [load_blob(p.outdir / "model.pt") for p in procs]
    ref = blobs[0]["state_dict"]
    assert len(ref) > 0
    for b in blobs[1:]:
        assert b["state_dict"].keys() == ref.keys()
        for name, t in ref.items():
            assert torch.equal(b["state_dict"][name], t), f"{name} differs between sites"

    dp = blobs[0]["dp"]
    # N is the released noisy count: q and T follow it, never the exact total
    n_total = dp["n_total"]
    assert isinstance(n_total, int) and dp["n_total_sd"] > 0
    assert abs(n_total - sum(site_data["n"])) < 6 * dp["n_total_sd"]
    assert dp["mechanisms"][0]["name"] == "record count"
    assert dp["noise_std"]["record count"] > 0 and dp["sensitivity"]["record count"] == 1.0
    assert dp["private"] is True
    assert dp["epsilon"] == 3.0 and 0 < dp["epsilon_spent"] <= 3.0
    assert dp["delta"] == 1e-5
    assert dp["sigma"] > 0 and dp["stat_sigma"] > 0
    assert dp["sample_rate"] == pytest.approx(min(1.0, 32 / n_total))
    assert dp["clip_norm"] == 1.0
    assert dp["steps"] == int(np.ceil(2 / min(1.0, 32 / n_total)))
    assert dp["k"] == 3 and dp["max_colluders"] == 1
    assert dp["sites"] == [{"rank": r, "name": f"site{r}"} for r in range(3)]
    assert blobs[0]["genes"] == site_data["genes"]
    assert set(blobs[0]["classes"]) <= site_data["labels"]
    for b in blobs[1:]:
        assert b["dp"] == dp

    for p in procs:
        run = json.loads((p.outdir / "run.json").read_text())
        assert run["epsilon"] == 3.0 and run["delta"] == 1e-5
        assert run["sites"] == dp["sites"]
        # no exact per-site (or total) count in any output of train
        assert_no_counts(run)
        assert_no_counts({k: v for k, v in blobs[p.rank].items() if k != "state_dict"})
        assert run["max_colluders"] == 1
        assert run["wall_seconds"]["total"] > 0
        assert run["rank"] == p.rank


# ------------------------------------------------- federated == centralised
def test_federated_equals_centralised_without_dp(launch_parties, site_data, secret_file, tmp_path):
    args = ["--no-dp", "--seed", "7"] + FAST
    fed = launch_parties(site_data["sites"], secret_file, extra=args, tag="fed")
    central = launch_parties([site_data["pooled"]], secret_file, extra=args, tag="central")
    codes = wait_all(fed + central, 300)
    assert codes == [0, 0, 0, 0], describe(fed + central)

    fed_blob = load_blob(fed[0].outdir / "model.pt")
    cen_blob = load_blob(central[0].outdir / "model.pt")
    assert fed_blob["dp"]["private"] is False and cen_blob["dp"]["k"] == 1 and fed_blob["dp"]["k"] == 3
    assert fed_blob["genes"] == cen_blob["genes"] and fed_blob["classes"] == cen_blob["classes"]

    # the initial weights both runs started from (seed 7), to show training moved them
    from fedsynth.generators.cvae import CVAE, CVAEConfig

    torch.manual_seed(7)
    init = CVAE(CVAEConfig(**fed_blob["config"])).state_dict()

    max_diff, max_move = 0.0, 0.0
    for name, t in fed_blob["state_dict"].items():
        c = cen_blob["state_dict"][name]
        assert t.shape == c.shape
        max_diff = max(max_diff, float((t - c).abs().max()))
        max_move = max(max_move, float((t - init[name]).abs().max()))
    print(f"\nfederated vs centralised (no DP, seed 7): max |weight diff| = {max_diff:.3g}; "
          f"max |weight change from init| = {max_move:.3g}")
    (tmp_path / "fed_vs_central.txt").write_text(f"{max_diff!r} {max_move!r}\n")
    assert max_diff < 1e-4
    assert max_move > 100 * max(max_diff, 1e-7), "training barely moved the weights: test is vacuous"
    # statistics agree too (exact sums without DP)
    np.testing.assert_allclose(fed_blob["statistics"]["mean_profile"], cen_blob["statistics"]["mean_profile"],
                               atol=1e-8)


# ------------------------------------------------------------ wrong secret
def test_wrong_secret_is_refused(launch_parties, site_data, tmp_path):
    a = write_secret(tmp_path / "a.key", "the right secret for this session 12345")
    b = write_secret(tmp_path / "b.key", "a different secret of the same length!!")
    procs = launch_parties(site_data["sites"], a, secrets=[a, a, b],
                           extra=FAST + ["--step-timeout", "30", "--rendezvous-timeout", "60"])
    codes = wait_all(procs, 150)
    assert all(c != 0 for c in codes), describe(procs)
    for p in procs[:2]:
        errs = error_lines(p)
        assert len(errs) == 1, describe(procs)
        assert "rank 2" in errs[0] and "secret" in errs[0], describe(procs)
    errs2 = error_lines(procs[2])
    assert len(errs2) == 1 and "secret" in errs2[0], describe(procs)
    assert no_outputs(procs) == []


# ------------------------------------------------------------ killed party
def test_killed_party_is_named_and_others_exit(launch_parties, site_data, secret_file):
    step_timeout = 20
    procs = launch_parties(site_data["sites"], secret_file,
                           extra=["--generator", "cvae", "--no-dp", "--epochs", "100000", "--step-timeout", str(step_timeout),
                                  "--rendezvous-timeout", "120"])
    # training is under way once rank 2 logged the budget line and a little time passed
    for p in procs:
        wait_for_text(p, "NOTHING IS PRIVATE", 180)
    time.sleep(3)
    assert all(p.poll() is None for p in procs), describe(procs)
    os.kill(procs[2].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    procs[2].wait(timeout=10)

    survivors = procs[:2]
    wait_all(survivors, step_timeout + 30)
    took = time.monotonic() - killed_at
    assert took <= step_timeout + 30
    for p in survivors:
        assert p.returncode != 0, describe(procs)
        errs = error_lines(p)
        assert len(errs) == 1, describe(procs)
        assert "rank 2" in errs[0], describe(procs)
        # rank 2 itself went silent, or (under load) a site that saw it first aborted and its notice named rank 2
        assert "stopped responding" in errs[0] or "crashed" in errs[0] or "naming rank 2" in errs[0], describe(procs)
    assert no_outputs(procs) == []


# ----------------------------------------------------------- missing party
def test_missing_party_times_out_at_rendezvous(launch_parties, site_data, secret_file):
    rdv_timeout = 10
    procs = launch_parties(site_data["sites"], secret_file, ranks=[0, 1], world_size=3,
                           extra=FAST + ["--rendezvous-timeout", str(rdv_timeout)])
    started = time.monotonic()
    # the deadline runs from when each site has loaded its data and starts joining
    joined = [wait_for_text(p, "samples x", 60) for p in procs]
    wait_all(procs, 60)
    for p, t in zip(procs, joined):
        assert p.returncode != 0, describe(procs)
    ended = time.monotonic()
    assert ended - min(joined) <= rdv_timeout + 25
    assert ended - started <= 90
    for p in procs:
        errs = error_lines(p)
        assert len(errs) == 1, describe(procs)
        assert "rank 2" in errs[0] and "rendezvous" in errs[0], describe(procs)
    assert no_outputs(procs) == []


# --------------------------------------------------------- schema mismatch
@pytest.fixture
def site_csvs_missing_genes(site_data, tmp_path):
    """The three site CSVs, the third lacking 3 of the 50 genes."""
    df = pd.read_csv(site_data["sites"][2], dtype={"sample_id": str})
    dropped = site_data["genes"][5:8]
    path = tmp_path / "site2_minus3.csv"
    df.drop(columns=dropped).to_csv(path, index=False)
    return [*site_data["sites"][:2], path], dropped


def test_schema_mismatch_refused_strict_and_intersected(launch_parties, site_csvs_missing_genes, secret_file):
    datas, dropped = site_csvs_missing_genes
    strict = launch_parties(datas, secret_file, extra=FAST, tag="strict")
    # batch size >= N: sample rate 1, whose budget calibration is quick
    inter = launch_parties(datas, secret_file, extra=FAST + ["--genes", "intersect"], tag="intersect")
    codes = wait_all(strict + inter, 300)
    assert all(c != 0 for c in codes[:3]), describe(strict)
    for p in strict:
        errs = error_lines(p)
        assert len(errs) == 1 and "3 genes" in errs[0], describe(strict)
    assert no_outputs(strict) == []

    assert codes[3:] == [0, 0, 0], describe(inter)
    blob = load_blob(inter[0].outdir / "model.pt")
    assert len(blob["genes"]) == 47 and not set(dropped) & set(blob["genes"])
    assert blob["config"]["n_genes"] == 47


# ---------------------------------------------------------------- simulate
@pytest.fixture(scope="module")
def simulated(site_data, tmp_path_factory):
    """`fedsynth simulate` as a centralised baseline (--sites 1) and --local-only, run side by side."""
    d = tmp_path_factory.mktemp("simulate")
    common = [PY, "-m", "fedsynth", "simulate", "--data", str(site_data["with_site"]), "--label-column", "pam50",
              "--meta-columns", "age", "--site-column", "site", "--epochs", "2", "--n-synthetic", "25"]
    central = start_process(common + ["--sites", "1", "--outdir", str(d / "central")], d, "central",
                            new_session=True)
    local = start_process(common + ["--sites", "3", "--local-only", "--outdir", str(d / "local")], d, "local",
                          new_session=True)
    central.rank, local.rank = "central", "local"
    codes = wait_all([central, local], 300)
    assert codes == [0, 0], describe([central, local])
    return {"central": d / "central", "local": d / "local", "dir": d}


def test_simulate_centralised_baseline(simulated, site_data):
    out = simulated["central"]
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "centralised" and len(run["sites"]) == 1
    assert run["sites"][0]["n"] + run["sites"][0]["n_holdout"] == sum(site_data["n"])
    assert run["n_synthetic"] == 25 and run["models_identical"] is True
    assert "total" in run["wall_seconds"]

    blob = load_blob(out / "model.pt")
    assert blob["dp"]["k"] == 1 and blob["dp"]["private"] is True
    assert blob["genes"] == site_data["genes"]

    syn = pd.read_csv(out / "synthetic.csv", dtype={"sample_id": str})
    assert list(syn.columns) == ["sample_id", "pam50", *site_data["genes"]]
    assert syn.shape == (25, 2 + 50)
    assert set(syn["pam50"]) <= set(blob["classes"]) <= site_data["labels"]
    assert np.isfinite(syn[site_data["genes"]].to_numpy()).all()

    import anndata

    ad = anndata.read_h5ad(out / "synthetic.h5ad")
    assert ad.shape == (25, 50)
    assert list(ad.var_names) == site_data["genes"]
    assert list(ad.obs["pam50"].astype(str)) == list(syn["pam50"])
    np.testing.assert_allclose(ad.X, syn[site_data["genes"]].to_numpy(), rtol=1e-6, atol=1e-5)


def test_simulate_local_only(simulated, site_data):
    out = simulated["local"]
    run = json.loads((out / "run.json").read_text())
    assert run["mode"] == "local-only"
    assert sorted(s["name"] for s in run["sites"]) == sorted(site_data["names"])  # equal sizes: name order
    for s in run["sites"]:
        assert (out / "local" / s["name"] / "model.pt").is_file()
        blob = load_blob(out / "local" / s["name"] / "model.pt")
        assert blob["dp"]["k"] == 1 and blob["dp"]["sites"] == [{"rank": 0, "name": s["name"]}]
        assert abs(blob["dp"]["n_total"] - s["n"]) < 6 * blob["dp"]["n_total_sd"]
    assert set(run["local"]) == set(site_data["names"])
    assert not (out / "model.pt").exists()


def test_synthesize_is_reproducible_and_follows_class_proportions(simulated, site_data):
    model = simulated["central"] / "model.pt"
    d = simulated["dir"]
    base = [PY, "-m", "fedsynth", "synthesize", "--model", str(model), "--n", "30", "--seed", "1"]
    procs = [start_process(base + ["--outdir", str(d / name)] + extra, d, name)
             for name, extra in (("syn_a", []), ("syn_b", []), ("syn_luma", ["--class-proportions", "LumA=1"]))]
    for p, name in zip(procs, ("a", "b", "luma")):
        p.rank = name
    assert wait_all(procs, 120) == [0, 0, 0], describe(procs)

    a, b = (d / "syn_a" / "synthetic.csv").read_bytes(), (d / "syn_b" / "synthetic.csv").read_bytes()
    assert a == b
    import anndata

    ha, hb = anndata.read_h5ad(d / "syn_a" / "synthetic.h5ad"), anndata.read_h5ad(d / "syn_b" / "synthetic.h5ad")
    assert np.array_equal(ha.X, hb.X) and list(ha.obs_names) == list(hb.obs_names)
    assert list(ha.obs["label"]) == list(hb.obs["label"])

    syn = pd.read_csv(d / "syn_a" / "synthetic.csv")
    assert syn.shape == (30, 2 + 50)
    assert set(syn["label"]) <= site_data["labels"]
    luma = pd.read_csv(d / "syn_luma" / "synthetic.csv")
    assert len(luma) == 30 and set(luma["label"]) == {"LumA"}
    # other proportions give other samples (the output is not trivially constant)
    assert not np.array_equal(syn.iloc[:, 2:].to_numpy(), luma.iloc[:, 2:].to_numpy())
