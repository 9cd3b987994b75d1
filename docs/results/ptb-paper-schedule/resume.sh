#!/usr/bin/env bash
# Resume what is left of the campaign: one --jobs 1 sweep with both threads, each grid
# in turn; a finished, stopped or diverged run is skipped, and a run with a checkpoint
# goes on from it, so this is safe to start at every session. On a fresh machine,
# first docs/results/restore.sh ptb-paper-schedule (README, "Setting it up again").
# From 2026-12-07 (fourth session): no run left can finish within one session as one
# of two 1-thread runs side by side (about 4 minutes an epoch each on the AMD EPYC);
# alone with 2 threads a run takes about 2.3 minutes an epoch there, and about 75 s on
# the Intel Xeon since the fused loss stopped slowing down on subnormal h (26b1353).
# Order (fifth session, after the tied r = 0.5 run): the tied r = 0 run (patience
# should stop it near epoch 62), then low rank at lr 1.
cd ~/rrnn-runs
for grid in "cells=lstm sharing-rates=0 variants=tied-dropout" \
            "cells=lstm sharing-rates=0.5 variants=tied-dropout" \
            "cells=lstm sharing-rates=0.5 variants=plain compresses=lowrank lrs=1"; do
  ./session.sh --grid "$grid" --jobs 1 --threads 2
done
