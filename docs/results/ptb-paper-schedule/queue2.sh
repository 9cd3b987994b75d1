#!/usr/bin/env bash
# Claim 4's tied-dropout pair (lr 10) onto the cores as they free up: one --jobs 1
# sweep once the seed-2 run has stopped, a second once the compressed runs' sweep
# (pid $1) has ended; each skips the run the other is training.
cd ~/rrnn-runs
grid="cells=lstm sharing-rates=0,0.5 variants=tied-dropout"
first=ptb-paper-schedule/ptb-lstm-r0.5-plain-lr1-authors-seed2/summary.json
until grep -qE '"status": "(early-stopped|completed|diverged)"' "$first" 2>/dev/null; do sleep 30; done
./session.sh --grid "$grid" --jobs 1 &
while kill -0 "$1" 2>/dev/null; do sleep 30; done
sleep 90  # the first one has taken its run
./session.sh --grid "$grid" --jobs 1
wait
