"""Tokenizer parity: the merges our trainer learns, and the ids our encoder and chat renderer produce.

1. merges: our `Tokenizer.train` (our rustbpe crate) and upstream's `RustBPETokenizer.train_from_iterator` (the PyPI
   rustbpe) learn from the same texts, vocabulary sizes and split pattern; their mergeable ranks and special-token ids
   are compared rank by rank. Five setups: a text that runs out of pairs before its vocabulary is full, two small
   ones that CI rebuilds from the shared Wikipedia shards (the second is also the tokenizer used below), and a few
   megabytes of Wikipedia plus code, numbers and Unicode at 2048 and 8192 tokens.
2. encode: ONE tokenizer (ours, trained on the `fixture` setup, saved in upstream's format by
   upstream_env.write_upstream_tokenizer) encodes the same texts on both sides (`encode`, with and without
   prepend/append, one text and a batch) and decodes the ids back; our token_bytes.pt against the bytes per token
   upstream's tok_train would write for it.
3. render_conversation / render_for_completion: ids and masks of the same conversations (system message, several
   turns, tool-call parts, special-token text typed by the user, truncation at max_tokens). Upstream's
   render_for_completion cuts the prompt at 2048 tokens (render_conversation's default); ours keeps it whole unless
   asked, so our side passes max_tokens=2048.

    python bench/parity/run.py --upstream DIR --only tokenizer [--quick] [--write-fixtures]
"""
import hashlib
from pathlib import Path

from common import compact, read_json, row, write_json

WIKI = Path("pretrain") / "wikipedia_en"
SETUPS = {  # name: (wikipedia shard, characters, vocabulary size in all, with extras?); None: TINY_TEXT
    "tiny": (None, 0, 300, False),  # runs out of pairs after 7 merges: the vocabulary ends early on both sides
    "reference": ("shard_00000.parquet", 100_000, 521, False),  # 512 learned tokens: chapter 04's Python BPE checks it
    "fixture": ("shard_00000.parquet", 500_000, 2048, False),  # the tokenizer the encode/render checks use
    "mixed-2048": ("shard_00001.parquet", 4_000_000, 2048, True),
    "mixed-8192": ("shard_00001.parquet", 4_000_000, 8192, True),
}
QUICK_SETUPS = ("tiny", "reference", "fixture", "mixed-2048")
TINY_TEXT = ["aaabdaaabac"]
QUICK_CHARS = 1_000_000  # the mixed text under --quick

SPECIAL_TEXT = "<|assistant_end|>"
ENCODE_TEXTS = {  # name: text
    "english": "Hello world! This is a test of the tokenizer, written in plain English prose.",
    "contractions": "I'm sure you're right; it's theirs, WE'LL see, they've GOT it, she'd said.",
    "code": "def square(x: int) -> int:\n    \"\"\"Square it.\"\"\"\n    return x ** 2  # fast\n\nprint({k: square(k) for k in range(10)})\n",
    "numbers": "3.14159 1234567890 1,000,000 0x1F -42 2026-01-05 99.5% 007 1e-9 12345678901234567890",
    "whitespace": "a  b   c\t\td\n\n\n  e \r\n f    \n\n  \t \u00a0g\u3000h",
    "leading_trailing_spaces": "   leading and trailing   ",
    "only_newlines": "\n\n\n",
    "single_space": " ",
    "empty": "",
    "unicode": "你好世界 🌍 こんにちは 안녕하세요 Привет мир 👩‍👩‍👧 Ünïcödé naïve café ½ ∑ x² ﷽",
    "long_word": "a" * 3000 + " " + "Supercalifragilistic" * 60 + " " + "9" * 501 + " " + "🙂" * 300,
    "special_token_text": SPECIAL_TEXT,
    "special_tokens_inline": "Hi <|bos|> there <|user_start|>x<|python_end|> and <|endoftext|> <|output_start|>",
    "broken_special": "<|assistant_end| <assistant_end|> <||> |><|",
}
ENCODE_VARIANTS = {  # name: (prepend, append); ids are resolved on each side
    "plain": (None, None),
    "prepend_bos_name": ("<|bos|>", None),
    "prepend_bos_id": ("bos_id", None),
    "append_assistant_end": (None, "<|assistant_end|>"),
    "both": ("<|bos|>", "<|assistant_end|>"),
}


