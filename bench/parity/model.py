"""The GPT: our model and upstream's, with the same weights, give the same logits.

For each small config (window patterns L, SL and SSSL with sequences long enough for the short window to bite,
grouped and plain key/value heads, odd and even depths, vocabularies that are multiples of 64):
- the parameters: names (through common.our_name), shapes, counts per group, and the FLOPs estimate;
- logits in fp32 on the CPU for three weight sets, each loaded into both models: our own initialisation (ours ->
  upstream), upstream's own initialisation (upstream -> ours), and `common.synthetic_state` (weights from a seed, with
  logits of order 1, where a difference would show);
- decoding with each side's own KV cache: a prefill past the short window, then single-token steps, against the full
  forward pass of both sides;
- the initialisation statistics of each side's own init (mean and standard deviation per parameter), within sampling
  noise, on a larger config.
With --device cuda: the synthetic weights in bf16 on the GPU (upstream's COMPUTE_DTYPE path, ours under autocast),
each side's error measured against our fp32 CPU logits. (There upstream's package has chosen bf16 at import for all
of its models, so the fp32 rows are the CPU run's only.)

fixture(): upstream's logits at a few positions for the synthetic weights of one config, for the test cell of the GPT
chapter (which regenerates the weights with common.synthetic_state and runs our model alone).
"""
from pathlib import Path

from common import from_upstream, our_name, row, synthetic_ids, synthetic_state, tensor_digest, within

CONFIGS = {  # upstream GPTConfig fields; ours has fields of the same names
    "L_d3_gqa": dict(sequence_len=512, vocab_size=256, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, window_pattern="L"),
    "SSSL_d5_gqa": dict(sequence_len=512, vocab_size=320, n_layer=5, n_head=4, n_kv_head=1, n_embd=128, window_pattern="SSSL"),
    "SL_d4_mha": dict(sequence_len=256, vocab_size=192, n_layer=4, n_head=2, n_kv_head=2, n_embd=64, window_pattern="SL"),
}
STATS_CONFIG = dict(sequence_len=512, vocab_size=2048, n_layer=4, n_head=2, n_kv_head=2, n_embd=256, window_pattern="SSSL")
BATCH, LENGTH, PREFILL, STEPS = 2, 300, 140, 6  # 300 > 129 keys: the short windows (128 at these lengths) bite
INIT_SEED, SYNTHETIC_SEED, IDS_SEED = 0, 1234, 7
FIXTURE_CONFIG, FIXTURE_POSITIONS, FIXTURE_VALUES = "SSSL_d5_gqa", [0, 1, 2, 64, 128, 129, 130, 200, 299], 16
SETS = ("ours_init", "upstream_init", "synthetic")
LOGIT_TOL, DECODE_TOL = 2e-5, 5e-5  # fp32: rounding only (the logits of the synthetic weights are of order 1)


def _configs(opts) -> dict:
    return {k: v for i, (k, v) in enumerate(CONFIGS.items()) if not opts.get("quick") or i < 2}


def _ids(cfg: dict):
    return synthetic_ids(cfg["vocab_size"], BATCH, LENGTH, IDS_SEED)


def _stats(state: dict) -> dict:
    "Mean, standard deviation and size of every tensor of a state dict (our names)."
    return {n: {"mean": t.double().mean().item(), "std": t.double().std().item() if t.numel() > 1 else 0.0, "n": t.numel()}
            for n, t in state.items()}


# --- our side ------------------------------------------------------------------------------------------------------
def _our_model(cfg: dict, device="cpu", seed=INIT_SEED):
    from nanochat.gpt import GPT, GPTConfig
    return GPT.build(GPTConfig(**cfg), device=device, seed=seed).eval()


def _our_decode(model, ids):
    "Logits of a prefill of PREFILL tokens, then STEPS single-token steps, through our KVCache."
    import torch

    from nanochat.gpt import KVCache
    cache = KVCache(model.config, ids.size(0), PREFILL + STEPS, device=ids.device)
    with torch.no_grad():
        out = [model(ids[:, :PREFILL], kv_cache=cache)[:, -1:]]
        out += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(PREFILL, PREFILL + STEPS)]
    return torch.cat(out, 1)  # positions PREFILL-1 .. PREFILL+STEPS-1


def prepare(work: Path, opts: dict) -> None:
    "Our initialisation of each config, in our names, for upstream's side to load."
    import torch
    for name, cfg in _configs(opts).items():
        (work / name).mkdir(parents=True, exist_ok=True)
        torch.save(_our_model(cfg).state_dict(), work / name / "ours_init.pt")


