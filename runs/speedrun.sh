#!/usr/bin/env bash
# The GPU speedrun: from nothing to a talking model on one node, with the real downloads.
#
#   bash runs/speedrun.sh                                 # 8 GPUs (all that nvidia-smi lists), profile `speedrun` (d20)
#   NPROC=1 NANOCHAT_PROFILE=d12 bash runs/speedrun.sh    # one GPU: a d12 model (see runs/speedrun_1gpu.sh)
#   NPROC=1 NANOCHAT_PROFILE=24gb bash runs/speedrun.sh   # d20 on one 24 GB GPU: micro-batches sized by a memory probe
#
# Settings (environment):
#   NPROC            processes (GPUs) for torchrun; default: every GPU
#   NANOCHAT_PROFILE profile of every stage: speedrun (8×H100, d20), d20, d12, 24gb (d20 on a 24 GB GPU)
#   SHARDS           pretraining shards to download (default 240 for speedrun/d20, 40 for d12)
#   SKIP_DOWNLOAD=1  use the data folder as it is (shards, eval and chat sets): no network
#   NANOCHAT_DATA_URL  fetch from a mirror that serves the data folder's layout instead of every dataset's source
#   NANOCHAT_DATA_DIR  the data folder (default: ../shared/data when there, else $NANOCHAT_BASE_DIR/data)
#   BASE_ARGS        extra arguments for base_train (e.g. "--num-iterations 600" for a short run)
#   SFT_ARGS, MID_ARGS, RL_ARGS, BASE_EVAL_ARGS, CHAT_EVAL_ARGS, TOK_EVAL_ARGS, CLI_ARGS   the same for the other stages
#   MID=0            leave midtraining out (SFT then starts from the base model)
#   RL=1             add the RL stage on GSM8K after SFT
#   RESUME=auto      base_train, mid_train, chat_sft and chat_rl continue from their newest valid checkpoint when there
#                    is one (a restarted speedrun picks up where it stopped), and a tokenizer that loads is kept;
#                    default: every stage from scratch
#   WANDB_RUN        a run name: log to Weights & Biases (needs wandb installed and logged in)
#
# The structure follows upstream nanochat's speedrun: data download in the background while the tokenizer trains,
# torchrun for every GPU stage, the report card at the end. Every stage appends its section to the report.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PROFILE=${NANOCHAT_PROFILE:-speedrun}
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$NPROC" -ge 1 ] || { echo "no GPU found (nvidia-smi lists none): use runs/cpu.sh on a CPU" >&2; exit 1; }
case "$PROFILE" in d12) SHARDS=${SHARDS:-40} ;; *) SHARDS=${SHARDS:-240} ;; esac
export NANOCHAT_BASE_DIR=${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
LOGGER=(); [ -n "${WANDB_RUN:-}" ] && LOGGER=(--logger wandb --run-name "$WANDB_RUN")
RESUME_ARGS=(); [ -n "${RESUME:-}" ] && RESUME_ARGS=(--resume "$RESUME")
start=$(date +%s)
mkdir -p "$NANOCHAT_BASE_DIR" && : > "$NANOCHAT_BASE_DIR/speedrun_times.tsv"  # the stage clock: seconds, stage
step() {
  printf '\n\033[1m== [%5ss] %s\033[0m\n' "$(( $(date +%s) - start ))" "$*"
  printf '%s\t%s\n' "$(( $(date +%s) - start ))" "${*%%:*}" >> "$NANOCHAT_BASE_DIR/speedrun_times.tsv"
}
gpu() {  # run a module on every GPU
  if [ "$NPROC" -gt 1 ]; then $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m "$@"; else $PY -m "$@"; fi
}

step "report: a new run (profile $PROFILE on $NPROC GPU(s); artifacts in $NANOCHAT_BASE_DIR)"
$PY -m nanochat.report reset
$PY -m nanochat.scripts.sysinfo --profile "$PROFILE" || true

if [ -z "${SKIP_DOWNLOAD:-}" ]; then
  # every dataset from its source (or from the mirror $NANOCHAT_DATA_URL) into the data folder; see nbs/03a_data.ipynb
  step "data: the first 8 shards now (the tokenizer's text); $SHARDS shards and every other dataset in the background"
  $PY -m nanochat.data fetch --what shards --shards 8
  $PY -m nanochat.data fetch --what all --shards "$SHARDS" > "$NANOCHAT_BASE_DIR/download.log" 2>&1 &
  DOWNLOAD=$!
fi

step "tokenizer"
if [ "${RESUME:-}" = auto ] && $PY -c "from nanochat.tokenizer import load_tokenizer; load_tokenizer()" 2>/dev/null; then
  echo "RESUME=auto: keeping the tokenizer in $NANOCHAT_BASE_DIR/tokenizer (it loads; the checkpoints were made with it)"
else
  $PY -m nanochat.scripts.tok_train --profile "$PROFILE"
fi
$PY -m nanochat.scripts.tok_eval --profile "$PROFILE" ${TOK_EVAL_ARGS:-}

if [ -z "${SKIP_DOWNLOAD:-}" ]; then
  step "waiting for the data"
  wait "$DOWNLOAD" || { cat "$NANOCHAT_BASE_DIR/download.log" >&2; echo "data download failed (above); run the same command again to resume" >&2; exit 1; }
fi

step "pretraining"
gpu nanochat.scripts.base_train --profile "$PROFILE" "${LOGGER[@]}" "${RESUME_ARGS[@]}" ${BASE_ARGS:-}
step "base model evaluation"
gpu nanochat.scripts.base_eval --profile "$PROFILE" ${BASE_EVAL_ARGS:-}
SFT_SOURCE=()
if [ "${MID:-1}" != 0 ]; then
  step "midtraining"
  gpu nanochat.scripts.mid_train --profile "$PROFILE" "${RESUME_ARGS[@]}" ${MID_ARGS:-}
  gpu nanochat.scripts.chat_eval --profile "$PROFILE" --stage mid ${CHAT_EVAL_ARGS:-}
else
  SFT_SOURCE=(--source-stage base)
fi
step "supervised fine-tuning"
gpu nanochat.scripts.chat_sft --profile "$PROFILE" "${SFT_SOURCE[@]}" "${RESUME_ARGS[@]}" ${SFT_ARGS:-}
gpu nanochat.scripts.chat_eval --profile "$PROFILE" --stage sft ${CHAT_EVAL_ARGS:-}
if [ "${RL:-0}" = 1 ]; then
  step "reinforcement learning on GSM8K"
  gpu nanochat.scripts.chat_rl --profile "$PROFILE" "${RESUME_ARGS[@]}" ${RL_ARGS:-}
  gpu nanochat.scripts.chat_eval --profile "$PROFILE" --stage rl --task GSM8K ${CHAT_EVAL_ARGS:-}
fi

step "report"
$PY -m nanochat.report generate
step "one answer"
$PY -m nanochat.scripts.chat_cli --stage "$([ "${RL:-0}" = 1 ] && echo rl || echo sft)" -p "Why is the sky blue?" ${CLI_ARGS:-}
step "done: report at $NANOCHAT_BASE_DIR/report/report.md"
