#!/bin/bash
# Decode speed on one GPU (chapter 82): d20 with random weights, prompt 128, 256 new tokens, batch 1, 8, 32, 64, the
# engine and the naive loop. Result: one JSON line, infer_bench-DATE.json in $OUT (default bench/results/).
# usage, from the repo root: [OUT=folder] bash bench/infer_bench.sh [more infer_bench flags, e.g. --profile-steps 20]
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv 2>/dev/null
python -m nanochat.scripts.infer_bench --depth 20 --device-type cuda --batch-sizes 1,8,32,64 --prompt-len 128 \
    --new-tokens 256 --engine fast,naive --out "${OUT:-bench/results}" "$@"
