#!/usr/bin/env bash
# The CPU speedrun: from nothing to a model that answers, offline, on a laptop-class CPU (about 10 minutes on 2 cores).
#
#   bash runs/cpu.sh                          # the `cpu` profile of every stage
#   NANOCHAT_PROFILE=tiny bash runs/cpu.sh    # the same pipeline in about a minute (what the tests run)
#   NANOCHAT_SKIP_CORPUS=1 ...                # pretrain on the shared Wikipedia shards instead of building the corpus
#   NANOCHAT_DATA_URL=http://mirror/ ...      # no local data folder: fetch the small subset from a mirror of one
#
# Data: the local data folder (../shared/data, or $NANOCHAT_DATA_DIR) when it is there; otherwise a small subset is
# fetched into $NANOCHAT_BASE_DIR/data: $NANOCHAT_SHARDS (default 2) ClimbMix shards plus the validation shard (about
# 90 MB each) and the CORE, eval and chat sets the stages read (about 35 MB), with `python -m nanochat.data fetch`.
#
# Stages: sandbox corpus -> tokenizer -> pretraining -> base eval -> midtraining -> chat eval -> SFT -> chat eval ->
# report -> one answer from chat_cli. Every stage writes its section of the report; the last step prints where
# report.md is. Artifacts go to $NANOCHAT_BASE_DIR (default ~/.cache/nanochat). RL is left out of the CPU run: at
# this size it has nothing to reinforce yet (GSM8K accuracy is ~0); run `python -m nanochat.scripts.chat_rl` by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PROFILE=${NANOCHAT_PROFILE:-cpu}
PROMPT=${NANOCHAT_PROMPT:-"What is the capital of France?"}
export NANOCHAT_BASE_DIR=${NANOCHAT_BASE_DIR:-$HOME/.cache/nanochat}
export MPLBACKEND=Agg OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
start=$(date +%s)
step() { printf '\n\033[1m== [%4ss] %s\033[0m\n' "$(( $(date +%s) - start ))" "$*"; }

step "report: a new run (profile $PROFILE, artifacts in $NANOCHAT_BASE_DIR)"
$PY -m nanochat.report reset

# what the evaluation and chat stages read; the word list is optional (the spelling tasks can do without it)
EVAL_DATA=core,eval,identity,gpteacher
if ! $PY -m nanochat.data check --what "$EVAL_DATA" 2>/dev/null; then
  step "data: no local data folder; fetching the CORE, eval and chat sets into $($PY -m nanochat.data where)"
  $PY -m nanochat.data fetch --what "$EVAL_DATA,words"
fi
DATA=$($PY -m nanochat.data where)
if [ -z "${NANOCHAT_SKIP_CORPUS:-}" ] && ! ls "$NANOCHAT_BASE_DIR"/base_data/*.parquet >/dev/null 2>&1; then
  if [ -d "$DATA/pretrain/wikipedia_en" ]; then
    step "sandbox corpus (offline, from the shared data folder)"
    bash runs/build_corpus.sh
  else
    step "pretraining shards: ${NANOCHAT_SHARDS:-2} and the validation shard, into $DATA/pretrain"
    $PY -m nanochat.data fetch --what shards --shards "${NANOCHAT_SHARDS:-2}"
  fi
fi

step "tokenizer"
$PY -m nanochat.scripts.tok_train --profile "$PROFILE"
step "pretraining"
$PY -m nanochat.scripts.base_train --profile "$PROFILE"
step "base model evaluation (bits per byte, CORE on the local tasks, samples)"
$PY -m nanochat.scripts.base_eval --profile "$PROFILE"
step "midtraining"
$PY -m nanochat.scripts.mid_train --profile "$PROFILE"
step "chat evaluation after midtraining"
$PY -m nanochat.scripts.chat_eval --profile "$PROFILE" --stage mid
step "supervised fine-tuning"
$PY -m nanochat.scripts.chat_sft --profile "$PROFILE"
step "chat evaluation after SFT"
$PY -m nanochat.scripts.chat_eval --profile "$PROFILE" --stage sft
step "report"
$PY -m nanochat.report generate
step "one answer"
$PY -m nanochat.scripts.chat_cli --stage sft -p "$PROMPT"
step "done: report at $NANOCHAT_BASE_DIR/report/report.md"
