"""The optimizers and the training plan, ours against upstream nanochat's, on the CPU:

(a) steps: Muon and AdamW stepped twice (the second step uses the state the first left) on the same seeded parameters
    and gradients, in float32: stacks of tall, wide and square matrices for Muon (also with the orthogonalisation in
    bf16, as on a GPU), the AdamW groups' shapes and settings. Upstream's step functions are compiled with
    torch.compile; here they run eagerly (TORCHDYNAMO_DISABLE=1), which is the same arithmetic.
(b) groups: the parameter-group table (parameters, kind, lr, initial_lr, betas, eps, weight decay; Muon's momentum,
    ns_steps, beta2) of upstream's `GPT.setup_optimizer` and of our `setup_optimizer`, for a small GPT and for d12.
(c) plans: upstream's `scripts/base_train.py`, run up to its training loop (its own code: model, scaling rules,
    optimizer, schedule functions) for d12, d20 and a d12 with a given batch and FLOPs target, against our base_train's
    `training_plan` and `build_optimizer`: batch, steps, FLOPs per token, scaling parameters, LR scale, weight decay,
    the optimizer's groups, and every step's LR multiplier, Muon momentum and weight decay.

prepare() trains a 32,768-token tokenizer with our Tokenizer.train on the shared Wikipedia shards and lays it and two
shards out in upstream's base folder (upstream's script reads a first batch before its loop). `--set quick=true` (or
`--quick`) skips d20.
"""
import math
import os
import sys
from functools import partial
from pathlib import Path

from common import max_diff, our_name, row, tensor_digest, within

SEED = 1234
MUON_SHAPES = [(3, 48, 16), (3, 16, 48), (2, 32, 32), (1, 40, 24)]  # stacks of K matrices: tall, wide, square, one alone
MUON = dict(lr=0.02, momentum=0.95, weight_decay=0.2, beta2=0.9)  # ns_steps 5
ADAMW_CASES = [  # (shape, lr, betas, weight decay): the groups of setup_optimizer, at d12's rates
    ((64, 32), 0.008, (0.8, 0.96), 0.01), ((50, 16), 0.3, (0.8, 0.995), 0.001), ((50, 8), 0.15, (0.8, 0.995), 0.01),
    ((12,), 0.005, (0.8, 0.95), 0.05), ((12,), 0.5, (0.96, 0.95), 0.0), ((24,), 0.2, (0.8, 0.95), 0.0)]
EPS = 1e-10
VOCAB = 32768
SMALL = dict(sequence_len=256, vocab_size=4096, n_layer=4, n_head=2, n_kv_head=2, n_embd=256, window_pattern="SL")
D12 = dict(sequence_len=2048, vocab_size=VOCAB, n_layer=12, n_head=6, n_kv_head=6, n_embd=768)
BASE_LRS = dict(embedding_lr=0.3, unembedding_lr=0.008, scalar_lr=0.5, matrix_lr=0.02, weight_decay=0.28)  # base_train's
PLANS = {"d12": {"depth": 12}, "d20": {"depth": 20},
         "d12_batch2^18_flops3e17": {"depth": 12, "total_batch_size": 2**18, "target_flops": 3e17}}
SAMPLE_EVERY = 50
SCHEDULES = ("lr_schedule", "momentum_schedule", "weight_decay_schedule")


# --- shared by both sides ---------------------------------------------------------------------------------------------
def cases() -> list[dict]:
    "Every optimizer case: its kind, shape, settings and the index that seeds its inputs (a bf16 Muon case: its fp32 twin's)."
    out = [dict(kind="muon", shape=list(s), dtype=d, index=i) for d in ("float32", "bfloat16") for i, s in enumerate(MUON_SHAPES)]
    out += [dict(kind="adamw", shape=list(s), lr=lr, betas=list(b), eps=EPS, weight_decay=wd, index=len(MUON_SHAPES) + i)
            for i, (s, lr, b, wd) in enumerate(ADAMW_CASES)]
    for c in out: c["name"] = f"{c['kind']} {'x'.join(map(str, c['shape']))}" + (f" {c['dtype']}" if c["kind"] == "muon" else f" lr {c['lr']}")
    return out


