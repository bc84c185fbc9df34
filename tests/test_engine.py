"""The engine beyond the chapter's cells: greedy decoding equals recomputation (today's model and the earlier variants),
weights refreshed after training, and on a GPU the CUDA-graph step against the eager one (run as
`python tests/test_engine.py` on a GPU machine without pytest)."""
import logging

import torch

from nanochat.common import get_logger
from nanochat.engine import DecodeBatch, DecodeModel, sample_and_advance
from nanochat.gpt import GPT, GPTConfig, earlier_variants
from nanochat.sampling import SamplingParams

try:
    import pytest
    cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
except ImportError:  # on a bare GPU machine this file runs as a script
    cuda_only = lambda f: f


def _chat_web_or_none():
    "The chat_web script, or None where its server packages (fastapi, ...) are not installed, as on a bare GPU machine."
    try:
        from nanochat.scripts import chat_web
    except ModuleNotFoundError as e:
        print(f"chat_web skipped: {e.name} is not installed")
        return None
    return chat_web


def small_model(device="cpu", seed=0, earlier=False, **overrides) -> GPT:
    config = GPTConfig(**{**dict(vocab_size=512, n_layer=4, n_embd=128, n_head=4, n_kv_head=2, sequence_len=128,
                                 window_pattern="SSL", short_window=16), **overrides})
    model = GPT.build(earlier_variants(config) if earlier else config, device=device, seed=seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():  # a trained-looking output layer, so that greedy tokens vary
        for block in model.blocks:
            for p in (block.attn.c_proj.weight, block.mlp.c_proj.weight): p.normal_(0, 0.05, generator=gen)
        model.lm_head.weight.normal_(0, 0.3, generator=gen)
        if model.config.smear: model.smear_lambda.fill_(0.7)  # a trained-looking smear: each step needs its row's previous token
    return model.eval()


PROMPTS = [[1, 2, 3], list(range(10, 40)), [7] * 17, list(range(100, 105))]


def decode(batch: DecodeBatch, params: SamplingParams) -> list[list[int]]:
    slots = batch.add_many(PROMPTS, [SamplingParams(params.temperature, params.top_k, params.top_p, seed, params.max_tokens)
                                     for seed in range(len(PROMPTS))])
    out = batch.finish()
    return [out[s] for s in slots]


def test_greedy_equals_recompute():
    "Greedy rows of different lengths, windows that bite (17 keys of up to 45), smear and backout: the tokens of recomputation."
    for earlier in (False, True):  # the earlier variants too: an old checkpoint (no smear, no backout) decodes as before
        model = small_model(earlier=earlier)
        got = decode(DecodeBatch(model, 4, 96), SamplingParams(temperature=0, max_tokens=15))
        with torch.no_grad():
            for prompt, tokens in zip(PROMPTS, got):
                ids = list(prompt)
                for t in tokens:
                    assert model(torch.tensor([ids]))[0, -1].argmax().item() == t, (earlier, prompt)
                    ids.append(t)


def test_weights_follow_training():
    "An in-place update of the model (an optimizer step) is seen by the next add: no stale copies."
    model = small_model()
    decoder = DecodeModel(model)
    before = decode(DecodeBatch(decoder, 4, 96), SamplingParams(temperature=0, max_tokens=8))
    with torch.no_grad(): model.lm_head.weight.mul_(-1)  # what an optimizer does: in place
    after = decode(DecodeBatch(decoder, 4, 96), SamplingParams(temperature=0, max_tokens=8))
    assert before != after
    assert not decoder.refresh()  # already current


def test_span_buckets():
    batch = DecodeBatch(small_model(), 2, 128)
    assert batch.span() == 64  # nothing busy: the smallest bucket
    batch.add(list(range(70)))
    assert batch.span() == 128


@cuda_only
def test_cuda_graph_matches_eager():
    "On a GPU the captured step gives exactly the eager step's tokens (greedy and sampled), and greedy ≈ recompute."
    model = small_model("cuda")
    decoder = DecodeModel(model)
    for params in (SamplingParams(temperature=0, max_tokens=40), SamplingParams(temperature=1.0, top_k=50, top_p=0.9, max_tokens=40),
                   SamplingParams(temperature=0.8, max_tokens=40)):
        graphed_batch = DecodeBatch(decoder, 4, 128)
        graphed, eager = decode(graphed_batch, params), decode(DecodeBatch(decoder, 4, 128, cuda_graph=False), params)
        assert graphed == eager, (params, graphed, eager)
    # greedy in bf16 against a bf16 full recompute: equal until rounding makes a near-tie go the other way
    greedy = decode(DecodeBatch(decoder, 4, 128), SamplingParams(temperature=0, max_tokens=40))
    agree = []
    with torch.autocast("cuda", torch.bfloat16):
        for prompt, got in zip(PROMPTS, greedy):
            ids = list(prompt)
            for t in got:
                agree.append(model(torch.tensor([ids], device="cuda"))[0, -1].argmax().item() == t)
                ids.append(t)
    first_disagreement = agree.index(False) if False in agree else len(agree)
    print(f"greedy: {sum(agree)}/{len(agree)} tokens equal to a bf16 full recompute (first difference at {first_disagreement})")
    assert sum(agree) >= 0.9 * len(agree)


class _Warnings(logging.Handler):
    "Collects the nanochat logger's messages (pytest's caplog is not there when this file runs as a script)."
    def __enter__(self):
        self.messages = []
        get_logger().addHandler(self)
        return self
    def __exit__(self, *exc): get_logger().removeHandler(self)
    def emit(self, record): self.messages.append(record.getMessage())


@cuda_only
def test_compiled_sampler_at_every_slot_count():
    "The compiled sampler (static shapes) works at every slot count a server or an evaluation uses: no eager fallback."
    model = small_model("cuda", vocab_size=32768)  # the real vocabulary: the shape whose dynamic scan failed
    decoder = DecodeModel(model)
    with _Warnings() as log:
        for slots in (1, 4, 32, 64, 128):
            batch = DecodeBatch(decoder, slots, 64)
            rows = min(slots, 4)  # filtered and unfiltered rows (a row without a top-k makes the step sort)
            params = [SamplingParams(temperature=0.7, max_tokens=3), SamplingParams(temperature=1.0, top_k=50, top_p=0.9, max_tokens=3)]
            batch.add_many([[1, 2, 3]] * rows, (params * 2)[:rows])
            while batch.busy: batch.step()
            batch.add_many([[1, 2, 3]] * rows, [params[0]] * rows)  # and unfiltered only
            while batch.busy: batch.step()
            batch.add_many([[1, 2, 3]] * rows, [params[1]] * rows)  # and top-k rows only: the selection, not the sort
            while batch.busy: batch.step()
    assert not [m for m in log.messages if "eagerly" in m], log.messages


@cuda_only
def test_server_starts_without_eager_fallback():
    "chat_web's start on a GPU (model, engine, warm-up of every graph) logs no compile failure, at 64 and 128 slots."
    from unittest.mock import patch

    chat_web = _chat_web_or_none()
    if chat_web is None:
        if "pytest" in globals(): pytest.skip("chat_web's packages (fastapi) are not installed")
        return
    big_vocab = lambda tokenizer, device="cpu", **kw: GPT.build(GPTConfig(vocab_size=32768, n_layer=2, n_embd=64, n_head=2, n_kv_head=1,
                                                                          sequence_len=256), device=device).eval()
    with _Warnings() as log, patch.object(chat_web, "tiny_random_model", big_vocab):
        for slots in (64, 128):
            chat_web.build_app(chat_web.ChatWebConfig(tiny_random=True, device_type="cuda", slots=slots))
    assert not [m for m in log.messages if "eagerly" in m], log.messages


@cuda_only
def test_row_buckets_on_gpu():
    """Steps over the leading 8 or 16 of 32 slots (their own compiled variants and CUDA graphs) give the tokens of
    steps over all 32, rows joining and leaving between them, with no compile failure; a server with row buckets
    starts (where its packages are installed)."""
    chat_web = _chat_web_or_none()
    model, greedy = small_model("cuda"), SamplingParams(temperature=0)
    with _Warnings() as log:
        narrow, wide = DecodeBatch(model, 32, 128, row_buckets=True), DecodeBatch(model, 32, 128)
        assert narrow.warm_up() == 3 * wide.warm_up()  # three row counts, each with every span and filter
        out = []
        for batch in (narrow, wide):
            first = batch.add_many(PROMPTS * 3, greedy)  # slots 0-11: steps of 16 rows on the narrow batch
            tokens = [batch.step() for _ in range(5)]
            for slot in first[2:]: batch.release(slot)  # slots 0-1 left: steps of 8
            tokens += [batch.step() for _ in range(5)]
            out.append([{s: e.token for s, e in t.items()} for t in tokens])
        assert out[0] == out[1]
        if chat_web:
            chat_web.build_app(chat_web.ChatWebConfig(tiny_random=True, device_type="cuda", slots=32, row_buckets=True))
    assert not [m for m in log.messages if "eagerly" in m], log.messages


@cuda_only
def test_fed_prompts_on_gpu():
    """Prompts fed through the captured step write the keys a prefill writes (to bf16 rounding) and sample the same
    first token."""
    # max_tokens: no row may finish (and free its slot, whose cache the steps then overwrite) before the longest
    # prompt's first token
    model, greedy = small_model("cuda"), SamplingParams(temperature=0, max_tokens=48)
    keys, firsts = [], []
    for feed in (0, 64):
        batch = DecodeBatch(model, 8, 128, feed_prompts=feed)
        batch.add_many([PROMPTS[0]], greedy)
        batch.step()
        joined = batch.add_many(PROMPTS[1:], greedy)
        assert all(bool(batch.rows[s].feed) == (feed > 0 and len(p) > 1) for s, p in zip(joined, PROMPTS[1:]))
        first = {}
        while len(first) < len(joined):
            for s, e in batch.step().items():
                if s in joined: first.setdefault(s, e.token)
        keys.append([torch.stack(batch.k)[:, s, : len(p) - 1].float() for s, p in zip(joined, PROMPTS[1:])])
        firsts.append(first)
    assert firsts[0] == firsts[1]
    for fed, prefilled in zip(*keys): torch.testing.assert_close(fed, prefilled, atol=3e-2, rtol=3e-2)


def test_compiled_prefill_matches_eager():
    "The admissions' forward compiled (as on a GPU; here on the CPU) writes the keys and values the eager one writes."
    from nanochat.engine import _compiled
    model = small_model()
    eager, compiled = DecodeBatch(model, 4, 96), DecodeBatch(model, 4, 96)
    compiled.model.prefill_forward = _compiled(compiled.model.net, dynamic=True)
    with _Warnings() as log:
        for batch in (eager, compiled):
            batch.add_many(PROMPTS[:2])  # two lengths in two buckets, then another batch size and length
            batch.add_many(PROMPTS[2:])
    assert not [m for m in log.messages if "eagerly" in m], log.messages
    for k_eager, k_compiled in zip(eager.k, compiled.k): torch.testing.assert_close(k_compiled, k_eager, atol=1e-5, rtol=1e-4)
    assert list(eager.finish().values()) == list(compiled.finish().values())


def _one_row_greedy(decoder: DecodeModel, steps: int, cuda_graph: bool | None = None):
    "Greedy tokens of one prompt through a one-slot batch, and its first step's logits."
    batch = DecodeBatch(decoder, slots=1, max_len=96, cuda_graph=cuda_graph)
    slot = batch.add(PROMPTS[1], SamplingParams(temperature=0, max_tokens=steps))
    with torch.no_grad(): logits = batch.decode_logits(batch.span()).float().cpu()
    return batch.finish()[slot], logits


def test_reduced_products_decode_the_same():
    "kernels='reduce' (one-row products as fp32 reductions) gives the library product's logits and greedy tokens."
    model = small_model()
    plain_tokens, plain_logits = _one_row_greedy(DecodeModel(model, torch.float32, compile=False), 12)
    decoder = DecodeModel(model, torch.float32, compile=False, kernels="reduce")
    assert (decoder.reduce_rows, decoder.kernel_rows) == (1, 0)
    assert decoder.narrow_step_forward is decoder.step_forward  # nothing is compiled apart where nothing is compiled
    tokens, logits = _one_row_greedy(decoder, 12)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-4, atol=1e-4)
    assert tokens == plain_tokens


