#!/bin/bash
# Optional attention kernels (ATTN=1), then one training-throughput invocation per argument string; logs and results
# under $OUT (default bench/results/DATE; the last invocation's JSON is train_throughput-DATE.json, earlier ones
# logs/train-N.json, all logs packed into logs.tgz).
# MERGE=<earlier json files>: merge their records and this run's into the final JSON.
# usage, from the repo root: [OUT=folder] [ATTN=1] bash bench/run_train.sh "<train_throughput args>" ["<more args>" ...]
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 NANOCHAT_COMMIT=${NANOCHAT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DATE=$(date +%F); OUT=${OUT:-bench/results/$DATE}
mkdir -p $OUT/logs
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv > $OUT/logs/gpu.txt 2>&1
if [ -n "$ATTN" ]; then
  timeout 150 python3 bench/attention.py --out $OUT/attention-$DATE.json > $OUT/logs/attention.log 2>&1
  grep -v '^{' $OUT/logs/attention.log | grep -v Warning | tail -25
fi
n=0; count=$#
for args in "$@"; do
  n=$((n + 1))
  out=$OUT/logs/train-$n.json; [ $n -eq $count ] && out=$OUT/train_throughput-$DATE.json
  eval python3 bench/train_throughput.py $args --profile-dir $OUT/logs --out $out 2>&1 | tee $OUT/logs/train-$n.log | grep -v '^{' | grep -v Warn
done
[ -n "$MERGE" ] && python3 bench/merge_results.py $OUT/train_throughput-$DATE.json $MERGE $OUT/logs/train-*.json $OUT/train_throughput-$DATE.json
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
