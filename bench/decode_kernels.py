"""The decode kernels of chapter 84 against what the engine runs without them, one kernel at a time, at batch 1-4.

- Matrix-vector products: the five matrices of a d20 decode step (q/k/v stacked, the attention's output, the MLP's in
  and out, the output layer), `F.linear` (cuBLAS) against `decode_kernels.gemv` (split-K).
- Attention of one layer: the engine's masked SDPA (`_StepCache.attend`: an additive mask over the span, grouped heads)
  against `decode_attention` (split-KV), at spans 256-2048 with every row at the end of the span, for a full-context
  layer and a sliding-window one.

Each time is the median over several replays of a CUDA graph holding one call per copy of the operands, with enough
copies (weights, caches) that they do not fit in the GPU's L2 cache: each call reads from memory, as in a decode step.
Bandwidth counts the bytes a call must read (the weights or the keys and values the rows see) and write.

    python bench/decode_kernels.py                                   # CUDA, d20
    python bench/decode_kernels.py --device cpu --interpret          # a smoke run: tiny shapes, Triton's interpreter

Prints a table and one JSON line, saved as bench/results/decode_kernels-DATE.json (or --out; the smoke run saves
nothing unless given --out: its times are the interpreter's).
"""
import argparse
import functools
import os
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from record import git_commit, save_result

from nanochat.common import device_name
from nanochat.gpt import config_for_depth

L2_FLUSH_BYTES = 256 << 20  # operands per timing: several copies, together well past an H200's 50 MB of L2 cache


def matrices(config) -> dict[str, tuple[int, int]]:
    "The (n, k) of each matrix a decode step multiplies by."
    E, kv = config.n_embd, config.n_kv_head * config.head_dim
    return {"qkv": (E + 2 * kv, E), "attn_out": (E, E), "mlp_in": (4 * E, E), "mlp_out": (E, 4 * E),
            "lm_head": (config.vocab_size, E)}