@torch.no_grad()
def _greedy_margins(model: GPT, prompt: list[int], tokens: list[int]) -> list[float]:
    """For each greedy token, how far its logit falls below the best one when the training model (fp32) reads the whole
    sequence at once: 0 where the engine took the argmax, a few hundredths where bf16 rounding broke a near tie."""
    logits = model(torch.tensor([prompt + tokens], device=model.wte.weight.device))[0].float()
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
    return (rows.max(-1).values - rows.gather(1, torch.tensor(tokens, device=rows.device)[:, None])[:, 0]).tolist()


@cuda_only
def test_reduced_products_on_gpu():
    """Compiled and captured in bf16, the reduced products give the default step's logits to bf16 rounding, and every
    greedy token is the full forward's argmax up to a near tie. (The two token lists need not agree: this random model
    has ties within 0.1, and one flipped token sends the rest apart.)"""
    model = small_model("cuda")
    with _Warnings() as log:
        plain_tokens, plain_logits = _one_row_greedy(DecodeModel(model), 8, cuda_graph=True)
        reducer = DecodeModel(model, kernels="reduce")
        tokens, logits = _one_row_greedy(reducer, 8, cuda_graph=True)
    assert not [m for m in log.messages if "eagerly" in m], log.messages
    # the one-row step and its sampler are compiled apart (multi-kernel reductions); wider steps keep the default's
    assert reducer.narrow_step_forward is not reducer.step_forward
    assert reducer.narrow_sample_and_advance is not reducer.sample_and_advance
    torch.testing.assert_close(logits, plain_logits, rtol=3e-2, atol=3e-2)
    for got in (plain_tokens, tokens):
        assert max(_greedy_margins(model, PROMPTS[1], got)) < 0.1, (got, _greedy_margins(model, PROMPTS[1], got))


