#!/usr/bin/env bash
# WikiText-2 first look (issue 17, item 5): one epoch of the plain LSTM at r = 0 and 0.5.
cd ~/rrnn-runs && . venv/bin/activate && export RRNN_DATA_DIR=/work/shared/data
rrnn sweep --out ~/rrnn-runs/wt2-first-look --datasets wikitext-2 --cells lstm \
  --sharing-rates 0,0.5 --variants plain --lrs 1 --epochs 1 --precision fp32 --jobs 1 --threads 1 "$@"
