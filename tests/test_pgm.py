"""The ``pgm`` generator: Private-PGM on secure noisy marginals.

* with DP off, what three real ``fedsynth train`` processes release (fine
  histograms, label x gene and gene-pair tables) equals the tables of the
  pooled data, exactly, and the three sites end with the same model;
* the fit (``mbi``) and the sampler reproduce a known small discrete
  distribution, exactly without noise and closely at a high epsilon;
* the DP bin edges are the data's quantiles when nothing is noised;
* a 3-process ``fedsynth simulate --generator pgm`` at epsilon 1 on the
  bundled data writes model.pt, synthetic.csv/.h5ad and run.json, spends at
  most epsilon, and ``fedsynth synthesize`` works on its model;
* bad ``--pgm-*`` values and an unreachable budget are refused in one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.generators import pgm
from testkit import BUNDLED, PY, describe, start_process, wait_all

pytestmark = pytest.mark.timeout(600)


def load_blob(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------- (a) federated == pooled
@pytest.fixture(scope="module")
def nodp_run(site_data, tmp_path_factory):
    """Three `fedsynth train --generator pgm --no-dp` processes on the three site CSVs."""
    from testkit import free_port, train_cmd, write_secret

    d = tmp_path_factory.mktemp("pgm_nodp")
    secret = write_secret(d / "session.key")
    port = free_port()
    extra = ["--generator", "pgm", "--no-dp", "--pgm-iters", "100", "--pgm-bins", "4",
             "--pgm-fine-bins", "24"]
    procs = []
    for r, data in enumerate(site_data["sites"]):
        p = start_process(train_cmd(r, 3, port, secret, data, d / f"out{r}", extra), d, f"rank{r}")
        p.rank, p.outdir = r, d / f"out{r}"
        procs.append(p)
    assert wait_all(procs, 400) == [0, 0, 0], describe(procs)
    return [load_blob(p.outdir / "model.pt") for p in procs]


@pytest.mark.multiprocess
def test_federated_tables_equal_pooled_tables_without_dp(nodp_run, site_data):
    from fedsynth.data.io import read_expression
    from fedsynth.data.preprocess import validate_and_normalise

    raw = read_expression(site_data["pooled"], label_column="label")
    cohort = validate_and_normalise(raw, input_kind="log", label_column="label")
    blob = nodp_run[0]
    assert blob["generator"] == "pgm" and blob["genes"] == list(cohort.genes)
    classes = blob["classes"]
    y = np.array([classes.index(str(v)) for v in cohort.labels])
    st = {k: v.numpy() for k, v in blob["state_dict"].items()}
    lo, hi = blob["generator_params"]["range"]
    b, m = blob["generator_params"]["bins"], blob["generator_params"]["fine_bins"]
    assert (b, m) == (4, 24) and (lo, hi) == (0.0, 20.0)

    hist = pgm.fine_histograms(cohort.X, lo, hi, m)
    assert np.array_equal(st["released_histograms"], hist)
    geo = pgm.bin_geometry(hist, cohort.n_samples, lo, hi, b)
    assert np.array_equal(st["edges"], geo["edges"])
    codes = pgm.discretise(cohort.X, geo["edges"])
    tables = pgm.label_gene_tables(codes, y, len(classes), b)
    assert np.array_equal(st["released_label_gene"], tables)
    tree = pgm.choose_tree(tables)
    assert [tuple(e) for e in st["tree"]] == tree and len(tree) == len(cohort.genes) - 1
    assert np.array_equal(st["released_pairs"], pgm.pair_tables(codes, tree, b))
    # the tables are real counts: every record once per gene
    assert (tables.sum(axis=(1, 2)) == cohort.n_samples).all()

    # every site ended with the same model and DP record
    for other in nodp_run[1:]:
        for k, v in blob["state_dict"].items():
            assert torch.equal(other["state_dict"][k], v), k
    dp = blob["dp"]
    assert dp["private"] is False and dp["mechanisms"] == [] and dp["k"] == 3

    # without noise the fit (100 mirror-descent steps here) matches the released tables closely
    err = np.abs(st["label_gene"] - tables)
    assert err.max() / cohort.n_samples < 0.05 and err.mean() < 1.0, (err.max(), err.mean())


# ------------------------------------------ (b) a known small distribution
TREE = [(0, 1), (1, 2)]  # g3 hangs on the label only


def _known_distribution():
    """A pairwise model in the family pgm fits: ``log P = sum_g phi_g(y, g) + sum_e psi_e(g_i, g_j)``.

    C = 3 classes, G = 4 genes, b = 3 bins; strong label -> gene dependence
    (each class favours its own bin), a chain g0 - g1 - g2, g3 on the label only.
    Returns the full joint ``(C, b, b, b, b)``.
    """
    rng = np.random.default_rng(7)
    C, b, G = 3, 3, 4
    phi = 2.0 * np.eye(C, b)[None, :, :] + rng.normal(0, 0.5, (G, C, b))
    psi = 1.5 * np.eye(b)[None] + rng.normal(0, 0.5, (len(TREE), b, b))
    log_p = np.log([0.5, 0.3, 0.2])[:, None, None, None, None] * 1.0
    grids = np.meshgrid(np.arange(C), *[np.arange(b)] * G, indexing="ij")
    y, genes = grids[0], grids[1:]
    log_p = log_p + sum(phi[g][y, genes[g]] for g in range(G))
    log_p = log_p + sum(psi[e][genes[i], genes[j]] for e, (i, j) in enumerate(TREE))
    p = np.exp(log_p - log_p.max())
    return p / p.sum()


def _tables(joint, n):
    G = joint.ndim - 1
    lg = np.stack([joint.sum(axis=tuple(a for a in range(1, G + 1) if a != g + 1)) for g in range(G)]) * n
    pairs = np.stack([joint.sum(axis=tuple(a for a in range(G + 1) if a not in (i + 1, j + 1))) for i, j in TREE]) * n
    return lg, pairs


def _model_joint(state):
    """The fitted model's full joint, from the sampler's own conditionals."""
    cond = pgm.conditionals(state["phi"], state["psi"], state["tree"])
    r, ch = cond["root"], cond["child"]
    return np.einsum("y,ya,yab,ybc,yd->yabcd", cond["label"], r[0], ch[0], ch[1], r[3])


@pytest.mark.parametrize("epsilon,tol", [(None, 0.002), (20.0, 0.01), (1.0, 0.03)])
def test_fit_and_sampler_reproduce_a_known_distribution(epsilon, tol):
    joint = _known_distribution()
    n = 20_000
    lg, pairs = _tables(joint, n)
    sd_m = sd_p = 1.0
    if epsilon is not None:  # the noise a real run at this epsilon adds (G = 4, 2 tree edges)
        z = pgm.plan(pgm.PGMConfig(), epsilon, 1e-5, "log")
        sd_m = z["label x gene marginals"] * math.sqrt(4)
        sd_p = z["gene pair marginals"] * math.sqrt(len(TREE))
        rng = np.random.default_rng(3)
        lg = lg + rng.normal(0, sd_m, lg.shape)
        pairs = pairs + rng.normal(0, sd_p, pairs.shape)
    fitted = pgm.fit(lg, sd_m, TREE, pairs, sd_p, n, 2000)
    state = {"phi": fitted["phi"], "psi": fitted["psi"], "tree": np.asarray(TREE)}

    true_lg, _ = _tables(joint, 1.0)
    assert np.abs(fitted["label_gene"] / n - true_lg).max() < tol / 2
    model = _model_joint(state)
    assert model.sum() == pytest.approx(1.0)
    # the whole 5-way joint (243 cells), not only the measured marginals: total variation
    assert 0.5 * np.abs(model - joint).sum() < tol

    # the sampler draws from that joint
    rng = np.random.default_rng(0)
    draws = 200_000
    y = rng.choice(3, size=draws, p=model.sum(axis=(1, 2, 3, 4)))
    codes = pgm.sample_codes(state, y, rng)
    flat = np.ravel_multi_index((y, *codes.T), joint.shape)
    empirical = np.bincount(flat, minlength=joint.size).reshape(joint.shape) / draws
    assert 0.5 * np.abs(empirical - model).sum() < 0.03

    # without the pair cliques the fit cannot carry g0 - g1 within a class: the tree matters
    alone = pgm.fit(lg, sd_m, [], None, 1.0, n, 2000)
    cond = pgm.conditionals(alone["phi"], np.zeros((0, 3, 3)), np.zeros((0, 2), int))
    r = cond["root"]
    indep = np.einsum("y,ya,yb,yc,yd->yabcd", cond["label"], r[0], r[1], r[2], r[3])
    assert 0.5 * np.abs(indep - joint).sum() > 2 * 0.5 * np.abs(model - joint).sum() + 0.02


def test_bin_edges_are_quantiles_without_noise():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(8, 1.5, 4000), rng.normal(3, 0.5, 4000), rng.uniform(10, 18, 4000)])
    lo, hi, m, b = 0.0, 20.0, 200, 4
    geo = pgm.bin_geometry(pgm.fine_histograms(X, lo, hi, m), len(X), lo, hi, b)
    want = np.quantile(X, [0.25, 0.5, 0.75], axis=0).T
    assert np.abs(geo["edges"] - want).max() < (hi - lo) / m  # within one fine cell
    assert (np.diff(geo["bounds"], axis=1) >= 0).all()
    codes = pgm.discretise(X, geo["edges"])
    share = np.stack([np.bincount(codes[:, g], minlength=b) for g in range(3)]) / len(X)
    assert np.abs(share - 1 / b).max() < 0.02
    # bins map back inside their bounds
    vals = pgm.decode(codes, geo["bounds"], rng)
    assert (pgm.discretise(vals, geo["edges"]) == codes).mean() > 0.999


# ---------------------------------------------- (c) 3-process simulate run
@pytest.fixture(scope="module")
def simulated_pgm(tmp_path_factory):
    d = tmp_path_factory.mktemp("pgm_sim")
    cmd = [PY, "-m", "fedsynth", "simulate", "--data", str(BUNDLED), "--label-column", "pam50",
           "--meta-columns", "age", "--site-column", "site", "--sites", "3", "--generator", "pgm",
           "--epsilon", "1", "--pgm-iters", "300", "--outdir", str(d / "out")]
    p = start_process(cmd, d, "simulate", new_session=True)
    p.rank = "simulate"
    assert wait_all([p], 550) == [0], describe([p])
    return d


@pytest.mark.multiprocess
def test_simulate_pgm_at_epsilon_1(simulated_pgm):
    out = simulated_pgm / "out"
    for name in ("model.pt", "synthetic.csv", "synthetic.h5ad", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["generator"] == "pgm" and run["mode"] == "federated" and len(run["sites"]) == 3
    assert run["private"] is True and run["epsilon"] == 1.0
    assert 0.9 < run["epsilon_spent"] <= 1.0
    names = {m["name"] for m in run["dp"]["mechanisms"]}
    assert names == {"record count", *pgm.RELEASES}
    assert run["models_identical"] is True
    assert run["evaluation"]["tstr"]["logreg"]["accuracy"] > 0

    blob = load_blob(out / "model.pt")
    assert blob["generator"] == "pgm" and blob["dp"]["epsilon_spent"] == run["epsilon_spent"]
    G, C = len(blob["genes"]), len(blob["classes"])
    assert blob["state_dict"]["phi"].shape == (G, C, 3)
    assert blob["state_dict"]["tree"].shape == (G - 1, 2)
    syn = pd.read_csv(out / "synthetic.csv")
    assert syn.shape[0] == run["n_synthetic"] and set(syn["pam50"]) <= set(blob["classes"])
    X = syn[blob["genes"]].to_numpy()
    lo, hi = blob["generator_params"]["range"]
    assert np.isfinite(X).all() and X.min() >= lo and X.max() <= hi


@pytest.mark.multiprocess
def test_synthesize_on_a_pgm_model(simulated_pgm):
    model = simulated_pgm / "out" / "model.pt"
    procs = []
    for name, extra in (("a", []), ("b", []), ("basal", ["--class-proportions", "Basal=1"])):
        p = start_process([PY, "-m", "fedsynth", "synthesize", "--model", str(model), "--n", "40", "--seed", "3",
                           "--outdir", str(simulated_pgm / name), *extra], simulated_pgm, f"syn_{name}")
        p.rank = name
        procs.append(p)
    assert wait_all(procs, 120) == [0, 0, 0], describe(procs)
    a = (simulated_pgm / "a" / "synthetic.csv").read_bytes()
    assert a == (simulated_pgm / "b" / "synthetic.csv").read_bytes()
    basal = pd.read_csv(simulated_pgm / "basal" / "synthetic.csv")
    assert set(basal["label"]) == {"Basal"} and len(basal) == 40


# ------------------------------------------------------- (d) bad parameters
BAD = [
    (["--pgm-bins", "1"], "--pgm-bins must be in 2..16"),
    (["--pgm-bins", "40"], "--pgm-bins must be in 2..16"),
    (["--pgm-fine-bins", "5"], "--pgm-fine-bins must be in 6..4096"),
    (["--pgm-range", "5,1"], "--pgm-range must be LO,HI with finite LO < HI"),
    (["--pgm-range", "zero,ten"], "--pgm-range must be LO,HI (two numbers"),
    (["--pgm-split", "0.5,0.5"], "--pgm-split must be EDGES,MARGINALS,PAIRS"),
    (["--pgm-split", "0,1,1"], "--pgm-split: the edges and label x gene shares"),
    (["--pgm-iters", "0"], "--pgm-iters must be >= 1"),
    (["--pgm-block", "1"], "--pgm-block must be >= 2"),
]


@pytest.mark.multiprocess
@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_pgm_parameters_are_one_line_errors(tmp_path, extra, message):
    out = tmp_path / "out"
    p = start_process([PY, "-m", "fedsynth", "simulate", "--data", str(BUNDLED), "--label-column", "pam50",
                       "--meta-columns", "age", "--generator", "pgm", "--outdir", str(out), *extra],
                      tmp_path, "simulate", new_session=True)
    p.rank = "simulate"
    assert wait_all([p], 120) == [2], describe([p])
    lines = [ln for ln in p.stderr_text().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("fedsynth: error:")]
    assert len(errors) == 1 and message in errors[0], p.stderr_text()
    assert "Traceback" not in p.stderr_text()
    assert not out.exists() or not any(out.iterdir())


def test_unreachable_budget_refuses_before_any_release():
    with pytest.raises(pgm.ParameterError):
        pgm.parse_split("a,b,c")
    from fedsynth.errors import BudgetError

    with pytest.raises(BudgetError, match="raise --epsilon"):
        pgm.plan(pgm.PGMConfig(), 0.001, 1e-5, "log")
    z = pgm.plan(pgm.PGMConfig(), 1.0, 1e-5, "counts")
    assert set(z) == set(pgm.RELEASES) | {"log library size mean", "log library size spread"}
    no_tree = pgm.plan(pgm.PGMConfig(tree=False), 1.0, 1e-5, "log")
    assert set(no_tree) == set(pgm.RELEASES[:2])
    # dropping the pair release leaves more budget for the others
    assert no_tree["label x gene marginals"] < z["label x gene marginals"]


def test_release_split_shares_and_spends_the_budget():
    from fedsynth.privacy.accounting import Mechanism, compose, plan_release_split

    weights = {"a": 0.3, "b": 0.6, "c": 0.1}
    z = plan_release_split(1.0, 1e-5, weights)
    # zCDP shares rho_i = 1 / (2 z_i^2) in the proportions of the weights
    rho = {k: 1 / (2 * v**2) for k, v in z.items()}
    for k in weights:
        assert rho[k] / sum(rho.values()) == pytest.approx(weights[k] / sum(weights.values()), rel=1e-9)
    spent = compose([Mechanism(k, v) for k, v in z.items()], 1e-5)
    assert 0.98 < spent <= 1.0


@pytest.mark.parametrize("epsilon,tol", [(None, 0.002), (1.0, 0.03)])
def test_block_fit_reproduces_a_known_distribution(epsilon, tol):
    """The known model is a cone over the forest {g0 - g1 - g2, g3}: fitted as two blocks, it is recovered."""
    joint = _known_distribution()
    n = 20_000
    lg, pairs = _tables(joint, n)
    sd_m = sd_p = 1.0
    if epsilon is not None:
        z = pgm.plan(pgm.PGMConfig(), epsilon, 1e-5, "log")
        sd_m, sd_p = z["label x gene marginals"] * 2.0, z["gene pair marginals"] * math.sqrt(len(TREE))
        rng = np.random.default_rng(3)
        lg = lg + rng.normal(0, sd_m, lg.shape)
        pairs = pairs + rng.normal(0, sd_p, pairs.shape)
    chains = [np.array([0, 1, 2]), np.array([3])]
    assert pgm.chain_pairs(chains) == TREE
    fitted = pgm.fit_blocks(lg, sd_m, chains, pairs, sd_p, n, 2000)
    state = {"phi": fitted["phi"], "psi": fitted["psi"], "tree": np.asarray(TREE)}
    model = _model_joint(state)
    assert model.sum() == pytest.approx(1.0)
    assert 0.5 * np.abs(model - joint).sum() < tol
    # P(y) is the mean of the blocks' own label marginals
    per_block = [fitted["label_gene"][0].sum(axis=1), fitted["label_gene"][3].sum(axis=1)]
    assert np.allclose(model.sum(axis=(1, 2, 3, 4)), np.mean(per_block, axis=0) / n, atol=1e-6)


def test_chains_cover_every_gene_once_in_equal_blocks():
    rng = np.random.default_rng(1)
    tables = rng.uniform(0, 30, (23, 4, 3))
    chains = pgm.choose_chains(tables, 5)
    assert [len(c) for c in chains] == [5, 5, 5, 4, 4]
    assert sorted(np.concatenate(chains).tolist()) == list(range(23))
    assert len(pgm.chain_pairs(chains)) == 23 - 5
    sim, _ = pgm._similarity(tables)
    # the greedy path takes the most similar pair first
    iu, ju = np.triu_indices(23, 1)
    k = int(np.argmax(sim[iu, ju]))
    path = np.concatenate(chains)
    pos = {int(v): i for i, v in enumerate(path)}
    assert abs(pos[int(iu[k])] - pos[int(ju[k])]) == 1


@pytest.mark.multiprocess
def test_simulate_pgm_in_blocks_releases_and_accounts_the_chain_pairs(tmp_path):
    """G > --pgm-block: 3 processes release only the G - m chain pairs, with noise z_3 sqrt(G - m) sqrt(k/(k-t))."""
    block = 20
    cmd = [PY, "-m", "fedsynth", "simulate", "--data", str(BUNDLED), "--label-column", "pam50",
           "--meta-columns", "age", "--site-column", "site", "--sites", "3", "--generator", "pgm",
           "--epsilon", "1", "--pgm-iters", "100", "--pgm-block", str(block), "--outdir", str(tmp_path / "out")]
    p = start_process(cmd, tmp_path, "simulate", new_session=True)
    p.rank = "simulate"
    assert wait_all([p], 550) == [0], describe([p])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["models_identical"] is True and 0.9 < run["epsilon_spent"] <= 1.0
    blob = load_blob(tmp_path / "out" / "model.pt")
    G = len(blob["genes"])
    m = math.ceil(G / block)
    assert m >= 2 and blob["generator_params"]["fit_blocks"] == m
    tree = blob["state_dict"]["tree"].numpy()
    assert tree.shape == (G - m, 2) and blob["state_dict"]["released_pairs"].shape[0] == G - m
    from fedsynth.privacy.release import ReleasePlan, with_record_count

    # the run's plan: the record count first, then pgm's releases (pgm.plan alone leaves the count out)
    z = ReleasePlan.calibrate(with_record_count(pgm.release_specs(pgm.PGMConfig(block=block), G, "log")),
                              epsilon=1.0, delta=run["delta"]).multipliers
    assert blob["dp"]["noise_multipliers"] == pytest.approx(z)
    # the record gives the guaranteed z * Delta and the noise the fit saw: all k sites' draws,
    # sqrt(k / (k - t)) times that (t = 1 by default at k = 3)
    k, t = blob["dp"]["k"], blob["dp"]["max_colluders"]
    assert (k, t) == (3, 1)
    assert blob["dp"]["noise_std"]["gene pair marginals"] == pytest.approx(z["gene pair marginals"] * math.sqrt(G - m))
    assert blob["dp"]["released_noise_std"]["gene pair marginals"] == pytest.approx(
        z["gene pair marginals"] * math.sqrt(G - m) * math.sqrt(k / (k - t)))
    # every gene in exactly one chain: each is a child at most once, m chain roots
    assert len(set(tree[:, 1].tolist())) == G - m