def _end_of_step_buffers(rows: int, slots: int, vocab: int, device: str, filtering: str) -> tuple:
    """A batch's per-row buffers as `sample_and_advance` takes them: half its rows greedy, a tie across argmax blocks,
    and for `filtering` 'top_k' every row a top-k of 50, for 'sort' a top-p of 0.9."""
    gen = torch.Generator(device=device).manual_seed(rows)
    logits = torch.randn(rows, vocab, device=device, generator=gen) * 4
    logits[0, [5, vocab - 3]] = 100.0  # a tie across blocks: the first column wins
    ints = torch.randint(0, 50, (6, slots), device=device, generator=gen)
    ints[2] = torch.arange(slots, device=device) % 3 > 0  # active
    ints[4] = 50 if filtering == "top_k" else 0
    floats = torch.ones(2, slots, device=device)
    floats[0] = torch.rand(slots, device=device, generator=gen) * (torch.arange(slots, device=device) % 2)
    if filtering == "sort": floats[1] = 0.9
    return logits, ints, floats, torch.zeros(slots, dtype=torch.long, device=device), torch.arange(vocab, device=device)


def _compare_end_of_step(compiled, rows: int, slots: int, vocab: int, device: str, filtering: str = "none") -> None:
    logits, *buffers = _end_of_step_buffers(rows, slots, vocab, device, filtering)
    options = (filtering != "none", 256 if filtering == "top_k" else None, torch.tensor(40, device=device))
    eager = [b.clone() for b in buffers]
    sample_and_advance(logits, *eager, *options)
    compiled(logits, *buffers, *options)
    for got, want in zip(buffers, eager): assert torch.equal(got, want), (rows, slots, filtering)


