"""The int8 decode product two ways, compiled, at d20's matrix shapes: the plain form (`F.linear(x, q.to(bf16)) *
scale`: inductor widens the matrix into a bf16 copy, then the library multiplies) against the fused one that
`int8_linear` uses for at most INT8_MATVEC_ROWS rows (`(x[..., None, :] * q).sum(-1) * scale` in fp32: one reduction
kernel over the int8 weights). Also bf16's `F.linear`, the product int8 is meant to beat, and bf16 written the fused
way (`DecodeModel(kernels="reduce")`: a reduction kernel of inductor's in place of cuBLAS's). Run it with
TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 to let inductor tune its reductions' block sizes on the card.

Each time is the median of --repeats passes over enough copies of the weights that they do not sit in the cache
(each call reads from memory, as in a decode step), on CUDA replayed as one CUDA graph (kernel time only, as in the
engine's step); GB/s counts the weight bytes a call must read (int8: one a weight).

    python bench/int8_matvec.py                       # CUDA, rows 1 and 4
    python bench/int8_matvec.py --device cpu --rows 1 --copies 2 --repeats 5

Prints a table and one JSON line, saved as bench/results/int8_matvec-DATE.json (or --out).
"""
import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import args_config, result_header, save_result

from nanochat.engine import int8_quantize

SHAPES = {"qkv": (3840, 1280), "attn_proj": (1280, 1280), "mlp_fc": (5120, 1280), "mlp_proj": (1280, 5120),
          "lm_head": (32768, 1280)}  # (out, in) at d20


def plain(x, q, scale): return (F.linear(x, q.to(x.dtype)) * scale).to(x.dtype)
def fused(x, q, scale): return ((x.unsqueeze(-2).float() * q.float()).sum(-1) * scale).to(x.dtype)
def bf16(x, w, _scale): return F.linear(x, w)
def bf16_reduce(x, w, _scale): return (x.unsqueeze(-2).float() * w.float()).sum(-1).to(x.dtype)


def time_calls(fn, operands: list[tuple], repeats: int, device: torch.device) -> float:
    """Median seconds of one call, cycling through `operands` (each a tuple of fn's arguments). On CUDA the calls are
    captured once as a CUDA graph and replayed, as a decode step replays them: the time is the kernels', not the
    ~50 us of Python and launch around each call that a loop of separate calls would measure."""
    for ops in operands: fn(*ops)  # compile and warm
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for ops in operands: fn(*ops)
            times.append((time.perf_counter() - start) / len(operands))
        return statistics.median(times)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for ops in operands: fn(*ops)
    begin, end, times = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True), []
    for _ in range(repeats):
        begin.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1000 / len(operands))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", default="1,4", type=lambda s: [int(r) for r in s.split(",")])
    p.add_argument("--copies", type=int, default=16, help="weight copies cycled through (more than the cache holds)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available(): p.error("--device cuda: no CUDA GPU here")
    if unknown := set(args.shapes.split(",")) - set(SHAPES): p.error(f"unknown shapes {sorted(unknown)}")
    torch._dynamo.config.recompile_limit = 64  # static shapes: one variant per matrix shape and row count
    compiled = {name: torch.compile(fn, fullgraph=True, dynamic=False) for name, fn in
                (("plain", plain), ("fused", fused), ("bf16", bf16), ("bf16_reduce", bf16_reduce))}
    records = []
    print(f"{'matrix':<10} {'rows':>4} {'bf16 us':>9} {'plain us':>9} {'fused us':>9} {'fused GB/s':>10} "
          f"{'fused vs plain':>14} {'fused vs bf16':>13} {'bf16 reduce us':>14}")
    for name in args.shapes.split(","):
        out_f, in_f = SHAPES[name]
        weights = [torch.randn(out_f, in_f, device=device) * 0.02 for _ in range(args.copies)]
        quantized = [int8_quantize(w) for w in weights]
        weights = [w.bfloat16() for w in weights]
        for rows in args.rows:
            x = torch.randn(rows, 1, in_f, device=device, dtype=torch.bfloat16)
            with torch.no_grad():
                t = {kind: time_calls(compiled[kind], [(x, w, s) for w, s in quantized], args.repeats, device)
                     for kind in ("plain", "fused")}
                for kind in ("bf16", "bf16_reduce"):
                    t[kind] = time_calls(compiled[kind], [(x, w, None) for w in weights], args.repeats, device)
            gbps = out_f * in_f / t["fused"] / 1e9
            records.append({"kind": "int8_matvec", "matrix": name, "out": out_f, "in": in_f, "rows": rows,
                            "bf16_us": round(t["bf16"] * 1e6, 2), "plain_us": round(t["plain"] * 1e6, 2),
                            "fused_us": round(t["fused"] * 1e6, 2), "fused_gb_per_s": round(gbps, 1),
                            "bf16_reduce_us": round(t["bf16_reduce"] * 1e6, 2)})
            print(f"{name:<10} {rows:>4} {t['bf16'] * 1e6:>9.1f} {t['plain'] * 1e6:>9.1f} {t['fused'] * 1e6:>9.1f} "
                  f"{gbps:>10.1f} {t['plain'] / t['fused']:>13.2f}x {t['bf16'] / t['fused']:>12.2f}x "
                  f"{t['bf16_reduce'] * 1e6:>14.1f}", flush=True)
    save_result(result_header("int8_matvec", device.type) | {"config": args_config(args, "out"), "records": records}, args.out)


if __name__ == "__main__":
    main()
