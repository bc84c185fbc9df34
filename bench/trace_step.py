"""Where a training step's wall time goes: GPU busy vs idle, the largest idle gaps, and what the CPU was doing then.

Builds the same step as bench/train_throughput.py, times a few steps without the profiler, then traces `--traced`
consecutive steps (CPU and CUDA, no sync in between) and reads the trace back:

- busy: the union of kernel, memcpy and memset intervals on the GPU; idle: the rest of the traced span;
- each idle gap longer than --min-gap-us, charged to the CPU op that launched the kernel ending it (the innermost
  `cpu_op` around the launch, and its outermost one), and any synchronizing CUDA call the CPU made meanwhile;
- kernel time per step by kind, to compare with the wall time of an unprofiled step.

    python bench/trace_step.py --depth 12 --pattern L --accum 8          # prints a report; --trace-out keeps the trace

Prints a table and one JSON line, saved as bench/results/trace_step-DATE.json (or --out).
"""
import argparse
import gzip
import json
import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
import bisect
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import torch
from record import GpuClocks, git_commit, save_result
from train_throughput import build_run, default_accum, parse_overrides

from nanochat.common import device_name

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
BLOCKING_CALLS = {"cudaMemcpy", "cudaFree", "cudaFreeHost", "cudaMalloc", "cudaMallocHost", "cudaHostAlloc"}  # the CPU waits for (or stalls) the GPU


def is_sync_call(name: str) -> bool:
    "A CUDA runtime or driver call that makes the CPU wait: any *Synchronize, a blocking copy, an allocation or a free."
    return name.endswith("Synchronize") or name in BLOCKING_CALLS


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    "Sorted, overlapping (start, end) intervals joined into disjoint ones."
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]: out[-1] = (out[-1][0], max(out[-1][1], e))
        else: out.append((s, e))
    return out


def kernel_kind(name: str) -> str:
    "A coarse family for a kernel name (matmul, attention, triton, optimizer, copy, other)."
    n = name.lower()
    if any(k in n for k in ("gemm", "sm90_xmma", "cutlass", "nvjet", "cublas")): return "matmul"
    if any(k in n for k in ("flash", "fmha", "cudnn", "attention", "sdpa")): return "attention"
    if n.startswith("triton_") or "_kernel" in n and "triton" in n: return "triton"
    if "foreach" in n or "multi_tensor" in n: return "foreach"
    if "memcpy" in n or "memset" in n or "copy" in n: return "copy"
    return "other"


class CpuOps:
    "The `cpu_op` events of one thread, to find which ops enclose a moment (innermost and outermost)."

    def __init__(self, events: list[dict]):
        self.events = sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0)))
        self.starts = [e["ts"] for e in self.events]

    def enclosing(self, t: float) -> list[str]:
        "Names of the ops running at `t`, outermost first."
        out, i = [], bisect.bisect_right(self.starts, t)
        for e in self.events[max(0, i - 4000):i]:  # ops are short; a bounded look-back keeps this linear enough
            if e["ts"] <= t <= e["ts"] + e.get("dur", 0): out.append(e)
        return [e["name"] for e in sorted(out, key=lambda e: (e["ts"], -e.get("dur", 0)))]


