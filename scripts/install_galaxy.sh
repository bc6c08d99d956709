#!/usr/bin/env bash
# Install what the Galaxy tool tests need, outside the project's .venv
# (idempotent; a second run returns at once), into GALAXY_HOME:
#
#   planemo/  planemo + galaxy-tool-util[edam] (planemo lint)
#   venv/     a real Galaxy server from PyPI (galaxy-web-apps and galaxy-app,
#             pinned by the `galaxy` metapackage's own pins) and
#             galaxy-tool-test
#
# GALAXY_HOME defaults to a per-user cache outside the work tree
# (~/.cache/fedsynth-galaxy-26.1.2), so fresh clones on the same machine (CI)
# reuse one install; set GALAXY_HOME=.galaxy to keep it in the project.
#
# The `galaxy` metapackage itself cannot be installed here: it pins a certifi
# release the registry does not serve. So its pins are read from its wheel
# and used as constraints, without that one pin (~100 s cold, ~1.3 GB).
#
# Environment: PYTHON (default python3, >= 3.10), GALAXY_HOME.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
GALAXY_VERSION=26.1.2
GALAXY_HOME="${GALAXY_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/fedsynth-galaxy-$GALAXY_VERSION}"
PLANEMO_VERSION=0.75.47
mkdir -p "$GALAXY_HOME"
GALAXY_HOME="$(cd "$GALAXY_HOME" && pwd)"
pipq() { "$@" --quiet --disable-pip-version-check; }

# bump RECIPE when the install steps change, so existing installs are redone
RECIPE=1
want="galaxy=$GALAXY_VERSION planemo=$PLANEMO_VERSION recipe=$RECIPE"
# machine-local: if GALAXY_HOME is inside the work tree, keep it out of git
[[ -f "$GALAXY_HOME/.gitignore" ]] || printf '*\n' > "$GALAXY_HOME/.gitignore"

# --- planemo (lint) ---------------------------------------------------------
lint="$GALAXY_HOME/planemo"
if [[ "$(cat "$lint/.fedsynth-installed" 2>/dev/null)" != "$want" ]]; then
  echo "install_galaxy: installing planemo $PLANEMO_VERSION into $lint" >&2
  [[ -x "$lint/bin/python" ]] || "$PYTHON" -m venv "$lint"
  pipq "$lint/bin/python" -m pip install --upgrade pip
  pipq "$lint/bin/python" -m pip install "galaxy-tool-util[edam]==$GALAXY_VERSION" "planemo==$PLANEMO_VERSION"
  "$lint/bin/planemo" --version >/dev/null
  echo "$want" > "$lint/.fedsynth-installed"
fi

# --- Galaxy server ----------------------------------------------------------
venv="$GALAXY_HOME/venv"
if [[ "$(cat "$venv/.fedsynth-installed" 2>/dev/null)" != "$want" ]]; then
  echo "install_galaxy: installing Galaxy $GALAXY_VERSION into $venv (~100 s, ~1.3 GB)" >&2
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  pipq "$venv/bin/python" -m pip install --upgrade pip
  meta="$(mktemp -d)"
  trap 'rm -rf "$meta"' EXIT
  pipq "$venv/bin/python" -m pip download --no-deps -d "$meta" "galaxy==$GALAXY_VERSION"
  # every Requires-Dist pin of the metapackage, except certifi (not served here)
  "$venv/bin/python" - "$meta" > "$GALAXY_HOME/constraints.txt" <<'EOF'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/galaxy-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(name).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = line.split(":", 1)[1].strip()
            if not req.lower().startswith("certifi"):
                print(req)
EOF
  pipq "$venv/bin/python" -m pip install -c "$GALAXY_HOME/constraints.txt" \
    "galaxy-web-apps==$GALAXY_VERSION" "galaxy-app==$GALAXY_VERSION" "galaxy-tool-util==$GALAXY_VERSION"
  "$venv/bin/python" -W ignore -c "import galaxy.webapps.galaxy.buildapp" >/dev/null 2>&1 \
    || { echo "install_galaxy: the Galaxy install in $venv does not import" >&2; exit 1; }
  test -x "$venv/bin/galaxy-web" && test -x "$venv/bin/galaxy-tool-test"
  echo "$want" > "$venv/.fedsynth-installed"
fi
echo "install_galaxy: ready ($GALAXY_HOME)" >&2
