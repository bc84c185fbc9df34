"""The LM head alone, plain vs fused (chapter 80): forward+backward time, peak memory, and agreement.

At the training shape (32 × 2048 positions, vocabulary 32768) for the widths of d12 (768) and d20 (1280), bf16:
- plain: `x @ W.T` under autocast, `.float()`, softcap, `F.cross_entropy`, compiled with torch.compile (what the
  model did before `fused_ce`);
- fused: `nanochat.linear_ce.linear_cross_entropy` (chunked, Triton loss+gradient kernel).

    python bench/linear_ce.py                # CUDA only

Prints a table and one JSON line, saved as bench/results/linear_ce-DATE.json (or --out).
"""
import argparse
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from record import git_commit, save_result

from nanochat.common import device_name
from nanochat.linear_ce import ce_loss_and_grad_, ce_loss_and_grad_triton_, linear_cross_entropy

ROOT = Path(__file__).resolve().parents[1]


def plain_head(x, weight, targets, softcap):
    "The unfused head, as GPT.forward computes it without `fused_ce`."
    logits = F.linear(x, weight).float()
    logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits, targets, ignore_index=-1)


def time_head(fn, x, w, t, repeats: int) -> tuple[float, float, tuple]:
    "Milliseconds per forward+backward, peak GB, and (loss, grad x, grad w) of the last call."
    for _ in range(2):  # compile / autotune
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        with torch.autocast("cuda", torch.bfloat16): fn(xg, wg, t, 15.0).backward()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    for _ in range(repeats):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        with torch.autocast("cuda", torch.bfloat16): loss = fn(xg, wg, t, 15.0)
        loss.backward()
    torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - start) / repeats
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**30, (loss.detach(), xg.grad, wg.grad)


def kernel_agreement() -> float:
    "Largest difference between the Triton kernel and the torch one over every kernel path (no cap, bounded, online max)."
    worst = 0.0
    for n_cols in (32768, 1000):  # the real width, and a ragged one
        z, t = torch.randn(64, n_cols, device="cuda") * 8, torch.randint(-1, n_cols, (64,), device="cuda")
        for cap in (0.0, 15.0, 60.0):
            ours, ref = z.clone(), z.clone()
            worst = max(worst, (ce_loss_and_grad_triton_(ours, t, cap) - ce_loss_and_grad_(ref, t, cap)).abs().max().item(),
                        (ours - ref).abs().max().item())
    if worst > 1e-2: raise SystemExit(f"the Triton kernel disagrees with the torch reference by {worst:.3g}")
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--positions", type=int, default=32 * 2048)
    p.add_argument("--widths", type=int, nargs="+", default=[768, 1280])
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): raise SystemExit("bench/linear_ce.py needs a CUDA GPU (the fused kernel is Triton)")
    agreement = kernel_agreement()
    print(f"kernel vs torch reference, every path: max abs difference {agreement:.2e}")
    plain = torch.compile(plain_head, dynamic=False)
    records = []
    for width in args.widths:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(args.positions, width, device="cuda", generator=g).to(torch.bfloat16)
        w = torch.randn(args.vocab, width, device="cuda", generator=g) / width**0.5
        t = torch.randint(0, args.vocab, (args.positions,), device="cuda", generator=g)
        t[::97] = -1  # some ignored targets, as SFT has
        plain_ms, plain_gb, (l1, gx1, gw1) = time_head(plain, x, w, t, args.repeats)
        fused_ms, fused_gb, (l2, gx2, gw2) = time_head(linear_cross_entropy, x, w, t, args.repeats)
        rel = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()
        records.append({"kind": "lm_head", "width": width, "positions": args.positions, "vocab": args.vocab,
                        "plain_ms": round(plain_ms, 2), "fused_ms": round(fused_ms, 2), "speedup": round(plain_ms / fused_ms, 3),
                        "plain_gb": round(plain_gb, 2), "fused_gb": round(fused_gb, 2), "loss_diff": abs(l1 - l2).item(),
                        "grad_x_rel": round(rel(gx2, gx1), 5), "grad_w_rel": round(rel(gw2, gw1), 5)})
    print(f"{'width':>6} {'plain ms':>9} {'fused ms':>9} {'speedup':>8} {'plain GB':>9} {'fused GB':>9} {'loss diff':>10} {'gx rel':>8} {'gw rel':>8}")
    for r in records:
        print(f"{r['width']:>6} {r['plain_ms']:>9} {r['fused_ms']:>9} {r['speedup']:>8} {r['plain_gb']:>9} {r['fused_gb']:>9} "
              f"{r['loss_diff']:>10.2e} {r['grad_x_rel']:>8} {r['grad_w_rel']:>8}")
    result = {"name": "linear_ce", "date": date.today().isoformat(), "gpu": device_name("cuda"), "commit": git_commit(),
              "torch": torch.__version__, "kernel_max_abs_diff": agreement, "records": records}
    save_result(result, args.out or ROOT / "bench" / "results" / f"linear_ce-{result['date']}.json")


if __name__ == "__main__":
    main()
