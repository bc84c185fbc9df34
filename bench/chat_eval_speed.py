"""How long chat evaluation's open-ended tasks take: GSM8K problems answered through the engine (slots, tools, CUDA
graphs) against the plain eager sampler (`gpt.generate`, one problem at a time), on a model of a given depth.

    python bench/chat_eval_speed.py --tokenizer-dir TOK --depth 20                   # on a GPU
    python bench/chat_eval_speed.py --tokenizer-dir TOK --depth 2 --problems 4 --max-new-tokens 8 --eager-problems 1

The weights are freshly initialised: such a model rarely says <|assistant_end|>, so every reply runs to the token
budget and the timing is the worst case for that budget. Prints a table and one JSON line with `chat_eval` records
(bench/results/chat_eval_speed-DATE.json or --out).
"""
import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

from record import git_commit, save_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tokenizer-dir", type=Path, required=True)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--problems", type=int, default=64, help="GSM8K problems through the engine")
    p.add_argument("--eager-problems", type=int, default=2, help="GSM8K problems through gpt.generate (slow: keep it small)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    import torch

    from nanochat.common import autocast_ctx, compute_dtype
    from nanochat.engine import Engine
    from nanochat.gpt import GPT, config_for_depth, generate
    from nanochat.scripts.chat_eval import evaluate_chat_task, make_task
    from nanochat.tokenizer import load_tokenizer, render_for_completion
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(args.tokenizer_dir)
    model = GPT.build(config_for_depth(args.depth, tok.vocab_size), device=device).eval()
    task, _ = make_task("GSM8K")
    common = {"kind": "chat_eval", "task": "GSM8K", "depth": args.depth, "max_new_tokens": args.max_new_tokens}
    records = []
    with autocast_ctx(device.type, compute_dtype(device.type)):
        engine = Engine(model, tok, tool="upstream_calculator")  # as chat_eval grades
        evaluate_chat_task(model, tok, "GSM8K", max_problems=min(4, args.problems), engine=engine, device=device,
                           max_new_tokens=8, slots=args.slots)  # warm-up: compile and capture the graphs once
        start = time.perf_counter()
        r = evaluate_chat_task(model, tok, "GSM8K", max_problems=args.problems, engine=engine, device=device,
                               max_new_tokens=args.max_new_tokens, slots=args.slots)
        seconds = time.perf_counter() - start
        records.append(common | {"impl": "engine", "slots": args.slots, "problems": r["problems"], "seconds": round(seconds, 2),
                                 "s_per_problem": round(seconds / r["problems"], 3)})
        stop = {tok.encode_special("<|assistant_end|>")}
        start, tokens = time.perf_counter(), 0
        for i in range(args.eager_problems):
            tokens += len(generate(model, render_for_completion(tok, task[i]), args.max_new_tokens, stop)[0])
        if device.type == "cuda": torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if args.eager_problems:
            records.append(common | {"impl": "eager", "problems": args.eager_problems, "seconds": round(seconds, 2),
                                     "s_per_problem": round(seconds / args.eager_problems, 3), "ms_per_token": round(1000 * seconds / max(1, tokens), 1)})
    print("| impl | problems | seconds | s per problem |\n| --- | --- | --- | --- |")
    for rec in records: print(f"| {rec['impl']} | {rec['problems']} | {rec['seconds']} | {rec['s_per_problem']} |")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    save_result({"name": "chat_eval_speed", "date": date.today().isoformat(), **({"gpu": gpu} if gpu else {"cpu": f"{os.cpu_count()} cores"}),
                 "commit": git_commit(), "records": records}, args.out)


if __name__ == "__main__":
    main()
