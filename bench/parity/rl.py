"""RL's step: our rows, advantages, policy loss and learning rate against upstream's `scripts/chat_rl.py`, on the same
sampled replies.

Upstream's RL step is written inline in its script, among a setup that loads a model and GSM8K, so its side takes the
statements it needs out of the script with `ast` and runs them with stand-ins for the names they read:
- from its batch generator, the statements from `max_length = ...` to `advantages = ...`: replies padded into
  inputs and targets (-1 where the mask is 0), the rewards, the advantages (reward minus the group's mean);
- the loop `for pass_idx in range(num_passes)`: each micro-batch's log-probabilities from `model(inputs, targets,
  loss_reduction='none')`, the advantage-weighted sum, its normalisation, `loss.backward()`;
- `get_lr_multiplier`, with the script's `num_steps`.
Nothing of upstream's code is kept here.

The inputs are made up: two problems of 4 replies, prompts and replies of a few random ids (with a stretch of
calculator output, mask 0, in some replies), random rewards, as the engine hands them back: terminal tokens left out.
The model is a stand-in on both sides: a fixed random table of logits per (reply, position), which hands each call the
rows of the next replies in order, so both sides see the same logits and the gradient lands in one table to compare.
Our side runs `group_advantages`, `micro_batches(..., "pass")` (upstream's averaging), `token_logprobs` and
`policy_gradient_loss`, as `rl_step` does with `--loss-average pass --no-reinforce-stop`.

    python bench/parity/run.py --upstream DIR --only rl [--write-fixtures]
"""
import random
from pathlib import Path

from common import max_diff, read_json, row, within, write_json

SEED, PROBLEMS, REPLIES, MICRO_BATCH, VOCAB, BOS, END = 20, 2, 4, 2, 40, 0, 1
STEPS = 9  # the learning-rate schedule's horizon
# upstream's command-line defaults that ours mirror (its name: ours), compared; the base learning rates differ by design
SHARED_DEFAULTS = {"num_samples": "num_samples", "examples_per_step": "prompts_per_step",
                   "max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_k": "top_k",
                   "device_batch_size": "device_batch_size", "init_lr_frac": "init_lr_frac",
                   "eval_every": "eval_every", "eval_examples": "eval_examples", "save_every": "save_every"}


def replies(seed: int = SEED) -> dict:
    "Made-up groups as the engine returns them: prompt + reply ids, masks (0: prompt, calculator output), rewards."
    rng = random.Random(seed)
    groups = []
    for _ in range(PROBLEMS):
        prompt = [BOS] + [rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 6))]
        sequences, masks = [], []
        for _ in range(REPLIES):
            reply = [rng.randrange(2, VOCAB) for _ in range(rng.randint(2, 9))]
            mask = [1] * len(reply)
            if len(reply) > 5 and rng.random() < 0.5: mask[2:4] = [0, 0]  # a calculator's output: forced, not sampled
            sequences.append(prompt + reply)
            masks.append([0] * len(prompt) + mask)
        groups.append({"sequences": sequences, "masks": masks,
                       "rewards": [float(rng.random() < 0.5) for _ in range(REPLIES)]})
    return {"groups": groups}


def prepare(work: Path, opts: dict) -> None:
    import torch
    write_json(work / "replies.json", replies())
    longest = max(len(s) for g in replies()["groups"] for s in g["sequences"])
    generator = torch.Generator().manual_seed(SEED)
    table = torch.randn(PROBLEMS * REPLIES, longest, VOCAB, generator=generator)
    write_json(work / "logits.json", table.tolist())


class TableModel:
    """A stand-in policy: logits from a fixed table, rows handed out in order (each call gets the next replies), the
    loss per position as upstream's GPT computes it (cross-entropy, ignore_index -1). Both sides' gradient lands in
    `table.grad`."""

    def __init__(self, table):
        self.table, self.next_row = table, 0

    def __call__(self, inputs, targets, loss_reduction: str = "none", reduction: str | None = None):
        import torch.nn.functional as F
        rows = inputs.size(0)
        logits = self.table[self.next_row:self.next_row + rows, :inputs.size(1)]
        self.next_row += rows
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction="none")


def _table(work: Path):
    import torch
    return torch.tensor(read_json(work / "logits.json"), dtype=torch.float32, requires_grad=True)


def _trained(inputs, targets, mask, first: int) -> dict:
    "{reply index: [[position, target], ...]} of every trained target (mask 1, or target >= 0 where mask is None)."
    out = {}
    for r in range(targets.size(0)):
        keep = (targets[r] >= 0) if mask is None else (mask[r] > 0)
        out[str(first + r)] = [[p, int(targets[r, p])] for p in range(targets.size(1)) if keep[p]]
    return out


