"""Does training fit where chapter 11a says it does? Two parts, on one CUDA GPU:

1. calibration: a few compiled training steps (forward, backward, optimizer) at each depth and micro-batch, the peak
   memory PyTorch allocated beside `estimate_training_memory`'s number;
2. a smaller card: `base_train --device-batch-size auto --max-memory-gb CAP` at each depth, for a few steps: the
   micro-batch the probe chose, the accumulation, the peak, tok/s, and whether it ran at all.

usage: python bench/memory_fit.py [--depths 12,20] [--rows 4,16] [--cap-gb 24] [--steps 6] [--out PATH]
It needs pretraining shards and a tokenizer where base_train looks for them (NANOCHAT_BASE_DIR). Prints a table and
one JSON line, saved as bench/results/memory_fit-DATE.json.
"""
import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.record import git_commit, save_result  # noqa: E402
from nanochat.common import autocast_ctx, get_base_dir  # noqa: E402
from nanochat.gpt import GPT  # noqa: E402
from nanochat.memory import GiB, compiled_model, estimate_training_memory  # noqa: E402
from nanochat.optim import setup_optimizer  # noqa: E402
from nanochat.scripts.base_train import BaseTrainConfig, model_config  # noqa: E402


def calibrate(depth: int, rows: int, seq: int = 2048, steps: int = 3) -> dict:
    "Peak allocated memory of `steps` compiled training steps at `rows` × `seq`, beside the estimate."
    torch.cuda.empty_cache()
    model = GPT.build(model_config(BaseTrainConfig(depth=depth, max_seq_len=seq), 32768), device="cuda", seed=0)
    optimizer, forward = setup_optimizer(model), compiled_model(model)
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        idx = torch.randint(0, 32768, (rows, seq), device="cuda")
        with autocast_ctx("cuda", torch.bfloat16): loss = forward(idx, idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    est = estimate_training_memory(model, rows, seq)
    del model, optimizer, forward
    return {"kind": "memory", "depth": depth, "rows": rows, "seq": seq, "peak_gib": round(peak / GiB, 2),
            "estimate_gib": round(est.total / GiB, 2), "estimate_ratio": round(est.total / peak, 3)}


def capped_run(depth: int, cap_gb: float, steps: int) -> dict:
    "base_train with `--device-batch-size auto` under a memory cap, in its own process."
    tag = f"cap{depth}"
    cmd = [sys.executable, "-m", "nanochat.scripts.base_train", "--depth", str(depth), "--device-batch-size", "auto",
           "--max-memory-gb", str(cap_gb), "--num-iterations", str(steps), "--eval-every", "-1",
           "--sample-every", "-1", "--model-tag", tag]
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    record = {"kind": "train", "depth": depth, "pattern": "SSSL", "seq": 2048, "world_size": 1, "cap_gb": cap_gb,
              "ok": out.returncode == 0, "wall_s": round(time.time() - start, 1)}
    chosen = re.search(r"micro-batch: (\d+) row\(s\) × (\d+) accumulation", out.stdout)
    if chosen: record |= {"batch": int(chosen[1]), "accum": int(chosen[2])}
    record["out_of_memory_retries"] = out.stdout.count("ran out of memory; trying fewer")
    summary = get_base_dir() / "checkpoints" / "base" / tag / "summary.json"
    if out.returncode == 0 and summary.exists():
        s = json.loads(summary.read_text())
        record |= {"tok_per_s": s.get("tok_per_s"), "mfu": s.get("mfu"), "peak_gib": s.get("peak_memory_gib")}
    else: record["error"] = (out.stdout + out.stderr)[-800:]
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", default="12,20")
    ap.add_argument("--rows", default="4,16", help="micro-batches to calibrate at")
    ap.add_argument("--cap-gb", type=float, default=24.0)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps of each capped run")
    ap.add_argument("--skip-calibration", action="store_true", help="only the capped runs (the calibration compiles "
                    "a model per depth and micro-batch: several minutes)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available(): sys.exit("memory_fit needs a CUDA GPU")
    depths, rows = [int(d) for d in args.depths.split(",")], [int(r) for r in args.rows.split(",")]
    runs = [] if args.skip_calibration else [lambda d=d, r=r: calibrate(d, r) for d in depths for r in rows]
    runs += [lambda d=d: capped_run(d, args.cap_gb, args.steps) for d in depths]
    records = []
    for run in runs:  # each record as soon as it exists: a run stopped by a time limit keeps what it measured
        records.append(run())
        print(json.dumps(records[-1]), flush=True)
    print(f"{'kind':<7} {'depth':>5} {'rows':>5} {'accum':>5} {'peak GiB':>9} {'estimate':>9} {'tok/s':>9}")
    for r in records:
        print(f"{r['kind']:<7} {r['depth']:>5} {r.get('rows', r.get('batch', '-')):>5} {r.get('accum', '-'):>5} "
              f"{r.get('peak_gib', '-'):>9} {r.get('estimate_gib', '-'):>9} {r.get('tok_per_s') or '-':>9}")
    date = datetime.date.today().isoformat()
    save_result({"name": "memory_fit", "date": date, "gpu": torch.cuda.get_device_name(), "commit": git_commit(),
                 "records": records}, args.out)


if __name__ == "__main__": main()
