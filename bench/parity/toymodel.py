"""A language model that both sides of a parity check can run: an interpolated n-gram model over token ids.

Pure torch and the standard library, so our side and upstream's side import the same file (it imports neither
`nanochat` package). It is fitted on token sequences (its counts are its whole state, so it is deterministic and can
be saved, loaded and rebuilt), and it behaves like a model where the evaluation code cares: ids (B, T) -> logits
(B, T, V), causal (the logits at t depend on ids[:, :t+1] only, so right padding changes nothing before it), and a
`max_seq_len` that evaluation code may crop to.

The estimate is Witten-Bell interpolation: for a context h seen N(h) times with D(h) different next tokens,

    p(w | h) = (count(h, w) + D(h) * p(w | h minus its oldest token)) / (N(h) + D(h)),

down to an add-one unigram. Unseen contexts fall through to the shorter one. A context is looked up by a hash of its
tokens (a polynomial modulo a prime near 2^50, exact in int64), so long contexts cost no more than short ones; a
collision would merge two contexts, the same way on both sides. Fitted on the solved texts of half the
CORE examples (see `core_training_texts`), it reproduces many of those answers token for token and misses most of the
others, which is what a check of per-example verdicts needs: a mix of right and wrong on every kind of task.
"""
import csv
import json
import random
from pathlib import Path

import torch

MODULUS = 1125899906842597  # the largest prime below 2^50: a token id (< 2^13) times a key stays inside int64

class NGramModel:
    "An interpolated (Witten-Bell) n-gram model over token ids, called like a GPT: ids (B, T) -> logits (B, T, V)."

    def __init__(self, state: dict, max_seq_len: int | None = None):
        self.state, self.max_seq_len = state, max_seq_len
        self.vocab_size, self.order = int(state["vocab_size"]), int(state["order"])

    @classmethod
    def fit(cls, sequences: list[list[int]], vocab_size: int, order: int = 5, max_seq_len: int | None = None) -> "NGramModel":
        "Count the n-grams of `sequences` (each starting with BOS; counted as one stream) up to `order` tokens."
        if vocab_size > 2 ** 13: raise ValueError(f"vocab_size {vocab_size} is past 8192, where the int64 context hash overflows")
        stream = torch.tensor([t for seq in sequences for t in seq], dtype=torch.long)
        if stream.numel() < order or int(stream.max()) >= vocab_size: raise ValueError("need at least `order` tokens, all below vocab_size")
        state = {"vocab_size": vocab_size, "order": order,
                 "unigram": torch.bincount(stream[1:], minlength=vocab_size).double()}
        key = torch.zeros(stream.numel(), dtype=torch.long)
        for c in range(1, order):  # contexts of c tokens: key(t) = sum_j stream[t-1-j] * V^j mod MODULUS, newest token first
            key = (key + torch.cat([torch.zeros(c, dtype=torch.long), stream[:-c]]) * pow(vocab_size, c - 1, MODULUS)) % MODULUS
            ctx, nxt = key[c:], stream[c:]
            by_next = torch.argsort(nxt, stable=True)
            perm = by_next[torch.argsort(ctx[by_next], stable=True)]  # sorted by (context, next token)
            ctx, nxt = ctx[perm], nxt[perm]
            new_pair = torch.ones(ctx.numel(), dtype=torch.bool)
            new_pair[1:] = (ctx[1:] != ctx[:-1]) | (nxt[1:] != nxt[:-1])
            pair_start = new_pair.nonzero()[:, 0]
            pair_count = torch.diff(pair_start, append=torch.tensor([ctx.numel()]))
            pair_ctx, pair_next = ctx[pair_start], nxt[pair_start]
            contexts, distinct = torch.unique_consecutive(pair_ctx, return_counts=True)
            offsets = torch.cumsum(distinct, 0) - distinct
            totals = torch.zeros(contexts.numel(), dtype=torch.long).index_add_(
                0, torch.repeat_interleave(torch.arange(contexts.numel()), distinct), pair_count)
            state[f"ctx{c}"] = {"keys": contexts, "distinct": distinct, "total": totals, "offset": offsets,
                                "next": pair_next, "count": pair_count}
        return cls(state, max_seq_len)

    def save(self, path) -> None: torch.save({"state": self.state, "max_seq_len": self.max_seq_len}, path)

    @classmethod
    def load(cls, path) -> "NGramModel":
        saved = torch.load(path, weights_only=True)
        return cls(saved["state"], saved["max_seq_len"])

    def digest(self) -> dict:
        "A few numbers that identify the fitted model, its contexts and counts (a fixture: the CI rebuild must give the same)."
        s = self.state
        return {"order": self.order, "vocab_size": self.vocab_size, "tokens": int(s["unigram"].sum()),
                **{f"contexts{c}": int(s[f"ctx{c}"]["keys"].numel()) for c in range(1, self.order)},
                "key_checksum": int(sum(int(s[f"ctx{c}"]["keys"].remainder(1_000_003).sum()) for c in range(1, self.order))),
                # the counts too, weighted by place: a change in what the model learned, not only in which contexts
                "count_checksum": int(sum(int((s[f"ctx{c}"]["count"] * (torch.arange(s[f"ctx{c}"]["count"].numel()) % 1009 + 1)).sum())
                                          for c in range(1, self.order))) + int(s["unigram"].long().sum())}

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.cpu().long()
        B, T = ids.shape
        V, s = self.vocab_size, self.state
        unigram = (s["unigram"] + 1) / (s["unigram"].sum() + V)  # add-one: every token has some probability
        alpha = torch.ones(B, T, dtype=torch.float64)  # weight of the unigram in the mixture
        found_at, weights = [], []  # per context length: where it was seen (index into its table) and its weight
        key = torch.zeros(B, T, dtype=torch.long)
        for c in range(1, self.order):
            shifted = torch.zeros(B, T, dtype=torch.long)
            if c - 1 < T: shifted[:, c - 1:] = ids[:, :T - c + 1]  # shifted[b, t] = ids[b, t - (c - 1)]
            key = (key + shifted * pow(V, c - 1, MODULUS)) % MODULUS
            table = s[f"ctx{c}"]
            where = torch.searchsorted(table["keys"], key).clamp(max=table["keys"].numel() - 1)
            found = (table["keys"][where] == key)
            found[:, :c - 1] = False  # not enough history for a context this long
            n, d = table["total"][where].double(), table["distinct"][where].double()
            keep = torch.where(found, d / (n + d), torch.ones_like(n))  # the share left for the shorter context
            alpha = alpha * keep
            weights = [w * keep for w in weights] + [torch.where(found, 1 / (n + d), torch.zeros_like(n))]
            found_at.append((found, where))
        probs = alpha.float()[..., None] * unigram.float()  # dense part in float32; the sparse counts are added below
        for c, ((found, where), weight) in enumerate(zip(found_at, weights), start=1):
            table = s[f"ctx{c}"]
            b, t = found.nonzero(as_tuple=True)
            rows = where[b, t]
            lengths = table["distinct"][rows]
            rep = torch.repeat_interleave(torch.arange(rows.numel()), lengths)
            within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            pair = table["offset"][rows][rep] + within
            values = (weight[b, t][rep] * table["count"][pair].double()).float()
            # each (b, t, token) appears once per context length, so this accumulation has one term per element
            probs.index_put_((b[rep], t[rep], table["next"][pair]), values, accumulate=True)
        return probs.log().contiguous()


