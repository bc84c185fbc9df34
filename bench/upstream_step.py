"""Upstream nanochat's training step, timed the way bench/train_throughput.py times ours, for same-card ratios.

Upstream's fixed reference numbers (its tok/s measured on an H100 80GB, torch 2.11: d12 L 490k tok/s, ...) were taken
once, at whatever SM clock the card held that day. Under the H100's 700 W cap the clock, and with it tok/s, moves by a
few percent from run to run, so a ratio against a fixed number inherits that noise. Timing upstream's step right next
to ours, on the same card, takes it out.

This script never imports our package: `--upstream DIR` must hold upstream's `nanochat/` package (a checkout, or
`git -C MIRROR archive HEAD nanochat | tar -x -C DIR`), which is put first on the import path. It builds the model as
upstream's `scripts/base_train.py` does (width = depth × 64 rounded up to 128-wide heads, meta device, `init_weights`,
`setup_optimizer()`, `torch.compile(model, dynamic=False)`) and times full steps on random tokens: `accum`
forward/backward passes, the optimizer step, `zero_grad`. Upstream's attention falls back to SDPA when FA3 cannot be
loaded, as on the cards of bench/NOTES-train.md.

    python bench/upstream_step.py --upstream .whl/upstream --depths 12 --patterns L
    python bench/upstream_step.py --upstream DIR --device cpu --depths 2 --seq 64 --batch 2 --accum 2   # smoke test

Prints a table and one JSON line, saved as bench/results/upstream_step-DATE.json (or --out); records carry
"impl": "upstream" and the upstream commit (from DIR/UPSTREAM_COMMIT when present).
"""
import argparse
import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as upstream's base_train
import sys
import time
from datetime import date
from pathlib import Path

import torch
from record import GpuClocks, git_commit, profile_kernels, save_result

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s: nanochat.common.get_peak_flops's H100 value (our package is not imported here)


def load_upstream(path: Path):
    "Upstream's GPT and GPTConfig, imported from `path` (which holds its `nanochat/` package)."
    if not (path / "nanochat" / "gpt.py").is_file(): raise SystemExit(f"--upstream {path}: no nanochat/gpt.py there")
    if "nanochat" in sys.modules: raise SystemExit("our nanochat is already imported; run this script in its own process")
    sys.path.insert(0, str(path.resolve()))
    from nanochat.gpt import GPT, GPTConfig
    return GPT, GPTConfig


