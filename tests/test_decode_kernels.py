"""The decode kernels (chapter 84) against torch: the split-K product against F.linear, the split-KV attention against
SDPA under the engine's mask, and the engine's decode step with them against the step without. On a GPU they run as
compiled kernels; elsewhere in Triton's interpreter (TRITON_INTERPRET=1, set here before Triton is imported), at small
shapes. Without Triton the module is skipped."""
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton reads it
pytest.importorskip("triton")

import torch._dynamo.testing  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nanochat import decode_kernels as dk  # noqa: E402
from nanochat.engine import DecodeBatch, DecodeModel  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402
from nanochat.sampling import SamplingParams  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if not dk.available(DEVICE):  # imported earlier in this process without the interpreter: its kernels need a GPU
    pytest.skip("decode kernels cannot run here (set TRITON_INTERPRET=1 before anything imports Triton)",
                allow_module_level=True)


def counters_are_zero() -> bool: return int(dk.arrival_counters(torch.device(DEVICE)).abs().sum()) == 0


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("n, k, plan", [
    (96, 300, None),  # the default plan: 2 column blocks × 3 splits, the last ragged
    (40, 1000, dict(BLOCK_M=4, BLOCK_N=16, BLOCK_K=32, k_per_split=64, splits=16)),  # many splits
    (200, 256, dict(BLOCK_M=4, BLOCK_N=64, BLOCK_K=128, k_per_split=256, splits=1)),  # one split: no counters
])
def test_gemv_matches_linear(rows, n, k, plan):
    if plan: plan = {**plan, "BLOCK_M": 1 << (rows - 1).bit_length()}
    gen = torch.Generator().manual_seed(rows + n + k)
    x, w = torch.randn(rows, k, generator=gen).bfloat16(), torch.randn(n, k, generator=gen).bfloat16()
    got = dk.gemv(x.to(DEVICE), w.to(DEVICE), plan).cpu()
    want = F.linear(x.float(), w.float())
    assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
    assert ((got.float() - want).abs() <= want.abs() * 2 ** -7 + 1e-4).all()  # fp32 sums, one bf16 rounding
    assert counters_are_zero()


def test_gemv_at_the_model_width_and_in_fp32():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 1280, generator=gen), torch.randn(192, 1280, generator=gen)  # d20's k, 10 splits
    torch.testing.assert_close(dk.gemv(x.to(DEVICE), w.to(DEVICE)).cpu(), F.linear(x, w), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="use F.linear"): dk.gemv(torch.zeros(5, 8), torch.zeros(4, 8))


def engine_attention(q, k, v, pos, window, span):
    "The engine's decode attention (`_StepCache.attend`): an additive mask over `span` positions, SDPA, grouped heads."
    (S, H, D), Hkv, keys = q.shape, k.size(2), torch.arange(span)[None]
    allowed = ((keys <= pos[:, None]) & (keys > pos[:, None] - window))[:, None, None]
    mask = torch.zeros(allowed.shape, dtype=q.dtype).masked_fill_(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q.reshape(S, Hkv, H // Hkv, D), k[:, :span].transpose(1, 2),
                                          v[:, :span].transpose(1, 2), attn_mask=mask).reshape(S, H, D)


SMALL = dict(BLOCK_T=16, chunk=32)


@pytest.mark.parametrize("positions, heads, kv_heads, window, span, cache_len, plan, d", [
    ([100], 2, 2, 10_000, 128, 129, SMALL, 16),  # one row, the whole span
    ([0, 63, 40], 6, 2, 20, 64, 65, SMALL, 16),  # groups of three query heads, a sliding window
    ([90, 5], 4, 1, 33, 96, 97, SMALL, 16),  # one key/value head; chunks with nothing to see
    ([30, 31, 2, 17], 2, 2, 8, 32, 40, SMALL, 32),  # four rows, the cache longer than the span
    ([200, 37], 2, 2, 129, 256, 257, None, 128),  # d20's head size, the default plan (64-key chunks)
])
def test_decode_attention_matches_sdpa(positions, heads, kv_heads, window, span, cache_len, plan, d):
    gen, S = torch.Generator().manual_seed(span + d), len(positions)
    q = torch.randn(S, heads, d, generator=gen).bfloat16()
    k, v = (torch.randn(S, cache_len, kv_heads, d, generator=gen).bfloat16() for _ in range(2))
    pos = torch.tensor(positions)
    got = dk.decode_attention(*(t.to(DEVICE) for t in (q, k, v, pos)), window, span, plan).cpu()
    want = engine_attention(q.float(), k.float(), v.float(), pos, window, span)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
    assert counters_are_zero()


def small_model(seed=0, n_layer=2) -> GPT:
    config = GPTConfig(vocab_size=96, n_layer=n_layer, n_embd=128, n_head=4, n_kv_head=2, sequence_len=64,
                       window_pattern="SL", short_window=6)
    model = GPT.build(config, device=DEVICE, seed=seed)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    with torch.no_grad():  # every weight visibly non-zero, as after training
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=gen, device=DEVICE) * 0.1)
    return model.eval()