# --- what the CORE check fits it on ------------------------------------------------------------------------------
def core_task_list(core_dir) -> list[dict]:
    "The CORE task list of `core_dir/core_tasks.csv` (label, file, type, shots, delimiter), read with the standard library."
    with open(Path(core_dir) / "core_tasks.csv", newline="") as f: rows = list(csv.DictReader(f))
    return [{"label": r["label"], "file": r["file"], "task_type": r["icl_task_type"], "shots": int(r["num_fewshot"]),
             "delimiter": r["continuation_delimiter"].encode().decode("unicode_escape") or " ",
             "baseline": float(r["random_baseline_pct"]) / 100} for r in rows
            if (Path(core_dir) / r["file"]).exists()]


def shuffled_items(core_dir, task: dict, n: int | None = None) -> list[dict]:
    "A task's rows in upstream base_eval's order (random.Random(1337).shuffle of the file), the first `n` of them."
    with open(Path(core_dir) / task["file"], encoding="utf-8") as f: items = [json.loads(line.strip()) for line in f]
    random.Random(1337).shuffle(items)
    return items[:n] if n else items


def solved_text(task: dict, item: dict) -> str:
    "An example written out with its right answer, as a few-shot example shows it."
    d = task["delimiter"]
    if task["task_type"] == "multiple_choice": return f"{item['query']}{d}{item['choices'][item['gold']]}"
    if task["task_type"] == "schema": return f"{item['context_options'][item['gold']]}{d}{item['continuation']}"
    return f"{item['context'].strip()}{d}{item['continuation']}"


def core_training_texts(core_dir, n_items: int, seed: int = 0, share: float = 0.5) -> list[str]:
    "The solved texts of a seeded `share` of the first `n_items` (shuffled) examples of every available CORE task."
    rng, texts = random.Random(seed), []
    for task in core_task_list(core_dir):
        texts += [solved_text(task, item) for item in shuffled_items(core_dir, task, n_items) if rng.random() < share]
    return texts


def wiki_text(data_dir, chars: int) -> list[str]:
    "The first `chars` characters (whole articles) of the shared Wikipedia shards: a fixed text to train a tokenizer on."
    import pyarrow.parquet as pq
    texts, total = [], 0
    for batch in pq.ParquetFile(Path(data_dir) / "pretrain" / "wikipedia_en" / "shard_00000.parquet").iter_batches(
            batch_size=256, columns=["text"]):
        for text in batch.column("text").to_pylist():
            texts.append(text)
            total += len(text)
            if total >= chars: return texts
    return texts


def fit_core_model(encode, core_dir, n_items: int, vocab_size: int, seed: int = 0, order: int = 8,
                   max_seq_len: int | None = 256) -> NGramModel:
    "The toy model of the CORE check: `encode(list_of_texts) -> list of id lists` (BOS first) applied to the training texts."
    return NGramModel.fit(encode(core_training_texts(core_dir, n_items, seed)), vocab_size, order, max_seq_len)