def upstream(work: Path, opts: dict) -> dict:
    import ast
    import types

    import torch
    script = Path(opts["upstream"]) / "scripts" / "chat_rl.py"
    tree = ast.parse(script.read_text())
    batch_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_batch")
    body = next(n for n in batch_fn.body if isinstance(n, ast.For)).body
    assigned = lambda n, name: isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets)
    first = next(i for i, n in enumerate(body) if assigned(n, "max_length"))
    last = next(i for i, n in enumerate(body) if assigned(n, "advantages"))
    rows_code = compile(ast.Module(body=body[first:last + 1], type_ignores=[]), str(script), "exec")
    is_pass_loop = lambda n: isinstance(n, ast.For) and getattr(n.target, "id", None) == "pass_idx"
    pass_loop = next(n for n in ast.walk(tree) if is_pass_loop(n))
    loop_code = compile(ast.Module(body=[pass_loop], type_ignores=[]), str(script), "exec")
    lr_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_lr_multiplier")

    from sft import _flag_defaults  # the same reader of a script's declared defaults
    defaults = _flag_defaults(tree)
    table, data = _table(work), read_json(work / "replies.json")
    model, losses, advantages, trained = TableModel(table), [], [], {}
    examples_per_rank = len(data["groups"])
    for g, group in enumerate(data["groups"]):
        names = {"torch": torch, "device": "cpu", "assistant_end": END, "generated_token_sequences": group["sequences"],
                 "masks": group["masks"], "rewards": list(group["rewards"])}
        exec(rows_code, names)
        advantages += names["advantages"].tolist()
        trained |= _trained(names["inputs"], names["targets"], None, g * REPLIES)
        step_names = {"torch": torch, "model": model, "args": types.SimpleNamespace(device_batch_size=MICRO_BATCH),
                      "inputs_all": names["inputs"], "targets_all": names["targets"], "rewards_all": names["rewards"],
                      "advantages_all": names["advantages"], "examples_per_rank": examples_per_rank,
                      "num_passes": names["inputs"].size(0) // MICRO_BATCH, "step": 0, "num_steps": STEPS,
                      "example_step": g}
        # upstream prints after each backward: the stand-in keeps that pass's loss
        step_names["print0"] = lambda *a, names=step_names, **k: losses.append(names["loss"].item())
        exec(loop_code, step_names)
    lr_names = {"num_steps": STEPS}
    exec(compile(ast.Module(body=[lr_fn], type_ignores=[]), str(script), "exec"), lr_names)
    frac = defaults["init_lr_frac"]
    return {"defaults": {k: defaults[k] for k in (*SHARED_DEFAULTS, "embedding_lr", "unembedding_lr", "matrix_lr",
                                                   "weight_decay")},
            "advantages": advantages, "trained": trained, "losses": losses, "grad": table.grad.tolist(),
            "table_shape": list(table.shape), "table_sum": table.detach().double().sum().item(),
            "lr": [frac * lr_names["get_lr_multiplier"](s) for s in range(STEPS)]}


def ours(work: Path, opts: dict) -> dict:
    import torch

    import nanochat.scripts.chat_rl as rl
    table, data = _table(work), read_json(work / "replies.json")
    model = TableModel(table)
    rewards = torch.tensor([g["rewards"] for g in data["groups"]])
    advantages = rl.group_advantages(rewards).flatten()
    samples = [{"sequence": s, "mask": m} for g in data["groups"] for s, m in zip(g["sequences"], g["masks"])]
    losses, trained, first = [], {}, 0
    for inputs, targets, mask, adv, denominator in rl.micro_batches(samples, advantages, MICRO_BATCH, BOS, "pass"):
        trained |= _trained(inputs, targets, mask, first)
        first += inputs.size(0)
        loss = rl.policy_gradient_loss(rl.token_logprobs(model, inputs, targets), mask, adv, denominator)
        loss.backward()
        losses.append(loss.item())
    cfg = rl.ChatRLConfig()
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sgd.param_groups[0]["initial_lr"] = 1.0
    return {"defaults": {ours_name: getattr(cfg, ours_name) for ours_name in SHARED_DEFAULTS.values()},
            "advantages": advantages.tolist(), "trained": trained, "losses": losses, "grad": table.grad.tolist(),
            "lr": [rl._set_learning_rates(sgd, cfg.init_lr_frac, s, STEPS) for s in range(STEPS)]}


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    differing = [f"{theirs}={up['defaults'][theirs]} vs {mine}={ours['defaults'][mine]}"
                 for theirs, mine in SHARED_DEFAULTS.items() if up["defaults"][theirs] != ours["defaults"][mine]]
    rates = ("embedding_lr", "unembedding_lr", "matrix_lr", "weight_decay")
    named = ", ".join(f"{k} {up['defaults'][k]}" for k in rates)
    n_trained = sum(len(v) for v in up["trained"].values())
    rows = [row("rl", f"declared defaults, {len(SHARED_DEFAULTS)} shared settings (upstream's own rates, set by flag "
                      f"here: {named})", "; ".join(differing) or 0, not differing),
            row("rl", f"trained targets (position, id) of every reply ({n_trained})",
                sum(ours["trained"].get(k) != v for k, v in up["trained"].items()), ours["trained"] == up["trained"])]
    numbers = [("advantages", f"advantages of {len(up['advantages'])} replies", 0),
               ("losses", f"policy loss of each of {len(up['losses'])} micro-batches (loss_average pass)", 1e-6),
               ("grad", "gradient of the step's loss on every logit", 1e-7),
               ("lr", f"learning-rate multiplier × init_lr_frac at each of {len(up['lr'])} steps", 1e-12)]
    for key, compared, tolerance in numbers:
        difference = max_diff(ours[key], up[key])
        rows.append(row("rl", compared, difference, within(difference, tolerance), tolerance=tolerance))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    """The made-up replies and upstream's numbers on them; the logits table is drawn again from SEED
    (`torch.Generator().manual_seed(SEED)`, `randn(*table_shape)`), its sum kept to tell that it is the same."""
    return {"seed": SEED, "micro_batch": MICRO_BATCH, "bos": BOS, "steps": STEPS, "groups": replies()["groups"],
            "table_shape": up["table_shape"], "table_sum": up["table_sum"], "defaults": up["defaults"],
            "advantages": up["advantages"], "trained": up["trained"], "losses": up["losses"],
            "grad_abs_sum": float(sum(abs(v) for r in up["grad"] for p in r for v in p)),
            "grad_max": max(abs(v) for r in up["grad"] for p in r for v in p), "lr": up["lr"]}
