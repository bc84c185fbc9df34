"""Tokenizer benchmark: training time and encode throughput of the Python reference, rustbpe and HF `tokenizers`.

Same text (real English: the local Wikipedia shards), same vocabulary size, same split pattern for all three.
The Python reference is timed on a smaller slice (it recounts every pair at every merge); its row says so.

    python bench/tokenizer.py                      # ~30 MB at vocab 32768 (the speedrun's vocabulary)
    python bench/tokenizer.py --mb 2 --vocab 4096  # a quick run

Prints a table and one JSON line, and saves that JSON as bench/results/tokenizer-DATE.json.
"""
import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from record import git_commit, save_result

from nanochat.bpe import encode as python_encode
from nanochat.bpe import train_bpe
from nanochat.dataset import iter_documents, list_shards
from nanochat.scripts.tok_eval import train_hf_bpe
from nanochat.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def load_text(megabytes: float) -> list[str]:
    "Documents from the training shards totalling about `megabytes` of UTF-8."
    return list(iter_documents(list_shards(split="train"), max_chars=int(megabytes * 1e6)))


def train_rust(texts, vocab):
    import rustbpe
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab)
    return trainer


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=30, help="megabytes of text for rustbpe and HF tokenizers")
    p.add_argument("--vocab", type=int, default=32768, help="vocabulary size (256 bytes + merges)")
    p.add_argument("--python-mb", type=float, default=1, help="megabytes for the Python reference")
    p.add_argument("--python-vocab", type=int, default=512, help="vocabulary size for the Python reference")
    p.add_argument("--encode-mb", type=float, default=5, help="megabytes of held-out text to time encoding on")
    p.add_argument("--no-save", action="store_true", help="print only; do not write bench/results/")
    args = p.parse_args()
    if args.vocab < 512 or args.mb <= 0: p.error("--vocab must be >= 512 and --mb positive")

    texts = load_text(args.mb)
    corpus_bytes = sum(len(t.encode()) for t in texts)
    heldout = list(iter_documents(list_shards(split="val"), max_chars=int(args.encode_mb * 1e6)))
    heldout_bytes = sum(len(t.encode()) for t in heldout)
    records = []

    rust, t_rust = timed(train_rust, texts, args.vocab)
    hf, t_hf = timed(train_hf_bpe, texts, args.vocab)  # same split pattern, all 256 bytes, same size
    records.append({"kind": "tokenizer_train", "impl": "rustbpe", "seconds": round(t_rust, 2), "vocab": args.vocab, "corpus_bytes": corpus_bytes})
    records.append({"kind": "tokenizer_train", "impl": "hf_tokenizers", "seconds": round(t_hf, 2), "vocab": args.vocab, "corpus_bytes": corpus_bytes})
    py_texts = load_text(args.python_mb)
    py_merges, t_py = timed(train_bpe, py_texts, args.python_vocab)
    records.append({"kind": "tokenizer_train", "impl": "python", "seconds": round(t_py, 2), "vocab": args.python_vocab,
                    "corpus_bytes": sum(len(t.encode()) for t in py_texts)})
    # the same algorithm on the same slice: rustbpe must give the reference's merges
    same = train_rust(py_texts, args.python_vocab).get_merges() == py_merges

    ours = Tokenizer({bytes(b): r for b, r in rust.get_mergeable_ranks()})
    _, t_enc = timed(ours.encode, heldout)
    _, t_hf_enc = timed(hf.encode_batch, heldout)
    sample = heldout[: max(1, len(heldout) // 50)]
    sample_bytes = sum(len(t.encode()) for t in sample)
    _, t_py_enc = timed(lambda: [python_encode(t, py_merges) for t in sample])
    for impl, secs, nbytes in [("tiktoken+rustbpe", t_enc, heldout_bytes), ("hf_tokenizers", t_hf_enc, heldout_bytes), ("python", t_py_enc, sample_bytes)]:
        records.append({"kind": "tokenizer_encode", "impl": impl, "mb_per_s": round(nbytes / secs / 1e6, 2), "corpus_bytes": nbytes})
    bpt_ours = heldout_bytes / sum(len(x) for x in ours.encode(heldout))
    bpt_hf = heldout_bytes / sum(len(e.ids) for e in hf.encode_batch(heldout))
    records.append({"kind": "tokenizer_compression", "impl": "rustbpe", "bytes_per_token": round(bpt_ours, 3), "vocab": args.vocab})
    records.append({"kind": "tokenizer_compression", "impl": "hf_tokenizers", "bytes_per_token": round(bpt_hf, 3), "vocab": args.vocab})

    print(f"\ntraining on {corpus_bytes / 1e6:.1f} MB of Wikipedia, vocab {args.vocab}, {os.cpu_count()} cores")
    print(f"{'impl':<18}{'train s':>10}{'encode MB/s':>14}{'bytes/token':>13}")
    print(f"{'rustbpe':<18}{t_rust:>10.2f}{heldout_bytes / t_enc / 1e6:>14.2f}{bpt_ours:>13.3f}")
    print(f"{'hf_tokenizers':<18}{t_hf:>10.2f}{heldout_bytes / t_hf_enc / 1e6:>14.2f}{bpt_hf:>13.3f}")
    print(f"{'python (ref)':<18}{t_py:>10.2f}{sample_bytes / t_py_enc / 1e6:>14.2f}{'':>13}  <- {args.python_mb} MB, vocab {args.python_vocab}")
    print(f"rustbpe vs HF training time: {t_hf / t_rust:.2f}x ({'faster' if t_rust < t_hf else 'slower'}); "
          f"rustbpe merges identical to the Python reference: {same}")

    result = {"name": "tokenizer", "date": date.today().isoformat(), "gpu": "cpu", "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "commit": git_commit(), "rust_vs_hf_train_speedup": round(t_hf / t_rust, 3),
              "rust_equals_python_reference": same, "records": records}
    if args.no_save: print(json.dumps(result))
    else: print(f"saved {save_result(result).relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
