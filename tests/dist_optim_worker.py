"""Run under `torchrun --nproc_per_node=N` on the CPU: N ranks with the sharded optimizers, each on 1/N of every batch,
must end with the same parameters as one process on the whole batch with the plain optimizers.

The sharded and the single-process optimizers run the same update (MuonEq, Polar Express, Muon+, NorMuon, cautious
decay; AdamW's per-group settings); only where each matrix or slice is computed differs.

Tolerance: the ranks sum gradients in a different order than one process does, a float32 rounding difference (1e-7).
Orthogonalisation then scales every direction of a gradient matrix up to size 1, including directions whose singular
values are tiny, so their rounding grows too: after 4 steps the difference is about 5e-4 of how far the parameters
moved. We require less than 2e-3 of it; a real bug (a wrong shard, a missed average, a stale state) shows up at
order 1."""
import torch
import torch.distributed as dist

from nanochat.common import cleanup_distributed, init_distributed
from nanochat.gpt import GPT, GPTConfig
from nanochat.optim import CombinedOptimizer, DistAdamW, DistMuon, setup_optimizer

STEPS, BATCH = 4, 8  # BATCH rows per step in all, split over the ranks


def perturbed(config: GPTConfig) -> GPT:
    "A GPT away from its symmetric start (zero head and projections give exactly-cancelling, ill-conditioned gradients)."
    model, gen = GPT.build(config, seed=0), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def train(model: GPT, optimizer: CombinedOptimizer, rows: slice) -> None:
    for step in range(STEPS):
        batch = torch.randint(0, 128, (BATCH, 17), generator=torch.Generator().manual_seed(step))[rows]
        model(batch[:, :-1], batch[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()


def main() -> None:
    info = init_distributed("cpu")
    rank, world = info.rank, info.world_size
    assert BATCH % world == 0
    # 3 layers: 3 or 6 matrices of each shape (and 2 value-embedding gates), so some ranks' blocks are padded with zeros
    config = GPTConfig(vocab_size=128, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, sequence_len=16, window_pattern="SL", short_window=8)
    options = dict(matrix_lr=0.05, weight_decay=0.1, ortho_dtype=torch.float32)  # fp32: compare rounding, not bf16 noise
    sharded = perturbed(config)
    optimizer = setup_optimizer(sharded, **options)
    assert isinstance(optimizer.optimizers[0], DistAdamW) and isinstance(optimizer.optimizers[1], DistMuon)
    per_rank = BATCH // world
    train(sharded, optimizer, slice(rank * per_rank, (rank + 1) * per_rank))
    muon = optimizer.optimizers[1]
    for group in muon.param_groups:  # each rank keeps Muon state for its own block of each stack only
        block = -(-len(group["params"]) // world)
        owned = group["params"][rank * block:(rank + 1) * block]
        if owned: assert muon.state[owned[0]]["momentum"].shape[0] == len(owned), group["name"]

    single = perturbed(config)
    train(single, setup_optimizer(single, distributed=False, **options), slice(None))
    diffs = {n: (a - b).abs().max().item() for (n, a), b in zip(sharded.named_parameters(), single.parameters())}
    worst = max(diffs.values())
    moved = max((a - b).abs().max().item() for a, b in zip(single.parameters(), perturbed(config).parameters()))
    print(f"rank {rank}: max |sharded - single| = {worst:.2e} (parameters moved by up to {moved:.2e})", flush=True)
    assert moved > 1e-2 and worst < 2e-3 * moved, (worst, moved, diffs)
    same = torch.tensor([worst])
    dist.all_reduce(same, op=dist.ReduceOp.MAX)  # every rank holds the same full model
    cleanup_distributed()


if __name__ == "__main__":
    main()
