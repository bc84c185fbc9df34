"""Does one kernel per MLP beat two at batch 1? A d20 decode step's 20 MLPs as a chain.

At batch 1 the MLP's two products (5120 x 1280 in, 1280 x 5120 out, 13 MB each at d20) are two kernels of 8-9 us,
each too short to keep the memory busy for long: a one-row product spends a large share of its time filling and
draining the memory pipeline (bench/NOTES-decode.md). Here one Triton kernel does the whole MLP: program p takes a
slice of BH hidden units, computes them from the full input row (relu squared, rounded to bf16 as the model rounds),
multiplies them by the matching BH columns of the output matrix, and writes its partial output row in fp32. One
launch reads both matrices, 26 MB; the partial rows (hidden / BH of them) are summed by the compiled code that adds the
residual, as the engine's step would.

Rows, each the chain `x = x + mlp(norm(x))` over 20 layers of distinct weights, compiled, timed as the median replay of
one CUDA graph (`bench/decode_kernels.py`'s `time_us`):
- `cublas`: the library's products (the engine's default step);
- `reduce`: products as compiled reductions (the engine's `kernels="reduce"`);
- `fused BHxBK/BN wW [T]`: the one-kernel MLP with that plan (T: the output matrix stored transposed, so that each
  program's columns are contiguous rows).
Then each plan's kernel alone, 20 layers in a row, without the norm and the residual. Last, the whole batch-1 decode
step (infer_bench's timing: d20 random weights, prompt 128, 256 greedy tokens) of `DecodeModel(kernels="reduce")`,
as the engine runs it and with its one-row MLPs swapped for the fastest plan's kernel.

    python bench/fused_mlp.py                         # CUDA, d20 shapes
    python bench/fused_mlp.py --interpret             # CPU smoke run in Triton's interpreter: tiny shapes, checks only

Prints a table and one JSON line, saved as bench/results/fused_mlp-DATE.json (or --out; the smoke run saves nothing).
"""
import argparse
import functools
import os
import sys
from pathlib import Path

if "--interpret" in sys.argv: os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from decode_kernels import time_us
from record import result_header, save_result
from torch.library import triton_op, wrap_triton

from nanochat.engine import DecodeModel, ReducedProducts
from nanochat.gpt import GPT, MLP, config_for_depth
from nanochat.sampling import SamplingParams
from nanochat.scripts.infer_bench import bench_engine, decode_bytes, get_peak_bandwidth


@triton.jit
def _mlp_partials_kernel(x_ptr, fc_ptr, proj_ptr, part_ptr, H,
                         K: tl.constexpr, N: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
                         PROJ_T: tl.constexpr):
    pid = tl.program_id(0)
    hs = pid * BH + tl.arange(0, BH)
    acc = tl.zeros([BH], dtype=tl.float32)
    for k0 in tl.static_range(0, K, BK):  # unrolled: every load of the program can be issued before the first sum
        ks = k0 + tl.arange(0, BK)
        xk = tl.load(x_ptr + ks, mask=ks < K, other=0.0).to(tl.float32)
        w = tl.load(fc_ptr + hs[:, None].to(tl.int64) * K + ks[None, :], mask=(ks < K)[None, :], other=0.0)
        acc += tl.sum(w.to(tl.float32) * xk[None, :], axis=1)
    h = tl.maximum(acc.to(tl.bfloat16).to(tl.float32), 0.0)  # the product's output is bf16 in the model, then relu
    h = (h * h).to(tl.bfloat16).to(tl.float32)  # and the square, rounded again
    for n0 in tl.static_range(0, N, BN):
        ns = n0 + tl.arange(0, BN)
        if PROJ_T:  # (hidden, out): this program's rows, contiguous
            w = tl.load(proj_ptr + hs[:, None].to(tl.int64) * N + ns[None, :], mask=(ns < N)[None, :], other=0.0)
        else:  # (out, hidden) as the model stores it: BH contiguous values of each of N rows
            w = tl.load(proj_ptr + ns[None, :].to(tl.int64) * H + hs[:, None], mask=(ns < N)[None, :], other=0.0)
        tl.store(part_ptr + pid * N + ns, tl.sum(w.to(tl.float32) * h[:, None], axis=0), mask=ns < N)


