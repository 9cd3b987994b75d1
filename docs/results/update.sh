#!/usr/bin/env bash
# Copy a campaign's small files (never checkpoints or locks) from the folder it
# trains in into docs/results/NAME/runs, then rebuild the report there from the
# copies, as tests/test_results.py does.
#   docs/results/update.sh NAME [CAMPAIGN_DIR]   (default ~/rrnn-runs/NAME)
set -euo pipefail
name="${1:?usage: docs/results/update.sh NAME [CAMPAIGN_DIR]}"
here="$(cd "$(dirname "$0")" && pwd)/$name"
src="${2:-$HOME/rrnn-runs/$name}"
mkdir -p "$here/runs"
rsync -a --delete --exclude '*.pt' --exclude '.lock' --exclude '*.tmp*' "$src/" "$here/runs/"
rrnn report "$here/runs" --out "$here"
