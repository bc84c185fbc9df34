"""The MLPs of chapter 08 at equal FLOPs per token: relu2 (the default), swiglu (parameter-matched, 8/3 as wide) and
moe (4 experts, top-1, each as wide as the dense MLP: the same active FLOPs plus a router, 4x the MLP parameters),
each trained with the real trainer (chapter 12) on the same batches of the pretraining shards, validation bits per
byte against steps.

    python bench/mlp_ablation.py --threads 1                   # CPU: d2, 300 steps of 2,048 tokens: ~8 minutes
    python bench/mlp_ablation.py --depth 12 --device cuda --steps 1000 --batch 32 --seq 2048 --accum 2 \\
        --tokenizer ~/.cache/nanochat/tokenizer --eval-every 250 --eval-batches 16 --compile

The tokenizer is a saved one (--tokenizer DIR), else one of --vocab-size trained on the first --tok-chars characters of
the training shards. Data: --data (default: chapter 03's default_data_dir(); the last shard is the validation split).
Prints a table and one JSON line, saved as bench/results/mlp_ablation-DATE.json (or --out); --plot writes the curves.
"""
import argparse
import time
from pathlib import Path

import torch
from record import args_config, result_header, save_result

from nanochat.common import compute_dtype
from nanochat.dataloader import PretrainLoader, validation_batches
from nanochat.dataset import iter_documents, list_shards
from nanochat.gpt import GPT, config_for_depth, estimate_flops, parameter_counts
from nanochat.optim import setup_optimizer
from nanochat.tokenizer import Tokenizer, load_tokenizer, token_byte_lengths
from nanochat.trainer import Callback, Trainer, plan_training, scaling_params

ROOT = Path(__file__).resolve().parents[1]


class ValCurve(Callback):
    "Every evaluation's (step, val_bpb)."
    def __init__(self): self.points = []
    def on_eval(self, trainer, metrics):
        if "val_bpb" in metrics: self.points.append((metrics["step"], round(metrics["val_bpb"], 4)))


def get_tokenizer(args, train_shards: list[Path]) -> Tokenizer:
    if args.tokenizer: return load_tokenizer(args.tokenizer)
    start = time.perf_counter()
    tokenizer = Tokenizer.train(iter_documents(train_shards, max_chars=args.tok_chars), args.vocab_size)
    print(f"tokenizer: {tokenizer.vocab_size} tokens trained on {args.tok_chars:,} characters "
          f"in {time.perf_counter() - start:.1f} s")
    return tokenizer