@triton_op("nanochat_bench::mlp_partials", mutates_args={})
def mlp_partials(x: torch.Tensor, fc: torch.Tensor, proj: torch.Tensor, bh: int, bk: int, bn: int, warps: int,
                 transposed: bool) -> torch.Tensor:
    "One row's MLP as (hidden // bh) partial output rows in fp32: their sum is `proj(relu(fc(x))**2)`."
    H, K = fc.shape
    N = proj.size(1) if transposed else proj.size(0)
    out = torch.empty(H // bh, N, device=x.device, dtype=torch.float32)
    wrap_triton(_mlp_partials_kernel)[(H // bh,)](x, fc, proj, out, H, K=K, N=N, BH=bh, BK=bk, BN=bn,
                                                  PROJ_T=transposed, num_warps=warps)
    return out


def norm(x): return F.rms_norm(x, (x.size(-1),))


def mlp(x, fc, proj): return F.linear(F.relu(F.linear(x, fc)).square(), proj)


def chain_library(x, layers):
    for fc, proj in layers: x = x + mlp(norm(x), fc, proj)
    return x


def chain_fused(x, layers, plan):
    for fc, proj in layers:
        x = x + mlp_partials(norm(x), fc, proj, *plan).sum(0, keepdim=True).to(x.dtype)
    return x


def kernels_only(x, layers, plan):
    for fc, proj in layers: mlp_partials(x, fc, proj, *plan)


class OneKernelMLP(MLP):
    "An inference copy's MLP whose one-row calls run `mlp_partials` with `plan` (set on the instance)."
    def forward(self, x):
        if x.numel() != x.size(-1): return super().forward(x)
        proj = self.proj_t if self.plan[-1] else self.c_proj.weight
        return mlp_partials(x.reshape(1, -1), self.c_fc.weight, proj, *self.plan).sum(0).view_as(x).to(x.dtype)


def time_step(model: GPT, plan=None, repeats: int = 2) -> list[dict]:
    "Batch-1 decode of `model` under `kernels=\"reduce\"`, its MLPs as they are or (with `plan`) one kernel each."
    decoder = DecodeModel(model, kernels="reduce")
    for block in decoder.net.blocks if plan else []:
        block.mlp.__class__, block.mlp.plan = OneKernelMLP, plan
        if plan[-1]: block.mlp.proj_t = block.mlp.c_proj.weight.t().contiguous()
    peak, rows = get_peak_bandwidth(torch.cuda.get_device_name()), []
    for _ in range(repeats):
        with torch.no_grad(): r = bench_engine(decoder, 1, 128, 256, SamplingParams(temperature=0.0))
        mbu = decode_bytes(decoder, 1, 128 + 128) * r["tok_per_s"] / peak if peak else None
        rows.append({"kind": "decode", "depth": model.config.n_layer, "batch": 1, "kernels": "reduce",
                     "mlp": "one kernel" if plan else "two reductions", "plan": list(plan) if plan else None,
                     "tok_per_s": round(r["tok_per_s"], 1), "p50_ms": round(r["p50_ms"], 4),
                     "mbu": round(mbu, 4) if mbu else None})
        print(f"step, MLP {rows[-1]['mlp']:15s}: {r['tok_per_s']:,.0f} tok/s, p50 {r['p50_ms']:.3f} ms, "
              f"MBU {mbu or float('nan'):.1%}", flush=True)
    return rows


def check(E: int, hidden: int, device: str, plans) -> float:
    "Largest difference of the fused MLP from the library's, over the plans, relative to the output's scale."
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, E, generator=g).to(device, torch.bfloat16)
    fc = (torch.randn(hidden, E, generator=g) * E ** -0.5).to(device, torch.bfloat16)
    proj = (torch.randn(E, hidden, generator=g) * hidden ** -0.5).to(device, torch.bfloat16)
    ref = mlp(x, fc, proj).float()
    worst = 0.0
    for plan in plans:
        w = proj.t().contiguous() if plan[-1] else proj
        got = mlp_partials(x, fc, w, *plan).sum(0, keepdim=True)
        worst = max(worst, ((got - ref).abs().max() / ref.abs().max()).item())
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--no-step", action="store_true", help="time the kernels only, not the whole decode step")
    p.add_argument("--interpret", action="store_true", help="CPU smoke run: check the plans at tiny shapes, time nothing")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    # (BH, BK, BN, warps, transposed): hidden units a program, the chunk of the input row and of the output row
    plans = [(bh, 256, 256, w, t) for bh in (8, 16, 32) for w in (4, 8) for t in (False, True)]  # 256 divides 1280
    if args.interpret:
        err = check(160, 640, "cpu", [(8, 64, 64, 4, False), (16, 64, 64, 4, True)])  # 160: chunks cut by masks
        print(f"interpreter: the fused MLP is within {err:.2e} of the library's at 160 -> 640 -> 160")
        assert err < 2e-2, err  # the interpreter rounds to bf16 by truncation (the GPU to nearest): a looser bound
        return
    if not torch.cuda.is_available(): raise SystemExit("needs a CUDA GPU (or --interpret for the CPU smoke run)")
    E, H, dtype = args.dim, 4 * args.dim, torch.bfloat16
    err = check(E, H, "cuda", plans)
    print(f"the fused MLP is within {err:.2e} of the library's at d20's shapes (relative to the output's largest value)")
    layers = [((torch.randn(H, E, device="cuda") * E ** -0.5).to(dtype),
               (torch.randn(E, H, device="cuda") * H ** -0.5).to(dtype)) for _ in range(args.layers)]
    transposed = [(fc, proj.t().contiguous()) for fc, proj in layers]
    x = torch.randn(1, E, device="cuda", dtype=dtype)
    weight_bytes = sum(fc.nbytes + proj.nbytes for fc, proj in layers)
    records = []

    def record(name, ms, **extra):
        records.append({"kind": "fused_mlp", "impl": name, "layers": args.layers, "chain_ms": round(ms, 4),
                        "us_per_mlp": round(ms * 1e3 / args.layers, 2),
                        "tb_per_s": round(weight_bytes / ms / 1e9, 3), **extra})
        print(f"{name:28s} {ms:.3f} ms a chain, {ms * 1e3 / args.layers:6.2f} us an MLP, "
              f"{weight_bytes / ms / 1e9:.2f} TB/s", flush=True)

    library = torch.compile(chain_library, dynamic=False)
    record("cublas", time_us([functools.partial(library, x, layers)], "cuda", args.repeats) / 1e3)
    reduced = torch.compile(chain_library, dynamic=False)
    with ReducedProducts():
        record("reduce", time_us([functools.partial(reduced, x, layers)], "cuda", args.repeats) / 1e3)
    kernel_ms = {}
    for plan in plans:
        bh, bk, bn, w, t = plan
        name = f"fused {bh}x{bk}/{bn} w{w}{' T' if t else ''}"
        ws = transposed if t else layers
        try:
            kernel_ms[plan] = time_us([functools.partial(kernels_only, x, ws, plan)], "cuda", args.repeats) / 1e3
        except Exception as e:  # a plan that does not compile (registers) is a result too
            print(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)
            continue
        records.append({"kind": "fused_mlp_kernel", "impl": name, "bh": bh, "bk": bk, "warps": w, "transposed": t,
                        "us_per_mlp": round(kernel_ms[plan] * 1e3 / args.layers, 2),
                        "tb_per_s": round(weight_bytes / kernel_ms[plan] / 1e9, 3)})
        print(f"{name:28s} kernel alone {kernel_ms[plan] * 1e3 / args.layers:6.2f} us an MLP, "
              f"{weight_bytes / kernel_ms[plan] / 1e9:.2f} TB/s", flush=True)
    for plan in sorted(kernel_ms, key=kernel_ms.get)[:4]:  # the four fastest kernels, in the compiled chain
        bh, bk, bn, w, t = plan
        ws = transposed if t else layers
        fused = torch.compile(lambda x, ws=ws, plan=plan: chain_fused(x, ws, plan), dynamic=False)
        record(f"fused {bh}x{bk}/{bn} w{w}{' T' if t else ''}",
               time_us([functools.partial(fused, x)], "cuda", args.repeats) / 1e3, bh=bh, bk=bk, warps=w, transposed=t)
    if kernel_ms and not args.no_step:
        model = GPT.build(config_for_depth(args.layers), "cuda").eval()
        records += time_step(model)
        best = min(kernel_ms, key=kernel_ms.get)
        records += time_step(model, best)
        plain = min(kernel_ms, key=lambda plan: kernel_ms[plan] if not plan[-1] else float("inf"))
        if plain != best: records += time_step(model, plain)  # the model's own layout, no transposed copy
    save_result({**result_header("fused_mlp", "cuda"), "weight_bytes": weight_bytes, "max_rel_err": err,
                 "records": records}, args.out)


if __name__ == "__main__":
    main()
