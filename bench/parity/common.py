"""What both sides of a parity check share: JSON files, the state-dict mapping between the two GPTs, result rows.

This module is imported by our side and by upstream's side, so it imports neither package at the top: only the
standard library (and torch, inside the functions that need it). A component module (`tokenizer.py`, `model.py`, ...)
defines:

    prepare(work, opts)        -> None        our environment: writes the shared inputs into `work`
    ours(work, opts)           -> dict        our environment: our numbers on those inputs
    upstream(work, opts)       -> dict        upstream's environment (its checkout first on sys.path): its numbers
    compare(ours, up, opts)    -> list[row]   in the runner: one row per thing compared (see `row`)
    fixture(up, opts)          -> dict|None   the small part of upstream's numbers that CI keeps in tests/parity/

`opts` is a plain dict: device ("cpu" or "cuda"), quick (bool), upstream (checkout path), upstream_commit, and any
component-specific keys the runner passes on (`--set key=value`).
"""
import json
import math
from pathlib import Path

PINNED_COMMIT = "92d63d4"  # the upstream commit every fixture and every reported parity number refers to
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "parity"


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def row(component: str, compared: str, difference, verdict: bool | str, tolerance=None, **extra) -> dict:
    """One line of the parity table. `difference` is a number (max abs difference, or a count of disagreements) or a
    short text; `verdict` True/"match" when within `tolerance`, False/"differs" otherwise."""
    if isinstance(verdict, bool): verdict = "match" if verdict else "differs"
    if verdict not in ("match", "differs"): raise ValueError(f"verdict must be match or differs, got {verdict!r}")
    return {"kind": "parity", "component": component, "compared": compared, "difference": difference,
            "tolerance": tolerance, "verdict": verdict, **extra}


def max_diff(a, b) -> float:
    "Largest absolute difference of two equally shaped nested lists of numbers (inf when the shapes differ)."
    import torch
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if a.shape != b.shape: return float("inf")
    return (a - b).abs().max().item() if a.numel() else 0.0


def within(difference: float, tolerance: float) -> bool:
    return difference is not None and not math.isnan(difference) and difference <= tolerance


def compact(ids: list[int]) -> str:
    "Token ids as one line of space-separated numbers: how fixtures store rows of ids."
    return " ".join(map(str, ids))


def disagreements(a: list, b: list) -> list[int]:
    "Indices where two equally long lists of verdicts (or ids) differ; a length mismatch is an error."
    if len(a) != len(b): raise ValueError(f"cannot compare {len(a)} results with {len(b)}")
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


# --- the two GPTs' parameter names --------------------------------------------------------------------------------
# Upstream keeps the embedding and the blocks in a `transformer` ModuleDict; we keep them at the top level.
_UPSTREAM_PREFIXES = (("transformer.wte.", "wte."), ("transformer.h.", "blocks."))


def upstream_name(ours: str) -> str:
    "The upstream name of one of our GPT's parameters."
    for up, us in _UPSTREAM_PREFIXES:
        if ours.startswith(us): return up + ours[len(us):]
    return ours


def our_name(upstream: str) -> str:
    "Our name of one of upstream's GPT's parameters."
    for up, us in _UPSTREAM_PREFIXES:
        if upstream.startswith(up): return us + upstream[len(up):]
    return upstream


def to_upstream(state: dict) -> dict:
    "Our GPT's state dict, renamed for upstream's GPT."
    return {upstream_name(k): v for k, v in state.items()}


def from_upstream(state: dict) -> dict:
    "Upstream's GPT's state dict, renamed for ours."
    return {our_name(k): v for k, v in state.items()}


def tensor_digest(t) -> dict:
    "A few numbers that identify a tensor well enough for a fixture: shape, sum, sum of squares, some values."
    import torch
    flat = t.detach().double().flatten().cpu()
    picks = torch.linspace(0, flat.numel() - 1, min(8, flat.numel())).long()
    return {"shape": list(t.shape), "sum": flat.sum().item(), "sumsq": flat.square().sum().item(),
            "values": flat[picks].tolist(), "at": picks.tolist()}


# --- a weight set both sides can rebuild from a seed ---------------------------------------------------------------
_SCALAR_CENTRES = {"resid_lambdas": 1.0, "x0_lambdas": 0.1, "smear_lambda": 0.5, "backout_lambda": 0.2}


def synthetic_state(shapes: dict, seed: int) -> dict:
    """Random GPT weights that give lively logits, keyed by OUR parameter names (`our_name` maps upstream's): every
    tensor from its own torch.Generator, seeded by (seed, name), so neither the order of `shapes` nor the side matters.
    Embeddings: standard normal; other matrices: normal with std 1/sqrt(fan_in) (the head's logits come out ~N(0, 1));
    the 1-D scalars: a typical value plus 0.1 × normal. Pure torch, fp32, on the CPU."""
    import zlib

    import torch
    state = {}
    for name, shape in shapes.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        noise = torch.randn(tuple(shape), generator=gen)
        top = name.split(".")[0]
        if top in _SCALAR_CENTRES: state[name] = _SCALAR_CENTRES[top] + 0.1 * noise
        elif top in ("wte", "value_embeds"): state[name] = noise
        else: state[name] = noise / math.sqrt(shape[-1])
    return state


def synthetic_ids(vocab_size: int, batch: int, length: int, seed: int):
    "Token ids (batch, length), uniform over the vocabulary, from a seeded torch.Generator."
    import torch
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
