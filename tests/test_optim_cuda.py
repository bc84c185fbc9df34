"""The optimizer's GPU-only path: AdamW's and Muon's updates compiled (chapter 09)."""
import pytest
import torch
import torch.nn as nn

from nanochat import optim

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _adamw_pair(shapes, steps: int, step_fused):
    "Parameters of `shapes` in fp32 and bf16 stepped `steps` times by `step_fused` and by the written-out AdamW."
    torch.manual_seed(0)
    make = lambda: [nn.Parameter(torch.randn(s, device="cuda").to(dt)) for s in shapes for dt in (torch.float32, torch.bfloat16)]
    fused, written = make(), make()
    for a, b in zip(fused, written): b.data.copy_(a.data)
    group = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1)
    written_opt = optim.AdamW(written, **group, compiled=False)
    fused_states = {p: {} for p in fused}
    for step in range(steps):
        grads = [torch.randn_like(p) for p in fused]
        for p, q, g in zip(fused, written, grads): p.grad, q.grad = g.clone(), g.clone()
        lr = 0.01 * (1 - step / 10)  # the schedule moves the learning rate every step
        written_opt.param_groups[0]["lr"] = lr
        written_opt.step()
        with torch.no_grad(): step_fused(fused, fused_states, group | dict(lr=lr))
    for a, b in zip(fused, written):
        tol = 1e-5 if a.dtype == torch.float32 else 2e-2
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@cuda_only
def test_torch_fused_adamw_matches_written_out():
    """The GPU's first choice, PyTorch's fused kernel over a group (several shapes, two dtypes), ends where the
    written-out step ends, and did not fall back."""
    _adamw_pair([(300, 64), (64,), (7, 5, 3)], 5, lambda ps, states, group: optim.torch_fused_adamw_(ps, states, group))
    assert not optim._torch_fused_failed


@cuda_only
@pytest.mark.parametrize("shapes", [[(300, 64), (64,), (7, 5, 3)], [(32768, 768)]], ids=["small", "d12_table"])
def test_compiled_adamw_matches_written_out(shapes):
    """The compiled update, one kernel a parameter (the fallback of the fused kernel), ends where the written-out step
    ends, at small shapes and at a d12 embedding table's (where an earlier run saw it fail), without falling back."""
    optim._fused_adamw.failed = False

    def per_parameter(ps, states, group):
        for p in ps: optim.adamw_update_(p, p.grad, states[p], group | dict(compiled=True))

    _adamw_pair(shapes, 3, per_parameter)
    assert optim._fused_adamw.compiled is not None and not optim._fused_adamw.failed


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
