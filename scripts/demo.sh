#!/usr/bin/env bash
# Set up .venv, then run the main job on the bundled real data: the three
# largest TCGA-BRCA tissue source sites train one DP class-conditional
# Gaussian (the default generator) at epsilon 1 as three processes over one
# authenticated CrypTen session.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
outdir="${1:-$root/results/demo}"
exec "$root/.venv/bin/fedsynth" simulate \
  --data "$root/data/brca_pam50_sites.csv" --label-column pam50 --meta-columns age \
  --site-column site --sites 3 --epsilon 1 --outdir "$outdir" "${@:2}"
