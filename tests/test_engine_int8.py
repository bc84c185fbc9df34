"""Weight-only int8 in the engine beyond the chapter's cells: the decode step traces as one graph (what torch.compile
needs), the weights follow training, and on a GPU the compiled, captured int8 step against the eager one."""
import torch
import torch._dynamo.testing

from nanochat.engine import DecodeBatch, DecodeModel, Int8Weight, weight_bytes
from nanochat.gpt import GPT, GPTConfig
from nanochat.sampling import SamplingParams

try:
    import pytest
    cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
except ImportError:  # on a bare GPU machine this file runs as a script
    cuda_only = lambda f: f

PROMPTS = [[1, 5, 9], [2, 4, 6, 8], [3] * 12]


def small_model(device="cpu", seed=0) -> GPT:
    config = GPTConfig(vocab_size=96, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=64,
                       window_pattern="SL", short_window=6)
    model = GPT.build(config, device=device, seed=seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():  # every weight visibly non-zero, as after training
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=gen, device=device) * 0.1)
    return model.eval()


def greedy(decoder: DecodeModel, cuda_graph: bool | None = None) -> list[list[int]]:
    batch = DecodeBatch(decoder, slots=len(PROMPTS), max_len=48, cuda_graph=cuda_graph)
    slots = batch.add_many(PROMPTS, SamplingParams(temperature=0, max_tokens=16))
    out = batch.finish()
    return [out[s] for s in slots]


def test_int8_step_is_one_graph():
    "Dynamo traces the int8 step whole (fullgraph, no recompiles over the steps) and it decodes as the eager one."
    model = small_model()
    eager = greedy(DecodeModel(model, quantize="int8"))
    decoder = DecodeModel(model, quantize="int8")
    counter = torch._dynamo.testing.CompileCounter()
    decoder.step_forward = torch.compile(decoder.net, fullgraph=True, backend=counter, dynamic=False)
    assert greedy(decoder) == eager
    assert counter.frame_count == 1


def test_int8_weights_follow_training():
    model = small_model()
    decoder = DecodeModel(model, quantize="int8")
    ids = torch.tensor([PROMPTS[2]])
    before = decoder.net(ids)
    weight = decoder.net.blocks[0].attn.qkv_weight
    with torch.no_grad(): model.blocks[0].attn.c_k.weight.mul_(2.0)  # an optimizer step, in place
    assert decoder.refresh()
    assert decoder.net.blocks[0].attn.qkv_weight is weight  # the same buffer, new values
    assert isinstance(weight, Int8Weight)
    after = decoder.net(ids)
    assert not torch.allclose(before, after)
    assert (after - model(ids)).norm() < 0.05 * model(ids).norm()


@cuda_only
def test_int8_cuda_graph_matches_eager():
    model = small_model("cuda")
    compiled, eager = DecodeModel(model, quantize="int8"), DecodeModel(model, quantize="int8", compile=False)
    graph_rows, eager_rows = greedy(compiled, cuda_graph=True), greedy(eager, cuda_graph=False)
    agree = sum(a == b for x, y in zip(graph_rows, eager_rows) for a, b in zip(x, y)) / sum(map(len, eager_rows))
    assert agree >= 0.8, f"compiled int8 agrees with eager int8 on {agree:.0%} of greedy tokens"  # fused rounding
    assert greedy(compiled, cuda_graph=True) == graph_rows  # replays are exact
    assert weight_bytes(compiled.net) < 0.7 * weight_bytes(DecodeModel(model, compile=False).net)


def test_compiled_decode_product_reads_int8():
    """Compiled, a product of at most INT8_MATVEC_ROWS rows is one fused kernel over the int8 weights (no widened copy,
    no library call), close to the plain product; wider ones keep the widened copy and the library's product."""
    import torch.nn.functional as F
    from torch._inductor.exc import CppCompileError
    from torch._inductor.utils import run_and_get_code

    from nanochat.engine import INT8_MATVEC_ROWS, int8_dequantize, int8_quantize
    q, scale = int8_quantize(torch.randn(320, 256))
    weight = Int8Weight(q, scale)
    for rows, fused in ((1, True), (INT8_MATVEC_ROWS, True), (INT8_MATVEC_ROWS + 4, False)):
        torch._dynamo.reset()
        x = torch.randn(rows, 1, 256, dtype=torch.bfloat16)
        try: y, codes = run_and_get_code(torch.compile(lambda x: F.linear(x, weight), fullgraph=True), x)
        except CppCompileError: pytest.skip("inductor's CPU code needs a C++ compiler, and this machine's failed")
        code = "\n".join(codes)
        assert ("extern_kernels.mm" not in code) == fused, (rows, code[-3000:])
        expected = x.float() @ int8_dequantize(q, scale).T
        assert (y.float() - expected).norm() < 0.01 * expected.norm() and y.dtype == torch.bfloat16
    torch._dynamo.reset()


if __name__ == "__main__":
    for test in (test_int8_step_is_one_graph, test_int8_weights_follow_training, test_int8_cuda_graph_matches_eager):
        test()
        print(test.__name__, "ok")
