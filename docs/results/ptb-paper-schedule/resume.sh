#!/usr/bin/env bash
# Resume what is left of the campaign on two cores: two lanes of --jobs 1 sweeps,
# each skipping the run the other is training (run locks); a finished or stopped
# run is skipped too, so this is safe to start at every session. On a fresh
# machine, first docs/results/restore.sh ptb-paper-schedule (README, "Setting it up again").
# Since 2026-12-07 the lanes put first what fits one session (about 30 epochs a run):
#   lane 1: ISS at lr 10 (about 25 epochs), then the tied-dropout pair
#   lane 2: low rank at lr 10 and at lr 1 (50 epochs or more: they finish only where
#           ~/rrnn-runs survives), then the tied pair
cd ~/rrnn-runs
tied="cells=lstm sharing-rates=0,0.5 variants=tied-dropout"
comp="cells=lstm sharing-rates=0.5 variants=plain"
lane() { for grid in "$@"; do ./session.sh --grid "$grid" --jobs 1; done; }
lane "$comp compresses=iss" "$tied" &
sleep 90  # lane 1 has taken its run
lane "$comp compresses=lowrank" "$comp compresses=lowrank lrs=1" "$tied" &
wait
