#!/bin/bash
# The one-GPU mini speedrun (measured on an H100 80GB): tokenizer -> base (d12, a short horizon) -> base eval -> SFT
# -> chat eval -> report -> one answer, with runs/speedrun.sh itself, offline. It needs no network and no shared data
# folder: what it reads lies in .gpudata/ (local, not committed):
#   .gpudata/shards/*.parquet   pretraining shards (the last one is validation)
#   .gpudata/shared/data/       the chat and eval sets (a copy of ../shared/data's chat/ and eval/ subsets)
#   .gpudata/pylib/rustbpe/     the compiled tokenizer trainer (abi3), built here by runs/setup.sh
# usage, from the repo root: [NANOCHAT_COMMIT=<commit>] [BUDGET_S=565] [OUT=folder] bash bench/mini_speedrun.sh
#   -> $OUT/report/ (report.md, plots), $OUT/speedrun.log; OUT defaults to bench/results/mini_speedrun-DATE
# (NANOCHAT_COMMIT names the commit in the report, for a copy of the tree whose .git is missing or stale)
set -uo pipefail
export PYTHONPATH=$PWD:$PWD/.gpudata/pylib PYTHONUNBUFFERED=1
export NANOCHAT_BASE_DIR=${NANOCHAT_BASE_DIR:-/tmp/nanochat_mini} NANOCHAT_DATA_DIR=$PWD/.gpudata/shared/data
mkdir -p "$NANOCHAT_BASE_DIR/base_data" "${OUT:=bench/results/mini_speedrun-$(date +%F)}"
cp .gpudata/shards/*.parquet "$NANOCHAT_BASE_DIR/base_data/"  # also where the spelling tasks derive their word list
PYTHON=${PYTHON:-python3} NPROC=1 NANOCHAT_PROFILE=d12 SKIP_DOWNLOAD=1 MID=0 \
  BASE_ARGS="--num-iterations ${BASE_STEPS:-80} --eval-every 40 --sample-every 80" \
  BASE_EVAL_ARGS="--max-per-task ${CORE_PER_TASK:-25}" SFT_ARGS="--max-steps ${SFT_STEPS:-80}" \
  CHAT_EVAL_ARGS="--task ARC-Easy,ARC-Challenge,MMLU --max-problems ${CHAT_PROBLEMS:-200}" \
  TOK_EVAL_ARGS="--no-compare-hf" CLI_ARGS="--no-compile" \
  timeout "${BUDGET_S:-420}" bash runs/speedrun.sh > "$OUT/speedrun.log" 2>&1
echo "speedrun.sh exit status $?" >> "$OUT/speedrun.log"
python3 -m nanochat.report generate >> "$OUT/speedrun.log" 2>&1  # again, so a run cut by the budget still has its report
# keep only report.md and the plots beside the log
mkdir -p "$OUT/report" && cp "$NANOCHAT_BASE_DIR"/report/report.md "$NANOCHAT_BASE_DIR"/report/*.png "$OUT/report/"
