#!/usr/bin/env bash
# The ptb-paper-schedule campaign (issue 17). Resumes where it stopped: run it again.
# The plain restricted LSTM diverges at lr 10 (r = 0.5, seeds 1 and 2, in epoch 1), so the
# plain LSTM pairs are also run at lr 1, the paper's text.
cd ~/rrnn-runs && . venv/bin/activate && export RRNN_DATA_DIR=/work/shared/data
rrnn sweep --out ~/rrnn-runs/ptb-paper-schedule --datasets ptb --lrs 10 --epochs 100 --patience 10 --precision fp32 --prune-schedule cubic --compress-ramp 0.05 --compress-end 0.1 --jobs 2 --threads 1 \
 --grid "cells=lstm sharing-rates=0,0.5 variants=plain" \
 --grid "cells=lstm sharing-rates=0,0.5 variants=tied-dropout" \
 --grid "cells=lstm sharing-rates=0,0.5 variants=plain lrs=1" \
 --grid "cells=lstm sharing-rates=0.9,1 variants=plain" \
 --grid "cells=gru,rnn sharing-rates=0 variants=plain" \
 --grid "cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss" \
 --grid "cells=lstm sharing-rates=0.9,1 variants=plain lrs=1" \
 --grid "cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss lrs=1" \
 --grid "cells=lstm sharing-rates=0.5 variants=plain lrs=1 seeds=2" "$@"
