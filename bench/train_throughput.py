"""Training throughput on one GPU: tokens/s, MFU and peak memory of full training steps.

Each step is what pretraining does: `accum` forward/backward passes over (batch × seq) random tokens in bf16, then
one optimizer step (AdamW + Muon) and zero_grad. The model is compiled unless --no-compile. Default settings are those
of upstream's reference numbers: d12 and d20, window patterns L and SSSL, batch 32 × 2048.

    python bench/train_throughput.py                                  # the full grid
    python bench/train_throughput.py --depths 12 --patterns L --steps 5 --attention sdpa
    python bench/train_throughput.py --depths 12 --patterns L --compiled-autograd 0 1   # the backward as one graph too

`--accum` sets the micro-steps per optimizer step (default: what base_train derives for that depth on one GPU, so
tokens/s is the number a training log shows). Reference (upstream nanochat measured on an H100 80GB, torch 2.11, SDPA):
d12 L 490k tok/s (44% MFU), d12 SSSL 409k, d20 L 146k (48%), d20 SSSL 126k. Rows get `vs_upstream` against those
numbers only on an H100; on any other card, time upstream on the same card (bench/run_vs_upstream.sh).

Prints a table and one JSON line, saved as bench/results/train_throughput-DATE.json (or --out).
"""
import argparse
import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as upstream's base_train: less fragmentation
import time
import traceback
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import torch
from record import GpuClocks, git_commit, profile_kernels, ratio_cell, reference_tok_per_s, save_result

from nanochat.common import autocast_ctx, compute_mfu, device_name, get_peak_flops
from nanochat.gpt import GPT, GPTConfig, config_for_depth, enable_fp8, estimate_flops
from nanochat.optim import setup_optimizer

ROOT = Path(__file__).resolve().parents[1]


TOTAL_BATCH = 524288  # upstream's tokens per optimizer step