def test_compiled_end_of_step_on_cpu():
    """Compiled (here by the CPU's inductor), the sampler and the step's bookkeeping write what the eager function
    writes, unfiltered and with the top-k selection. (The sort's compilation takes the CPU half a minute more; the GPU
    test below covers it.)"""
    from nanochat.engine import _compiled
    compiled = _compiled(sample_and_advance, dynamic=False)
    with _Warnings() as log:
        for filtering in ("none", "top_k"): _compare_end_of_step(compiled, 3, 4, 1000, "cpu", filtering)
    assert not [m for m in log.messages if "eagerly" in m], log.messages


@cuda_only
def test_compiled_sampler_draws_the_eager_tokens():
    """On a GPU, the compiled end of a step (the sampler's argmax in two passes, the bookkeeping fused in, kernels
    launched with PDL) writes what the eager one does, with each filtering."""
    from nanochat.engine import _compiled_sampler
    for rows, slots in ((1, 1), (4, 8), (128, 128)):
        for filtering in ("none", "top_k", "sort"):
            for pdl in (False, True): _compare_end_of_step(_compiled_sampler(pdl), rows, slots, 32768, "cuda", filtering)


@cuda_only
def test_pdl_decodes_the_same():
    "Programmatic dependent launch changes when kernels start, not what they compute: the same logits and tokens."
    model = small_model("cuda")
    with _Warnings() as log:
        plain_tokens, plain_logits = _one_row_greedy(DecodeModel(model, pdl=False), 8, cuda_graph=True)
        tokens, logits = _one_row_greedy(DecodeModel(model, pdl=True), 8, cuda_graph=True)
    assert not [m for m in log.messages if "eagerly" in m], log.messages
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=0)
    assert tokens == plain_tokens

if __name__ == "__main__":
    test_greedy_equals_recompute()
    test_weights_follow_training()
    test_span_buckets()
    test_compiled_prefill_matches_eager()
    test_reduced_products_decode_the_same()
    if torch.cuda.is_available():
        test_cuda_graph_matches_eager()
        test_compiled_sampler_at_every_slot_count()
        test_server_starts_without_eager_fallback()
    print("test_engine: ok")
