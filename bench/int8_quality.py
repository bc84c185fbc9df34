"""What int8 weight-only inference costs and gives, on a trained checkpoint: the same model through the engine in the
compute dtype and in int8 (per-output-channel scales), side by side.

For each: the bytes of its weights, decode tok/s at each batch size (the engine's batched step, CUDA graphs on a GPU),
bits per byte on the validation shards and CORE (chapter 15), computed with the inference copy itself, so the numbers
are those of the weights a server would use.

usage: python bench/int8_quality.py --stage base [--model-tag d20] [--batch-sizes 1,32] [--eval-tokens N]
                                    [--max-per-task N] [--device cuda|cpu] [--out PATH]
It reads the checkpoint, tokenizer, shards and CORE data where base_eval does. Prints a table and one JSON line,
saved as bench/results/int8_quality-DATE.json.
"""
import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.record import git_commit, save_result  # noqa: E402
from nanochat.checkpoint import find_run, load_gpt  # noqa: E402
from nanochat.common import autocast_ctx, compute_dtype, device_name, init_distributed  # noqa: E402
from nanochat.engine import DecodeModel, weight_bytes  # noqa: E402
from nanochat.sampling import SamplingParams  # noqa: E402
from nanochat.scripts.base_eval import BaseEvalConfig, _evaluate_bpb, _evaluate_core  # noqa: E402
from nanochat.scripts.infer_bench import bench_engine  # noqa: E402
from nanochat.tokenizer import load_tokenizer  # noqa: E402


def measure(model, variant: str, tokenizer, cfg: BaseEvalConfig, info, args) -> dict:
    """One row: the engine's copy of `model` in the compute dtype (`none`) or int8, measured: quality first (bpb, CORE),
    then decode speed (a CUDA graph per batch size and span, the slow part on a GPU), each printed as it comes."""
    device, start = info.device, time.perf_counter()
    def note(what: str): print(f"[{variant}] {what} ({time.perf_counter() - start:.0f} s)", flush=True)
    decoder = DecodeModel(model, compile=device.type == "cuda", quantize=None if variant == "none" else variant)
    record = {"kind": "int8_quality", "quantize": variant, "depth": model.config.n_layer,
              "weight_bytes": weight_bytes(decoder.net)}
    note(f"weights {record['weight_bytes'] / 1e6:,.1f} MB")
    with torch.no_grad(), autocast_ctx(device.type, compute_dtype(device.type)):
        record |= {k: round(v, 5) for k, v in _evaluate_bpb(cfg, decoder.net, tokenizer, info).items()}
        note(f"val bpb {record['val_bpb']:.5f}")
        if not args.no_core:
            record["core"] = round(_evaluate_core(cfg, decoder.net, tokenizer, device)["core"], 5)
            note(f"CORE {record['core']:.5f}")
    greedy = SamplingParams(temperature=0.0)
    with torch.no_grad():
        for batch in args.batch_sizes:
            r = bench_engine(decoder, batch, args.prompt_len, args.new_tokens, greedy)
            record[f"decode_b{batch}_tok_per_s"] = round(r["tok_per_s"], 1)
            note(f"decode at batch {batch}: {r['tok_per_s']:,.0f} tok/s")
    del decoder
    if device.type == "cuda": torch.cuda.empty_cache()
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="base")
    ap.add_argument("--model-tag", default=None)
    ap.add_argument("--device", default="", help="cuda or cpu (default: the best available)")
    ap.add_argument("--batch-sizes", default="1,32", type=lambda s: [int(b) for b in s.split(",")])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=2 * 524288)
    ap.add_argument("--device-batch-size", type=int, default=8)
    ap.add_argument("--max-per-task", type=int, default=100)
    ap.add_argument("--no-core", action="store_true", help="bits per byte only")
    ap.add_argument("--data", default=None, help="shard folder (default: base_eval's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    info = init_distributed(args.device or None)
    run = find_run(args.stage, args.model_tag)
    model, _ = load_gpt(run, None, info.device)
    model.eval()
    tokenizer = load_tokenizer(None)
    cfg = BaseEvalConfig(stage=args.stage, eval_tokens=args.eval_tokens, device_batch_size=args.device_batch_size,
                         max_per_task=args.max_per_task, data=args.data)
    gpu = device_name(info.device.type)
    header = {"name": "int8_quality", "date": datetime.date.today().isoformat(),
              ("gpu" if info.device.type == "cuda" else "cpu"): gpu, "commit": git_commit(), "run": str(run)}
    records = []
    for variant in ("none", "int8"):  # saved after each, so a run cut short keeps the first
        records.append(measure(model, variant, tokenizer, cfg, info, args))
        if len(records) == 1: save_result(header | {"records": records, "complete": False}, args.out)
    base, int8 = records
    delta = {"kind": "int8_delta", "depth": model.config.n_layer,
             "weight_ratio": round(int8["weight_bytes"] / base["weight_bytes"], 4),
             "val_bpb_delta": round(int8["val_bpb"] - base["val_bpb"], 5)}
    if "core" in base: delta["core_delta"] = round(int8["core"] - base["core"], 5)
    for b in args.batch_sizes:
        key = f"decode_b{b}_tok_per_s"
        delta[f"decode_b{b}_speedup"] = round(int8[key] / base[key], 3)
    records.append(delta)
    print(f"{'weights':<8} {'MB':>9} " + " ".join(f"{'b' + str(b) + ' tok/s':>11}" for b in args.batch_sizes)
          + f" {'val bpb':>8} {'CORE':>7}")
    for r in (base, int8):
        print(f"{r['quantize']:<8} {r['weight_bytes'] / 1e6:>9.1f} "
              + " ".join(f"{r[f'decode_b{b}_tok_per_s']:>11,.0f}" for b in args.batch_sizes)
              + f" {r['val_bpb']:>8.4f} {r.get('core', float('nan')):>7.4f}")
    print(delta)
    save_result(header | {"records": records, "complete": True}, args.out)


if __name__ == "__main__": main()
