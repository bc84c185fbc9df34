"""The trainer under `torchrun --nproc_per_node=N` (or one plain process with N× the accumulation): prints the losses.

Both runs see the same global batch at every step: `TokenTensorLoader` gives rank r of N the chunks a single process
reads at micro-steps r, r + N, ... Usage: python dist_train_worker.py OUT.json DEVICE_BATCH TOTAL_BATCH STEPS"""
import json
import sys

import torch

from nanochat.common import cleanup_distributed, init_distributed
from nanochat.gpt import GPT, GPTConfig
from nanochat.optim import setup_optimizer
from nanochat.trainer import TokenTensorLoader, Trainer, plan_training


def main() -> None:
    out, device_batch, total_batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    info = init_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, 256, (4096,), generator=g)
    tokens = ((starts[:, None] + torch.arange(16)) % 256).flatten()  # runs of consecutive tokens: learnable
    config = GPTConfig(vocab_size=256, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=32, window_pattern="SL", short_window=8)
    model = GPT.build(config, seed=0)
    plan = plan_training(model, device_batch, 32, info.world_size, num_iterations=steps, total_batch_size=total_batch, warmup_steps=2)
    loader = TokenTensorLoader(tokens, device_batch, 32, info.rank, info.world_size)
    trainer = Trainer(model, setup_optimizer(model), loader, plan, rank=info.rank, world_size=info.world_size,
                      eval_every=-1, sample_every=-1, log_every=0, handle_signals=False)
    losses = [m["loss"] for m in trainer.fit()]
    if info.rank == 0:
        with open(out, "w") as f: json.dump({"world_size": info.world_size, "grad_accum": plan.grad_accum, "losses": losses}, f)
    cleanup_distributed()


if __name__ == "__main__":
    main()
