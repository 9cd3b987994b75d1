#!/usr/bin/env bash
# Seed a fresh campaign folder with the committed runs' small files (never over a
# file already there), so that a sweep started there skips what has finished.
#   docs/results/restore.sh NAME [CAMPAIGN_DIR]   (default ~/rrnn-runs/NAME)
set -euo pipefail
name="${1:?usage: docs/results/restore.sh NAME [CAMPAIGN_DIR]}"
dir="$(cd "$(dirname "$0")" && pwd)"
python3 "$dir/sync.py" restore "$dir/$name/runs" "${2:-$HOME/rrnn-runs/$name}"
