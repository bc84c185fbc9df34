"""The tokenizer's contracts: the Rust trainer equals the Python reference; encode/decode is lossless for any
Unicode; plain text never turns into a special token."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanochat.bpe import train_bpe
from nanochat.dataset import iter_documents, list_shards
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer

rustbpe = pytest.importorskip("rustbpe", reason="build it with: bash rustbpe/build.sh")


@pytest.fixture(scope="module")
def corpus():
    return list(iter_documents(list_shards(split="val"), max_chars=400_000))


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return Tokenizer.train(corpus, 2048)


def test_rust_and_python_learn_identical_merges(corpus):
    reference = train_bpe(corpus, 600)
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(corpus), 600, buffer_size=7)  # a small buffer: many parallel batches
    assert trainer.get_merges() == reference
    assert trainer.vocab_size == 600 and len(trainer.get_mergeable_ranks()) == 600


def test_a_custom_pattern_is_used(corpus):
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(corpus[:50]), 300, pattern=r"\S+|\s+")
    assert trainer.get_pattern() == r"\S+|\s+"
    assert trainer.get_merges() == train_bpe(corpus[:50], 300, pattern=r"\S+|\s+")


def test_bad_training_input_is_refused():
    trainer = rustbpe.Tokenizer()
    with pytest.raises(ValueError, match="at least 256"): trainer.train_from_iterator(iter(["x"]), 100)
    with pytest.raises(TypeError, match="expects str items, got int"): trainer.train_from_iterator(iter([1]), 300)
    with pytest.raises(ValueError, match="invalid split pattern"): trainer.train_from_iterator(iter(["x"]), 300, pattern="(")


def test_pathological_text_is_an_error_not_a_hang():
    "A 2 MB run of one letter overflows the regex engine's backtracking stack: a ValueError in training and encoding."
    trainer = rustbpe.Tokenizer()
    with pytest.raises(ValueError, match="split pattern failed on a text of 2000000 bytes"):
        trainer.train_from_iterator(iter(["fine", "a" * 2_000_000]), 300)
    trainer.train_from_iterator(iter(["hello world"] * 5), 260)
    with pytest.raises(ValueError, match="split pattern failed"): trainer.encode("a" * 2_000_000)
    assert trainer.encode("hello") == trainer.encode("hello")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_decode_encode_round_trips_any_unicode(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    specials = {tokenizer.encode_special(s) for s in SPECIAL_TOKENS}
    assert not specials & set(ids)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.text(max_size=20), special=st.sampled_from(SPECIAL_TOKENS), suffix=st.text(max_size=20))
def test_special_token_text_is_just_text(tokenizer, prefix, special, suffix):
    text = prefix + special + suffix
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_special(special) not in ids
