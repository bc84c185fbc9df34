#!/bin/bash
# Every stage after pretraining on one GPU, each its real script on a short horizon at one depth, then the SFT model
# served under load: base_train -> mid_train -> chat_sft (steady tok/s and MFU of each, same micro-batch of 32 rows of
# 2048 tokens, one micro-step per optimizer step) -> chat_web with that checkpoint + bench/serve_load.py at 32 and 128
# streaming clients -> one table, post_train-DATE.json in $OUT.
#
# Reads what a speedrun would have by then: shards in $NANOCHAT_BASE_DIR/base_data, a tokenizer in
# $NANOCHAT_BASE_DIR/tokenizer, the chat and eval sets in the data folder ($NANOCHAT_DATA_DIR). The weights start
# random: the speeds do not depend on what the model knows (a random model's replies run to max_tokens: the worst case).
# usage, from the repo root: [DEPTH=20] [STEPS=30] [CLIENTS=32,128] [SLOTS=128] [PIPELINE=1] [OUT=folder] bash bench/post_train_gpu.sh
# (PIPELINE=1: the load again against `chat_web --pipeline`, into serve_load_<tag>_pipeline-DATE.json)
# (a CPU smoke run: DEPTH=2 STEPS=3 ROWS=2 SEQ=64 DEVICE=cpu SLOTS=4 CLIENTS=2 MAX_TOKENS=8 OUT=/tmp/x bash ...)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD} OMP_NUM_THREADS=1
PY=${PYTHON:-python3}; DEPTH=${DEPTH:-20}; STEPS=${STEPS:-30}; CLIENTS=${CLIENTS:-32,128}; SLOTS=${SLOTS:-128}
OUT=${OUT:-bench/results}; TAG=d$DEPTH; TODAY=$(date +%F); LOGS=$OUT/post_train_$TAG-$TODAY-logs; mkdir -p "$LOGS"
ROWS=${ROWS:-32}; SEQ=${SEQ:-2048}; DEVICE=${DEVICE:-cuda}; MAX_TOKENS=${MAX_TOKENS:-256}
BATCH=(--device-batch-size "$ROWS" --total-batch-size $((ROWS * SEQ)) --device-type "$DEVICE")
$PY -m nanochat.report reset
stage() {  # NAME COMMAND...: the command's output in $LOGS/NAME.log, its end and its wall time here
  local name=$1 t=$(date +%s); shift
  "$@" > "$LOGS/$name.log" 2>&1; echo "== $name: exit $?, $(( $(date +%s) - t )) s"; tail -n 6 "$LOGS/$name.log"
}
stage base_train $PY -m nanochat.scripts.base_train --depth "$DEPTH" --num-iterations "$STEPS" "${BATCH[@]}" --eval-every -1 \
  --sample-every -1 --max-seq-len "$SEQ" --model-tag "$TAG"
stage mid_train $PY -m nanochat.scripts.mid_train --model-tag "$TAG" --max-steps "$STEPS" "${BATCH[@]}"
stage chat_sft $PY -m nanochat.scripts.chat_sft --model-tag "$TAG" --max-steps "$STEPS" --layout packed --device-batch-size "$ROWS" \
  --grad-accum 1 --max-len "$SEQ" --device-type "$DEVICE" --compile auto --log-every 10
# serving: the SFT checkpoint, SLOTS rows of the training context; the server captures every graph before it opens,
# and its log must not say that a compilation fell back to eager
stage serve_load $PY bench/serve_load.py --server-args "--stage sft --model-tag $TAG --device-type $DEVICE --max-len $SEQ" \
  --slots "$SLOTS" --max-queue 512 --modes batched --server-log-dir "$LOGS" --clients "$CLIENTS" --requests 4 \
  --max-tokens "$MAX_TOKENS" --client-procs 4 --out "$OUT/serve_load_$TAG-$TODAY.json"
if [ -n "${PIPELINE:-}" ]; then  # the same load against a server whose engine launches each step early
  stage serve_load_pipeline $PY bench/serve_load.py --server-args "--stage sft --model-tag $TAG --device-type $DEVICE \
    --max-len $SEQ --pipeline" --slots "$SLOTS" --max-queue 512 --modes batched --server-log-dir "$LOGS/pipeline" \
    --clients "$CLIENTS" --requests 4 --max-tokens "$MAX_TOKENS" --client-procs 4 \
    --out "$OUT/serve_load_${TAG}_pipeline-$TODAY.json"
fi
grep -i "captured\|worker" "$LOGS/chat_web_slots$SLOTS.log"
if grep -qi "eagerly" "$LOGS/chat_web_slots$SLOTS.log"; then echo "== the server fell back to eager (above)"
else echo "== no eager fallback in the server's log"; fi
$PY bench/pipeline_table.py --name "post_train_$TAG" --depth "$DEPTH" --extra "$OUT/serve_load_$TAG-$TODAY.json" \
  --out "$OUT/post_train_$TAG-$TODAY.json"
