#!/usr/bin/env bash
# Resume what is left of the campaign on two cores: two lanes of --jobs 1 sweeps,
# each skipping the run the other is training (run locks); a finished or stopped
# run is skipped too, so this is safe to start at every session. On a fresh
# machine, first docs/results/restore.sh ptb-paper-schedule (README, "Setting it up again").
#   lane 1: RLSTM r = 0.3 at lr 1 (claim 3's GRU half), the plain LSTM r = 0.9 at lr 10,
#           then the tied-dropout pair
#   lane 2: the classical LSTM's second seed at lr 1 (claim 1), the compressed runs
#           at lr 1 (low rank is left), then the tied-dropout pair
cd ~/rrnn-runs
tied="cells=lstm sharing-rates=0,0.5 variants=tied-dropout"
lane() { for grid in "$@"; do ./session.sh --grid "$grid" --jobs 1; done; }
lane "cells=lstm sharing-rates=0.3 variants=plain lrs=1" "cells=lstm sharing-rates=0.9,1 variants=plain" "$tied" &
sleep 90  # lane 1 has taken its run
lane "cells=lstm sharing-rates=0 variants=plain lrs=1 seeds=2" \
  "cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss lrs=1" "$tied" &
wait
