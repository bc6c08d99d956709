#!/usr/bin/env bash
# Galaxy CI: lint the tools, start a real Galaxy on a free 127.0.0.1 port, run
# every tool test (galaxy-tool-test), run three fedsynth_train jobs that join
# one session, print "N passed, N failed", stop the server by PID.
#
# Installs the project (.venv, scripts/setup.sh) and Galaxy + planemo
# (~/.cache/fedsynth-galaxy-26.1.2/ or $GALAXY_HOME, scripts/install_galaxy.sh)
# on first use. Options are passed on to tests/galaxy/galaxy_harness.py
# (--keep, --workdir DIR, --parallel N, --skip-session). The same checks run under pytest as
# tests/galaxy/test_galaxy_tools.py (part of ./scripts/test.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
./scripts/install_galaxy.sh
exec .venv/bin/python tests/galaxy/galaxy_harness.py "$@"
