#!/bin/bash
# Our training step and upstream's, alternated in separate processes on the same card (ours, upstream, ours, ...), so
# the ratio does not depend on the SM clock of the day (see bench/NOTES-train.md). Results under $OUT (default
# bench/results/DATE): vs_upstream-d<depth>.json with every row and a summary (mean per row, and ours over upstream's
# mean), and the logs packed into logs.tgz.
#
# Upstream's package is read from $UPSTREAM (default .whl/upstream, not committed); make it once with
#   mkdir -p .whl/upstream && git -C <clone of karpathy/nanochat> archive HEAD nanochat | tar -x -C .whl/upstream
#   git -C <clone> rev-parse --short HEAD > .whl/upstream/UPSTREAM_COMMIT
# usage, from the repo root: DEPTH=12 PATTERNS=L ROUNDS=2 [FP8=1] [OUT=folder] bash bench/run_vs_upstream.sh
#        (ROUNDS=2 is 5 processes of ~75 s each at d12, ~90 s at d20; two patterns double each process's time)
set -u
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NANOCHAT_COMMIT=${NANOCHAT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
OUT=${OUT:-bench/results/$(date +%F)}
DEPTH=${DEPTH:-12}; PATTERNS=${PATTERNS:-L}; ROUNDS=${ROUNDS:-2}; UPSTREAM=${UPSTREAM:-.whl/upstream}
STEPS=${STEPS:-4}; ACCUM=${ACCUM:-8}; BRACKET=${BRACKET:-1}  # BRACKET=0: no closing run of ours (saves a process)
FP8=${FP8:-0}  # FP8=1: both sides in FP8 (ours --variants fp8=1, upstream's own --fp8)
ours_flags=""; upstream_flags=""; [ "$FP8" = 1 ] && ours_flags="--variants fp8=1" && upstream_flags="--fp8"
mkdir -p $OUT/logs
common="--depths $DEPTH --patterns $PATTERNS --steps $STEPS --warmup 2 --accum $ACCUM"
for round in $(seq 1 $ROUNDS); do
  python3 bench/train_throughput.py $common $ours_flags --out $OUT/logs/ours-$round.json > $OUT/logs/ours-$round.log 2>&1
  grep -v '^{' $OUT/logs/ours-$round.log | grep -v -i warn | tail -n +2 | head -4
  python3 bench/upstream_step.py --upstream $UPSTREAM $common $upstream_flags --out $OUT/logs/upstream-$round.json > $OUT/logs/upstream-$round.log 2>&1
  grep -v '^{' $OUT/logs/upstream-$round.log | grep -v -i warn | grep -v Scaling | tail -n +2 | head -4
done
if [ "$BRACKET" = 1 ]; then  # bracket the last upstream run
  python3 bench/train_throughput.py $common $ours_flags --out $OUT/logs/ours-last.json > $OUT/logs/ours-last.log 2>&1
fi
python3 bench/merge_results.py $OUT/vs_upstream-d$DEPTH.json $OUT/logs/*.json --name vs_upstream --summary | grep -v '^{' | sed -n '/mean tok/,$p'
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