def seeded_case(shape, index: int):
    "The parameters and the two steps' gradients of case `index` (the notebook test draws them the same way)."
    import torch
    gen = torch.Generator().manual_seed(SEED * 1000 + index)
    return [torch.randn(tuple(shape), generator=gen) for _ in range(3)]


def run_steps(case: dict, make_optimizer) -> dict:
    "Step `case` twice with `make_optimizer(case, params)`; the parameters after each step as nested lists."
    import torch
    P, *grads = seeded_case(case["shape"], case["index"])
    muon = case["kind"] == "muon"
    params = [torch.nn.Parameter(m.clone()) for m in P] if muon else [torch.nn.Parameter(P.clone())]
    opt, out = make_optimizer(case, params), {}
    for step, G in enumerate(grads, 1):
        for p, g in zip(params, G if muon else [G]): p.grad = g.clone()
        opt.step()
        out[f"step{step}"] = (torch.stack([p.detach() for p in params]) if muon else params[0].detach()).tolist()
    return out


def schedules(n: int, lr, momentum, weight_decay) -> dict:
    "Every step's value (0..n) of the three schedule functions."
    steps = range(n + 1)
    return {"lr_schedule": [lr(s) for s in steps], "momentum_schedule": [momentum(s) for s in steps],
            "weight_decay_schedule": [weight_decay(s) for s in steps]}


def group_table(named_params, param_groups, rename=lambda n: n) -> list[dict]:
    "Each optimizer group as a row: its parameters (our names, sorted) and hyperparameters."
    names = {id(p): rename(n) for n, p in named_params}
    rows = []
    for g in param_groups:
        r = {"params": sorted(names[id(p)] for p in g["params"]), "kind": g["kind"]}
        for key in ("lr", "initial_lr", "eps", "weight_decay", "momentum", "ns_steps", "beta2"):
            if key in g and (g["kind"] == "muon" or key not in ("momentum", "ns_steps", "beta2")): r[key] = g[key]
        if g["kind"] == "adamw": r["betas"] = list(g["betas"])
        rows.append(r)
    return rows


# --- the runner's steps -----------------------------------------------------------------------------------------------
def prepare(work: Path, opts: dict) -> None:
    "A tokenizer trained here, and upstream's base folder holding it and two shards (the last is validation)."
    import pyarrow.parquet as pq
    from upstream_env import link_shards, upstream_base, write_upstream_tokenizer

    from nanochat.common import shared_data_dir
    from nanochat.tokenizer import Tokenizer, save_tokenizer
    shards = sorted((shared_data_dir() / "pretrain" / "wikipedia_en").glob("shard_*.parquet"))
    texts, size = [], 0
    for text in pq.read_table(shards[0], columns=["text"]).column("text").to_pylist():
        texts.append(text); size += len(text)
        if size > 8_000_000: break
    folder = save_tokenizer(Tokenizer.train(texts, VOCAB), Path(work) / "tokenizer")
    write_upstream_tokenizer(folder, upstream_base(work))
    link_shards([shards[0], shards[-1]], upstream_base(work))


def plan_names(opts: dict) -> list[str]:
    return [n for n in PLANS if not (opts.get("quick") and n == "d20")]


def _upstream_base_train(upstream: Path, args: dict) -> dict:
    "The globals of upstream's scripts/base_train.py executed up to its training loop, on the CPU, with `args`."
    import types
    source = (upstream / "scripts" / "base_train.py").read_text()
    head = source[:source.index("# Training loop")]
    if "wandb" not in sys.modules:  # imported at the top even when logging is off
        sys.modules["wandb"] = types.SimpleNamespace(init=lambda *a, **k: None)
    argv = ["--device-type", "cpu", "--run", "dummy"]
    for key, value in args.items(): argv += [f"--{key.replace('_', '-')}", str(value)]
    sys.argv = ["base_train.py", *argv]
    namespace = {"__name__": "upstream_base_train"}
    exec(compile(head, str(upstream / "scripts" / "base_train.py"), "exec"), namespace)
    return namespace


