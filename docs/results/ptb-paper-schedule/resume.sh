#!/usr/bin/env bash
# Resume what is left of the campaign on two cores: two lanes of --jobs 1 sweeps,
# each skipping the run the other is training (run locks); a finished or stopped
# run is skipped too, so this is safe to start at every session.
#   lane 1: the compressed runs at lr 1 (low rank), then the tied-dropout pair
#   lane 2: the tied-dropout pair, then the plain LSTM at r = 0.9, 1 and lr 10
cd ~/rrnn-runs
tied="cells=lstm sharing-rates=0,0.5 variants=tied-dropout"
lane() { for grid in "$@"; do ./session.sh --grid "$grid" --jobs 1; done; }
lane "cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss lrs=1" "$tied" &
sleep 90  # lane 1 has taken its run
lane "$tied" "cells=lstm sharing-rates=0.9,1 variants=plain" &
wait