def ours(work: Path, opts: dict) -> dict:
    import torch

    from nanochat.gpt import estimate_flops, parameter_counts
    torch.manual_seed(0)
    out = {"configs": {}}
    for name, cfg in _configs(opts).items():
        folder = work / name
        model = _our_model(cfg)
        shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
        weights = {"ours_init": torch.load(folder / "ours_init.pt"),
                   "upstream_init": from_upstream(torch.load(folder / "upstream_init.pt")),
                   "synthetic": synthetic_state(shapes, SYNTHETIC_SEED)}
        ids, files = _ids(cfg), {}
        for key, state in weights.items():
            model.load_state_dict(state)
            with torch.no_grad(): logits = model(ids)
            torch.save({"logits": logits, "decode": _our_decode(model, ids)}, folder / f"ours_{key}.pt")
            files[key] = str(folder / f"ours_{key}.pt")
        if opts.get("device") == "cuda":
            gpu = _our_model(cfg, "cuda")
            gpu.load_state_dict(weights["synthetic"])
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16): logits = gpu(ids.cuda()).float().cpu()
            torch.save({"logits": logits}, folder / "ours_synthetic_cuda.pt")
            files["synthetic_cuda"] = str(folder / "ours_synthetic_cuda.pt")
        counts = parameter_counts(model)
        out["configs"][name] = {"shapes": {n: list(s) for n, s in shapes.items()}, "files": files,
                                "counts": {"wte": counts["wte"], "value_embeds": counts["value_embeds"], "lm_head": counts["lm_head"],
                                           "transformer_matrices": counts["matrices"], "scalars": counts["scalars"], "total": counts["total"]},
                                "flops": estimate_flops(model)}
    out["init_stats"] = _stats(_our_model(STATS_CONFIG).state_dict())
    return out


# --- upstream's side (its own package, never ours) -------------------------------------------------------------------
def _upstream_model(cfg: dict, device="cpu", seed=INIT_SEED):
    import torch

    from nanochat.gpt import GPT, GPTConfig
    with torch.device("meta"): model = GPT(GPTConfig(**cfg))
    model.to_empty(device=device)
    torch.manual_seed(seed)  # upstream's init draws from the global generator
    model.init_weights()
    return model.eval()


def _upstream_decode(model, ids):
    "Logits of a prefill of PREFILL tokens, then STEPS single-token steps, through upstream's KVCache."
    import torch

    from nanochat.common import COMPUTE_DTYPE
    from nanochat.engine import KVCache
    c = model.config
    cache = KVCache(batch_size=ids.size(0), num_heads=c.n_kv_head, seq_len=PREFILL + STEPS, head_dim=c.n_embd // c.n_head,
                    num_layers=c.n_layer, device=ids.device, dtype=COMPUTE_DTYPE)
    with torch.no_grad():
        out = [model(ids[:, :PREFILL], kv_cache=cache)[:, -1:]]
        out += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(PREFILL, PREFILL + STEPS)]
    return torch.cat(out, 1).float()


def upstream(work: Path, opts: dict) -> dict:
    import torch
    from common import to_upstream
    torch.manual_seed(0)
    out = {"configs": {}}
    for name, cfg in _configs(opts).items():
        folder = work / name
        model = _upstream_model(cfg)
        torch.save(model.state_dict(), folder / "upstream_init.pt")
        shapes = {our_name(n): tuple(p.shape) for n, p in model.state_dict().items()}
        weights = {"ours_init": to_upstream(torch.load(folder / "ours_init.pt")),
                   "upstream_init": {n: t.clone() for n, t in model.state_dict().items()},
                   "synthetic": to_upstream(synthetic_state(shapes, SYNTHETIC_SEED))}
        ids, files, result = _ids(cfg), {}, {}
        for key, state in weights.items():
            model.load_state_dict(state)
            with torch.no_grad(): logits = model(ids).float()
            torch.save({"logits": logits, "decode": _upstream_decode(model, ids)}, folder / f"upstream_{key}.pt")
            files[key] = str(folder / f"upstream_{key}.pt")
            if key == "synthetic" and name == FIXTURE_CONFIG:
                picked = logits[:, FIXTURE_POSITIONS]
                result["fixture"] = {"digest": tensor_digest(picked), "values": picked[..., :FIXTURE_VALUES].tolist()}
        if opts.get("device") == "cuda":  # COMPUTE_DTYPE was decided at import: bf16 on a recent GPU
            gpu = _upstream_model(cfg, "cuda")
            gpu.load_state_dict(weights["synthetic"])
            with torch.no_grad(): logits = gpu(ids.cuda()).float().cpu()
            torch.save({"logits": logits}, folder / "upstream_synthetic_cuda.pt")
            files["synthetic_cuda"] = str(folder / "upstream_synthetic_cuda.pt")
        out["configs"][name] = {"shapes": {our_name(n): list(t.shape) for n, t in model.state_dict().items()}, "files": files,
                                "counts": {k: v for k, v in model.num_scaling_params().items()},
                                "flops": model.estimate_flops(), "config": cfg, **result}
    stats_model = _upstream_model(STATS_CONFIG)
    out["init_stats"] = _stats(from_upstream({n: t.float() for n, t in stats_model.state_dict().items()}))
    return out


