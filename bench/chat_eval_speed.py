"""How long chat evaluation's open-ended tasks take: every GSM8K test problem answered through the engine (slots,
the calculator, CUDA graphs), as `chat_eval` grades them, on a model of a given depth.

    python bench/chat_eval_speed.py --tokenizer-dir TOK --depth 20                     # on a GPU: all 1,319 problems
    python bench/chat_eval_speed.py --tokenizer-dir TOK --depth 2 --problems 8 --max-new-tokens 8 --slots 4 \\
        --compare-problems 4 --eager-problems 1                                         # a CPU smoke run

The problems run twice through the same engine: the first pass pays for compiling and capturing the decode step
(each slot count and span once), the second is what a warm process (a server, the next task) sees. Then
`--compare-problems` of them again one at a time (one slot), to count how many replies batching changed, and
`--eager-problems` through the plain eager sampler (`gpt.generate`, one problem at a time, slow) for scale.

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


def timed_replies(engine, tok, conversations, **generation):
    "(replies, seconds, generated tokens): `chat_eval`'s generation path on `conversations`, greedy."
    import torch

    from nanochat.scripts.chat_eval import generate_completions
    if engine.decoder.device.type == "cuda": torch.cuda.synchronize()
    start = time.perf_counter()
    replies = generate_completions(engine, tok, conversations, temperature=0.0, **generation)
    seconds = time.perf_counter() - start
    return [r[0] for r in replies], seconds, sum(len(tok.encode(r[0])) for r in replies)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tokenizer-dir", type=Path, required=True)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--problems", type=int, default=1319, help="GSM8K test problems through the engine (1,319: all)")
    p.add_argument("--slots", type=int, default=128, help="rows decoded together")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--compare-problems", type=int, default=32, help="problems answered again one at a time, to compare replies")
    p.add_argument("--eager-problems", type=int, default=0, help="problems through gpt.generate (slow: ~20 s each at d20)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if min(args.problems, args.slots, args.max_new_tokens) < 1: p.error("problems, slots and max-new-tokens must be positive")
    import torch

    from nanochat.common import autocast_ctx, compute_dtype
    from nanochat.engine import Engine
    from nanochat.gpt import GPT, config_for_depth, generate
    from nanochat.scripts.chat_eval import make_task
    from nanochat.tokenizer import load_tokenizer, render_for_completion
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer(args.tokenizer_dir)
    model = GPT.build(config_for_depth(args.depth, tok.vocab_size), device=device).eval()
    task, _ = make_task("GSM8K")
    conversations = [task[i] for i in range(min(args.problems, len(task)))]
    common = {"kind": "chat_eval", "task": "GSM8K", "depth": args.depth, "max_new_tokens": args.max_new_tokens}
    records = []
    with autocast_ctx(device.type, compute_dtype(device.type)):
        engine = Engine(model, tok, tool="upstream_calculator")  # as chat_eval grades
        replies = None
        for phase in ("cold", "warm"):
            replies, seconds, tokens = timed_replies(engine, tok, conversations, max_new_tokens=args.max_new_tokens, slots=args.slots)
            verdicts = [bool(task.evaluate(c, r)) for c, r in zip(conversations, replies)]
            records.append(common | {"impl": "engine", "phase": phase, "slots": args.slots, "problems": len(conversations),
                                     "seconds": round(seconds, 2), "tok_per_s": round(tokens / seconds, 1),
                                     "generated_tokens": tokens, "passed": sum(verdicts)})
        n = min(args.compare_problems, len(conversations))
        if n:
            alone, seconds, tokens = timed_replies(engine, tok, conversations[:n], max_new_tokens=args.max_new_tokens, slots=1)
            same = sum(a == b for a, b in zip(alone, replies))
            same_verdicts = sum(bool(task.evaluate(c, a)) == bool(task.evaluate(c, b))
                                for c, a, b in zip(conversations, alone, replies))
            records.append(common | {"impl": "engine", "phase": "one_slot", "slots": 1, "problems": n, "seconds": round(seconds, 2),
                                     "tok_per_s": round(tokens / seconds, 1), "identical_replies": same,
                                     "identical_verdicts": same_verdicts})
        stop = {tok.encode_special("<|assistant_end|>")}
        start, tokens = time.perf_counter(), 0
        for c in conversations[: args.eager_problems]:
            tokens += len(generate(model, render_for_completion(tok, c), args.max_new_tokens, stop)[0])
        if device.type == "cuda": torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if args.eager_problems:
            records.append(common | {"impl": "eager", "phase": "warm", "slots": 1, "problems": args.eager_problems,
                                     "seconds": round(seconds, 2), "tok_per_s": round(tokens / seconds, 1)})
    print("| impl | phase | slots | problems | seconds | tok/s |\n| --- | --- | --- | --- | --- | --- |")
    for r in records: print(f"| {r['impl']} | {r['phase']} | {r['slots']} | {r['problems']} | {r['seconds']} | {r['tok_per_s']:,.0f} |")
    for r in records:
        if "identical_replies" in r:
            print(f"one slot against {args.slots}: {r['identical_replies']}/{r['problems']} identical replies, "
                  f"{r['identical_verdicts']}/{r['problems']} identical verdicts")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    save_result({"name": "chat_eval_speed", "date": date.today().isoformat(), **({"gpu": gpu} if gpu else {"cpu": f"{os.cpu_count()} cores"}),
                 "commit": git_commit(), "records": records}, args.out)


if __name__ == "__main__":
    main()
