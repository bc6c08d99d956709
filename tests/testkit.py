"""Shared fixtures for the process-level tests.

Everything here starts *real* OS processes that talk over 127.0.0.1: no socket
or process is mocked. Every process a test starts is registered and, if it is
still alive when the test ends (a failing test, a hung party), killed by its
PID in the fixture's finaliser.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BUNDLED = REPO / "data" / "brca_pam50_sites.csv"
PY = sys.executable

#: Every fedsynth process the tests start (directly, through Nextflow or simulate) keeps its
#: lifetime privacy ledger here, not in the user's ~/.local/share/fedsynth/ledger.
os.environ.setdefault("FEDSYNTH_LEDGER_DIR", tempfile.mkdtemp(prefix="fedsynth-test-ledger-"))

#: Environment for every party / CLI process: one BLAS/OMP thread (2-core box),
#: the repository importable, no user site packages.
PARTY_ENV = dict(
    os.environ,
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
    OPENBLAS_NUM_THREADS="1",
    PYTHONPATH=str(REPO),
    PYTHONNOUSERSITE="1",
)
for _k in ("RENDEZVOUS", "WORLD_SIZE", "RANK", "DISTRIBUTED_BACKEND", "FEDSYNTH_SITE"):
    PARTY_ENV.pop(_k, None)

#: Every Popen started through these helpers, so a finaliser can kill leftovers.
_LIVE: list[subprocess.Popen] = []


def kill_by_pid(proc: subprocess.Popen) -> None:
    """SIGKILL one process we started (by its PID) and reap it.

    A process started with ``new_session=True`` (e.g. ``fedsynth simulate``,
    which starts its own site processes) is killed with its whole process
    group, whose id is that PID.
    """
    if getattr(proc, "own_group", False) and proc.poll() is None:  # still ours: its PID is the group id
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _reap_all() -> None:
    while _LIVE:
        p = _LIVE.pop()
        kill_by_pid(p)
        for fh in (getattr(p, "_stderr_fh", None), getattr(p, "_stdout_fh", None)):
            if fh is not None and not fh.closed:
                fh.close()


@pytest.fixture(autouse=True)
def _kill_leftover_processes():
    """Kill (by PID) any process a test started and left running."""
    yield
    _reap_all()


# ------------------------------------------------------------------ helpers
def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(cmd: list[str], logdir: Path, name: str, *, env: dict | None = None,
                  cwd: Path | None = None, new_session: bool = False) -> subprocess.Popen:
    """Start ``cmd`` with stdout/stderr captured to ``logdir/name.{out,err}``.

    The Popen gets ``stderr_path`` / ``stdout_path`` attributes and
    ``stderr_text()`` / ``stdout_text()`` methods that read what it wrote so far.
    """
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    err_path, out_path = logdir / f"{name}.err", logdir / f"{name}.out"
    err_fh, out_fh = open(err_path, "wb"), open(out_path, "wb")
    proc = subprocess.Popen(cmd, stdout=out_fh, stderr=err_fh, stdin=subprocess.DEVNULL,
                            env=env or PARTY_ENV, cwd=str(cwd or REPO), start_new_session=new_session)
    proc.own_group = new_session
    proc._stderr_fh, proc._stdout_fh = err_fh, out_fh
    proc.stderr_path, proc.stdout_path = err_path, out_path
    proc.stderr_text = lambda: err_path.read_text(errors="replace")
    proc.stdout_text = lambda: out_path.read_text(errors="replace")
    _LIVE.append(proc)
    return proc


def wait_all(procs, timeout: float) -> list[int]:
    """Wait until every process has exited; fail the test (after killing them) at ``timeout``."""
    deadline = time.monotonic() + timeout
    for p in procs:
        left = deadline - time.monotonic()
        try:
            p.wait(timeout=max(left, 0.01))
        except subprocess.TimeoutExpired:
            alive = [q.pid for q in procs if q.poll() is None]
            logs = "\n".join(f"--- pid {q.pid} stderr:\n{q.stderr_text()[-2000:]}" for q in procs)
            for q in procs:
                kill_by_pid(q)
            pytest.fail(f"processes {alive} still running after {timeout:g}s\n{logs}")
    return [p.returncode for p in procs]


def describe(procs) -> str:
    """Exit codes and stderr tails, for assertion messages."""
    return "\n".join(
        f"--- pid {p.pid} exit {p.returncode} stderr:\n{p.stderr_text()[-3000:]}" for p in procs
    )


def write_secret(path: Path, text: str = "correct horse battery staple 0123456789") -> Path:
    path = Path(path)
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path


def train_cmd(rank: int, world_size: int, port: int, secret: Path, data: Path, outdir: Path,
              extra=()) -> list[str]:
    return [PY, "-m", "fedsynth", "train", "--rank", str(rank), "--world-size", str(world_size),
            "--rendezvous", f"tcp://127.0.0.1:{port}", "--secret-file", str(secret),
            "--data", str(data), "--label-column", "label", "--outdir", str(outdir),
            "--no-progress", *map(str, extra)]


def with_classes(extra, datas, label_column: str = "label") -> list[str]:
    """``extra`` plus ``--classes`` (the union of the sites' labels) when DP is on and none is given.

    With DP, ``fedsynth train`` requires the shared vocabulary, as a real
    federation would agree on it out of band.
    """
    extra = [str(a) for a in extra]
    if "--no-dp" in extra or "--classes" in extra:
        return extra
    labels = set()
    for d in datas:
        try:
            labels |= set(pd.read_csv(d, usecols=[label_column], dtype=str)[label_column].dropna())
        except (OSError, ValueError):  # a deliberately bad input file: train's own error is the subject
            return extra
    return [*extra, "--classes", ",".join(sorted(labels))]


def assert_no_counts(record) -> None:
    """Fail if ``record`` (train's run record or model metadata) holds a record-count key anywhere.

    Walks every dict and list. Only the released noisy total (``n_total``)
    may appear; per-site counts are allowed in ``simulate``'s own run
    record only (it holds all the data).
    """
    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                assert k not in ("n", "site_n", "n_samples", "class_counts_exact"), f"count key at {path}.{k}"
                walk(x, f"{path}.{k}")
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]")

    walk(record, "$")


# ----------------------------------------------------------------- fixtures
@pytest.fixture
def secret_file(tmp_path) -> Path:
    """A fresh session secret (40 bytes), mode 0600."""
    return write_secret(tmp_path / "session.key")


@pytest.fixture
def launch_parties(tmp_path):
    """Start ``fedsynth train`` parties; returns a function.

    ``launch(datas, secret, ranks=None, world_size=None, extra=(), port=None,
    secrets=None, outdirs=None)`` starts one process per rank in ``ranks``
    (default: all) and returns the list of Popen objects (stderr captured,
    see :func:`start_process`), with ``.outdir`` and ``.rank`` attributes.
    Leftovers are killed by PID when the test ends.
    """

    def launch(datas, secret, *, ranks=None, world_size=None, extra=(), port=None, secrets=None,
               outdirs=None, tag="run"):
        extra = with_classes(extra, datas)
        k = world_size or len(datas)
        ranks = list(range(k)) if ranks is None else list(ranks)
        port = port or free_port()
        procs = []
        for r in ranks:
            out = Path(outdirs[r]) if outdirs else tmp_path / f"{tag}_out{r}"
            sec = secrets[r] if secrets else secret
            p = start_process(train_cmd(r, k, port, sec, datas[r], out, extra), tmp_path / "logs",
                              f"{tag}_rank{r}")
            p.outdir, p.rank, p.port = out, r, port
            procs.append(p)
        return procs

    return launch


def _site_tables(n_sites: int = 3, per_site: int = 40):
    """Expression + label + site tables of the ``n_sites`` largest sites of the bundled data."""
    from fedsynth.data.io import read_expression

    raw = read_expression(BUNDLED, label_column="pam50", meta_columns=("age",))
    sites = raw.meta["site"].astype(str)
    order = sites.value_counts().sort_values(ascending=False, kind="stable").index[:n_sites]
    parts = []
    for s in order:
        ids = sites.index[sites.to_numpy() == s][:per_site]
        parts.append((s, raw.expr.loc[ids], raw.labels.loc[ids]))
    return parts


@pytest.fixture(scope="session")
def site_data(tmp_path_factory):
    """Three small site CSVs from the real bundled data (3 largest sites, 40 samples each, 50 genes).

    Returns a dict: ``sites`` (list of CSV paths, sample_id,label,genes...),
    ``pooled`` (their concatenation, same format), ``names``, ``n`` (rows per
    site), ``labels`` (the set of labels), ``genes``, and ``with_site``: one
    CSV holding all three sites with ``site``, ``pam50`` and ``age`` columns,
    for ``fedsynth simulate``.
    """
    import pandas as pd

    from fedsynth.data.io import write_table

    d = tmp_path_factory.mktemp("sites")
    parts = _site_tables()
    paths = []
    for i, (name, expr, labels) in enumerate(parts):
        p = d / f"site{i}_{name}.csv"
        write_table(expr, labels, p)
        paths.append(p)
    pooled_expr = pd.concat([e for _, e, _ in parts])
    pooled_labels = pd.concat([lab for _, _, lab in parts])
    pooled = d / "pooled.csv"
    write_table(pooled_expr, pooled_labels, pooled)

    sim = pooled_expr.copy()
    sim.insert(0, "age", 50)
    sim.insert(0, "pam50", pooled_labels.to_numpy())
    sim.insert(0, "site", [name for name, e, _ in parts for _ in range(len(e))])
    sim.index.name = "sample_id"
    with_site = d / "small_with_sites.csv"
    sim.to_csv(with_site)
    return {
        "sites": paths,
        "pooled": pooled,
        "names": [name for name, _, _ in parts],
        "n": [len(e) for _, e, _ in parts],
        "labels": set(map(str, pooled_labels)),
        "genes": list(pooled_expr.columns),
        "with_site": with_site,
    }


@pytest.fixture
def site_csvs(site_data):
    """The three site CSV paths (see :func:`site_data`)."""
    return list(site_data["sites"])


# ------------------------------------------------------- secure-sum parties
def parse_party_args(argv: list[str], **options):
    """The command line :func:`run_secure_sum_parties` gives a party program.

    ``--rank``, ``--world-size``, ``--port``, ``--secret``, ``--out``; each of
    ``options`` (``name=(default, help)``) adds an optional ``--name``.
    """
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world-size", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--out", required=True)
    for name, (default, text) in options.items():
        ap.add_argument(f"--{name}", default=default, help=text)
    return ap.parse_args(argv)


def party_session(a, timeout: float = 90):
    """The :class:`~fedsynth.federation.session.Session` of a party script's arguments (``parse_party_args``)."""
    from fedsynth.federation.session import Session, read_secret

    return Session(a.rank, a.world_size, f"tcp://127.0.0.1:{a.port}", read_secret(a.secret),
                   rendezvous_timeout=timeout, step_timeout=timeout)


def run_secure_sum_parties(workdir: Path, k: int, timeout: float = 180.0, script: str = "test_secure_sum.py") -> list[dict]:
    """Run ``tests/<script>`` (default ``test_secure_sum.py``) as ``k`` real party processes; return their records."""
    import numpy as np

    workdir = Path(workdir)
    secret = write_secret(workdir / "session.key")
    port = free_port()
    procs, outs = [], []
    for r in range(k):
        out = workdir / f"party{r}.npz"
        cmd = [PY, str(TESTS / script), "--rank", str(r), "--world-size", str(k),
               "--port", str(port), "--secret", str(secret), "--out", str(out)]
        procs.append(start_process(cmd, workdir, f"party{r}"))
        outs.append(out)
    try:
        codes = wait_all(procs, timeout)
        assert codes == [0] * k, describe(procs)
        return [dict(np.load(o)) for o in outs]
    finally:
        for p in procs:
            kill_by_pid(p)


@pytest.fixture(scope="session")
def secure_sum_3(tmp_path_factory):
    """Records of one 3-party secure-sum session (see tests/test_secure_sum.py)."""
    return run_secure_sum_parties(tmp_path_factory.mktemp("securesum3"), 3)


@pytest.fixture(scope="session")
def secure_sum_1(tmp_path_factory):
    """Records of one single-party (world size 1) secure-sum session."""
    return run_secure_sum_parties(tmp_path_factory.mktemp("securesum1"), 1)


# ------------------------------------------------ the multiprocess marker is kept honest
_started: list[int] = []
_popen_init = subprocess.Popen.__init__


#: what marks a command as one of ours: a site or CLI process, a party script, Nextflow, Galaxy
_OURS = ("fedsynth", "nextflow", "planemo", "galaxy", str(TESTS))


def _counting_init(self, *args, **kwargs):
    cmd = args[0] if args else kwargs.get("args", "")
    words = [cmd] if isinstance(cmd, (str, bytes, os.PathLike)) else list(cmd)
    if any(mark in str(w) for w in words for mark in _OURS):  # not libraries' own helpers
        _started.append(1)
    return _popen_init(self, *args, **kwargs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """Count the processes an unmarked test starts (set-up of its fixtures included)."""
    _started.clear()
    subprocess.Popen.__init__ = _counting_init
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a test that starts a process without ``@pytest.mark.multiprocess``.

    ``-m "not multiprocess"`` promises the unit tests alone; a test that
    starts site processes, Nextflow or Galaxy must say so.
    """
    try:
        result = yield
    finally:
        subprocess.Popen.__init__ = _popen_init
    if _started and item.get_closest_marker("multiprocess") is None:
        pytest.fail(f"{item.nodeid} started {len(_started)} process(es) but is not marked "
                    "@pytest.mark.multiprocess", pytrace=False)
    return result
