"""CORE one example a forward (upstream's way) against several packed into one (`task_verdicts(batch_tokens=N)`,
`base_eval --core-batch-tokens N`): wall time per task and whether every verdict is the same.

The model is a GPT with random weights (spread out, so that options are not tied): the time of a forward does not
depend on what the weights know, and the verdict check compares the two paths with each other. Attention is what
base_eval would use for that model (flex with sliding windows on a GPU, compiled per shape).

    python bench/core_pack.py --device cpu --depth 4 --head-dim 64 --per-task 40 --threads 2 \
        --tasks arc_easy,hellaswag,winograd,lambada_openai,copa,piqa   # the CPU row
    python bench/core_pack.py --device cuda --depth 20 --tokenizer DIR                       # a GPU, d20

Prints a table and one JSON line, saved as bench/results/core_pack-DATE.json (or --out).
"""
import argparse
import json
import time
from pathlib import Path

import torch
from record import args_config, result_header, save_result

from nanochat.common import autocast_ctx, compute_dtype
from nanochat.core_eval import default_core_dir, load_core_tasks, load_items, task_verdicts
from nanochat.gpt import GPT, config_for_depth
from nanochat.tokenizer import Tokenizer, load_tokenizer

TASKS = ["arc_easy", "hellaswag", "winograd", "lambada_openai", "copa", "piqa", "boolq", "bigbench_qa_wikidata"]


def timed_verdicts(model, tokenizer, task, items, budget: int, max_len: int, device) -> tuple[list[bool], float]:
    "The task's verdicts with `budget` tokens a forward (0: one example), and the seconds they took, synchronised."
    start = time.perf_counter()
    with autocast_ctx(device.type, compute_dtype(device.type)):
        verdicts = task_verdicts(model, tokenizer, task, items, max_len=max_len, device=device, batch_tokens=budget,
                                 pad_multiple=64)
    if device.type == "cuda": torch.cuda.synchronize()
    return verdicts, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--aspect-ratio", type=int, default=64, help="width = depth × this, in whole heads")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="a saved tokenizer's folder (default: 600 tokens trained on ARC-Easy's items)")
    p.add_argument("--per-task", type=int, default=50, help="examples a task, also its few-shot pool")
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available(): p.error("--device cuda: no CUDA GPU here")
    core_dir = default_core_dir()
    if core_dir is None: p.error("no CORE data: run `python -m nanochat.core_eval` to fetch it")
    tasks = {t.label: t for t in load_core_tasks(core_dir) if t.available}
    if unknown := set(args.tasks.split(",")) - set(tasks): p.error(f"unknown or missing CORE tasks: {sorted(unknown)}")
    if args.tokenizer: tokenizer = load_tokenizer(args.tokenizer)
    else: tokenizer = Tokenizer.train(iter([json.dumps(i) for i in load_items(core_dir, tasks["arc_easy"])[:300]]), 600)
    config = config_for_depth(args.depth, tokenizer.vocab_size, args.aspect_ratio, args.head_dim, sequence_len=2048)
    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    with torch.no_grad():
        for p_ in model.parameters(): p_.normal_(0, 0.02)
    max_len = model.cos.size(0)  # base_eval's crop (longest_input)

    records = []
    print(f"{'task':<22} {'examples':>8} {'one a forward s':>16} {'packed s':>9} {'speed-up':>8} {'same':>5}")
    for label in args.tasks.split(","):
        items = load_items(core_dir, tasks[label])[:args.per_task]
        one, t_one = timed_verdicts(model, tokenizer, tasks[label], items, 0, max_len, device)
        packed, t_packed = timed_verdicts(model, tokenizer, tasks[label], items, args.batch_tokens, max_len, device)
        same = sum(a == b for a, b in zip(one, packed))
        records.append({"kind": "core_pack", "task": label, "depth": args.depth, "width": config.n_embd,
                        "examples": len(items), "batch_tokens": args.batch_tokens, "one_s": round(t_one, 3),
                        "packed_s": round(t_packed, 3), "speedup": round(t_one / t_packed, 3), "same_verdicts": same})
        print(f"{label:<22} {len(items):>8} {t_one:>16.2f} {t_packed:>9.2f} {t_one / t_packed:>7.2f}x "
              f"{same:>5}", flush=True)
    total_one, total_packed = sum(r["one_s"] for r in records), sum(r["packed_s"] for r in records)
    print(f"{'all':<22} {sum(r['examples'] for r in records):>8} {total_one:>16.2f} {total_packed:>9.2f} "
          f"{total_one / total_packed:>7.2f}x {sum(r['same_verdicts'] for r in records):>5}")
    save_result(result_header("core_pack", device.type) | {"config": args_config(args, "out"), "records": records}, args.out)


if __name__ == "__main__":
    main()
