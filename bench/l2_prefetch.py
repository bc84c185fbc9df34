"""Does warming the L2 cache ahead of a one-row product pay? A d20 decode step's 80 block products as a chain.

At batch 1 each product reads its weights once, 3-13 MB, in a few microseconds, and the memory sits idle between
products (attention, norms, launch gaps). The chain here runs the step's products in order, each feeding the next, in
one CUDA graph, the way a decode step does. With `--ahead N` a small kernel issued before product j asks the memory
system to bring product j+N's weights into L2 (`cp.async.bulk.prefetch.L2`, fire and forget: the kernel ends at once,
the copy goes on in the background), so that product j+N finds them on chip.

Rows: the chain through cuBLAS (`F.linear`) and through compiled reductions (the engine's `kernels="reduce"` form),
each with no prefetch and with prefetch 1 and 2 products ahead, and for reference one product reading weights already
in L2. Time is the median over replays of the graph (`bench/decode_kernels.py`'s `time_us`); bandwidth counts the weights the chain reads.

On an H100 it does not pay: the prefetch slows every chain, and a product whose weights are already in L2 is only
8-31% faster (bench/NOTES-decode.md, "Warming L2 ahead of each product").

    python bench/l2_prefetch.py                # CUDA, d20 shapes

Prints a table and one JSON line, saved as bench/results/l2_prefetch-DATE.json (or --out).
"""
import argparse
import functools
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from decode_kernels import time_us
from record import result_header, save_result

from nanochat.engine import reduced_product


@triton.jit
def _prefetch_l2_kernel(ptr, n_chunks, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ptrs = ptr + offs.to(tl.int64) * CHUNK
    ptrs = tl.where(offs < n_chunks, ptrs, ptr)  # lanes past the end ask for the first chunk again: harmless
    tl.inline_asm_elementwise(f"cp.async.bulk.prefetch.L2.global [$1], {CHUNK}; mov.u32 $0, 0;", "=r,l", [ptrs],
                              dtype=tl.int32, is_pure=False, pack=1)


def prefetch_l2(t: torch.Tensor, chunk: int = 4096, block: int = 128) -> None:
    "Ask for `t`'s bytes (contiguous, 16-byte aligned) to be brought into L2; returns before they arrive."
    n_chunks = t.nbytes // chunk  # a partial last chunk is left out: at most chunk-1 bytes
    _prefetch_l2_kernel[(triton.cdiv(n_chunks, block),)](t.view(torch.uint8).view(-1), n_chunks, CHUNK=chunk,
                                                         BLOCK=block, num_warps=block // 32)


def reduce_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    "The engine's one-row product under `kernels=\"reduce\"` (`ReducedProducts`)."
    return reduced_product(x, w).to(x.dtype)


def chain_calls(weights: list[torch.Tensor], x: torch.Tensor, product, ahead: int, chunk: int):
    "One decode step's products in order, each one's output (cut or padded to width) the next one's input."
    def run():
        h = x
        for j, w in enumerate(weights):
            if ahead and j + ahead < len(weights): prefetch_l2(weights[j + ahead], chunk)
            k = w.size(1)
            inp = h[:, :k] if h.size(1) >= k else F.pad(h, (0, k - h.size(1)))
            h = product(inp, w)
        return h
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--chunks", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): raise SystemExit("needs a CUDA GPU (sm_90 for the bulk prefetch)")
    E, dtype = args.dim, torch.bfloat16
    shapes = [(3 * E, E), (E, E), (4 * E, E), (E, 4 * E)] * args.layers
    weights = [(torch.randn(n, k, device="cuda") * k ** -0.5).to(dtype) for n, k in shapes]
    x = torch.randn(1, E, device="cuda", dtype=dtype)
    total = sum(w.nbytes for w in weights)
    compiled = torch.compile(reduce_product, dynamic=False)
    records = []
    for impl, product in (("cublas", F.linear), ("reduce", compiled)):
        for ahead in (0, 1, 2):
            for chunk in (args.chunks if ahead else args.chunks[:1]):
                ms = time_us([chain_calls(weights, x, product, ahead, chunk)], "cuda", args.repeats) / 1e3
                records.append({"kind": "l2_prefetch", "impl": impl, "ahead": ahead, "chunk": chunk if ahead else 0,
                                "products": len(weights), "chain_ms": round(ms, 4),
                                "us_per_product": round(ms * 1e3 / len(weights), 2),
                                "tb_per_s": round(total / ms / 1e9, 3)})
                print(f"{impl:7s} ahead {ahead} chunk {chunk if ahead else '-':>6}: {ms:.3f} ms a chain, "
                      f"{ms * 1e3 / len(weights):.2f} us a product, {total / ms / 1e9:.2f} TB/s", flush=True)
        # one product, the same weights every call: from L2 after the first
        for n, k in shapes[:4]:
            w, xin = weights[shapes.index((n, k))], torch.randn(1, k, device="cuda", dtype=dtype)
            ms = time_us([functools.partial(product, xin, w)] * 20, "cuda", args.repeats) / 1e3
            records.append({"kind": "l2_prefetch", "impl": impl, "ahead": -1, "n": n, "k": k,
                            "warm_l2_us": round(ms * 1e3, 2), "tb_per_s": round(w.nbytes / ms / 1e9, 3)})
            print(f"{impl:7s} {n}x{k} from L2: {ms * 1e3:.2f} us ({w.nbytes / ms / 1e9:.2f} TB/s)", flush=True)
    save_result({**result_header("l2_prefetch", "cuda"), "weight_bytes": total, "records": records}, args.out)


if __name__ == "__main__":
    main()
