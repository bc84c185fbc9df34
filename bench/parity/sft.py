"""SFT's packed rows: our `PackedSFTLoader` against upstream's `sft_data_generator_bos_bestfit`, on the same renderings.

Upstream packs SFT rows with a generator defined inside its script `scripts/chat_sft.py`, among the script's top-level
setup (arguments, model, data), so it cannot be imported. Its side reads the script from the checkout, takes that one
function out with `ast` and runs it with the few names it reads from the script supplied here: the arguments
(`max_seq_len`, `device_batch_size`, `num_iterations`), a tokenizer whose `render_conversation` hands back ready-made
ids and masks, the dataset (a list of them), one rank or two, the CPU. Nothing of upstream's code is kept here.

The renderings are made up: 60 conversations of 3 to 40 tokens, `<|bos|>` first, then random ids with a random mask
(0 on the `<|bos|>`), so that several share a row of 64 + 1 tokens. Both sides pack them in the list's order (ours
with `shuffle=False`), several batches each, past the end of the first epoch.

It also compares the schedule. Upstream's script defines `get_lr_multiplier(progress)` and `get_muon_momentum(step)`
among its setup too; they are taken out the same way and run with the defaults its command line declares (read from
its `add_argument` calls), over SCHEDULE_STEPS steps with progress = step / SCHEDULE_STEPS. Our side builds
`sft_plan` from a `ChatSFTConfig` with those defaults (`init_lr_frac`, `warmdown_ratio`, `momentum="held"`) and reads
`lr_multiplier` and `muon_momentum` at every step.

    python bench/parity/run.py --upstream DIR --only sft [--write-fixtures]
"""
import random
from pathlib import Path

from common import compact, max_diff, read_json, row, within, write_json

SEED, COUNT, BOS = 18, 60, 0
# name: batch size, row length (max_seq_len), buffer size, world size, batches (of each rank)
SCHEDULE_STEPS = 700  # past the momentum's 300-step ramp, with a warmdown of its own
# the steps a fixture keeps: every 25th, and either side of the momentum's ramp and of the warmdown's start
SAMPLE_STEPS = sorted({*range(0, SCHEDULE_STEPS + 1, 25), 299, 300, 301, 349, 350, 351, SCHEDULE_STEPS - 1})
SCHEDULE_DEFAULTS = ("init_lr_frac", "warmup_ratio", "warmdown_ratio", "final_lr_frac")  # upstream's flags, read here
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
    out = {"schedule": _upstream_schedule(tree, script)}
    for key, rank, (B, T, buffer, world, batches) in _runs():
        names = {"torch": torch, "tokenizer": tokenizer, "train_dataset": dataset, "val_dataset": dataset,
                 "args": types.SimpleNamespace(max_seq_len=T, device_batch_size=B, num_iterations=-1),
                 "device_type": "cpu", "device": "cpu", "ddp_rank": rank, "ddp_world_size": world,
                 "last_step": False, "approx_progress": 0.0, "current_epoch": 1}
        exec(code, names)  # defines the generator with `names` as its globals
        loader = names["sft_data_generator_bos_bestfit"]("train", buffer_size=buffer)
        out[key] = [{"inputs": x.tolist(), "targets": y.tolist()} for x, y in (next(loader) for _ in range(batches))]
    return out


def _flag_defaults(tree) -> dict:
    "The `default=` of every `parser.add_argument(\"--name\", ...)` call of a script, by the flag's name."
    import ast
    defaults = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant)):
            for kw in node.keywords:
                if kw.arg == "default":
                    try: defaults[node.args[0].value.lstrip("-").replace("-", "_")] = ast.literal_eval(kw.value)
                    except ValueError: pass  # a computed default (40*524288): not one the schedule reads
    return defaults


def _upstream_schedule(tree, script: Path) -> dict:
    "Upstream's SFT schedule functions, run with its declared defaults at every step of SCHEDULE_STEPS."
    import ast
    import types
    wanted = ("get_lr_multiplier", "get_muon_momentum")
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    defaults = _flag_defaults(tree)
    names = {"args": types.SimpleNamespace(**{k: defaults[k] for k in SCHEDULE_DEFAULTS})}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(script), "exec"), names)
    steps = range(SCHEDULE_STEPS + 1)
    return {"defaults": {k: defaults[k] for k in SCHEDULE_DEFAULTS},
            "lr": [names["get_lr_multiplier"](s / SCHEDULE_STEPS) for s in steps],
            "momentum": [names["get_muon_momentum"](s) for s in steps]}