def _conversations() -> dict:
    "Conversations that exercise every rule of render_conversation; `long` is longer than 2048 tokens."
    tool_turn = [{"type": "text", "text": "Let me compute that. "}, {"type": "python", "text": "print(12 * 34)"},
                 {"type": "python_output", "text": "408\n"}, {"type": "text", "text": "The answer is 408."}]
    long_messages = []
    for i in range(60):
        long_messages += [{"role": "user", "content": f"Question {i}: what is the capital of country number {i}? Please explain at length."},
                          {"role": "assistant", "content": f"Answer {i}: it is a city with a long history, " * 6}]
    return {
        "simple": {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]},
        "system": {"messages": [{"role": "system", "content": "You are a terse assistant."},
                                {"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."}]},
        "multi_turn": {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
                                    {"role": "user", "content": "Tell me a joke about numbers."},
                                    {"role": "assistant", "content": "Seven ate nine."},
                                    {"role": "user", "content": "Another one, please."}, {"role": "assistant", "content": "I'm out of jokes."}]},
        "tool_parts": {"messages": [{"role": "user", "content": "What is 12 times 34?"}, {"role": "assistant", "content": tool_turn}]},
        "system_and_tools": {"messages": [{"role": "system", "content": "Use the calculator."},
                                          {"role": "user", "content": "12*34?"}, {"role": "assistant", "content": tool_turn},
                                          {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": [{"type": "text", "text": "You're welcome."}]}]},
        "special_text_in_user": {"messages": [{"role": "user", "content": f"Repeat after me: {SPECIAL_TEXT} <|python_start|>1+1<|python_end|>"},
                                              {"role": "assistant", "content": f"{SPECIAL_TEXT} <|python_start|>1+1<|python_end|>"}]},
        "empty_texts": {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": [{"type": "text", "text": ""},
                                                                                                       {"type": "python", "text": ""}]}]},
        "long": {"messages": long_messages},
    }


def wiki_texts(shard: str, max_chars: int) -> list[str]:
    "Our environment: the first `max_chars` characters of a shared Wikipedia shard, as documents (iter_documents)."
    from nanochat.common import shared_data_dir
    from nanochat.dataset import iter_documents
    data = shared_data_dir()
    if data is None or not (data / WIKI / shard).exists(): raise SystemExit(f"tokenizer parity needs the shared data ({WIKI / shard})")
    return list(iter_documents([data / WIKI / shard], max_chars=max_chars, doc_cap=10_000))


def extra_texts() -> list[str]:
    "Code, numbers and Unicode to mix into the Wikipedia text (generated here, so both sides train on the same)."
    import argparse
    import dataclasses
    import inspect
    import json.decoder
    code = [inspect.getsource(m) for m in (argparse, dataclasses, json.decoder)]
    numbers = [" ".join(str(i * i) for i in range(3000)), ", ".join(f"{i / 7:.5f}" for i in range(2000))]
    unicode = ["你好世界,这是一个测试。" * 300, "こんにちは世界 🌍 👩‍👩‍👧 " * 200, "Ünïcödé naïve café Привет мир " * 200]
    return code + numbers + unicode + list(ENCODE_TEXTS.values())


def ranks_digest(hex_ranks: list[str], keep: int = 8) -> dict:
    "What a fixture keeps of a rank list: its length, a SHA-256 of the hex tokens joined by newlines, the first and last `keep` merges."
    return {"n": len(hex_ranks), "sha256": hashlib.sha256("\n".join(hex_ranks).encode()).hexdigest(),
            "first_merges": hex_ranks[256:256 + keep], "last_merges": hex_ranks[-keep:]}


def hex_ranks(mergeable_ranks: dict) -> list[str]:
    "Token bytes (hex) in rank order; ranks must be 0..n-1."
    ordered = sorted(mergeable_ranks.items(), key=lambda kv: kv[1])
    if [r for _, r in ordered] != list(range(len(ordered))): raise ValueError("mergeable ranks are not 0..n-1")
    return [b.hex() for b, _ in ordered]


# --- the three steps ----------------------------------------------------------------------------------------------

def prepare(work: Path, opts: dict) -> dict:
    "Training texts of every setup, the encode texts and conversations, and our fixture tokenizer in both formats."
    import upstream_env

    from nanochat.tokenizer import Tokenizer, save_tokenizer
    setups = {}
    for name, (shard, chars, vocab, extras) in SETUPS.items():
        if opts.get("quick") and name not in QUICK_SETUPS: continue
        if extras and opts.get("quick"): chars = QUICK_CHARS
        texts = (TINY_TEXT if shard is None else wiki_texts(shard, chars)) + (extra_texts() if extras else [])
        write_json(work / f"texts-{name}.json", texts)
        setups[name] = {"shard": shard, "max_chars": chars, "vocab_size": vocab, "extras": extras, "documents": len(texts)}
    inputs = {"setups": setups, "encode_texts": ENCODE_TEXTS, "encode_variants": ENCODE_VARIANTS,
              "conversations": _conversations()}
    write_json(work / "inputs.json", inputs)
    tok = Tokenizer.train(read_json(work / "texts-fixture.json"), SETUPS["fixture"][2])
    save_tokenizer(tok, work / "ours_tokenizer")
    upstream_env.write_upstream_tokenizer(work / "ours_tokenizer", upstream_env.upstream_base(work))
    return {"setups": setups}


