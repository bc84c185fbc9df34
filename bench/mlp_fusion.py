"""Can the compiler fuse ReLU² into the MLP's matmuls, and is that faster than cuBLAS plus a separate pass?

In a d12 training step the ReLU² forward (read the c_fc output, write its square) and backward (read the gradient and
the activation, write the input's gradient) are two memory-bound passes over a (tokens × 4C) tensor per layer, about
6% of the step. Fused into the matmuls' epilogues they would cost almost nothing, if the fused (Triton) matmul is as
fast as cuBLAS. `torch.compile` tries exactly that under max-autotune: it benchmarks Triton matmul templates with
the pointwise epilogue fused against cuBLAS followed by the separate kernel, and keeps the faster.

This times one MLP's forward+backward (fp32 weights, bf16 autocast, as in training) compiled each way. Autotuning
takes minutes per width (it compiles and times ~20 Triton configurations per matmul shape).

    python bench/mlp_fusion.py                       # width 768, 65536 tokens, default vs max-autotune
    python bench/mlp_fusion.py --widths 768 1280 --modes default max_autotune_gemm max_autotune_gemm_tma

Measured on an H100 80GB (torch 2.11, 2026-11-25): the best Triton template for the (65536×768)·(768×768) matmul
took 1.42 ms against cuBLAS's 1.09 ms, so the autotuner keeps cuBLAS and the ReLU² passes stay; a whole d12 step
compiled with max_autotune_gemm ran at 537k tok/s against 534k without (noise). bench/NOTES-train.md has the details.

Prints a table and one JSON line, saved as bench/results/mlp_fusion-DATE.json (or --out).
"""
import argparse
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from record import git_commit, save_result

from nanochat.common import device_name

MODES = {  # name -> torch._inductor.config settings
    "default": {},
    "max_autotune_gemm": {"max_autotune_gemm": True},
    "max_autotune_gemm_tma": {"max_autotune_gemm": True, "triton.enable_persistent_tma_matmul": True},
}


def mlp(x, w_fc, w_proj):
    "The model's MLP: ReLU² between two bias-free linear layers."
    return F.linear(F.relu(F.linear(x, w_fc)).square(), w_proj)


def time_mode(mode: str, width: int, tokens: int, iters: int) -> dict:
    "Compile `mlp` under `mode`'s inductor settings and time forward+backward; returns a record."
    torch._dynamo.reset()
    torch.manual_seed(0)
    w_fc = (torch.randn(4 * width, width, device="cuda") / width**0.5).requires_grad_()
    w_proj = (torch.randn(width, 4 * width, device="cuda") / (4 * width)**0.5).requires_grad_()
    x = torch.randn(tokens, width, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with torch._inductor.config.patch(MODES[mode]):
        fn = torch.compile(mlp, dynamic=False)
        t0 = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16): out = fn(x, w_fc, w_proj)
        out.float().square().mean().backward()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        grad_out = torch.randn_like(out)

        def step():
            with torch.autocast("cuda", torch.bfloat16): y = fn(x, w_fc, w_proj)
            y.backward(grad_out)
        for _ in range(3): step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters): step()
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - t0) / iters
    flops = 3 * 2 * 2 * tokens * width * 4 * width  # two matmuls, forward + two backward each
    return {"kind": "mlp", "mode": mode, "width": width, "tokens": tokens, "ms": round(ms, 3),
            "tflops": round(flops / ms / 1e9, 1), "compile_s": round(compile_s, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[768])
    p.add_argument("--tokens", type=int, default=65536)
    p.add_argument("--modes", nargs="+", default=["default", "max_autotune_gemm"], choices=list(MODES))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): p.error("this benchmark needs a CUDA GPU")
    records = []
    print(f"{'width':>6} {'mode':>22} {'ms':>8} {'TFLOP/s':>8} {'compile s':>9}")
    for width in args.widths:
        for mode in args.modes:
            r = time_mode(mode, width, args.tokens, args.iters)
            records.append(r)
            print(f"{width:>6} {mode:>22} {r['ms']:>8.3f} {r['tflops']:>8.1f} {r['compile_s']:>9.1f}", flush=True)
    save_result({"name": "mlp_fusion", "date": date.today().isoformat(), "gpu": device_name("cuda"), "commit": git_commit(),
                 "torch": torch.__version__, "records": records}, args.out)


if __name__ == "__main__":
    main()
