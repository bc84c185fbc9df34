#!/bin/bash
# The checks that want trained weights, on one GPU, on short horizons: base_train writes a d$SMALL checkpoint
# (STEPS_SMALL steps) and bench/export_check.py exports it to Hugging Face's format and compares transformers' logits
# and greedy reply with ours; base_train writes a d$LARGE one (STEPS_LARGE steps) and bench/int8_quality.py measures
# int8 weight-only inference against bf16 on it (weights, decode tok/s at batch 1 and 32, val bpb, CORE).
# Reads shards and a tokenizer where base_train looks ($NANOCHAT_BASE_DIR), the CORE bundle where base_eval does.
# usage, from the repo root: [SMALL=12] [LARGE=20] [STEPS_SMALL=60] [STEPS_LARGE=150] [PARTS="export int8"] \
#   [OUT=folder] bash bench/trained_checks.sh        (PARTS: either check alone, say within a 10-minute limit)
# (a CPU smoke run: SMALL=2 LARGE=2 STEPS_SMALL=2 STEPS_LARGE=2 ROWS=2 SEQ=64 DEVICE=cpu CORE_PER_TASK=0 PROMPT=16 \
#  NEW=16 OUT=/tmp/x bash ...)
# On an H100: the d12 run 113 s, the export check 52 s, the d20 run 282 s (150 steps, 154k tok/s; 188 s at 60), and
# int8_quality ~265 s a copy at CORE_PER_TASK=20 (bpb 9 s, CORE 60 s the first time, decode ~80 s at batch 1 and ~120
# s at 32: a compilation and graph capture each): over ten minutes in all; PARTS=int8 STEPS_LARGE=60 gets the quality
# of both copies and bf16's speed inside ten.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
PY=${PYTHON:-python3}; SMALL=${SMALL:-12}; LARGE=${LARGE:-20}
STEPS_SMALL=${STEPS_SMALL:-60}; STEPS_LARGE=${STEPS_LARGE:-150}
ROWS=${ROWS:-32}; SEQ=${SEQ:-2048}; DEVICE=${DEVICE:-cuda}; CORE_PER_TASK=${CORE_PER_TASK:-50}
PROMPT=${PROMPT:-128}; NEW=${NEW:-128}
OUT=${OUT:-bench/results}; TODAY=$(date +%F); LOGS=$OUT/trained_checks-logs; mkdir -p "$LOGS"
step() {  # NAME COMMAND...: output into $LOGS/NAME.log; exit status and wall time here
  local name=$1 t=$(date +%s); shift
  "$@" > "$LOGS/$name.log" 2>&1; echo "== $name: exit $?, $(( $(date +%s) - t )) s"; tail -n 5 "$LOGS/$name.log"
}
train() {  # DEPTH STEPS: a base checkpoint tagged d<DEPTH>, batches of 2 micro-steps of ROWS × SEQ
  step "base_train_d$1" $PY -m nanochat.scripts.base_train --depth "$1" --num-iterations "$2" \
    --device-batch-size "$ROWS" --total-batch-size $((2 * ROWS * SEQ)) --max-seq-len "$SEQ" --eval-every -1 \
    --sample-every -1 --model-tag "d$1" --device-type "$DEVICE"
}
PARTS=" ${PARTS:-export int8} "
if [[ $PARTS == *" export "* ]]; then
  train "$SMALL" "$STEPS_SMALL"
  step export_check $PY bench/export_check.py --stage base --model-tag "d$SMALL" --device "$DEVICE" \
    --out "$OUT/export_check_d$SMALL-$TODAY.json"
fi
[[ $PARTS == *" int8 "* ]] || exit 0
train "$LARGE" "$STEPS_LARGE"
CORE=(--max-per-task "$CORE_PER_TASK"); [ "$CORE_PER_TASK" = 0 ] && CORE=(--no-core)
step int8_quality $PY bench/int8_quality.py --stage base --model-tag "d$LARGE" --device "$DEVICE" --batch-sizes 1,32 \
  --prompt-len "$PROMPT" --new-tokens "$NEW" --eval-tokens $((8 * ROWS * SEQ)) "${CORE[@]}" \
  --out "$OUT/int8_quality_d$LARGE-$TODAY.json"