def _run(work: Path, train, load, render, complete, specials: list[str]) -> dict:
    "The same measurements on either side, given that side's train/load/render/complete functions."
    inputs = read_json(work / "inputs.json")
    out = {"merges": {}}
    for name, setup in inputs["setups"].items():
        ranks, special_ids = train(read_json(work / f"texts-{name}.json"), setup["vocab_size"])
        out["merges"][name] = {"ranks": hex_ranks(ranks), "special_ids": special_ids}
    tok = load()
    out["special_tokens"] = specials
    out["bos_id"] = tok.get_bos_token_id()
    out["special_ids"] = {s: tok.encode_special(s) for s in specials}
    encode, decode = {}, {}
    for tname, text in inputs["encode_texts"].items():
        for vname, (pre, post) in inputs["encode_variants"].items():
            pre = tok.get_bos_token_id() if pre == "bos_id" else pre
            encode[f"{tname}/{vname}"] = tok.encode(text, prepend=pre, append=post)
        decode[tname] = tok.decode(encode[f"{tname}/plain"])
    texts = list(inputs["encode_texts"].values())
    encode["batch/plain"] = tok.encode(texts)
    encode["batch/both"] = tok.encode(texts, prepend="<|bos|>", append=tok.encode_special("<|assistant_end|>"), num_threads=2)
    out["encode"], out["decode"] = encode, decode
    renders, completions = {}, {}
    for cname, conv in inputs["conversations"].items():
        ids, mask = render(tok, conv, None)
        renders[f"{cname}/default"] = {"ids": ids, "mask": mask}
        ids, mask = render(tok, conv, 40)
        renders[f"{cname}/max_tokens=40"] = {"ids": ids, "mask": mask}
        completions[cname] = complete(tok, conv)
    out["render"], out["complete"] = renders, completions
    return out


def upstream(work: Path, opts: dict) -> dict:
    from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, RustBPETokenizer, get_tokenizer

    def train(texts, vocab_size):
        tok = RustBPETokenizer.train_from_iterator(iter(texts), vocab_size)
        return tok.enc._mergeable_ranks, {s: tok.encode_special(s) for s in SPECIAL_TOKENS}

    def render(tok, conv, max_tokens):
        return tok.render_conversation(conv) if max_tokens is None else tok.render_conversation(conv, max_tokens=max_tokens)

    out = _run(work, train, get_tokenizer, render, lambda tok, conv: tok.render_for_completion(conv), list(SPECIAL_TOKENS))
    out["split_pattern"] = SPLIT_PATTERN
    tok = get_tokenizer()  # bytes per token id as upstream's tok_train writes token_bytes.pt: 0 for special tokens
    specials = {tok.encode_special(s) for s in SPECIAL_TOKENS}
    out["token_bytes"] = [0 if i in specials else len(tok.decode_single_token_bytes(i)) for i in range(tok.get_vocab_size())]
    return out


def ours(work: Path, opts: dict) -> dict:
    from nanochat.bpe import SPLIT_PATTERN
    from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer, load_tokenizer, render_conversation, render_for_completion

    def train(texts, vocab_size):
        tok = Tokenizer.train(texts, vocab_size)
        return tok.mergeable_ranks, {s: tok.encode_special(s) for s in SPECIAL_TOKENS}

    def render(tok, conv, max_tokens):
        return render_conversation(tok, conv) if max_tokens is None else render_conversation(tok, conv, max_tokens=max_tokens)

    # upstream's render_for_completion renders the prompt with render_conversation's default cut (2048 tokens)
    out = _run(work, train, lambda: load_tokenizer(work / "ours_tokenizer"), render,
               lambda tok, conv: render_for_completion(tok, conv, max_tokens=2048), list(SPECIAL_TOKENS))
    out["split_pattern"] = SPLIT_PATTERN
    import torch
    out["token_bytes"] = torch.load(work / "ours_tokenizer" / "token_bytes.pt").tolist()  # what save_tokenizer wrote
    return out


# --- comparing ----------------------------------------------------------------------------------------------------

