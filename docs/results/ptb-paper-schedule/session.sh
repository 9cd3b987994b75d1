#!/usr/bin/env bash
# One session's share of the ptb-paper-schedule campaign: the two runs it can make the most of.
# Same flags as campaign.sh; only the grids differ (a subset of campaign.sh's).
cd ~/rrnn-runs && . venv/bin/activate && export RRNN_DATA_DIR=/work/shared/data
rrnn sweep --out ~/rrnn-runs/ptb-paper-schedule --datasets ptb --lrs 10 --epochs 100 --patience 10 --precision fp32 --prune-schedule cubic --compress-ramp 0.05 --compress-end 0.1 --jobs 2 --threads 1 "$@"