def build_upstream(GPT, GPTConfig, depth: int, pattern: str, seq: int, vocab: int, device: str):
    "The model as upstream's base_train builds it: meta device, storage on `device`, then its own init."
    head_dim = 128
    width = -(-depth * 64 // head_dim) * head_dim  # aspect ratio 64, rounded up to whole heads
    config = GPTConfig(sequence_len=seq, vocab_size=vocab, n_layer=depth, n_head=width // head_dim,
                       n_kv_head=width // head_dim, n_embd=width, window_pattern=pattern)
    with torch.device("meta"): model = GPT(config)
    model.to_empty(device=device)
    model.init_weights()
    return model


def convert_fp8(model, recipe: str = "tensorwise") -> None:
    "Upstream's FP8 training switch, as its base_train applies it (Linear layers of 128+ features, multiples of 16)."
    import torch.nn as nn

    from nanochat.fp8 import (  # upstream's module (on the path from load_upstream)
        Float8LinearConfig,
        convert_to_float8_training,
    )
    def eligible(mod, fqn):
        return isinstance(mod, nn.Linear) and mod.in_features % 16 == 0 and mod.out_features % 16 == 0 and min(mod.in_features, mod.out_features) >= 128
    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(recipe), module_filter_fn=eligible)


def measure(GPT, GPTConfig, depth: int, pattern: str, batch: int, seq: int, vocab: int, accum: int, steps: int,
            warmup: int, device: str, profile_path: Path | None = None, fp8: bool = False) -> dict:
    "Time `steps` full upstream training steps after `warmup` ones; return one record."
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = build_upstream(GPT, GPTConfig, depth, pattern, seq, vocab, device)
    flops_per_token = model.estimate_flops() if hasattr(model, "estimate_flops") else None  # before FP8 swaps its Linear layers
    if fp8: convert_fp8(model)  # before compiling and before the optimizer, as upstream's base_train orders it
    optimizer = model.setup_optimizer()
    step_model = torch.compile(model, dynamic=False)
    tokens = torch.randint(0, vocab, (accum, batch, seq + 1), device=device)
    inputs, targets = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()  # upstream views targets flat
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train_step():
        for micro in range(accum):
            loss = step_model(inputs[micro], targets[micro])
            (loss / accum).backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup): train_step()
    sync()
    warmup_s = time.perf_counter() - t0
    if profile_path is not None and device == "cuda":
        profile_kernels(lambda: step_model(inputs[0], targets[0]).backward(), profile_path)  # one micro-step
        model.zero_grad(set_to_none=True)
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    with GpuClocks() as clocks:  # {} without nvidia-smi (CPU)
        start = time.perf_counter()
        for _ in range(steps): loss = train_step()
        loss.item()
        sync()
        seconds = time.perf_counter() - start
    tok_per_s = steps * accum * batch * seq / seconds
    record = {"kind": "train", "impl": "upstream", "variant": "upstream-fp8" if fp8 else "upstream", "fp8": fp8, "depth": depth, "pattern": pattern, "batch": batch, "seq": seq, "accum": accum,
              "world_size": 1, "compiled": True, "tok_per_s": round(tok_per_s), "step_ms": round(1000 * seconds / steps, 1),
              "warmup_s": round(warmup_s, 1), "loss": round(loss.item(), 4), **clocks.summary}
    if flops_per_token and device == "cuda":
        record["mfu"] = round(flops_per_token * tok_per_s / H100_BF16_PEAK, 4)
        record["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return record


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", type=Path, required=True, help="a directory holding upstream's nanochat/ package")
    p.add_argument("--depths", type=int, nargs="+", default=[12, 20])
    p.add_argument("--patterns", nargs="+", default=["L"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--accum", type=int, default=8, help="micro-steps per optimizer step")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--fp8", action="store_true", help="upstream's FP8 training (tensorwise scales, its base_train's --fp8)")
    p.add_argument("--profile-dir", type=Path, default=None, help="write a per-kernel profile of each row's micro-step here (CUDA only)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available(): p.error("no CUDA GPU here (use --device cpu for a smoke test)")
    if args.fp8 and args.device != "cuda": p.error("--fp8 needs a CUDA GPU (upstream's FP8 matmuls are Hopper's)")
    for pattern in args.patterns:
        if not pattern or set(pattern) - {"S", "L"}: p.error(f"--patterns: {pattern!r} is not made of S and L")
    if min(args.depths + [args.batch, args.seq, args.accum, args.steps]) < 1: p.error("depths, batch, seq, accum and steps must be positive")
    GPT, GPTConfig = load_upstream(args.upstream)
    commit_file = args.upstream / "UPSTREAM_COMMIT"
    upstream_commit = commit_file.read_text().strip() if commit_file.is_file() else "unknown"

    records = []
    print(f"{'depth':>5} {'pattern':>7} {'accum':>5} {'tok/s':>10} {'MFU':>6} {'SM MHz':>6} {'loss':>7}")
    for depth in args.depths:
        for pattern in args.patterns:
            prof = args.profile_dir / f"profile-upstream-d{depth}-{pattern}.txt" if args.profile_dir else None
            if prof: prof.parent.mkdir(parents=True, exist_ok=True)
            r = measure(GPT, GPTConfig, depth, pattern, args.batch, args.seq, args.vocab, args.accum, args.steps, args.warmup,
                        args.device, prof, args.fp8)
            r["upstream_commit"] = upstream_commit
            records.append(r)
            print(f"{depth:>5} {pattern:>7} {args.accum:>5} {r['tok_per_s']:>10,} {r.get('mfu', float('nan')):>6.1%} "
                  f"{r.get('sm_mhz_mean', 0):>6} {r['loss']:>7}", flush=True)
            if args.device == "cuda": torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    save_result({"name": "upstream_step", "date": date.today().isoformat(), "gpu": gpu, "commit": git_commit(),
                 "upstream_commit": upstream_commit, "torch": torch.__version__, "records": records}, args.out)


if __name__ == "__main__":
    main()
