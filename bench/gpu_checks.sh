#!/bin/bash
# What the CPU cannot tell, on one GPU, with random weights (no data needed but CORE's), in one go of about fifteen
# minutes (each part cut at LIMIT s, default 240, the tests at TESTS_LIMIT, default 480; an infer_bench batch size
# takes 40-50 s to compile and capture on an H200; ONLY="int8_matvec decode_int8" runs the parts named, by the names
# below):
#   1. the GPU-only tests (in TEST_WORKERS processes where pytest-xdist is installed), in two parts: `tests`, the
#      engine (CUDA graphs, the compiled sampler at every slot count, row buckets, fed prompts, reduced products, PDL,
#      int8; chat_web's start where fastapi is installed), and `tests_kernels`, the decode kernels compiled and
#      captured against the default step, the memory probe under a cap, compiled AdamW;
#   2. infer_bench at d20, batch 1, 32 and 128: the default step, the pipelined one (`--pipeline`), and at batch 1
#      the Triton kernels (`--kernels triton`), each into its own JSON;
#   3. bench/decode_kernels.py: each kernel against cuBLAS / SDPA at the d20 shapes;
#   4. bench/int8_matvec.py (the int8 decode product, plain against fused, bf16 beside) and infer_bench --quantize int8;
#   5. bench/optim_step.py: the optimizer step by part (AdamW compiled against written out, Muon, PyTorch's fused AdamW);
#      bench/gemv_tune.py (`gemv_tune`, searching for TUNE_BUDGET s, default 420, cut at TUNE_LIMIT, 480): the split-K
#      product's plans searched on the card for each one-row product of the step, against cuBLAS and the compiled
#      reduction;
#   6. bench/core_pack.py: CORE one example a forward against several packed (needs the CORE data where base_eval
#      looks; TOKENIZER=folder for a real tokenizer's lengths);
#   7. batch-1 decode under settings that change the step's kernels, not its math (B1="reduce reduce_nopdl default",
#      parts joined by _: reduce = `--kernels reduce` (its one-row step and sampler compiled with multi-kernel
#      reductions), triton = `--kernels triton` (chapter 84's kernels), tuned = the same with the plans the gemv_tune
#      part found (run it first, or GEMV_PLANS=file), nopdl = `--no-pdl` (no programmatic dependent launch between
#      inductor's kernels, which the engine uses by default), cdt = inductor's coordinate-descent tuning, lt =
#      cuBLASLt for the products, mk = inductor's multi-kernel reductions for every compilation of the process), each
#      `decode_b1_SETTING` (B1_RUNS=3: three processes each, the later ones `decode_b1_SETTING_r2`, `_r3`), and
#      int8_matvec again with inductor tuning its reductions (`int8_matvec_cdt`).
# usage, from the repo root: [DEPTH=20] [OUT=folder] bash bench/gpu_checks.sh   -> $OUT/*.json and $OUT/gpu_checks.log
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
PY=${PYTHON:-python3}; DEPTH=${DEPTH:-20}; OUT=${OUT:-bench/results}; TODAY=$(date +%F); mkdir -p "$OUT"
PLANS=${GEMV_PLANS:-$OUT/gemv_tune-$TODAY.json}  # the tuned step's plans: the gemv_tune part's, or an earlier run's
will_run() { [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]; }  # NAME: whether ONLY lets that part run
run() {  # NAME COMMAND...: output into the log, a line with its exit status (124: cut at LIMIT s) and wall time here
  local name=$1 t=$(date +%s); shift
  will_run "$name" || return 0
  echo "== $name" >> "$OUT/gpu_checks.log"; timeout "${LIMIT:-240}" "$@" >> "$OUT/gpu_checks.log" 2>&1
  echo "== $name: exit $?, $(( $(date +%s) - t )) s"
}
b1_env() {  # SETTING -> the environment of that batch-1 setting (reduce, nopdl: flags, see b1_flags)
  local words=()
  for part in ${1//_/ }; do
    case $part in
      default|reduce|nopdl|triton|tuned) ;;
      cdt) words+=(TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1) ;;
      lt) words+=(TORCH_BLAS_PREFER_CUBLASLT=1) ;;
      mk) words+=(TORCHINDUCTOR_MULTI_KERNEL=1) ;;  # each reduction: persistent or looped, chosen by timing both
      *) echo "unknown batch-1 setting part $part of $1 (default, reduce, triton, tuned, nopdl, cdt, lt, mk)" >&2
         return 2 ;;
    esac
  done
  echo "${words[@]}"
}
b1_flags() {  # SETTING -> infer_bench's flags for it
  local kernels=none pdl=--pdl plans=
  [[ _${1}_ == *_reduce_* ]] && kernels=reduce
  [[ _${1}_ == *_triton_* ]] && kernels=triton
  [[ _${1}_ == *_tuned_* ]] && kernels=triton plans="--gemv-plans $PLANS"
  [[ _${1}_ == *_nopdl_* ]] && pdl=--no-pdl
  echo "--kernels $kernels $pdl $plans"
}
for setting in ${B1:-reduce reduce_nopdl default}; do  # a mistyped setting stops here, before anything runs
  b1_env "$setting" > /dev/null || exit 2
  if [[ _${setting}_ == *_tuned_* ]] && will_run "decode_b1_$setting" && [[ ! -f $PLANS ]] && ! will_run gemv_tune; then
    echo "decode_b1_$setting needs the plans of a gemv_tune run: $PLANS is missing (add gemv_tune to ONLY)" >&2
    exit 2
  fi
