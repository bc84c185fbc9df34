"""One-row matrix-vector products at a model's decode shapes: plans of chapter 84's split-K kernel
(`decode_kernels.gemv`) searched on the card, against cuBLAS (`F.linear`) and the compiled reduction the engine uses for
one-row steps (`kernels="reduce"`, chapter 19b's `reduced_product`).

The split-K plan in `decode_kernels.gemv_plan` was chosen in Triton's interpreter, and loses to cuBLAS by 25-60% at
d20's shapes; the compiled reductions reach 1.5-1.9 TB/s of an H100's 3.35. At batch 1 the block products are most of
a decode step, so a plan that streams them near the bandwidth is the step's largest lever. This finds, per matrix, the
fastest plan:
- stage 1: output columns a program (BLOCK_N) × the loop's step over k (BLOCK_K) × slices of k (splits), at 4 warps and
  3 pipeline stages;
- stage 2: the best few of stage 1 again at 2, 4 and 8 warps and 2, 3 and 4 stages.
Each plan is checked against F.linear before it is timed. Times are taken as bench/decode_kernels.py takes them: the
median over replays of a CUDA graph holding one call per copy of the weights, with enough copies that they come from
memory and not from the L2 cache, as every product of a real step does.

    python bench/gemv_tune.py                              # CUDA, d20
    python bench/gemv_tune.py --device cpu --interpret     # a smoke run: tiny shapes, Triton's interpreter

Prints the best plan per matrix and one JSON line, saved as bench/results/gemv_tune-DATE.json (or --out; the smoke run
saves nothing unless given --out). Records: cuBLAS, the reduction, the default plan and the five fastest plans per
matrix, each with its block sizes, split, warps and stages.
"""
import argparse
import functools
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from decode_kernels import add_model_arguments, copies_for, load_kernels, matrices, time_us
from record import git_commit, save_result

from nanochat.common import device_name
from nanochat.gpt import config_for_depth

KEEP = 5  # plans recorded per matrix, fastest first
PRODUCTS_PER_PROGRAM = 16384  # BLOCK_N × BLOCK_K fp32 lanes a program may hold (a register budget at 4-8 warps)