def upstream(work: Path, opts: dict) -> dict:
    os.environ["TORCHDYNAMO_DISABLE"] = "1"  # before torch is imported: the compiled step functions run eagerly
    import gc

    import torch

    import nanochat.optim as up_optim
    from nanochat.gpt import GPT, GPTConfig

    def make(case, params):
        if case["kind"] == "muon":
            group = dict(kind="muon", params=params, lr=MUON["lr"], momentum=MUON["momentum"], ns_steps=5,
                         beta2=MUON["beta2"], weight_decay=MUON["weight_decay"])
        else: group = dict(kind="adamw", params=params, lr=case["lr"], betas=tuple(case["betas"]), eps=case["eps"],
                           weight_decay=case["weight_decay"])
        return up_optim.MuonAdamW([group])

    steps = {}
    for case in cases():
        up_optim.COMPUTE_DTYPE = getattr(torch, case.get("dtype", "float32"))  # bf16: the cast upstream makes on a GPU
        steps[case["name"]] = run_steps(case, make)
    up_optim.COMPUTE_DTYPE = torch.float32

    groups = {}
    for name, kwargs in (("small", SMALL), ("d12", D12)):
        with torch.device("meta"): model = GPT(GPTConfig(**kwargs))
        groups[name] = group_table(model.named_parameters(), model.setup_optimizer(**BASE_LRS).param_groups, our_name)

    plans = {}
    for name in plan_names(opts):
        ns = _upstream_base_train(Path(opts["upstream"]), PLANS[name])
        n = ns["num_iterations"]
        plans[name] = {"args": PLANS[name], "vocab_size": ns["vocab_size"], "total_batch_size": ns["total_batch_size"],
                       "num_iterations": n, "lr_scale": ns["batch_lr_scale"], "weight_decay": ns["weight_decay_scaled"],
                       "flops_per_token": ns["num_flops_per_token"], "num_scaling_params": ns["num_scaling_params"],
                       "target_tokens": ns["target_tokens"], "reference_tokens": ns["D_REF"],
                       "groups": group_table(ns["orig_model"].named_parameters(), ns["optimizer"].param_groups, our_name),
                       **schedules(n, ns["get_lr_multiplier"], ns["get_muon_momentum"], ns["get_weight_decay"])}
        del ns; gc.collect()
    return {"steps": steps, "groups": groups, "plans": plans}


def ours(work: Path, opts: dict) -> dict:
    import torch

    from nanochat.gpt import GPT, GPTConfig
    from nanochat.optim import AdamW, Muon, setup_optimizer
    from nanochat.scripts.base_train import BaseTrainConfig, build_optimizer, model_config, training_plan
    from nanochat.tokenizer import load_tokenizer
    from nanochat.trainer import lr_multiplier, muon_momentum, reference_horizon, scaling_params, weight_decay_at

    def make(case, params):
        if case["kind"] == "muon": return Muon(params, **MUON, ortho_dtype=getattr(torch, case["dtype"]))
        return AdamW(params, lr=case["lr"], betas=tuple(case["betas"]), eps=case["eps"], weight_decay=case["weight_decay"])

    steps = {case["name"]: run_steps(case, make) for case in cases()}
    groups = {}
    for name, kwargs in (("small", SMALL), ("d12", D12)):
        with torch.device("meta"): model = GPT(GPTConfig(**kwargs))
        groups[name] = group_table(model.named_parameters(), setup_optimizer(model, **BASE_LRS).param_groups)

    vocab = load_tokenizer(Path(work) / "tokenizer").vocab_size
    plans = {}
    for name in plan_names(opts):
        cfg = BaseTrainConfig(**PLANS[name])
        with torch.device("meta"): model = GPT(model_config(cfg, vocab))
        plan = training_plan(cfg, model, world_size=1)
        n = plan.num_iterations
        plans[name] = {"vocab_size": vocab, "total_batch_size": plan.total_batch_size, "num_iterations": n,
                       "lr_scale": plan.lr_scale, "weight_decay": plan.weight_decay, "flops_per_token": plan.flops_per_token,
                       "num_scaling_params": plan.num_scaling_params, "target_tokens": int(12 * scaling_params(model)),
                       "reference_tokens": reference_horizon(12, model_config(cfg, vocab, depth=12)),
                       "groups": group_table(model.named_parameters(), build_optimizer(model, cfg, plan).param_groups),
                       **schedules(n, partial(lr_multiplier, plan=plan), partial(muon_momentum, plan=plan),
                                   partial(weight_decay_at, plan=plan))}
    return {"steps": steps, "groups": groups, "plans": plans}