def analyse(trace: dict, min_gap_us: float) -> dict:
    "Busy/idle split, gaps charged to the CPU ops that ended them, and kernel time by kind, from a chrome trace."
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATS), key=lambda e: e["ts"])
    # Launches go through the runtime API (cuBLAS, aten) or the driver API (Triton's kernels): both carry the correlation id.
    runtime = {e["args"].get("correlation"): e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and "args" in e}
    ops_by_thread = defaultdict(list)
    for e in events:
        if e.get("cat") in ("cpu_op", "user_annotation"): ops_by_thread[e["tid"]].append(e)
    cpu_ops = {tid: CpuOps(evs) for tid, evs in ops_by_thread.items()}
    if not gpu: raise ValueError("the trace has no GPU kernels: was CUDA activity recorded?")
    busy = merged([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    span = busy[-1][1] - busy[0][0]
    busy_us = sum(e - s for s, e in busy)
    by_kind = defaultdict(float)
    for e in gpu: by_kind[kernel_kind(e["name"])] += e["dur"]
    syncs = sorted((e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and is_sync_call(e["name"])),
                   key=lambda e: e["ts"])
    gaps, by_op = [], defaultdict(lambda: [0.0, 0])
    gpu_starts = [g["ts"] for g in gpu]
    for (_, prev_end), (next_start, _) in zip(busy, busy[1:]):
        gap = next_start - prev_end
        if gap < min_gap_us: continue
        first = gpu[bisect.bisect_left(gpu_starts, next_start)]  # the kernel that ended the gap
        launch = runtime.get(first["args"].get("correlation"))
        stack = cpu_ops[launch["tid"]].enclosing(launch["ts"]) if launch and launch["tid"] in cpu_ops else []
        during = [s["name"] for s in syncs if s["ts"] < next_start and s["ts"] + s["dur"] > prev_end]
        key = " > ".join(stack[:1] + stack[-1:]) if stack else "(no cpu op)"
        by_op[key][0] += gap; by_op[key][1] += 1
        gaps.append({"gap_us": round(gap, 1), "next_kernel": first["name"][:80], "launch_stack": stack[-4:],
                     "launch_lag_us": round(first["ts"] - launch["ts"] - launch["dur"], 1) if launch else None,
                     "syncs": sorted(set(during))[:4], "at_ms": round((prev_end - busy[0][0]) / 1000, 2)})
    gaps.sort(key=lambda g: -g["gap_us"])
    return {"span_ms": span / 1000, "busy_ms": busy_us / 1000, "idle_ms": (span - busy_us) / 1000,
            "kernel_ms_by_kind": {k: round(v / 1000, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "gaps_over_min": len(gaps), "gap_ms_over_min": round(sum(g["gap_us"] for g in gaps) / 1000, 2),
            "top_gaps": gaps[:25],
            "gap_ms_by_launching_op": {k: {"ms": round(v[0] / 1000, 2), "count": v[1]}
                                       for k, v in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:20]},
            "sync_calls": {name: sum(1 for s in syncs if s["name"] == name) for name in sorted({s["name"] for s in syncs})}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--pattern", default="L")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--accum", type=int, default=None, help="micro-steps per optimizer step (default: base_train's)")
    p.add_argument("--attention", default="auto")
    p.add_argument("--variant", default="", help="GPTConfig overrides, e.g. 'fused_rope_norm=0'")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timed", type=int, default=4, help="unprofiled steps timed for the wall-clock reference")
    p.add_argument("--traced", type=int, default=2, help="consecutive steps under the profiler")
    p.add_argument("--min-gap-us", type=float, default=20.0)
    p.add_argument("--with-stack", action="store_true", help="record Python stacks too (slower CPU side)")
    p.add_argument("--trace-out", type=Path, default=None, help="also keep the chrome trace here (.json.gz)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): p.error("this benchmark needs a CUDA GPU")
    if args.traced < 1 or args.timed < 1: p.error("--traced and --timed must be at least 1")

    from torch.profiler import ProfilerActivity, profile
    torch._dynamo.config.recompile_limit = 64
    accum = args.accum or default_accum(args.depth, args.batch, args.seq)
    run = build_run(args.depth, args.pattern, args.batch, args.seq, accum, args.attention, True, parse_overrides(args.variant))
    for _ in range(args.warmup): run.train_step()
    torch.cuda.synchronize()
    with GpuClocks() as timed_clocks:
        start = time.perf_counter()
        for _ in range(args.timed): loss = run.train_step()
        loss.item()
        wall_ms = 1000 * (time.perf_counter() - start) / args.timed
    torch.cuda.synchronize()
    with GpuClocks() as traced_clocks, profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=args.with_stack) as prof:
        for _ in range(args.traced): loss = run.train_step()
        loss.item()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
        if args.trace_out:
            args.trace_out.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(args.trace_out, "wt") as f: f.write(path.read_text())
    report = analyse(trace, args.min_gap_us)
    per_step = {k: round(v / args.traced, 2) for k, v in report.items() if k.endswith("_ms")}
    print(f"d{args.depth} {args.pattern} {args.variant or 'default'}: accum {accum}, unprofiled step {wall_ms:.1f} ms; "
          f"traced per step: span {per_step['span_ms']} ms, GPU busy {per_step['busy_ms']} ms, idle {per_step['idle_ms']} ms")
    print("kernel ms per step by kind:", {k: round(v / args.traced, 2) for k, v in report["kernel_ms_by_kind"].items()})
    print(f"gaps >= {args.min_gap_us} us: {report['gaps_over_min']} totalling {report['gap_ms_over_min']} ms over {args.traced} steps")
    print("\ngap ms by the op that launched the next kernel (outermost > innermost):")
    for k, v in report["gap_ms_by_launching_op"].items(): print(f"  {v['ms']:>8.2f} ms  {v['count']:>5}x  {k[:110]}")
    print("\nlargest gaps:")
    for g in report["top_gaps"][:15]:
        print(f"  {g['gap_us']:>9.1f} us at {g['at_ms']:>8.2f} ms, next {g['next_kernel'][:50]}, launched in {' > '.join(g['launch_stack'])[:90]}"
              f"{', syncs ' + ','.join(g['syncs']) if g['syncs'] else ''}")
    print("synchronizing CUDA calls:", report["sync_calls"])
    print(f"GPU while timed: {timed_clocks.summary or 'no nvidia-smi'}; while traced: {traced_clocks.summary or 'no nvidia-smi'}")
    record = {"kind": "trace", "depth": args.depth, "pattern": args.pattern, "variant": args.variant or "default",
              "batch": args.batch, "seq": args.seq, "accum": accum, "world_size": 1, "wall_step_ms": round(wall_ms, 1),
              "traced_steps": args.traced, **{f"traced_{k}": v for k, v in per_step.items()},
              **{f"timed_{k}": v for k, v in timed_clocks.summary.items()}, **{f"traced_{k}": v for k, v in traced_clocks.summary.items()},
              "kernel_ms_by_kind": json.dumps({k: round(v / args.traced, 2) for k, v in report["kernel_ms_by_kind"].items()})}
    save_result({"name": "trace_step", "date": date.today().isoformat(), "gpu": device_name("cuda"), "commit": git_commit(),
                 "torch": torch.__version__, "records": [record], "report": report}, args.out)


if __name__ == "__main__":
    main()