# --- the comparison ------------------------------------------------------------------------------------------------
def _max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def _init_stats_rows(ours_stats: dict, up_stats: dict) -> list[dict]:
    "One row: the worst parameter, in units of the sampling noise of its mean and of its standard deviation."
    import math
    if set(ours_stats) != set(up_stats):
        return [row("model", "init statistics: parameter names", f"differ: {sorted(set(ours_stats) ^ set(up_stats))}", False)]
    worst, where = 0.0, ""
    for n, a in ours_stats.items():
        b = up_stats[n]
        sigma = max(a["std"], b["std"])
        if sigma == 0:  # a constant (zeros, or one value): the same constant
            z = 0.0 if abs(a["mean"] - b["mean"]) <= 1e-6 else math.inf
        else:  # noise of a mean: sigma/sqrt(n); of a std: at most sigma/sqrt(2n) for a normal, less for a uniform
            z = max(abs(a["mean"] - b["mean"]) / (sigma / math.sqrt(a["n"])),
                    abs(a["std"] - b["std"]) / (sigma / math.sqrt(2 * a["n"])))
        if z > worst: worst, where = z, n
    return [row("model", f"init mean/std per parameter, {len(ours_stats)} tensors (worst: {where or '-'})", round(worst, 2),
                worst <= 6.0, tolerance=6.0)]


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    import torch
    rows = []
    for name, a in ours["configs"].items():
        b = up["configs"][name]
        mismatched = sorted(set(a["shapes"]) ^ set(b["shapes"])) + sorted(n for n in set(a["shapes"]) & set(b["shapes"])
                                                                            if a["shapes"][n] != b["shapes"][n])
        rows.append(row("model", f"{name}: parameter names and shapes ({len(a['shapes'])})", len(mismatched), not mismatched,
                        tolerance=0, detail=mismatched[:5]))
        count_diff = sum(abs(a["counts"][k] - b["counts"][k]) for k in a["counts"])
        rows.append(row("model", f"{name}: parameter counts by group (total {a['counts']['total']:,})", count_diff, count_diff == 0, tolerance=0))
        rows.append(row("model", f"{name}: FLOPs per token estimate", abs(a["flops"] - b["flops"]), a["flops"] == b["flops"], tolerance=0))
        # with --device cuda, upstream's package chose bf16 at import (COMPUTE_DTYPE), for its CPU model too: the fp32
        # rows belong to the CPU run, and this run reports the bf16 GPU rows against our fp32 CPU logits
        for key in SETS if opts.get("device") != "cuda" else ():
            x, y = torch.load(a["files"][key]), torch.load(b["files"][key])
            d = _max_diff(x["logits"], y["logits"])
            scale = y["logits"].abs().max().item()
            rows.append(row("model", f"{name}: fp32 logits, {key} weights (max |logit| {scale:.3g})", d, within(d, LOGIT_TOL), tolerance=LOGIT_TOL))
            positions = slice(PREFILL - 1, PREFILL + STEPS)
            d_ours = _max_diff(x["decode"], x["logits"][:, positions])
            d_up = _max_diff(y["decode"], y["logits"][:, positions])
            d_both = _max_diff(x["decode"], y["decode"])
            worst = max(d_ours, d_up, d_both)
            rows.append(row("model", f"{name}: KV-cache decode, {key} weights (ours vs full {d_ours:.1e}, upstream vs full {d_up:.1e}, ours vs upstream)",
                            worst, within(worst, DECODE_TOL), tolerance=DECODE_TOL))
        if "synthetic_cuda" in a["files"] and "synthetic_cuda" in b["files"]:
            ref = torch.load(a["files"]["synthetic"])["logits"]  # fp32 on the CPU, equal to upstream's (rows above)
            e_ours = _max_diff(torch.load(a["files"]["synthetic_cuda"])["logits"], ref)
            e_up = _max_diff(torch.load(b["files"]["synthetic_cuda"])["logits"], ref)
            tol = max(1.5 * e_up, 5e-2)  # bf16: ours may round in other places, not much more
            rows.append(row("model", f"{name}: bf16 GPU logits, error vs fp32 (upstream's {e_up:.3g})", e_ours, within(e_ours, tol), tolerance=tol))
    rows += _init_stats_rows(ours["init_stats"], up["init_stats"])
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "The config, seeds and upstream's logits at FIXTURE_POSITIONS for the synthetic weights of FIXTURE_CONFIG."
    entry = up["configs"][FIXTURE_CONFIG]
    return {"config": entry["config"], "weights_seed": SYNTHETIC_SEED, "ids": {"batch": BATCH, "length": LENGTH, "seed": IDS_SEED},
            "positions": FIXTURE_POSITIONS, "values_per_position": FIXTURE_VALUES, **entry["fixture"]}
