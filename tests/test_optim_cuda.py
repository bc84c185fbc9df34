"""The optimizer's GPU-only path: AdamW's and Muon's updates compiled (chapter 09)."""
import pytest
import torch
import torch.nn as nn

from nanochat import optim

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda_only
def test_compiled_adamw_matches_written_out():
    """Five steps of the compiled AdamW on parameters of several shapes and two dtypes (the schedule moving the learning
    rate every step) end where the written-out step ends, and the compiled step was used, not its fallback."""
    torch.manual_seed(0)
    shapes = [(300, 64), (64,), (7, 5, 3)]
    make = lambda: [nn.Parameter(torch.randn(s, device="cuda").to(dt)) for s in shapes for dt in (torch.float32, torch.bfloat16)]
    fused, written = make(), make()
    for a, b in zip(fused, written): b.data.copy_(a.data)
    opts = [optim.AdamW(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1, compiled=c)
            for ps, c in ((fused, True), (written, False))]
    for step in range(5):
        grads = [torch.randn_like(p) for p in fused]
        for ps, opt in zip((fused, written), opts):
            for p, g in zip(ps, grads): p.grad = g.clone()
            for group in opt.param_groups: group["lr"] = 0.01 * (1 - step / 10)
            opt.step()
    assert optim._fused_adamw.compiled is not None and not optim._fused_adamw.failed
    for a, b in zip(fused, written):
        tol = 1e-5 if a.dtype == torch.float32 else 2e-2
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@cuda_only
def test_compiled_muon_matches_written_out():
    """Three steps of the compiled Muon (tall, wide and square stacks, NorMuon on, orthogonalisation in bf16) end near the
    written-out step's result, and the compiled step was used."""
    torch.manual_seed(0)
    shapes = [(96, 32), (96, 32), (32, 96), (64, 64)]
    fused = [nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    written = [nn.Parameter(p.detach().clone()) for p in fused]
    opts = [optim.Muon(ps, lr=0.02, weight_decay=0.1, ortho_dtype=torch.bfloat16, compiled=c)
            for ps, c in ((fused, True), (written, False))]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in fused]
        for ps, opt in zip((fused, written), opts):
            for p, g in zip(ps, grads): p.grad = g.clone()
            opt.step()
    assert optim._fused_muon.compiled is not None and not optim._fused_muon.failed
    for a, b in zip(fused, written): torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