done
# -v names each test, so that a part cut at its limit still shows how far it got. A fresh machine compiles every graph
# (the engine's tests alone took over 400 s from a cold cache on an H100, one test at a time): where pytest-xdist is
# installed the tests run in TEST_WORKERS processes (default 4) sharing the GPU, each compiling on its own cores.
TESTS=(-m pytest -v -rs --tb=short -p no:cacheprovider)
if [[ ${TEST_WORKERS:-4} -gt 1 ]] && $PY -c "import xdist" 2>/dev/null; then TESTS+=(-n "${TEST_WORKERS:-4}"); fi
LIMIT=${TESTS_LIMIT:-480} run tests $PY "${TESTS[@]}" tests/test_engine.py tests/test_engine_int8.py
LIMIT=${TESTS_LIMIT:-480} run tests_kernels $PY "${TESTS[@]}" tests/test_decode_kernels.py tests/test_memory.py \
  tests/test_optim_cuda.py
BENCH=(-m nanochat.scripts.infer_bench --depth "$DEPTH" --engine fast --prompt-len 128 --new-tokens 256)
run decode_default $PY "${BENCH[@]}" --batch-sizes 1,32,128 --out "$OUT/infer_bench_d${DEPTH}_default-$TODAY.json"
run decode_pipeline $PY "${BENCH[@]}" --batch-sizes 1,32,128 --pipeline --out "$OUT/infer_bench_d${DEPTH}_pipeline-$TODAY.json"
run decode_kernels_b1 $PY "${BENCH[@]}" --batch-sizes 1 --kernels triton --out "$OUT/infer_bench_d${DEPTH}_triton-$TODAY.json"
run decode_kernels_bench $PY bench/decode_kernels.py --out "$OUT/decode_kernels-$TODAY.json"
run int8_matvec $PY bench/int8_matvec.py --out "$OUT/int8_matvec-$TODAY.json"
run decode_int8 $PY "${BENCH[@]}" --batch-sizes 1,32 --quantize int8 --out "$OUT/infer_bench_d${DEPTH}_int8-$TODAY.json"
run optim_step $PY bench/optim_step.py --out "$OUT/optim_step-$TODAY.json"
LIMIT=${TUNE_LIMIT:-480} run gemv_tune $PY bench/gemv_tune.py --budget-s "${TUNE_BUDGET:-420}" --out "$OUT/gemv_tune-$TODAY.json"
run core_pack $PY bench/core_pack.py --depth "$DEPTH" ${TOKENIZER:+--tokenizer "$TOKENIZER"} --out "$OUT/core_pack-$TODAY.json"
for setting in ${B1:-reduce reduce_nopdl default}; do
  for round in $(seq "${B1_RUNS:-1}"); do  # a fresh process each: batch 1 moves a few percent between processes
    name=decode_b1_$setting; (( round > 1 )) && name+=_r$round
    run "$name" env $(b1_env "$setting") $PY "${BENCH[@]}" --batch-sizes 1 --temperature 0 $(b1_flags "$setting") \
      --out "$OUT/infer_bench_d${DEPTH}_b1_${name#decode_b1_}-$TODAY.json"
  done
done
run int8_matvec_cdt env TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 $PY bench/int8_matvec.py --rows 1 \
  --out "$OUT/int8_matvec_cdt-$TODAY.json"
grep -h '"tok_per_s"' "$OUT"/infer_bench_d"${DEPTH}"_*-"$TODAY".json 2>/dev/null | head -c 4000; echo