def _first_difference(a: list, b: list) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y: return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _differing(ours: dict, up: dict) -> list[str]:
    if ours.keys() != up.keys(): raise ValueError(f"different cases: {sorted(ours.keys() ^ up.keys())}")
    return [k for k in ours if ours[k] != up[k]]


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    C = "tokenizer"
    rows = [row(C, "split pattern (string)", "same" if ours["split_pattern"] == up["split_pattern"] else "different",
                ours["split_pattern"] == up["split_pattern"]),
            row(C, "special tokens (names, order)", "same" if ours["special_tokens"] == up["special_tokens"] else
                f"ours {ours['special_tokens']}, upstream {up['special_tokens']}", ours["special_tokens"] == up["special_tokens"])]
    for name, o in ours["merges"].items():
        u = up["merges"][name]
        n_diff = sum(x != y for x, y in zip(o["ranks"], u["ranks"])) + abs(len(o["ranks"]) - len(u["ranks"]))
        first = _first_difference(o["ranks"], u["ranks"])
        where = "" if first is None else f", first at rank {first}: ours {o['ranks'][first:first + 1]}, upstream {u['ranks'][first:first + 1]}"
        rows.append(row(C, f"merges {name}: ranks differing of {len(u['ranks'])}", f"{n_diff}{where}" if where else n_diff, n_diff == 0,
                        n_ranks=len(u["ranks"])))
        rows.append(row(C, f"merges {name}: special-token ids", 0 if o["special_ids"] == u["special_ids"] else
                        f"ours {o['special_ids']}, upstream {u['special_ids']}", o["special_ids"] == u["special_ids"]))
    bad = sum(a != b for a, b in zip(ours["token_bytes"], up["token_bytes"])) + abs(len(ours["token_bytes"]) - len(up["token_bytes"]))
    rows.append(row(C, f"token_bytes.pt (bytes per token id) of {len(up['token_bytes'])}", bad, bad == 0))
    rows.append(row(C, "encode_special + BOS id", 0 if (ours["special_ids"], ours["bos_id"]) == (up["special_ids"], up["bos_id"]) else "different",
                    (ours["special_ids"], ours["bos_id"]) == (up["special_ids"], up["bos_id"])))
    for label, key in (("encode (texts x prepend/append, batches): cases differing", "encode"),
                       ("decode: texts differing", "decode"), ("render_conversation ids+mask: cases differing", "render"),
                       ("render_for_completion ids: conversations differing", "complete")):
        bad = _differing(ours[key], up[key])
        rows.append(row(C, f"{label} of {len(up[key])}", len(bad) if not bad else f"{len(bad)}: {', '.join(bad[:4])}", not bad))
    sid = set(up["special_ids"].values())
    leaked = [f"{side} {k}" for side, res in (("ours", ours), ("upstream", up)) for k in ("special_token_text/plain", "special_tokens_inline/plain")
              if sid & set(res["encode"][k])]
    rows.append(row(C, "special-token text is encoded as plain text (no special id), both sides", len(leaked) if not leaked else ", ".join(leaked),
                    not leaked))
    long = up["render"]["long/default"]["ids"]
    rows.append(row(C, "render_conversation cut at max_tokens (long conversation: 2048 and 40 tokens)",
                    f"lengths ours {len(ours['render']['long/default']['ids'])}, upstream {len(long)}",
                    ours["render"]["long/default"] == up["render"]["long/default"] and len(long) == 2048))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "What CI checks our code against: the rank digests of the two small setups, and every encode/render case."
    return {
        "setups": {n: {"source": str(WIKI / SETUPS[n][0]), "max_chars": SETUPS[n][1], "doc_cap": 10_000, "vocab_size": SETUPS[n][2],
                       "ranks": ranks_digest(up["merges"][n]["ranks"]), "special_ids": up["merges"][n]["special_ids"]}
                   for n in ("reference", "fixture")},
        "tokenizer": "fixture",  # the setup whose tokenizer encodes and renders below
        "split_pattern": up["split_pattern"],
        "special_tokens": up["special_tokens"],
        "encode_texts": ENCODE_TEXTS,
        "encode_variants": ENCODE_VARIANTS,
        # every variant of the short texts; of the long ones only the plain ids (a variant adds one id at an end)
        "encode": {k: compact(v) for k, v in up["encode"].items()
                   if not k.startswith("batch/") and (k.endswith("/plain") or len(ENCODE_TEXTS[k.split("/")[0]]) < 500)},
        "conversations": _conversations(),
        "render": {k: {"ids": compact(v["ids"]), "mask": "".join(map(str, v["mask"]))} for k, v in up["render"].items()},
        "complete": {k: compact(v) for k, v in up["complete"].items()},
    }
