"""Fixtures for the pipeline tests (see nfhelpers.py): the real Nextflow at
.venv/bin/nextflow, installed by scripts/install_nextflow.sh if missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nfhelpers import MAIN_NF, NEXTFLOW, NXF_ENV, REPO, NfProcess


@pytest.fixture(scope="session")
def nextflow() -> Path:
    """Path of a working Nextflow; installs it (scripts/install_nextflow.sh) if missing."""
    if not os.access(NEXTFLOW, os.X_OK):
        r = subprocess.run([str(REPO / "scripts" / "install_nextflow.sh")], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"scripts/install_nextflow.sh failed:\n{r.stdout}\n{r.stderr}"
    r = subprocess.run([str(NEXTFLOW), "-version"], capture_output=True, text=True, timeout=300, env=NXF_ENV)
    assert r.returncode == 0 and "version" in r.stdout, r.stdout + r.stderr
    return NEXTFLOW


@pytest.fixture(scope="session")
def run_nf(nextflow):
    """run_nf(args, cwd, timeout=900) -> NfRun: `nextflow run main.nf ARGS` in its own folder."""
    live: list[NfProcess] = []

    def run(args, cwd: Path, timeout: float = 900, background: bool = False):
        p = NfProcess(nextflow, ["run", MAIN_NF, "-ansi-log", "false", *args], cwd)
        live.append(p)
        return p if background else p.wait(timeout)

    yield run
    for p in live:
        p.kill()
