#!/usr/bin/env bash
# Resume what is left of the campaign on two cores: two lanes of --jobs 1 sweeps,
# each skipping the run the other is training (run locks); a finished or stopped
# run is skipped too, so this is safe to start at every session. On a fresh
# machine, first docs/results/restore.sh ptb-paper-schedule (README, "Setting it up again").
# `./resume.sh` runs both lanes; `./resume.sh 1` or `./resume.sh 2` one of them.
# From 2026-12-07 (second session; ~/rrnn-runs had survived, checkpoints with it):
# the tied-dropout pair (the order: the r = 0 / 0.5 pairs first; about 100
# epochs each), then low rank at lr 1; ISS at lr 10 first in lane 1 (about 25 epochs).
#   lane 1: ISS at lr 10, the tied pair, low rank at lr 1
#   lane 2: the tied pair, low rank at lr 1
cd ~/rrnn-runs
tied="cells=lstm sharing-rates=0,0.5 variants=tied-dropout"
comp="cells=lstm sharing-rates=0.5 variants=plain"
lane() { for grid in "$@"; do ./session.sh --grid "$grid" --jobs 1; done; }
lane1() { lane "$comp compresses=iss" "$tied" "$comp compresses=lowrank lrs=1"; }
lane2() { lane "$tied" "$comp compresses=lowrank lrs=1"; }
case "${1:-both}" in
  1) lane1 ;;
  2) lane2 ;;
  *) lane1 & sleep 90; lane2 & wait ;;  # lane 1 takes its run before lane 2 looks
esac
