#!/usr/bin/env bash
# Fill both cores with the compressed runs as the running pair frees them:
# one --jobs 1 sweep once the r = 0.9 run has finished, a second once the pair's
# sweep (pid $1) has ended; each skips the runs the other is training.
cd ~/rrnn-runs
grid="cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss lrs=1"
first=ptb-paper-schedule/ptb-lstm-r0.9-plain-lr1-authors-seed1/summary.json
until grep -qE '"status": "(early-stopped|completed|diverged)"' "$first" 2>/dev/null; do sleep 30; done
./session.sh --grid "$grid" --jobs 1 &
while kill -0 "$1" 2>/dev/null; do sleep 30; done
sleep 60  # the first one has taken its run
./session.sh --grid "$grid" --jobs 1
wait
