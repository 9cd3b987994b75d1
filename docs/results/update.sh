#!/usr/bin/env bash
# Copy a campaign's small files (never checkpoints or locks; only runs that have
# finished an epoch) from the folder it trains in into docs/results/NAME/runs,
# then rebuild the report there from the copies, as tests/test_results.py does.
# A run the campaign folder lacks, or has trained fewer epochs than the committed
# copy (a fresh machine, a lost checkpoint), stays as committed: see sync.py.
#   docs/results/update.sh NAME [CAMPAIGN_DIR]   (default ~/rrnn-runs/NAME)
set -euo pipefail
name="${1:?usage: docs/results/update.sh NAME [CAMPAIGN_DIR]}"
dir="$(cd "$(dirname "$0")" && pwd)"
src="${2:-$HOME/rrnn-runs/$name}"
python3 "$dir/sync.py" update "$src" "$dir/$name/runs"
rrnn report "$dir/$name/runs" --out "$dir/$name"
