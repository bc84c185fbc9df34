"""Rotary + QK-norm of queries and keys alone, plain vs fused (chapter 81): forward+backward time and bandwidth.

At the training shape (32 × 2048 positions, head size 128) with the head counts of d12 (6) and d20 (10), bf16:
- plain: `apply_rotary`, `F.rms_norm`, × 1.2 (GPT's path without `fused_rope_norm`), compiled with torch.compile;
- fused: `nanochat.rope_norm.rope_norm` with the 1.2 folded in (one Triton kernel each way, backward from the output), for several
  `rows` per program.
Each timing is one forward and backward of q and k, the gradient arriving through a transposed view as it does from
attention. Bandwidth counts the bytes the fused kernels must move (forward: read x, write y; backward: read dy and
y, write dx).

    python bench/rope_norm.py                # CUDA only

Prints a table and one JSON line, saved as bench/results/rope_norm-DATE.json (or --out).
"""
import argparse
from datetime import date
from pathlib import Path

import torch
from record import git_commit, save_result

from nanochat.common import device_name
from nanochat.gpt import apply_rotary, norm, rotary_tables
from nanochat.rope_norm import (
    rope_norm,
    rope_norm_backward_torch,
    rope_norm_backward_triton,
    rope_norm_torch,
    rope_norm_triton,
)

QK_SCALE = 1.2  # what the GPT multiplies normalised queries and keys by (GPTConfig.qk_scale), folded into the kernel


def plain(x, cos, sin): return norm(apply_rotary(x, cos, sin)) * QK_SCALE


def fused(x, cos, sin): return rope_norm(x, cos, sin, scale=QK_SCALE)


def agreement(cos, sin) -> float:
    "Largest difference of the kernels from the torch reference (forward and backward, bf16, strided gradient)."
    x = torch.randn(4, cos.size(0), 6, 2 * cos.size(1), device="cuda").to(torch.bfloat16)
    y, rstd = rope_norm_triton(x, cos, sin, 2**-7, QK_SCALE)
    y_ref, _ = rope_norm_torch(x, cos, sin, 2**-7, QK_SCALE)
    dy = torch.randn(4, 6, cos.size(0), 2 * cos.size(1), device="cuda").to(torch.bfloat16).transpose(1, 2)
    dx = rope_norm_backward_triton(dy, y, rstd, cos, sin, QK_SCALE)
    dx_ref = rope_norm_backward_torch(dy, y, rstd, cos, sin, QK_SCALE)
    worst = max((y.float() - y_ref.float()).abs().max().item(), (dx.float() - dx_ref.float()).abs().max().item())
    if worst > 5e-2: raise SystemExit(f"the Triton kernels disagree with the torch reference by {worst:.3g}")
    return worst


def time_ms(fn, repeats: int) -> float:
    "Median milliseconds of `fn` (CUDA events, after warm-up)."
    for _ in range(3): fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(); fn(); end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure(heads: int, args, cos, sin, compiled_plain) -> list[dict]:
    "One record per implementation for `heads` heads: q and k, forward and backward, as in one attention layer."
    x = torch.randn(args.batch, args.seq, heads, args.head_dim, device="cuda").to(torch.bfloat16)
    dy = torch.randn(args.batch, heads, args.seq, args.head_dim, device="cuda").to(torch.bfloat16).transpose(1, 2)
    tensor_bytes = x.numel() * x.element_size()
    moved = 2 * (2 * tensor_bytes + 3 * tensor_bytes)  # q and k; forward reads x, writes y; backward reads dy, y, writes dx

    def step(fn):
        xs = [x.detach().requires_grad_() for _ in range(2)]
        torch.autograd.backward([fn(xi, cos, sin) for xi in xs], [dy, dy])

    def kernels(rows):
        for _ in range(2):
            y, rstd = rope_norm_triton(x, cos, sin, 2**-7, QK_SCALE, rows=rows)
            rope_norm_backward_triton(dy, y, rstd, cos, sin, QK_SCALE, rows=rows)

    impls = {"plain compiled": (lambda: step(compiled_plain), lambda: [compiled_plain(x, cos, sin) for _ in range(2)]),
             "rope_norm op": (lambda: step(fused), lambda: [fused(x, cos, sin) for _ in range(2)])}
    for rows in args.rows: impls[f"kernels rows={rows}"] = (lambda rows=rows: kernels(rows), None)
    records = []
    for name, (both, forward) in impls.items():
        total = time_ms(both, args.repeats)
        fwd = time_ms(forward, args.repeats) if forward else None
        records.append({"kind": "rope_norm", "heads": heads, "batch": args.batch, "seq": args.seq, "head_dim": args.head_dim,
                        "impl": name, "fwd_bwd_ms": round(total, 3), "fwd_ms": round(fwd, 3) if fwd else None,
                        "gb_per_s": round(moved / total / 1e6)})
    return records


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, nargs="+", default=[6, 10])
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--rows", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): raise SystemExit("bench/rope_norm.py needs a CUDA GPU (the fused kernels are Triton)")
    cos, sin = (t.cuda() for t in rotary_tables(args.seq, args.head_dim))
    worst = agreement(cos, sin)
    print(f"kernels vs torch reference (bf16): max abs difference {worst:.2e}")
    compiled_plain = torch.compile(plain, dynamic=False)
    lines = [f"{'heads':>5} {'impl':>16} {'fwd ms':>7} {'bwd ms':>7} {'fwd+bwd ms':>10} {'GB/s':>6}"]
    print(lines[0])
    records = []
    for heads in args.heads:
        for r in measure(heads, args, cos, sin, compiled_plain):
            records.append(r)
            fwd, total = r["fwd_ms"], r["fwd_bwd_ms"]
            lines.append(f"{heads:>5} {r['impl']:>16} {fwd or float('nan'):>7.3f} {(total - fwd) if fwd else float('nan'):>7.3f} "
                         f"{total:>10.3f} {r['gb_per_s']:>6}")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    save_result({"name": "rope_norm", "date": date.today().isoformat(), "gpu": device_name("cuda"), "commit": git_commit(),
                 "torch": torch.__version__, "max_abs_diff": worst, "records": records}, args.out)


if __name__ == "__main__":
    main()