def default_accum(depth: int, batch: int, seq: int) -> int:
    "Micro-steps per optimizer step that base_train would use on one GPU (its total batch / tokens per pass)."
    try:
        from nanochat.trainer import derive_total_batch_size
        total = derive_total_batch_size(depth)
    except ImportError: total = TOTAL_BATCH
    return max(1, total // (batch * seq))


def parse_overrides(text: str) -> dict:
    "'fused_qkv=0,fp8=1' -> {'fused_qkv': False, 'fp8': True} (GPTConfig fields; ints, floats, bools, strings)."
    out = {}
    for item in filter(None, text.strip("'\"").split(",")):
        if item == "default": continue
        key, value = item.split("=", 1)
        field_type = GPTConfig.__dataclass_fields__[key].type
        out[key] = value.lower() in ("1", "true", "yes", "on") if field_type in (bool, "bool") else type(getattr(GPTConfig, key))(value)
    return out


def profile_step(step_model, tokens, amp, path: Path, backward=lambda loss: loss.backward()) -> None:
    "One micro-step's forward+backward under the profiler: CUDA time per kernel, written to `path`."
    def micro_step():
        with amp: loss = step_model(tokens[0, :, :-1], tokens[0, :, 1:])
        backward(loss)
    profile_kernels(micro_step, path)


def backward_fn(compiled_autograd: bool):
    "`backward(loss, scale)`: scale*loss's gradients, plainly or under compiled autograd (the whole backward, gradient accumulation included, as one graph)."
    if not compiled_autograd: return lambda loss, scale=1.0: (loss * scale).backward()
    from torch._dynamo import compiled_autograd as ca
    compiler = torch.compile(backend="inductor", dynamic=False)
    def backward(loss, scale=1.0):
        with ca._enable(compiler): loss.backward(torch.full_like(loss, scale))  # a seed gradient, no Python-scalar node
    return backward


def build_run(depth: int, pattern: str, batch: int, seq: int, accum: int, attention: str, compile_model: bool,
              overrides: dict | None = None, compiled_autograd: bool = False) -> SimpleNamespace:
    "A model, its optimizer and random tokens, and `train_step()`: `accum` forward/backward passes, then the optimizer."
    torch.manual_seed(0)
    torch._dynamo.reset()  # each model compiles afresh: no recompile limit reached across rows
    overrides = dict(overrides or {})
    fp8 = overrides.pop("fp8", False)
    config = config_for_depth(depth, sequence_len=seq, window_pattern=pattern, attention=attention, **overrides)
    model = GPT.build(config, device="cuda")
    if fp8: enable_fp8(model)
    optimizer = setup_optimizer(model)
    step_model = torch.compile(model, dynamic=False) if compile_model else model
    tokens = torch.randint(0, config.vocab_size, (accum, batch, seq + 1), device="cuda")
    amp = autocast_ctx("cuda", torch.bfloat16)
    backward = backward_fn(compiled_autograd)

    def train_step():
        for micro in range(accum):
            with amp: loss = step_model(tokens[micro, :, :-1], tokens[micro, :, 1:])
            backward(loss, 1.0 / accum)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return SimpleNamespace(config=config, model=model, optimizer=optimizer, step_model=step_model, tokens=tokens, amp=amp,
                           train_step=train_step, fp8=fp8, overrides=overrides, backward=backward)


def measure(depth: int, pattern: str, batch: int, seq: int, accum: int, steps: int, warmup: int, attention: str,
            compile_model: bool, overrides: dict | None = None, profile_path: Path | None = None,
            compiled_autograd: bool = False) -> dict:
    "Time `steps` full training steps after `warmup` ones; return one record."
    run = build_run(depth, pattern, batch, seq, accum, attention, compile_model, overrides, compiled_autograd)
    config, optimizer, step_model, tokens, amp, train_step = run.config, run.optimizer, run.step_model, run.tokens, run.amp, run.train_step
    fp8, overrides = run.fp8, run.overrides
    backend = run.model.attention_backend.name
    flops_per_token = estimate_flops(run.model)

    t0 = time.perf_counter()
    for _ in range(warmup): train_step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    if profile_path is not None: profile_step(step_model, tokens, amp, profile_path, run.backward)
    with amp: loss = step_model(tokens[0, :, :-1], tokens[0, :, 1:])
    run.backward(loss)  # gradients to step on
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    optimizer.step()  # the optimizer step alone
    torch.cuda.synchronize()
    opt_ms = 1000 * (time.perf_counter() - t0)
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.reset_peak_memory_stats()
    with GpuClocks() as clocks:  # the SM clock under sustained load explains much of the run-to-run spread
        start = time.perf_counter()
        for _ in range(steps): loss = train_step()
        loss.item()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    tok_per_s = steps * accum * batch * seq / seconds
    mfu = compute_mfu(flops_per_token, tok_per_s, get_peak_flops(device_name("cuda")) or 989e12)
    record = {"kind": "train", "depth": depth, "pattern": pattern, "short_window": config.short_window_size, "batch": batch, "seq": seq,
              "accum": accum, "world_size": 1,
              "attention": backend, "compiled": compile_model, "tok_per_s": round(tok_per_s), "mfu": round(mfu, 4),
              "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2), "step_ms": round(1000 * seconds / steps, 1),
              "warmup_s": round(warmup_s, 1), "opt_ms": round(opt_ms, 1), "fp8": bool(fp8), "compiled_autograd": compiled_autograd, **{k: v for k, v in overrides.items()}, **clocks.summary}
    reference = reference_tok_per_s(device_name("cuda"), depth, pattern)  # upstream's fixed numbers hold on an H100 only
    if reference: record["vs_upstream"] = round(tok_per_s / reference, 3)
    return record


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[12, 20])
    p.add_argument("--patterns", nargs="+", default=["L", "SSSL"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--accum", type=int, default=None, help="micro-steps per optimizer step (default: base_train's)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attention", nargs="+", default=["auto"], help="backends to compare (each a separate row)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compiled-autograd", nargs="+", type=int, default=[0], choices=[0, 1],
                   help="1: run the backward under compiled autograd (one row per value given, e.g. 0 1)")
    p.add_argument("--variants", nargs="+", default=[""], help="GPTConfig overrides per row, e.g. '' 'fused_qkv=0' 'fp8=1'")
    p.add_argument("--profile-dir", type=Path, default=None, help="write a per-kernel profile of each row's micro-step here")
    p.add_argument("--inductor", nargs="*", default=[], help="torch._inductor.config settings, e.g. coordinate_descent_tuning=1")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): p.error("this benchmark needs a CUDA GPU")
    for pattern in args.patterns:
        if not pattern or set(pattern) - {"S", "L"}: p.error(f"--patterns: {pattern!r} is not made of S and L")
    if min(args.depths + [args.batch, args.seq, args.steps]) < 1: p.error("depths, batch, seq and steps must be positive")

    torch._dynamo.config.recompile_limit = 64
    for item in args.inductor:
        key, value = item.split("=", 1)
        setattr(torch._inductor.config, key, type(getattr(torch._inductor.config, key))(int(value) if value.isdigit() else value))
    records = []
    header = f"{'depth':>5} {'pattern':>7} {'attention':>9} {'variant':>16} {'accum':>5} {'tok/s':>10} {'MFU':>6} {'mem GB':>7} {'opt ms':>7} {'vs upstream':>11}"
    lines = [header]
    print(header)
    for depth in args.depths:
        for pattern in args.patterns:
            for attention in args.attention:
                for variant, cautograd in [(v, c) for v in args.variants for c in args.compiled_autograd]:
                    accum = args.accum or default_accum(depth, args.batch, args.seq)
                    label = (variant or "default") + (" +ca" if cautograd else "")
                    prof = args.profile_dir / f"profile-d{depth}-{pattern}-{variant.replace('=', '').replace(',', '_') or 'base'}{'-ca' if cautograd else ''}.txt" if args.profile_dir else None
                    row = (depth, pattern, args.batch, args.seq, accum, args.steps, args.warmup, attention, not args.no_compile,
                           parse_overrides(variant), prof, bool(cautograd))
                    def run(row=row): return measure(*row)
                    try:
                        try: r = run()
                        except torch.OutOfMemoryError:  # let the compiler recompute activations until it fits
                            torch.cuda.empty_cache()
                            torch._functorch.config.activation_memory_budget = 0.8
                            try: r = run()
                            finally: torch._functorch.config.activation_memory_budget = 1.0
                            r["activation_memory_budget"] = 0.8
                    except Exception as e:  # one failing variant (say FP8 on an old GPU) must not lose the others
                        traceback.print_exc()
                        lines.append(f"{depth:>5} {pattern:>7} {attention:>9} {label:>16} failed: {type(e).__name__}: {str(e)[:200]}")
                        print(lines[-1], flush=True)
                        torch.cuda.empty_cache()
                        continue
                    r["variant"] = label
                    if args.inductor: r["inductor"] = ",".join(args.inductor)
                    records.append(r)
                    torch.cuda.empty_cache()
                    lines.append(f"{depth:>5} {pattern:>7} {r['attention']:>9} {r['variant']:>16} {accum:>5} {r['tok_per_s']:>10,} {r['mfu']:>6.1%} "
                                 f"{r['peak_mem_gb']:>7} {r['opt_ms']:>7} {ratio_cell(r.get('vs_upstream'), 2):>11}")
                    print(lines[-1], flush=True)
    print("\n".join(lines))
    commit = git_commit()
    result = {"name": "train_throughput", "date": date.today().isoformat(), "gpu": device_name("cuda"), "commit": commit,
              "torch": torch.__version__, "records": records}
    save_result(result, args.out)


if __name__ == "__main__":
    main()