def _our_schedule(defaults: dict) -> dict:
    "Our SFT plan's schedule with upstream's defaults, at every step of SCHEDULE_STEPS."
    import torch

    from nanochat.gpt import GPT, config_for_depth
    from nanochat.scripts.chat_sft import ChatSFTConfig, sft_plan
    from nanochat.trainer import lr_multiplier, muon_momentum
    if defaults["warmup_ratio"] or defaults["final_lr_frac"]:
        raise ValueError(f"upstream's SFT defaults now warm up or end above 0 ({defaults}): sft_plan has neither")
    cfg = ChatSFTConfig(init_lr_frac=defaults["init_lr_frac"], warmdown_ratio=defaults["warmdown_ratio"],
                        momentum="held", device_batch_size=1, grad_accum=1)
    with torch.device("meta"): model = GPT(config_for_depth(2, 256))
    plan = sft_plan(cfg, model, SCHEDULE_STEPS, 64, 1)
    steps = range(SCHEDULE_STEPS + 1)
    return {"init_lr_frac": plan.lr_scale, "lr": [lr_multiplier(s, plan) for s in steps],
            "momentum": [muon_momentum(s, plan) for s in steps]}


def ours(work: Path, opts: dict) -> dict:
    import types

    from nanochat.scripts.chat_sft import PackedSFTLoader

    class ReadyMade(PackedSFTLoader):
        def render(self, index): return self.task[index]

    data = read_json(work / "renderings.json")
    task = [(r["ids"], r["mask"]) for r in data["renderings"]]
    tokenizer = types.SimpleNamespace(get_bos_token_id=lambda: data["bos"])
    # upstream's side ran first: the defaults its script declares are this side's inputs
    out = {"schedule": _our_schedule(read_json(work / "upstream.json")["schedule"]["defaults"])}
    for key, rank, (B, T, buffer, world, batches) in _runs():
        loader = ReadyMade(task, tokenizer, B, T, rank, world, buffer_size=buffer, shuffle=False)
        out[key] = [{"inputs": x.tolist(), "targets": y.tolist()} for x, y in (loader.next_batch() for _ in range(batches))]
    return out


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    mine, theirs = ours["schedule"], up["schedule"]
    rows = [row("sft", f"schedule: init_lr_frac (upstream's default {theirs['defaults']['init_lr_frac']})",
                abs(mine["init_lr_frac"] - theirs["defaults"]["init_lr_frac"]),
                mine["init_lr_frac"] == theirs["defaults"]["init_lr_frac"])]
    for key, what in (("lr", "learning-rate multiplier"), ("momentum", "Muon momentum")):
        diff = max_diff(mine[key], theirs[key])  # inf where the lengths differ
        rows.append(row("sft", f"schedule: {what} at each of {len(theirs[key])} steps (upstream's defaults: "
                        f"warmdown_ratio {theirs['defaults']['warmdown_ratio']})", diff, within(diff, 1e-12),
                        tolerance=1e-12))
    for key, *_ in _runs():
        bad = [i for i, (a, b) in enumerate(zip(ours[key], up[key])) if a != b]
        supervised = sum(t >= 0 for batch in up[key] for r in batch["targets"] for t in r)
        rows.append(row("sft", f"{key}: packed batches (inputs, targets) differing of {len(up[key])} "
                        f"({supervised} supervised targets)", f"{len(bad)}, first at batch {bad[0]}" if bad else 0,
                        not bad and len(ours[key]) == len(up[key])))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "The renderings and upstream's batches, each row as space-separated numbers; its schedule at sample steps."
    cases = {}
    for key, rank, (B, T, buffer, world, _) in _runs():
        cases[key] = {"batch_size": B, "seq_len": T, "buffer_size": buffer, "rank": rank, "world_size": world,
                      "batches": [{"inputs": [compact(r) for r in b["inputs"]], "targets": [compact(r) for r in b["targets"]]}
                                  for b in up[key]]}
    schedule = up["schedule"]
    return {"bos": BOS, "renderings": [{"ids": compact(r["ids"]), "mask": compact(r["mask"])} for r in renderings()],
            "cases": cases, "schedule": {"steps": SCHEDULE_STEPS, "defaults": schedule["defaults"],
                                         "sample_steps": SAMPLE_STEPS,
                                         **{key: [schedule[key][s] for s in SAMPLE_STEPS] for key in ("lr", "momentum")},
                                         **{f"{key}_sum": sum(schedule[key]) for key in ("lr", "momentum")}}}