# --- comparison and fixture -------------------------------------------------------------------------------------------
def _group_differences(ours: list[dict], up: list[dict]) -> list[str]:
    "What differs between two group tables, matched by their parameter sets; empty when they agree."
    mine = {tuple(g["params"]): g for g in ours}
    out = []
    for g in up:
        o = mine.pop(tuple(g["params"]), None)
        label = g["params"][0] + (f" (+{len(g['params']) - 1})" if len(g["params"]) > 1 else "")
        if o is None: out.append(f"upstream's group of {label}: no group of ours has exactly these parameters"); continue
        for key, value in g.items():
            if key == "params": continue
            theirs = o.get(key)
            if isinstance(value, float): same = theirs is not None and math.isclose(theirs, value, rel_tol=1e-12, abs_tol=0)
            else: same = theirs == value
            if not same: out.append(f"{label}: {key} {theirs} vs upstream's {value}")
    out += [f"our group of {k[0]} (+{len(k) - 1}) has no upstream counterpart" for k in mine]
    return out


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    rows = []
    for case in cases():
        o, u = ours["steps"][case["name"]], up["steps"][case["name"]]
        tol = 1e-6
        for step in ("step1", "step2"):
            d = max_diff(o[step], u[step])
            rows.append(row("optim", f"{case['name']}, {step}: max |Δ parameter|", d, within(d, tol), tol))
    for name in up["groups"]:
        diffs = _group_differences(ours["groups"][name], up["groups"][name])
        rows.append(row("optim", f"parameter groups, {name} GPT ({len(up['groups'][name])} upstream)",
                        "; ".join(diffs) if diffs else "none", not diffs))
    for name, u in up["plans"].items():
        o = ours["plans"][name]
        for key in ("vocab_size", "total_batch_size", "num_iterations", "num_scaling_params", "flops_per_token", "target_tokens"):
            rows.append(row("optim", f"plan {name}: {key} (ours {o[key]:,})", abs(o[key] - u[key]), o[key] == u[key], 0))
        for key in ("lr_scale", "weight_decay", "reference_tokens"):
            d = abs(o[key] - u[key])
            rows.append(row("optim", f"plan {name}: {key} (ours {o[key]:.6g})", d, d <= 1e-12 * max(1, abs(u[key])), 1e-12))
        for key in SCHEDULES:
            d = max_diff(o[key], u[key])
            rows.append(row("optim", f"plan {name}: {key.replace('_', ' ')}, all {len(u[key])} steps", d, d <= 1e-12, 1e-12))
        diffs = _group_differences(o["groups"], u["groups"])
        rows.append(row("optim", f"plan {name}: optimizer groups at the plan's rates", "; ".join(diffs) if diffs else "none", not diffs))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "Digests of the two steps of every case; per plan, its numbers, groups and every 50th schedule value plus boundaries."
    import torch
    steps = []
    for case in cases():
        entry = {k: v for k, v in case.items() if k != "name"}
        for step in ("step1", "step2"): entry[step] = tensor_digest(torch.tensor(up["steps"][case["name"]][step]))
        steps.append(entry)
    plans = {}
    for name, p in up["plans"].items():
        n = p["num_iterations"]
        warmdown = n - round(0.65 * n)
        sample = sorted({*range(0, n + 1, SAMPLE_EVERY), 39, 40, 41, 399, 400, warmdown - 1, warmdown, warmdown + 1, n - 1, n} & set(range(n + 1)))
        plans[name] = {k: v for k, v in p.items() if k not in SCHEDULES}
        plans[name].update(sample_steps=sample, **{k: [p[k][s] for s in sample] for k in SCHEDULES},
                           **{f"{k}_sum": math.fsum(p[k]) for k in SCHEDULES})
    return {"steps": {"seed": SEED, "muon": MUON, "cases": steps}, "groups": up["groups"], "plans": plans}
