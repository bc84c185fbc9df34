#!/bin/bash
# Serving a real checkpoint on one GPU, then pushing it: a d$DEPTH base checkpoint written by base_train itself
# (STEPS optimizer steps: serving speed does not depend on what the weights know, and a model that never says
# <|assistant_end|> replies to max_tokens, the worst case) -> infer_bench at the rows and sampling the server will
# have -> bench/serve_load.py at CLIENTS streaming clients against chat_web, with and without `--pipeline` ->
# bench/serve_stress.py against a chat_web of that checkpoint (stress at STRESS_CLIENTS at once, a SOAK_MIN-minute soak
# sampling RSS, open files and GPU memory, and the faults). On an H200 at d20: about 9 minutes, the first compilations
# included.
# Reads a tokenizer and shards where base_train looks ($NANOCHAT_BASE_DIR).
# (a CPU smoke run: DEPTH=2 DEVICE=cpu SLOTS=4 CLIENTS=2 MAX_TOKENS=8 STRESS_CLIENTS=20 SOAK_MIN=0.2 OUT=/tmp/x \
#  bash ...)
# usage, from the repo root: [DEPTH=20] [SLOTS=128] [CLIENTS=32,128] [MODES="default norows_stream0 pipeline"]
#   [WARMUP=requests at once before timing, default the largest of CLIENTS] [REQUESTS=each client's, in a row; 4]
#   [STRESS=0] [OUT=folder] bash bench/serve_gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
PY=${PYTHON:-python3}; DEPTH=${DEPTH:-20}; STEPS=${STEPS:-1}; SLOTS=${SLOTS:-128}; CLIENTS=${CLIENTS:-32,128}
MAX_TOKENS=${MAX_TOKENS:-256}; DEVICE=${DEVICE:-cuda}; STRESS_CLIENTS=${STRESS_CLIENTS:-1000}; SOAK_MIN=${SOAK_MIN:-2}
# the warm-up before timing: a wave as wide as the largest client count, so that first-time shapes (an idle batch's
# prefill of many prompts, a step variant) are compiled before the timed runs, not during them
WARMUP=${WARMUP:-$(tr ',' '\n' <<< "$CLIENTS" | sort -n | tail -1)}
OUT=${OUT:-bench/results}; TAG=d$DEPTH; TODAY=$(date +%F); LOGS=$OUT/serve_gpu_$TAG-logs; mkdir -p "$LOGS"
export NANOCHAT_GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
step() {  # NAME COMMAND...: output into $LOGS/NAME.log; exit status and wall time here
  local name=$1 t=$(date +%s); shift
  "$@" > "$LOGS/$name.log" 2>&1; echo "== $name: exit $?, $(( $(date +%s) - t )) s"; tail -n 4 "$LOGS/$name.log"
}
step checkpoint $PY -m nanochat.scripts.base_train --depth "$DEPTH" --num-iterations "$STEPS" --device-batch-size 4 \
  --total-batch-size 8192 --max-seq-len 2048 --compile off --eval-every -1 --sample-every -1 --model-tag "$TAG" \
  --device-type "$DEVICE"
# the engine alone at the server's rows per step and sampling (temperature 0.8, top-k 50), the reference of the ratio
step infer_bench $PY -m nanochat.scripts.infer_bench --depth "$DEPTH" --engine fast --prompt-len 128 --new-tokens \
  "$MAX_TOKENS" --batch-sizes "$CLIENTS" --temperature 0.8 --top-k 50 \
  --out "$OUT/infer_bench_${TAG}_server_sampling-$TODAY.json"
SERVER=(--stage base --model-tag "$TAG" --device-type "$DEVICE" --max-len 2048)
for mode in ${MODES:-default pipeline}; do  # parts joined by _: pipeline, rows / norows (row buckets, on by default),
  # waitN (admissions), streamN (writes; 20 by default), feedN (prompts of at most N tokens fed through the step),
  # gilN (the GIL's switch interval, µs)
  extra=()
  for part in ${mode//_/ }; do
    case $part in
      default) ;;
      pipeline) extra+=(--pipeline) ;;
      rows) extra+=(--row-buckets) ;;
      norows) extra+=(--no-row-buckets) ;;
      feed[0-9]*) extra+=(--feed-prompts "${part#feed}") ;;
      wait[0-9]*) extra+=(--admit-wait-ms "${part#wait}") ;;
      stream[0-9]*) extra+=(--stream-interval-ms "${part#stream}") ;;
      gil[0-9]*) extra+=(--gil-switch-ms "$(awk "BEGIN { print ${part#gil} / 1000 }")") ;;
      *) echo "unknown mode part $part of $mode (default, pipeline, rows, norows, waitN, streamN, feedN, gilN, joined by _)"
         exit 2 ;;
    esac
  done
  step "serve_load_$mode" $PY bench/serve_load.py --server-args "${SERVER[*]} ${extra[*]}" --slots "$SLOTS" \
    --max-queue 512 --modes batched --server-log-dir "$LOGS/$mode" --clients "$CLIENTS" --requests "${REQUESTS:-4}" --warmup "$WARMUP" \
    --max-tokens "$MAX_TOKENS" --client-procs 4 --out "$OUT/serve_load_${TAG}_$mode-$TODAY.json"
  if grep -qi "eagerly" "$LOGS/$mode"/chat_web_slots*.log; then echo "== $mode: the server fell back to eager"; fi
done
[ "${STRESS:-1}" = 0 ] && exit 0
# the stress run: one server of that checkpoint, started by serve_stress and kept up through the three checks
step serve_stress $PY bench/serve_stress.py --server-args "${SERVER[*]}" --server-log "$LOGS/chat_web_stress.log" \
  --checks stress,soak,faults --clients "$STRESS_CLIENTS" --slots "$SLOTS" --max-queue 256 --minutes "$SOAK_MIN" \
  --sample-s 10 --timeout 120 --out "$OUT/serve_stress_gpu_$TAG-$TODAY.json"
grep -h '"tok_per_s"\|passed' "$OUT"/serve_*-"$TODAY".json | head -c 3000; echo
