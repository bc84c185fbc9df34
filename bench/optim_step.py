"""Where an optimizer step's time goes: our AdamW and Muon (chapter 09) on a real GPT's parameters, with the parts that
a faster step could not remove beside them (Muon's batched orthogonalisation alone, in bf16 where the step casts to
it; PyTorch's fused AdamW on the same tensors). Muon's step includes MuonEq, Muon+ and NorMuon (chapter 09). The
difference is elementwise passes and launch overhead, the share of each step that a fused or compiled optimizer would
win back; it matters most where a step has few micro-steps (many GPUs, small batches). On a GPU our AdamW steps each
group in PyTorch's fused kernel and our Muon update is compiled; `adamw_compiled` is AdamW's fallback (a compiled
kernel a parameter), `adamw_written_out` and `muon_written_out` the steps uncompiled, as the CPU runs them.

    python bench/optim_step.py                       # d12 and d20 on the GPU
    python bench/optim_step.py --depths 2 --steps 2  # the machinery, on a CPU

Prints a table (ms per step) and one JSON line, saved as bench/results/optim_step-DATE.json (or --out).
"""
import argparse
import sys
import time
from datetime import date
from pathlib import Path

import torch
from record import git_commit, save_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanochat.common import compute_dtype  # noqa: E402
from nanochat.gpt import GPT, config_for_depth  # noqa: E402
from nanochat.optim import AdamW, Muon, adamw_update_, group_by_shape, orthogonalize, setup_optimizer  # noqa: E402


def timed_ms(fn, steps: int, device: torch.device) -> float:
    "Mean milliseconds of `fn()` over `steps` calls, after two untimed ones (CUDA events on a GPU, a wall clock elsewhere)."
    for _ in range(2): fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(steps): fn()
        return (time.perf_counter() - start) / steps * 1e3
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    for _ in range(steps): fn()
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / steps


def measure(depth: int, steps: int, device: torch.device) -> list[dict]:
    "ms per step of each part, for the GPT of `depth` with random gradients."
    model = GPT.build(config_for_depth(depth), device)
    for p in model.parameters(): p.grad = torch.randn_like(p) * 1e-3
    adamw, muon = setup_optimizer(model, weight_decay=0.1).optimizers
    adam_params = [p for g in adamw.param_groups for p in g["params"]]
    reference = torch.optim.AdamW(adam_params, lr=1e-4, betas=(0.8, 0.95), eps=1e-10, fused=device.type == "cuda")
    written = AdamW(adam_params, lr=1e-4, betas=(0.8, 0.95), eps=1e-10, compiled=False)  # our step, not compiled
    compiled_states = {p: {} for p in adam_params}  # the compiled fallback's own moments
    matrices = [p for g in muon.param_groups for p in g["params"]]
    written_muon = Muon(matrices, lr=0.02, weight_decay=0.1, compiled=False)
    groups = group_by_shape(matrices)
    ortho = torch.bfloat16 if compute_dtype(device.type) == torch.bfloat16 else None  # as Muon's step casts
    parts = {"total": lambda: (adamw.step(), muon.step()), "adamw": adamw.step, "muon": muon.step,
             "muon_orthogonalize": lambda: [orthogonalize(torch.stack([p.grad for p in ps]), dtype=ortho) for ps in groups],
             "torch_fused_adamw": reference.step, "adamw_written_out": written.step,
             "adamw_compiled": torch.no_grad()(lambda: [adamw_update_(p, p.grad, compiled_states[p], g)
                                                        for g in adamw.param_groups for p in g["params"]]),
             "muon_written_out": written_muon.step}
    common = {"kind": "optim_step", "depth": depth, "adamw_params": sum(p.numel() for p in adam_params),
              "muon_params": sum(p.numel() for p in matrices)}
    return [common | {"part": name, "ms": round(timed_ms(fn, steps, device), 3)} for name, fn in parts.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[12, 20])
    p.add_argument("--steps", type=int, default=10, help="timed steps per part")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.steps < 1 or min(args.depths) < 1: p.error("--steps and --depths must be positive")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records = [r for depth in args.depths for r in measure(depth, args.steps, device)]
    print("| depth | part | ms per step |\n| --- | --- | --- |")
    for r in records: print(f"| {r['depth']} | {r['part']} | {r['ms']:.2f} |")
    save_result({"name": "optim_step", "date": date.today().isoformat(),
                 "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "commit": git_commit(),
                 "torch": torch.__version__, "records": records}, args.out)


if __name__ == "__main__": main()