def _cdiv(a: int, b: int) -> int: return -(-a // b)


def stage1_plans(n: int, k: int, sms: int) -> list[dict]:
    """Every distinct one-row plan of BLOCK_N in 4-64, BLOCK_K in 128-1024 and 1-32 slices of k, whose grid gives the
    card at least half a program per multiprocessor and at most 64."""
    plans = []
    for block_n in (4, 8, 16, 32, 64):
        for block_k in (128, 256, 512, 1024):
            if block_n * block_k > PRODUCTS_PER_PROGRAM or block_k > 2 * k: continue
            for splits in (1, 2, 4, 8, 16, 32):
                k_per_split = _cdiv(_cdiv(k, splits), block_k) * block_k
                if _cdiv(k, k_per_split) != splits: continue  # the same plan as a smaller split
                programs = _cdiv(n, block_n) * splits
                if not sms // 2 <= programs <= 64 * sms: continue
                plans.append(dict(BLOCK_M=1, BLOCK_N=block_n, BLOCK_K=block_k, k_per_split=k_per_split,
                                  splits=splits, num_warps=4, num_stages=3))
    return plans


def stage2_plans(best: list[dict]) -> list[dict]:
    "The plans `best` at 2, 4 and 8 warps and 2, 3 and 4 stages, but those already timed."
    return [{**p, "num_warps": w, "num_stages": s} for p in best for w in (2, 4, 8) for s in (2, 3, 4)
            if (w, s) != (p["num_warps"], p["num_stages"])]


def plan_fields(plan: dict) -> dict:
    return {"block_n": plan["BLOCK_N"], "block_k": plan["BLOCK_K"], "splits": plan["splits"],
            "k_per_split": plan["k_per_split"], "num_warps": plan["num_warps"], "num_stages": plan["num_stages"]}


def tune_matrix(dk, name: str, n: int, k: int, args, dtype, reduce_fn, deadline: float) -> list[dict]:
    "cuBLAS, the reduction, the default plan and the best plans found for one (n, k) matrix, fastest plan first."
    weight_bytes = n * k * dtype.itemsize
    ws = [torch.randn(n, k, device=args.device).to(dtype) for _ in range(copies_for(weight_bytes, args.copies))]
    x = torch.randn(1, k, device=args.device).to(dtype)
    want = F.linear(x.float(), ws[0].float())
    moved = weight_bytes + (n + k) * dtype.itemsize
    base = {"kind": "gemv_tune", "matrix": name, "n": n, "k": k, "batch": 1}

    def timed(impl: str, fn, **extra) -> dict:
        us = time_us([functools.partial(fn, x, w) for w in ws], args.device, args.repeats)
        return {**base, "impl": impl, **extra, "us": round(us, 2), "tb_per_s": round(moved / us / 1e6, 3)}

    def agrees(plan: dict) -> bool:
        got = dk.gemv(x, ws[0], plan).float()
        return ((got - want).abs() / (want.abs() + 1)).max().item() <= 2e-2

    sms = dk.multiprocessors(torch.device(args.device))
    default = dk.gemv_plan(1, n, k, sms)
    default = {**default, "num_stages": default.get("num_stages", 3)}
    records = [timed("cublas", F.linear), timed("reduce", reduce_fn),
               timed("triton_default", functools.partial(dk.gemv, plan=default), **plan_fields(default))]
    found = []  # (record, plan), fastest first after each stage
    candidates = stage1_plans(n, k, sms)[: args.max_plans]
    for stage in (1, 2):
        for plan in candidates:
            if time.monotonic() > deadline: break
            try: ok = agrees(plan)  # the first launch compiles: a plan the card cannot hold fails here, not in a graph
            except Exception as e:  # Triton's OutOfResources, CompilationError: skip the plan, keep the search
                print(f"{name}: plan {plan_fields(plan)} does not run: {type(e).__name__}: {str(e)[:160]}")
                continue
            if not ok: raise SystemExit(f"gemv with plan {plan} disagrees with F.linear on {name}")
            found.append((timed("triton", functools.partial(dk.gemv, plan=plan), stage=stage, **plan_fields(plan)),
                          plan))
        found.sort(key=lambda timed_plan: timed_plan[0]["us"])
        if stage == 1: candidates = stage2_plans([plan for _, plan in found[: args.refine]])[: args.max_plans]
    return records + [record for record, _ in found[:KEEP]]


def summary(records: list[dict], config) -> dict:
    "Per matrix the fastest of each kind, and a batch-1 step's block products (n_layer of each) by each."
    best = {}
    for r in records:
        key = (r["matrix"], "triton" if r["impl"].startswith("triton") else r["impl"])
        if key not in best or r["us"] < best[key]["us"]: best[key] = r
    out = {}
    for impl in ("cublas", "reduce", "triton"):
        block = [r for (m, i), r in best.items() if i == impl and m != "lm_head"]
        out[f"block_products_ms_{impl}"] = round(config.n_layer * sum(r["us"] for r in block) / 1e3, 4)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--matrices", default="qkv,attn_out,mlp_in,mlp_out,lm_head", help="which matrices, comma-separated")
    p.add_argument("--copies", type=int, default=64, help="most copies of the weights per timing (L2 flushing)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--refine", type=int, default=4, help="stage-1 plans tried again over warps and stages")
    p.add_argument("--max-plans", type=int, default=None, help="at most this many plans per stage and matrix")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop searching after this many seconds in all")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    dk = load_kernels(args.device, args.interpret)
    from nanochat.engine import reduced_product
    small = args.interpret
    if small: args.copies, args.repeats, args.refine = 1, 1, 1
    if small and args.max_plans is None: args.max_plans = 2
    config = config_for_depth(args.depth or (2 if small else 20), args.vocab_size or (256 if small else 32768))
    shapes = matrices(config)
    unknown = set(args.matrices.split(",")) - set(shapes)
    if unknown: p.error(f"unknown matrices {sorted(unknown)}; known: {', '.join(shapes)}")
    dtype = torch.bfloat16
    reduce = lambda x, w: reduced_product(x, w).to(x.dtype)
    # as in the engine's step: compiled, one static variant per shape (on the CPU smoke run, eager)
    reduce_fn = reduce if small else torch.compile(reduce, dynamic=False, fullgraph=True)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(shapes) + 1)
    deadline = time.monotonic() + args.budget_s
    records = []
    for name in args.matrices.split(","):
        records += tune_matrix(dk, name, *shapes[name], args, dtype, reduce_fn, deadline)
    print(f"\none row, d{config.n_layer} (width {config.n_embd}) on {device_name(args.device)}"
          f"{' (Triton interpreter: times mean nothing)' if small else ''}")
    print(f"{'matrix':<9} {'shape':>12} {'impl':>15} {'µs':>8} {'TB/s':>6}  plan (BLOCK_N, BLOCK_K, splits, warps, stages)")
    for r in records:
        plan = (f"{r['block_n']}, {r['block_k']}, {r['splits']}, {r['num_warps']}, {r['num_stages']}"
                if "block_n" in r else "")
        print(f"{r['matrix']:<9} {r['n']:>5}x{r['k']:<6} {r['impl']:>15} {r['us']:>8.2f} {r['tb_per_s']:>6.3f}  {plan}")
    totals = summary(records, config)
    print("batch 1, block products per step:", ", ".join(f"{k} {v}" for k, v in totals.items()))
    import triton
    result = {"name": "gemv_tune", "date": date.today().isoformat(), "gpu" if args.device == "cuda" else "cpu":
              device_name(args.device), "commit": git_commit(), "torch": torch.__version__,
              "triton": triton.__version__, "interpret": small, "depth": config.n_layer, "records": records,
              "summary": totals}
    if small and args.out is None:
        import json
        print(json.dumps(result))
    else: save_result(result, args.out)


if __name__ == "__main__":
    main()