def train_one(mlp: str, args, tokenizer: Tokenizer, shards: dict, token_bytes: torch.Tensor) -> dict:
    "Train the `mlp` variant for `args.steps` steps; its record, with the validation curve."
    torch.manual_seed(args.seed)
    config = config_for_depth(args.depth, tokenizer.vocab_size, aspect_ratio=args.aspect_ratio, head_dim=args.head_dim,
                              sequence_len=args.seq, window_pattern=args.window_pattern, mlp=mlp,
                              moe_experts=args.experts, moe_top_k=args.top_k)
    model = GPT.build(config, device=args.device, seed=args.seed)
    if model.config.mlp != mlp: raise SystemExit(f"--mlp {mlp} cannot run on {args.device}: it fell back to "
                                                 f"{model.config.mlp}")
    plan = plan_training(model, args.batch, args.seq, num_iterations=args.steps,
                         total_batch_size=args.batch * args.seq * args.accum, warmup_steps=args.warmup,
                         scale_lr_with_batch=args.device != "cpu")
    s = plan.lr_scale
    optimizer = setup_optimizer(model, embedding_lr=0.3 * s, unembedding_lr=0.008 * s, scalar_lr=0.5 * s,
                                matrix_lr=0.02 * s, weight_decay=plan.weight_decay)
    loader = PretrainLoader(tokenizer, shards["train"], args.batch, args.seq, device=args.device)  # the same batches
    val = lambda: validation_batches(tokenizer, shards["val"], args.batch, args.seq, device=args.device,
                                     max_batches=args.eval_batches)
    curve = ValCurve()
    trainer = Trainer(model, optimizer, loader, plan, device_type=torch.device(args.device).type,
                      dtype=compute_dtype(torch.device(args.device).type), compile=args.compile, val_batches=val,
                      token_bytes=token_bytes, eval_every=args.eval_every, sample_every=-1, log_every=args.log_every,
                      callbacks=[curve], handle_signals=False)
    trainer.evaluate()  # step 0
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    timed = history[5:] or history  # the first steps compile and warm up
    record = {"kind": "ablation", "mlp": mlp, "depth": args.depth, "width": config.n_embd, "steps": args.steps,
              "tokens_per_step": plan.total_batch_size, "val_bpb": curve.points[-1][1],
              "flops_per_token": estimate_flops(model), "tok_per_s": round(sum(m["tok_per_s"] for m in timed) / len(timed)),
              "params": parameter_counts(model)["total"], "block_params": parameter_counts(model)["matrices"],
              "scaling_params": scaling_params(model), "train_loss": round(history[-1]["smooth_loss"], 4),
              "seconds": round(seconds, 1), "curve": curve.points}
    if mlp == "moe":
        record |= {"experts": args.experts, "top_k": args.top_k, "moe_max_load": round(history[-1]["moe_max_load"], 3),
                   "moe_dropped": round(sum(m["moe_dropped"] for m in history) / len(history), 4)}
    return record


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for r in records:
        steps, bpb = zip(*r["curve"][1:])  # from the first evaluation after step 0: the untrained start dwarfs the rest
        ax.plot(steps, bpb, marker=".", label=f"{r['mlp']} ({r['block_params'] / 1e6:.2f}M in blocks)")
    ax.set(xlabel="step", ylabel="val bits per byte", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--aspect-ratio", type=int, default=64)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--window-pattern", default="L")
    p.add_argument("--mlp", nargs="+", default=["relu2", "swiglu", "moe"])
    p.add_argument("--experts", type=int, default=4, help="moe: experts per block")
    p.add_argument("--top-k", type=int, default=1, help="moe: experts per token (each is 4·n_embd/top_k wide)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="rows per micro-batch")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None, help="a folder of parquet shards (default: default_data_dir())")
    p.add_argument("--tokenizer", type=Path, default=None, help="a saved tokenizer's folder (default: train one)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--tok-chars", type=int, default=5_000_000)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; on a CPU other work shares, 1 is much faster)")
    p.add_argument("--plot", type=Path, default=None, help="write the validation curves here (PNG)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available(): p.error("--device cuda: no CUDA GPU here")
    shards = {"train": list_shards(args.data, "train"), "val": list_shards(args.data, "val")}
    if shards["train"] == shards["val"]: p.error(f"{args.data}: one shard; need one to train on and one to validate")
    tokenizer = get_tokenizer(args, shards["train"])
    token_bytes = torch.tensor(token_byte_lengths(tokenizer), dtype=torch.long, device=args.device)

    records = []
    for mlp in args.mlp:  # the table, plot and JSON are rewritten after each MLP: a run cut short keeps what finished
        print(f"== {mlp}", flush=True)
        records.append(train_one(mlp, args, tokenizer, shards, token_bytes))
        report(records, args, tokenizer.vocab_size)


def report(records: list[dict], args, vocab_size: int) -> None:
    "Print the table of `records`, plot their curves (`--plot`) and save them as one JSON (`--out`)."
    relu2 = next((r for r in records if r["mlp"] == "relu2"), records[0])
    print(f"\n{'mlp':<7} {'block params':>12} {'scaling':>10} {'FLOPs/token':>12} {'vs relu2':>8} {'val bpb':>8} "
          f"{'tok/s':>9} {'s':>6}  experts max/even, dropped")
    for r in records:
        experts = f"  {r['moe_max_load']:.2f}, {r['moe_dropped']:.1%}" if "moe_max_load" in r else ""
        print(f"{r['mlp']:<7} {r['block_params']:>12,} {r['scaling_params']:>10,} {r['flops_per_token']:>12,.0f} "
              f"{r['flops_per_token'] / relu2['flops_per_token']:>8.3f} {r['val_bpb']:>8.4f} {r['tok_per_s']:>9,} "
              f"{r['seconds']:>6.0f}{experts}")
    if args.plot: plot(records, args.plot, f"d{args.depth}, {args.steps} steps of {records[0]['tokens_per_step']:,} tokens")
    save_result(result_header("mlp_ablation", torch.device(args.device).type)
                | {"vocab_size": vocab_size, "config": args_config(args, "out", "plot"), "records": records}, args.out)


if __name__ == "__main__":
    main()
