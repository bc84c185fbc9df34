"""Attention kernels on the GPU: forward + backward time of each backend at the GPT's training shapes.

    python bench/attention.py                       # d12 and d20 head counts, T=2048, windows 2048 (L) and 513 (S)

Every backend is first checked against the reference on a small input (bf16 tolerance); then timed. SDPA is also
timed with each of PyTorch's kernels forced (flash, cuDNN, memory-efficient) to show what "sdpa" picks. Prints a
table and one JSON line, saved as bench/results/attention-DATE.json (or --out).
"""
import argparse
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from record import git_commit, save_result
from torch.nn.attention import SDPBackend, sdpa_kernel

import nanochat.attention as attention_lib
from nanochat.attention import ATTENTION_BACKENDS, attention_mask, backend_agreement, flex_block_mask
from nanochat.common import device_name

ROOT = Path(__file__).resolve().parents[1]


def forced_sdpa(kind):
    "SDPA restricted to one of PyTorch's kernels (None if it cannot run the case)."
    def attend(q, k, v, window):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        with sdpa_kernel([kind]):
            if window >= k.size(2): y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.size(1) != k.size(1))
            else: y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(q.size(2), k.size(2), window, q.device),
                                                     enable_gqa=q.size(1) != k.size(1))
        return y.transpose(1, 2)
    return attend


def forced_flex(q, k, v, window):
    "FlexAttention's kernel even where the `flex` backend hands over to SDPA (full causal windows)."
    t = q.size(1)
    mask = flex_block_mask(t, t, min(window, t), str(q.device))
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    return attention_lib._flex_kernel(q.device.type)(q, k, v, block_mask=mask, enable_gqa=q.size(1) != k.size(1)).transpose(1, 2)


def time_fwd_bwd(fn, q, k, v, window, repeats=10) -> float:
    "Milliseconds per forward+backward."
    for _ in range(2): fn(q, k, v, window).sum().backward()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats): fn(q, k, v, window).sum().backward()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, nargs="+", default=[6, 10], help="query heads (d12: 6, d20: 10); head dim 128")
    p.add_argument("--windows", type=int, nargs="+", default=[2048, 513],
                   help="keys a query sees, itself included: an S layer of the model passes its short window + 1 (513 at 2048)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available(): p.error("this benchmark needs a CUDA GPU")
    # the compiled flex kernel specialises on every shape (heads, dtype, agreement cases): room for all of them,
    # else dynamo gives up after 8 and runs flex unfused (~50x slower)
    torch._dynamo.config.recompile_limit = 64
    # Time the kernel training runs, specialised to each shape: the library's eager path goes symbolic after its first
    # shape (right for evaluation and serving, not what a compiled training step gets).
    from torch.nn.attention.flex_attention import flex_attention as torch_flex
    static_flex = torch.compile(torch_flex, dynamic=False)
    attention_lib._flex_kernel = lambda device_type: static_flex
    agreement = backend_agreement("cuda", torch.bfloat16) + backend_agreement("cuda", torch.float32)
    for row in agreement: print(f"agreement {row['backend']:>10} {row['dtype']:>9} max error {row['max_abs_err']:.1e} ({'ok' if row['agrees'] else 'FAILS'})")
    candidates = {name: b.fn for name, b in ATTENTION_BACKENDS.items()
                  if name != "reference" and b.unavailable(torch.device("cuda"), torch.bfloat16) is None}
    candidates |= {"sdpa:flash": forced_sdpa(SDPBackend.FLASH_ATTENTION), "sdpa:cudnn": forced_sdpa(SDPBackend.CUDNN_ATTENTION),
                   "sdpa:efficient": forced_sdpa(SDPBackend.EFFICIENT_ATTENTION), "flex:forced": forced_flex}
    records = []
    for H in args.heads:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(args.batch, args.seq, H, 128, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                   for _ in range(3))
        for window in args.windows:
            for name, fn in candidates.items():
                try: ms = time_fwd_bwd(fn, q, k, v, window)
                except RuntimeError as e: print(f"{H:>3} heads window {window:>5} {name:>15}: cannot run ({str(e).splitlines()[0][:80]})"); continue
                flops = 4 * args.batch * H * 128 * args.seq * min(window, args.seq) * 3.5 / 2  # fwd 2 matmuls, bwd 2.5x, causal half
                records.append({"kind": "attention", "backend": name, "heads": H, "head_dim": 128, "batch": args.batch, "seq": args.seq,
                                "window": window, "ms_fwd_bwd": round(ms, 3), "tflops": round(flops / ms / 1e9, 1)})
                print(f"{H:>3} heads window {window:>5} {name:>15}: {ms:8.2f} ms  {flops / ms / 1e9:6.0f} TFLOP/s", flush=True)
    result = {"name": "attention", "date": date.today().isoformat(), "gpu": device_name("cuda"), "torch": torch.__version__,
              "commit": git_commit(), "agreement": agreement, "records": records}
    save_result(result, args.out)


if __name__ == "__main__":
    main()