PROMPTS = [[1, 5, 9], [2, 4, 6, 8], [3] * 12]


def greedy(decoder: DecodeModel, slots: int = 3, steps: int = 4,
           cuda_graph: bool = False) -> tuple[list[list[int]], torch.Tensor]:
    "Greedy tokens of (at most) three prompts, and the first step's logits."
    batch = DecodeBatch(decoder, slots=slots, max_len=48, cuda_graph=cuda_graph)
    rows = batch.add_many(PROMPTS[:slots], SamplingParams(temperature=0, max_tokens=steps))
    with torch.no_grad(): logits = batch.decode_logits(batch.span()).float().cpu()
    out = batch.finish()
    return [out[s] for s in rows], logits


def test_engine_decodes_the_same_with_the_kernels():
    model = small_model()
    plain_tokens, plain_logits = greedy(DecodeModel(model, torch.float32, compile=False))
    decoder = DecodeModel(model, torch.float32, compile=False, kernels="triton")
    assert (decoder.kernels, decoder.kernel_rows) == ("triton", dk.MAX_ROWS)
    tokens, logits = greedy(decoder)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-4, atol=1e-4)
    assert tokens == plain_tokens


def test_the_kernel_step_is_one_graph_with_both_operators():
    "Dynamo traces the step with the kernels whole (fullgraph): the operators are nodes of it, not graph breaks."
    model = small_model(n_layer=1)  # one layer: tracing and the interpreter are the test's time
    decoder = DecodeModel(model, torch.float32, compile=False, kernels="triton")
    counter, graphs = torch._dynamo.testing.CompileCounter(), []

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return counter(gm, example_inputs)
    decoder.step_forward = torch.compile(decoder.net, fullgraph=True, backend=backend, dynamic=False)
    tokens, _ = greedy(decoder, steps=2)
    assert tokens == greedy(DecodeModel(model, torch.float32, compile=False), steps=2)[0]
    assert counter.frame_count == 1
    assert graphs[0].count("nanochat.decode_attention") == 1  # one per layer
    assert graphs[0].count("nanochat.decode_gemv") == 4 + 1  # q/k/v, output, MLP in and out per layer; LM head


def test_wide_batches_keep_cublas_and_sdpa(monkeypatch):
    "A batch of more than MAX_ROWS slots never calls the kernels."
    def refuse(*args, **kwargs): raise AssertionError("a kernel was called for a wide batch")
    monkeypatch.setattr(dk, "gemv", refuse)
    monkeypatch.setattr(dk, "decode_attention", refuse)
    tokens, _ = greedy(DecodeModel(small_model(), torch.float32, compile=False, kernels="triton"), slots=5, steps=2)
    assert [len(t) for t in tokens] == [2, 2, 2]


