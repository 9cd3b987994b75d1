#!/usr/bin/env bash
# Copy the campaign's small files (never checkpoints or locks) from the folder it
# trains in, then rebuild the report from the copies, as tests/test_results.py does.
#   docs/results/ptb-paper-schedule/update.sh [CAMPAIGN_DIR]   (default ~/rrnn-runs/ptb-paper-schedule)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:-$HOME/rrnn-runs/ptb-paper-schedule}"
mkdir -p "$here/runs"
rsync -a --delete --exclude '*.pt' --exclude '.lock' --exclude '*.tmp*' "$src/" "$here/runs/"
rrnn report "$here/runs" --out "$here"
