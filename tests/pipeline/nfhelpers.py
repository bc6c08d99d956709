"""Helpers for the pipeline tests: they run the REAL Nextflow on main.nf.

Nextflow is `.venv/bin/nextflow`, put there by scripts/install_nextflow.sh
(jars from Maven Central); the session fixture `nextflow` runs the installer
if it is missing, so `./scripts/test.sh` works on a fresh machine. Every
`nextflow run` gets its own launch directory (its own .nextflow/ cache and
work/) and is started in its own process group, killed by that PID if it
outlives its deadline.

The tests/nf-test/*.nf.test specs mirror these tests for users who run
nf-test; this CI runs the pytest twins below (nf-test cannot be installed
here).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAIN_NF = REPO / "main.nf"
NEXTFLOW = REPO / ".venv" / "bin" / "nextflow"
DEMO = REPO / "data" / "brca_pam50_sites.csv"
PAM50 = {"LumA", "LumB", "Basal", "Her2", "NormalLike"}

#: Environment of every `nextflow run`: offline, no ANSI log, one thread per
#: task process (2-core machine), a modest JVM heap.
NXF_ENV = dict(
    os.environ,
    NXF_OFFLINE="true",
    NXF_DISABLE_CHECK_LATEST="true",
    NXF_PLUGINS_DEFAULT="false",
    NXF_ANSI_LOG="false",
    NXF_OPTS="-Xms64m -Xmx1g",
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
    OPENBLAS_NUM_THREADS="1",
    PYTHONNOUSERSITE="1",
)
for _k in ("NXF_WORK", "NXF_CACHE_DIR", "NXF_PARAMS_FILE", "RENDEZVOUS", "WORLD_SIZE", "RANK", "FEDSYNTH_SITE"):
    NXF_ENV.pop(_k, None)

#: What a Java/Groovy stack trace looks like in Nextflow's output. (Nextflow
#: may print a one-line "WARN: Got an interrupted exception while taking agent
#: result | java.lang.InterruptedException" while it aborts: not a trace.)
JAVA_TRACE = re.compile(r"^\s+at [\w.$]+\(.*\)$|Exception in thread|^Caused by: (java|groovy|nextflow)\.", re.M)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_secret(path: Path, text: str | None = None) -> Path:
    """A session secret file, mode 600."""
    import secrets

    path = Path(path)
    path.write_text((text or secrets.token_hex(32)) + "\n")
    os.chmod(path, 0o600)
    return path


@dataclass
class NfRun:
    """One finished `nextflow run`: exit code, combined output, where it ran."""

    args: list
    cwd: Path
    returncode: int
    output: str
    seconds: float

    def processes(self, status: str) -> list[str]:
        """Names of the tasks Nextflow reported as `Submitted` or `Cached`."""
        return re.findall(rf"{status} process > (\S+)", self.output)

    def explain(self) -> str:
        return f"`nextflow {' '.join(map(str, self.args))}` in {self.cwd} exit {self.returncode}:\n{self.output[-6000:]}"


class NfProcess:
    """A `nextflow run` started in the background (its own process group)."""

    def __init__(self, nextflow: Path, args, cwd: Path, env: dict | None = None):
        self.args = [str(a) for a in args]
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log = self.cwd / "nextflow.out"
        self._fh = open(self.log, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(nextflow), *self.args], cwd=self.cwd, env=env or NXF_ENV,
                                     stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def kill(self) -> None:
        """SIGTERM, then SIGKILL, the process group we started (its id is our child's PID)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float) -> NfRun:
        try:
            self.proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            self._fh.close()
            pytest.fail(f"`nextflow {' '.join(self.args)}` still running after {timeout:g}s; output:\n"
                        + self.log.read_text(errors="replace")[-6000:])
        finally:
            if not self._fh.closed:
                self._fh.close()
        return NfRun(self.args, self.cwd, self.proc.returncode, self.log.read_text(errors="replace"),
                     time.monotonic() - self.t0)


def load_model(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def same_model(a: dict, b: dict) -> bool:
    """Same weights (bit for bit) and the same DP record."""
    import torch

    sa, sb = a["state_dict"], b["state_dict"]
    return (sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
            and a["dp"] == b["dp"])
