"""Bits per byte: our `evaluate_bpb` on our validation batches against upstream's `evaluate_bpb` on its validation
loader, with the same GPT weights, tokenizer and shards.

This is the number base training and base evaluation report (val bpb), so it is checked end to end: which tokens are
evaluated (the best-fit validation rows), which count (targets with bytes; special tokens and -1 targets left out),
how nats and bytes are summed, and the model's per-token losses. The inputs are the data component's (a 2,048-token
tokenizer trained on the shared Wikipedia shard, three small shards cut from it, the last one validation); the weights
are `common.synthetic_state` for a small GPT, so the per-token losses are far from uniform. Compared for a few batch
shapes and step counts, and on the train split too (upstream's base_eval evaluates both).
"""
from pathlib import Path

import data
from common import read_json, row, synthetic_state, to_upstream, within, write_json

MODEL = dict(sequence_len=256, n_layer=2, n_head=2, n_kv_head=2, n_embd=64, window_pattern="SL")
SEED = 2024
CASES = {"val B4 T64 x3": ("val", 4, 64, 3), "val B2 T256 x4": ("val", 2, 256, 4), "train B4 T128 x2": ("train", 4, 128, 2)}
TOLERANCE = 1e-5  # relative: both sum fp32 losses, in other orders


def prepare(work: Path, opts: dict) -> dict:
    import torch

    from nanochat.gpt import GPT, GPTConfig
    out = data.prepare(work, dict(opts, quick=True))  # the tokenizer and shards, laid out for both sides
    from nanochat.tokenizer import load_tokenizer
    vocab = -(-load_tokenizer(work / "ours_tokenizer").vocab_size // 64) * 64
    cfg = dict(MODEL, vocab_size=vocab)
    shapes = {n: tuple(p.shape) for n, p in GPT.build(GPTConfig(**cfg), seed=0).state_dict().items()}
    torch.save(synthetic_state(shapes, SEED), work / "model.pt")
    write_json(work / "model.json", cfg)
    return {"shards": out["shards"], "model": cfg}


def ours(work: Path, opts: dict) -> dict:
    import torch

    from nanochat.dataloader import validation_batches
    from nanochat.dataset import list_shards
    from nanochat.gpt import GPT, GPTConfig
    from nanochat.loss_eval import evaluate_bpb
    from nanochat.tokenizer import load_tokenizer, token_byte_lengths
    tok = load_tokenizer(work / "ours_tokenizer")
    model = GPT.build(GPTConfig(**read_json(work / "model.json")), seed=0).eval()
    model.load_state_dict(torch.load(work / "model.pt"))
    token_bytes = torch.tensor(token_byte_lengths(tok))
    out = {}
    for name, (split, B, T, steps) in CASES.items():
        batches = validation_batches(tok, list_shards(work / "shards", split), B, T, max_batches=steps)
        out[name] = evaluate_bpb(model, batches, token_bytes)
    return out


def upstream(work: Path, opts: dict) -> dict:
    import torch

    from nanochat.dataloader import tokenizing_distributed_data_loader_bos_bestfit
    from nanochat.gpt import GPT, GPTConfig
    from nanochat.loss_eval import evaluate_bpb
    from nanochat.tokenizer import get_token_bytes, get_tokenizer
    tok, token_bytes = get_tokenizer(), get_token_bytes()
    with torch.device("meta"): model = GPT(GPTConfig(**read_json(work / "model.json")))
    model.to_empty(device="cpu")
    model.init_weights()  # the rotary tables; every parameter is overwritten next
    model.load_state_dict(to_upstream(torch.load(work / "model.pt")))
    model.eval()
    out = {}
    for name, (split, B, T, steps) in CASES.items():
        loader = tokenizing_distributed_data_loader_bos_bestfit(tok, B, T, split, device="cpu")  # as its base_train/base_eval build it
        out[name] = evaluate_bpb(model, loader, steps, token_bytes)
    return out


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    rows = []
    for name in CASES:
        a, b = ours[name], up[name]
        d = abs(a - b) / abs(b)
        rows.append(row("loss_eval", f"bits per byte, {name} (upstream {b:.5f})", d, within(d, TOLERANCE), tolerance=TOLERANCE))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    return {"model": MODEL, "seed": SEED, "cases": CASES, "bpb": {k: v for k, v in up.items() if not k.startswith("_")}}
