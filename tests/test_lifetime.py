"""The lifetime ledger: a second run sees the first's spend; over the cap is refused before any release."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedsynth.errors import BudgetError
from fedsynth.privacy.accounting import Mechanism, compose
from fedsynth.privacy.lifetime import LEDGER, LifetimeLedger
from testkit import BUNDLED, PARTY_ENV, REPO

IDS = [f"TCGA-XX-{i:04d}" for i in range(100)]
RUN = [Mechanism("counts", 4.0), Mechanism("dp-sgd", 1.2, 0.1, 50)]


def _open_ledger(args):
    directory, go = args
    go.wait()
    ledger = LifetimeLedger(directory, IDS)
    return ledger.patients


def test_sites_starting_together_share_one_whole_salt(tmp_path):
    """The sites of one simulate share a ledger directory and create it at once (a CI failure:
    the loser of the salt's O_EXCL race stopped with 'cannot use it (File exists)')."""
    import multiprocessing as mp

    for attempt in range(3):
        directory = tmp_path / f"race{attempt}"
        with mp.Manager() as manager:
            go = manager.Event()
            with mp.get_context("fork").Pool(6) as pool:
                pending = pool.map_async(_open_ledger, [(directory, go)] * 6)
                go.set()
                views = pending.get(timeout=60)
        assert all(v == views[0] for v in views)  # one salt: every site hashes a patient alike
        assert len((directory / "salt").read_bytes()) == 32
        assert sorted(p.name for p in directory.iterdir()) == ["salt"]  # no temporary left behind


def test_a_salt_published_between_check_and_create_is_used(tmp_path, monkeypatch):
    """The race made deterministic: the salt appears after this process found it missing."""
    import pathlib

    (tmp_path / "salt").write_bytes(b"s" * 32)
    real_exists = pathlib.Path.exists
    monkeypatch.setattr(pathlib.Path, "exists", lambda self: False if self.name == "salt" else real_exists(self))
    late = LifetimeLedger(tmp_path, IDS).patients
    monkeypatch.undo()
    assert late == LifetimeLedger(tmp_path, IDS).patients
    assert (tmp_path / "salt").read_bytes() == b"s" * 32


def test_spend_follows_the_patients_across_runs_and_splits(tmp_path):
    first = LifetimeLedger(tmp_path, IDS[:60])
    info = first.begin(RUN, delta=1e-5, limit=None, generator="cvae", private=True)
    assert info["spent_before"] == 0.0 and info["spent_after"] == pytest.approx(compose(RUN, 1e-5))
    for m in RUN:
        for _ in range(m.steps):
            first.record(m.name, m.noise_multiplier, m.sample_rate)
    once = compose(RUN, 1e-5)
    # the same patients split differently (half of them in a new run) still carry the first run's spend
    resplit = LifetimeLedger(tmp_path, IDS[30:90])
    assert resplit.spent(1e-5) == pytest.approx(once, rel=1e-6)
    assert LifetimeLedger(tmp_path, IDS[60:]).spent(1e-5) == 0.0  # patients the first run never used
    twice = resplit.spent(1e-5, RUN)
    assert twice > once
    with pytest.raises(BudgetError, match="lifetime-epsilon"):
        resplit.begin(RUN, delta=1e-5, limit=0.5 * (once + twice), generator="cvae", private=True)
    text = (tmp_path / LEDGER).read_text()
    assert sum(json.loads(line)["kind"] == "run" for line in text.splitlines()) == 1  # the refused run wrote nothing
    assert not any(i in text for i in IDS)  # salted hashes only
    assert (tmp_path / "salt").stat().st_mode & 0o077 == 0


def test_a_run_without_dp_exhausts_the_lifetime_budget(tmp_path):
    led = LifetimeLedger(tmp_path, IDS)
    info = led.begin(RUN, delta=1e-5, limit=None, generator="gaussian", private=False)
    assert info["unbounded"] is True and info["spent_after"] is None
    json.dumps(info, allow_nan=False)  # run.json is strict JSON
    led.record("counts", 0.0, 1.0)
    with pytest.raises(BudgetError):
        LifetimeLedger(tmp_path, IDS[:10]).begin(RUN, delta=1e-5, limit=100.0, generator="cvae", private=True)


def test_a_torn_last_line_is_the_crash_and_is_ignored(tmp_path):
    led = LifetimeLedger(tmp_path, IDS)
    led.begin(RUN[:1], delta=1e-5, limit=None, generator="gaussian", private=True)
    led.record("counts", 4.0, 1.0)
    with open(tmp_path / LEDGER, "a") as f:
        f.write('{"kind": "release", "run": "x", "na')
    assert LifetimeLedger(tmp_path, IDS).spent(1e-5) == pytest.approx(compose(RUN[:1], 1e-5))


@pytest.mark.multiprocess
def test_second_run_sees_the_first_and_over_the_cap_is_refused(tmp_path):
    ledger = tmp_path / "ledger"

    def simulate(out, *extra):
        return subprocess.run([sys.executable, "-m", "fedsynth", "simulate", "--data", str(BUNDLED), "--label-column",
                               "pam50", "--meta-columns", "age", "--site-column", "site", "--sites", "2",
                               "--generator", "gaussian", "--holdout", "0", "--ledger-dir", str(ledger),
                               "--outdir", str(out), *map(str, extra)],
                              env=PARTY_ENV, cwd=REPO, capture_output=True, text=True, timeout=600)

    first = simulate(tmp_path / "a", "--epsilon", 1)
    assert first.returncode == 0, first.stderr[-2000:]
    lines = (ledger / LEDGER).read_text().splitlines()
    # 2 sites x (the record count + the gaussian's 6 releases: 50 genes, no selection)
    assert sum(json.loads(x)["kind"] == "release" for x in lines) == 2 * 7
    first_run = json.loads((tmp_path / "a" / "run.json").read_text())
    spent = [s["spent_after"] for s in first_run["site_lifetime"].values()]
    assert all(0.98 < x <= 1.0 for x in spent), spent  # this run's epsilon, from an empty ledger
    # two runs at epsilon 1 compose (exactly, Gaussian DP) to about 1.47 for the same patients: a cap of 1.3 refuses
    # the second
    second = simulate(tmp_path / "b", "--epsilon", 1, "--lifetime-epsilon", 1.3)
    assert second.returncode != 0
    assert "lifetime-epsilon 1.3" in second.stderr and "Refused before any release" in second.stderr
    assert not (tmp_path / "b" / "model.pt").exists()
    assert (ledger / LEDGER).read_text().splitlines() == lines  # nothing released, nothing recorded
    third = simulate(tmp_path / "c", "--epsilon", 0.5, "--lifetime-epsilon", 2)
    assert third.returncode == 0, third.stderr[-2000:]
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["dp"]["epsilon"] == 0.5
    for site in run["site_lifetime"].values():  # the second run sees the first's spend
        assert site["spent_before"] == pytest.approx(spent[0], rel=1e-6) and site["limit"] == 2
        assert site["spent_before"] < site["spent_after"] <= 2 and site["remaining"] == 2 - site["spent_after"]