def copies_for(nbytes: int, most: int) -> int: return max(1, min(most, -(-L2_FLUSH_BYTES // nbytes)))


def time_us(calls: list, device: str, repeats: int) -> float:
    "Microseconds per call: `calls` (one per copy of the operands) in a CUDA graph, replayed; on the CPU, timed once."
    if device != "cuda":
        start = time.perf_counter()
        for call in calls: call()
        return (time.perf_counter() - start) / len(calls) * 1e6
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile the kernels, allocate, before capturing
        for call in calls: call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls: call()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    return sorted(times)[len(times) // 2]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    "The options both kernel benchmarks take: where to run, and the model whose shapes to time."
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--interpret", action="store_true", help="Triton's interpreter (TRITON_INTERPRET=1): the CPU smoke run")
    p.add_argument("--depth", type=int, default=None, help="model depth (default 20; 2 with --interpret)")
    p.add_argument("--vocab-size", type=int, default=None, help="output layer rows (default 32768; 256 with --interpret)")


def load_kernels(device: str, interpret: bool):
    """`nanochat.decode_kernels`, imported after TRITON_INTERPRET is set when `interpret` (Triton reads it at import);
    exits saying why where the kernels cannot run on `device`."""
    if interpret: os.environ["TRITON_INTERPRET"] = "1"
    from nanochat import decode_kernels as dk
    if device == "cuda" and not torch.cuda.is_available(): raise SystemExit("no CUDA GPU: use --device cpu --interpret")
    if not dk.available(device):
        raise SystemExit(f"the decode kernels cannot run on {device}: they need Triton"
                         + ("" if device == "cuda" else " and --interpret"))
    return dk


def engine_attention(q, k, v, mask):
    "The engine's decode attention (chapter 19b's `_StepCache.attend`), the mask made beforehand as a step does."
    (S, H, D), Hkv, span = q.shape, k.size(2), mask.size(-1)
    return F.scaled_dot_product_attention(q.view(S, Hkv, H // Hkv, D), k[:, :span].transpose(1, 2),
                                          v[:, :span].transpose(1, 2), attn_mask=mask).reshape(S, H, D)


def bench_gemv(dk, config, args, dtype) -> list[dict]:
    records = []
    for name, (n, k) in matrices(config).items():
        weight_bytes = n * k * dtype.itemsize
        ws = [torch.randn(n, k, device=args.device).to(dtype) for _ in range(copies_for(weight_bytes, args.copies))]
        for rows in args.batch_sizes:
            x = torch.randn(rows, k, device=args.device).to(dtype)
            want = F.linear(x.float(), ws[0].float())
            worst = ((dk.gemv(x, ws[0]).float() - want).abs() / (want.abs() + 1)).max().item()
            if worst > 2e-2: raise SystemExit(f"gemv disagrees with F.linear on {name} at {rows} rows: {worst:.3g}")
            moved = weight_bytes + rows * (n + k) * dtype.itemsize
            for impl, fn in (("cublas", F.linear), ("triton", dk.gemv)):
                us = time_us([functools.partial(fn, x, w) for w in ws], args.device, args.repeats)
                records.append({"kind": "gemv", "matrix": name, "n": n, "k": k, "batch": rows, "impl": impl,
                                "us": round(us, 2), "tb_per_s": round(moved / us / 1e6, 3)})
    return records


def bench_attention(dk, config, args, dtype) -> list[dict]:
    records, Hkv, H, D = [], config.n_kv_head, config.n_head, config.head_dim
    windows = sorted({config.window(layer) for layer in range(config.n_layer)})  # d20: 513 (S) and 2049 (L)
    for span in args.spans:
        cache_len = span + 1  # as the engine's cache: one position more than a row uses
        cache_bytes = 2 * cache_len * Hkv * D * dtype.itemsize
        for rows in args.batch_sizes:
            caches = [tuple(torch.randn(rows, cache_len, Hkv, D, device=args.device).to(dtype) for _ in range(2))
                      for _ in range(copies_for(rows * cache_bytes, args.copies))]
            q = torch.randn(rows, H, D, device=args.device).to(dtype)
            pos = torch.full((rows,), span - 1, device=args.device)  # every row at the end of the span: the longest
            keys = torch.arange(span, device=args.device)[None]
            for window in windows:
                allowed = ((keys <= pos[:, None]) & (keys > pos[:, None] - window))[:, None, None]
                mask = torch.zeros(allowed.shape, dtype=dtype, device=args.device).masked_fill_(~allowed, float("-inf"))
                k, v = caches[0]
                worst = (dk.decode_attention(q, k, v, pos, window, span).float()
                         - engine_attention(q.float(), k.float(), v.float(), mask.float())).abs().max().item()
                if worst > 3e-2: raise SystemExit(f"decode_attention disagrees with SDPA at span {span}: {worst:.3g}")
                moved = rows * min(window, span) * 2 * Hkv * D * dtype.itemsize + 2 * q.numel() * dtype.itemsize
                impls = (("sdpa", [functools.partial(engine_attention, q, k, v, mask) for k, v in caches]),
                         ("triton", [functools.partial(dk.decode_attention, q, k, v, pos, window, span)
                                     for k, v in caches]))
                for impl, calls in impls:
                    us = time_us(calls, args.device, args.repeats)
                    records.append({"kind": "attention", "span": span, "window": window, "batch": rows,
                                    "impl": impl, "us": round(us, 2), "tb_per_s": round(moved / us / 1e6, 3)})
    return records


def summary(records: list[dict], config) -> dict:
    "Per batch-1 step: the block products (n_layer of each block matrix) and one attention per layer at each span."
    out = {}
    for impl in ("cublas", "triton"):
        block = [r for r in records if r["kind"] == "gemv" and r["batch"] == 1 and r["impl"] == impl
                 and r["matrix"] != "lm_head"]
        out[f"block_products_ms_{impl}"] = round(config.n_layer * sum(r["us"] for r in block) / 1e3, 4)
    for impl in ("sdpa", "triton"):
        for r in records:
            if r["kind"] == "attention" and r["batch"] == 1 and r["impl"] == impl:
                out[f"attention_us_{impl}_span{r['span']}_window{r['window']}"] = r["us"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[1, 2, 4])
    p.add_argument("--spans", type=lambda s: [int(b) for b in s.split(",")], default=None,
                   help="cache spans, comma-separated (default 256,512,1024,2048; 64 with --interpret)")
    p.add_argument("--copies", type=int, default=64, help="most copies of the operands per timing (L2 flushing)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    dk = load_kernels(args.device, args.interpret)
    small = args.interpret
    depth, vocab = args.depth or (2 if small else 20), args.vocab_size or (256 if small else 32768)
    args.spans = args.spans or ([64] if small else [256, 512, 1024, 2048])
    if small: args.copies, args.repeats = min(args.copies, 1), 1
    config = config_for_depth(depth, vocab)
    dtype = torch.bfloat16
    records = bench_gemv(dk, config, args, dtype) + bench_attention(dk, config, args, dtype)
    print(f"\nd{depth} (width {config.n_embd}, {config.n_head} heads of {config.head_dim}, {config.n_kv_head} kv heads) "
          f"on {device_name(args.device)}{' (Triton interpreter: times mean nothing)' if small else ''}")
    print(f"{'kernel':<10} {'shape':<22} {'batch':>5} {'impl':>7} {'µs':>9} {'TB/s':>7}")
    for r in records:
        shape = f"{r['matrix']} {r['n']}x{r['k']}" if r["kind"] == "gemv" else f"span {r['span']} window {r['window']}"
        print(f"{r['kind']:<10} {shape:<22} {r['batch']:>5} {r['impl']:>7} {r['us']:>9.2f} {r['tb_per_s']:>7.3f}")
    totals = summary(records, config)
    print("batch 1, per step:", ", ".join(f"{k} {v}" for k, v in totals.items() if k.startswith("block")))
    import triton
    result = {"name": "decode_kernels", "date": date.today().isoformat(), "device": device_name(args.device),
              "commit": git_commit(), "torch": torch.__version__, "triton": triton.__version__, "interpret": small,
              "depth": depth, "records": records, "summary": totals}
    if small and args.out is None:
        import json
        print(json.dumps(result))
    else: save_result(result, args.out)


if __name__ == "__main__":
    main()