def test_bench_script_smoke_run(tmp_path):
    "bench/decode_kernels.py at tiny shapes in the interpreter: it checks both kernels, times them and writes its record."
    import json
    import subprocess
    import sys

    import triton
    from conftest import ROOT
    site = str(Path(triton.__file__).resolve().parents[1])  # wherever Triton is installed, for the child process
    paths = [str(ROOT), site, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # keep the caller's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NANOCHAT_BASE_DIR": str(tmp_path)}
    out = tmp_path / "decode_kernels.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "decode_kernels.py"), "--device", "cpu", "--interpret",
                          "--batch-sizes", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads(out.read_text())
    assert record["interpret"] and record["name"] == "decode_kernels"
    assert {(r["kind"], r["impl"]) for r in record["records"]} == {("gemv", "cublas"), ("gemv", "triton"),
                                                                   ("attention", "sdpa"), ("attention", "triton")}


def test_gemv_tune_smoke_run(tmp_path):
    "bench/gemv_tune.py at a tiny shape in the interpreter: it checks and times plans, the library and the reduction."
    import json
    import subprocess
    import sys

    import triton
    from conftest import ROOT
    site = str(Path(triton.__file__).resolve().parents[1])
    paths = [str(ROOT), site, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NANOCHAT_BASE_DIR": str(tmp_path)}
    out = tmp_path / "gemv_tune.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gemv_tune.py"), "--device", "cpu", "--interpret",
                          "--matrices", "mlp_in", "--max-plans", "1", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads(out.read_text())
    assert record["interpret"] and record["name"] == "gemv_tune"
    impls = [r["impl"] for r in record["records"]]
    assert impls[:3] == ["cublas", "reduce", "triton_default"] and "triton" in impls[3:], impls


def test_fused_mlp_smoke_run():
    "bench/fused_mlp.py in the interpreter: the one-kernel MLP, in both layouts of its output matrix, is the library's."
    import subprocess
    import sys

    import triton
    from conftest import ROOT
    site = str(Path(triton.__file__).resolve().parents[1])
    paths = [str(ROOT), site, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "fused_mlp.py"), "--interpret"],
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the fused MLP is within" in run.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("slots", [1, 3])
def test_compiled_captured_step_with_the_kernels_matches_the_default(slots):
    "On a GPU, in bf16: the compiled, graph-captured step with the kernels against the default one (cuBLAS, SDPA)."
    model = small_model()
    plain_tokens, plain_logits = greedy(DecodeModel(model), slots, steps=8, cuda_graph=True)
    tokens, logits = greedy(DecodeModel(model, kernels="triton"), slots, steps=8, cuda_graph=True)
    torch.testing.assert_close(logits, plain_logits, rtol=3e-2, atol=3e-2)  # bf16 products, summed in another order
    agree = sum(a == b for t, u in zip(tokens, plain_tokens) for a, b in zip(t, u)) / sum(map(len, plain_tokens))
    assert agree >= 0.75, (tokens, plain_tokens)  # a near tie may round the other way, and the rows then part


COMPILE_FOR_H200 = """
import sys
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile
from nanochat import decode_kernels as dk
target = GPUTarget("cuda", 90, 32)  # an H200 (sm_90); no GPU needed to compile for one
gemv = {"x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "partial_ptr": "*fp32", "counter_ptr": "*i32",
        **{name: "i32" for name in ("M", "N", "K", "k_per_split", "stride_xm", "stride_wn")},
        **{name: "constexpr" for name in ("SPLITS", "BLOCK_M", "BLOCK_N", "BLOCK_K")}}
attention = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "pos_ptr": "*i64", "out_ptr": "*bf16", "o_ptr": "*fp32",
             "m_ptr": "*fp32", "z_ptr": "*fp32", "counter_ptr": "*i32", "window": "i32", "span": "i32", "chunk": "i32",
             "qk_scale": "fp32", **{n: "i32" for n in ("stride_qs", "stride_qh", "stride_ks", "stride_kt", "stride_kh",
                                                      "stride_vs", "stride_vt", "stride_vh")},
             **{n: "constexpr" for n in ("KV_HEADS", "GROUP", "SPLITS", "BLOCK_G", "BLOCK_T", "D")}}
for rows in (1, 4):
    p = dk.gemv_plan(rows, 1280, 5120)
    constants = {"SPLITS": p["splits"], "BLOCK_M": p["BLOCK_M"], "BLOCK_N": p["BLOCK_N"], "BLOCK_K": p["BLOCK_K"]}
    kernel = compile(ASTSource(dk._gemv_kernel, gemv, constants), target=target, options={"num_warps": p["num_warps"]})
    assert kernel.asm["cubin"], rows
constants = {"KV_HEADS": 10, "GROUP": 1, "SPLITS": 16, "BLOCK_G": 1, "BLOCK_T": 64, "D": 128}
kernel = compile(ASTSource(dk._decode_attention_kernel, attention, constants), target=target, options={"num_warps": 8})
assert kernel.asm["cubin"]
print("compiled")
"""


def test_kernels_compile_for_an_h200(tmp_path):
    "The interpreter checks results, not the compiler: the kernels at d20's shapes also compile to sm_90 machine code."
    import subprocess
    import sys

    import triton
    from conftest import ROOT
    site = str(Path(triton.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), site]), TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    run = subprocess.run([sys.executable, "-c", COMPILE_FOR_H200], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stdout + run.stderr[-3000:]
