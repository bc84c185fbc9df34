#!/usr/bin/env bash
# The speedrun on a single GPU: a d12 model (about 1/4 of the d20 speedrun's compute per token, and one GPU instead
# of eight). Same stages and report as runs/speedrun.sh; any of its settings can be passed in the environment.
#   bash runs/speedrun_1gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=1 NANOCHAT_PROFILE=${NANOCHAT_PROFILE:-d12} exec bash runs/speedrun.sh
