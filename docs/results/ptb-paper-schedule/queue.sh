#!/usr/bin/env bash
# Start the next grid once the running sweep (pid $1) has ended by itself.
cd ~/rrnn-runs
while kill -0 "$1" 2>/dev/null; do sleep 30; done
exec ./session.sh --grid "cells=lstm sharing-rates=0.5 variants=plain compresses=dense,lowrank,prune,iss lrs=1"
