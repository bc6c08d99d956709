#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
#
# Installs the pinned dependencies of pyproject.toml, then CrypTen 0.4.1 with
# --no-deps: its metadata requires the retired `sklearn` package, which pip
# refuses; its real runtime needs (omegaconf, pyyaml, onnx) are pinned in
# pyproject.toml. fedsynth/federation/crypten_compat.py fixes the rest at import time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
stamp=".venv/.fedsynth-setup"
# the checkout's path is part of the stamp: the editable install points here
want="$({ cat pyproject.toml scripts/setup.sh; echo "$root"; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  python_ready=1
fi
if [[ -z "${python_ready:-}" ]]; then
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
echo "setup: installing pinned dependencies into .venv (torch is ~4 GB on first install)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps crypten==0.4.1
.venv/bin/python -c "import fedsynth.federation.crypten_compat as c; c.import_crypten()"
echo "$want" > "$stamp"
echo "setup: .venv ready" >&2
fi
# Nextflow at .venv/bin/nextflow (jars from Maven Central; instant when present)
if [[ -x "$root/scripts/install_nextflow.sh" ]]; then
  "$root/scripts/install_nextflow.sh" || echo "setup: Nextflow was not installed (see above); the pipeline tests will retry" >&2
fi
