"""SFT's packed rows: our `PackedSFTLoader` against upstream's `sft_data_generator_bos_bestfit`, on the same renderings.

Upstream packs SFT rows with a generator defined inside its script `scripts/chat_sft.py`, among the script's top-level
setup (arguments, model, data), so it cannot be imported. Its side reads the script from the checkout, takes that one
function out with `ast` and runs it with the few names it reads from the script supplied here: the arguments
(`max_seq_len`, `device_batch_size`, `num_iterations`), a tokenizer whose `render_conversation` hands back ready-made
ids and masks, the dataset (a list of them), one rank or two, the CPU. Nothing of upstream's code is kept here.

The renderings are made up: 60 conversations of 3 to 40 tokens, `<|bos|>` first, then random ids with a random mask
(0 on the `<|bos|>`), so that several share a row of 64 + 1 tokens. Both sides pack them in the list's order (ours
with `shuffle=False`), several batches each, past the end of the first epoch.

    python bench/parity/run.py --upstream DIR --only sft [--write-fixtures]
"""
import random
from pathlib import Path

from common import compact, read_json, row, write_json

SEED, COUNT, BOS = 18, 60, 0
# name: batch size, row length (max_seq_len), buffer size, world size, batches (of each rank)
CASES = {"B4 T64 buf100": (4, 64, 100, 1, 6), "B4 T64 buf8": (4, 64, 8, 1, 6), "B2 T64 buf16 world2": (2, 64, 16, 2, 6)}


def renderings(seed: int = SEED, count: int = COUNT) -> list[dict]:
    "The made-up conversations as (ids, mask): lengths 3..40, `<|bos|>` (id 0) first and unsupervised."
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(3, 40)
        out.append({"ids": [BOS] + [rng.randrange(1, 500) for _ in range(n - 1)],
                    "mask": [0] + [int(rng.random() < 0.6) for _ in range(n - 1)]})
    return out


def prepare(work: Path, opts: dict) -> None:
    write_json(work / "renderings.json", {"bos": BOS, "renderings": renderings()})


def _runs():
    "(case name, rank, settings) of every loader run."
    for name, (B, T, buffer, world, batches) in CASES.items():
        for rank in range(world): yield f"{name} rank{rank}", rank, (B, T, buffer, world, batches)


def upstream(work: Path, opts: dict) -> dict:
    import ast
    import types

    import torch
    script = Path(opts["upstream"]) / "scripts" / "chat_sft.py"
    tree = ast.parse(script.read_text())
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sft_data_generator_bos_bestfit"]
    code = compile(ast.Module(body=[function], type_ignores=[]), str(script), "exec")
    data = read_json(work / "renderings.json")
    dataset = data["renderings"]
    tokenizer = types.SimpleNamespace(get_bos_token_id=lambda: data["bos"],
                                      render_conversation=lambda c, max_tokens=2048: (list(c["ids"]), list(c["mask"])))
    out = {}
    for key, rank, (B, T, buffer, world, batches) in _runs():
        names = {"torch": torch, "tokenizer": tokenizer, "train_dataset": dataset, "val_dataset": dataset,
                 "args": types.SimpleNamespace(max_seq_len=T, device_batch_size=B, num_iterations=-1),
                 "device_type": "cpu", "device": "cpu", "ddp_rank": rank, "ddp_world_size": world,
                 "last_step": False, "approx_progress": 0.0, "current_epoch": 1}
        exec(code, names)  # defines the generator with `names` as its globals
        loader = names["sft_data_generator_bos_bestfit"]("train", buffer_size=buffer)
        out[key] = [{"inputs": x.tolist(), "targets": y.tolist()} for x, y in (next(loader) for _ in range(batches))]
    return out


def ours(work: Path, opts: dict) -> dict:
    import types

    from nanochat.scripts.chat_sft import PackedSFTLoader

    class ReadyMade(PackedSFTLoader):
        def render(self, index): return self.task[index]

    data = read_json(work / "renderings.json")
    task = [(r["ids"], r["mask"]) for r in data["renderings"]]
    tokenizer = types.SimpleNamespace(get_bos_token_id=lambda: data["bos"])
    out = {}
    for key, rank, (B, T, buffer, world, batches) in _runs():
        loader = ReadyMade(task, tokenizer, B, T, rank, world, buffer_size=buffer, shuffle=False)
        out[key] = [{"inputs": x.tolist(), "targets": y.tolist()} for x, y in (loader.next_batch() for _ in range(batches))]
    return out


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    rows = []
    for key, *_ in _runs():
        bad = [i for i, (a, b) in enumerate(zip(ours[key], up[key])) if a != b]
        supervised = sum(t >= 0 for batch in up[key] for r in batch["targets"] for t in r)
        rows.append(row("sft", f"{key}: packed batches (inputs, targets) differing of {len(up[key])} "
                        f"({supervised} supervised targets)", f"{len(bad)}, first at batch {bad[0]}" if bad else 0,
                        not bad and len(ours[key]) == len(up[key])))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "The renderings and upstream's batches, each row as space-separated numbers."
    cases = {}
    for key, rank, (B, T, buffer, world, _) in _runs():
        cases[key] = {"batch_size": B, "seq_len": T, "buffer_size": buffer, "rank": rank, "world_size": world,
                      "batches": [{"inputs": [compact(r) for r in b["inputs"]], "targets": [compact(r) for r in b["targets"]]}
                                  for b in up[key]]}
    return {"bos": BOS, "renderings": [{"ids": compact(r["ids"]), "mask": compact(r["mask"])} for r in renderings()],
            "cases": cases}
