#!/bin/bash
# The one-GPU speedrun on a short horizon, every stage: tokenizer -> base (d12) -> base eval -> midtraining -> chat
# eval -> SFT -> chat eval -> RL -> chat eval -> report -> one answer, with runs/speedrun_1gpu.sh itself, offline, then
# one table of every stage's tok/s, MFU and wall time (bench/pipeline_table.py). It needs no network and no shared
# data folder: what it reads lies in $GPUDATA (default .gpudata/, local, not committed):
#   $GPUDATA/shards/*.parquet   pretraining shards (the last one is validation)
#   $GPUDATA/shared/data/       the chat and eval sets (a copy of ../shared/data's chat/ and eval/ subsets)
#   $GPUDATA/pylib/             the compiled tokenizer trainer (rustbpe, abi3) and any package the machine lacks
# usage, from the repo root: [NANOCHAT_COMMIT=<commit>] [BUDGET_S=580] [OUT=folder] bash bench/mini_speedrun.sh
#   -> $OUT/report/ (report.md, plots), $OUT/speedrun.log, $OUT/pipeline.json; OUT defaults to
#      bench/results/mini_speedrun-DATE (NANOCHAT_COMMIT names the commit where the copy's .git is missing or stale)
# The horizon: BASE_STEPS (default 160) optimizer steps of BASE_BATCH (default 131,072) tokens, 21M in all (the
# learning rates scale with the batch); the later stages sized so that every stage fits 10 minutes on one H100.
# Each stage is a process of its own, and on a short horizon compiling costs more than it saves: midtraining (one
# epoch of the small chat mixture, 5 steps) and SFT run eagerly, and chat_eval and chat_rl decode through the eager
# step (their --compile auto, chapter 19b). One H100 at 240 steps and the later stages a little larger ran out of
# time at the first chat evaluation (bench/results/mini_speedrun-2026-12-05/): tokenizer 22 s, pretraining 185 s (65 s
# of steps), base evaluation 75 s, midtraining about 100 s, and GSM8K's 24 problems 111 s, nearly all compiling.
# Validation reads 2M tokens (the default, 42M, re-tokenizes the small validation shard ~70 times per evaluation:
# most of the 220 s of its 353 s that one H200 spent outside the steps), once, at the end.
set -uo pipefail
GPUDATA=${GPUDATA:-.gpudata}
export PYTHONPATH=$PWD:$PWD/$GPUDATA/pylib PYTHONUNBUFFERED=1
export NANOCHAT_BASE_DIR=${NANOCHAT_BASE_DIR:-/tmp/nanochat_mini} NANOCHAT_DATA_DIR=$PWD/$GPUDATA/shared/data
mkdir -p "$NANOCHAT_BASE_DIR/base_data" "${OUT:=bench/results/mini_speedrun-$(date +%F)}"
cp "$GPUDATA"/shards/*.parquet "$NANOCHAT_BASE_DIR/base_data/"  # also where the spelling tasks derive their word list
PYTHON=${PYTHON:-python3} NPROC=1 NANOCHAT_PROFILE=d12 SKIP_DOWNLOAD=1 MID=1 RL=1 \
  BASE_ARGS="--num-iterations ${BASE_STEPS:-160} --total-batch-size ${BASE_BATCH:-131072} --eval-every 0 --eval-tokens 2097152 --sample-every -1" \
  BASE_EVAL_ARGS="--max-per-task ${CORE_PER_TASK:-12} --eval-tokens 1048576" MID_ARGS="--max-steps ${MID_STEPS:-60} --compile off" \
  SFT_ARGS="--max-steps ${SFT_STEPS:-20} --compile off" CHAT_EVAL_ARGS="--max-problems ${CHAT_PROBLEMS:-16} --max-new-tokens 128" \
  RL_ARGS="--num-steps ${RL_STEPS:-4} --prompts-per-step 16 --num-samples 8 --max-new-tokens 128 --eval-every -1" \
  TOK_EVAL_ARGS="--no-compare-hf" CLI_ARGS="--max-tokens 64 --no-compile" \
  timeout "${BUDGET_S:-580}" bash runs/speedrun_1gpu.sh > "$OUT/speedrun.log" 2>&1
echo "speedrun.sh exit status $?" >> "$OUT/speedrun.log"
${PYTHON:-python3} -m nanochat.report generate >> "$OUT/speedrun.log" 2>&1  # again, so a run cut by the budget still has its report
${PYTHON:-python3} bench/pipeline_table.py --name mini_speedrun --depth 12 --out "$OUT/pipeline.json"
cp "$NANOCHAT_BASE_DIR/speedrun_times.tsv" "$OUT/" 2>/dev/null  # the stage clock, seconds since the start
# keep only report.md and the plots beside the log
mkdir -p "$OUT/report" && cp "$NANOCHAT_BASE_DIR"/report/report.md "$NANOCHAT_BASE_DIR"/report/*.png "$OUT/report/"
