"""fedsynth's Galaxy tools in a real Galaxy server (see galaxy_harness.py).

- ``test_planemo_lint``: planemo lint, failing on warnings;
- ``test_galaxy_tool_test[TOOL-INDEX]``: every ``<test>`` of every tool, run
  by ``galaxy-tool-test`` against a throw-away Galaxy on a free 127.0.0.1
  port (all tools' tests are submitted together, then checked one by one);
- ``test_three_site_session``: three ``fedsynth_train`` jobs of one Galaxy
  join one session and end with identical weights.

Galaxy and planemo are installed into ``~/.cache/fedsynth-galaxy-26.1.2/``
(or ``$GALAXY_HOME``) by ``scripts/install_galaxy.sh`` on first use (a few
minutes, ~1.7 GB); the server is stopped by PID when the module ends, also on
failure. Set ``FEDSYNTH_SKIP_GALAXY=1`` to skip this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import galaxy_harness as gh  # noqa: E402

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(os.environ.get("FEDSYNTH_SKIP_GALAXY") == "1", reason="FEDSYNTH_SKIP_GALAXY=1"),
    # setup (install on a fresh machine, server start, every tool test) is timed with the first test
    pytest.mark.timeout(2400),
]

EXPECTED = gh.expected_tests()


def _report(config, line: str) -> None:
    """Print ``line`` to the terminal now, past pytest's output capture."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    tr = config.pluginmanager.get_plugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        if tr is not None:
            tr.write_line(line)
        else:
            print(line, flush=True)


@pytest.fixture(scope="module")
def galaxy_installed():
    gh.ensure_installed()


@pytest.fixture(scope="module")
def galaxy(galaxy_installed, tmp_path_factory):
    server = gh.GalaxyServer(tmp_path_factory.mktemp("galaxy-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tool_test_results(galaxy, tmp_path_factory, pytestconfig):
    t0 = time.monotonic()
    res = galaxy.run_tool_tests(tmp_path_factory.mktemp("tool-tests"), parallel=2)
    _report(pytestconfig, f"galaxy tool tests: {res['passed']} passed, {res['failed']} failed "
                          f"({time.monotonic() - t0:.0f}s)")
    return {(r["tool_id"], r["index"]): r for r in res["results"]}


def test_planemo_lint(galaxy_installed):
    res = gh.lint()
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("tool_id,index", EXPECTED, ids=[f"{t}-{i}" for t, i in EXPECTED])
def test_galaxy_tool_test(tool_test_results, tool_id, index):
    r = tool_test_results.get((tool_id, index))
    assert r is not None, f"{tool_id} test {index} was not run (see galaxy-tool-test's log)"
    assert r["status"] == "success", f"{tool_id} test {index}: {r['status']}\n{r['problems']}\n{r['job_stderr']}"


def test_every_tool_has_tests():
    tools = {t for t, _ in EXPECTED}
    assert tools == set(gh.TOOL_IDS)


def test_three_site_session(galaxy, tool_test_results, tmp_path):
    """Three Galaxy jobs (ranks 0, 1, 2) join one session and end with the same model."""
    res = gh.three_site_session(galaxy, tmp_path)
    assert set(res["states"].values()) == {"ok"}
    assert res["identical"], "the three sites ended with different weights"
    for rank, run in enumerate(res["runs"]):
        assert run["rank"] == rank
        # rank and name only: no site's record count leaves it; N is the released noisy total
        assert [sorted(s) for s in run["sites"]] == [["name", "rank"]] * 3
        assert abs(run["dp"]["n_total"] - 48) < 6 * run["dp"]["n_total_sd"]
        assert run["dp"]["k"] == 3 and run["epsilon"] == 1.0 and run["private"] is True
    assert [s["name"] for s in res["runs"][0]["sites"]] == ["BH", "A8", "A2"]
    assert all(m["dp"]["k"] == 3 for m in res["models"])
