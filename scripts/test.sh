#!/usr/bin/env bash
# Set up .venv, then run the whole test suite (unit tests and integration
# tests that start real site processes on 127.0.0.1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
