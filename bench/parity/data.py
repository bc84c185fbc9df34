"""Data-loader parity: the batches of the BOS-aligned best-fit pretraining loader, ours against upstream's.

Both sides read the same small parquet shards (cut from the shared Wikipedia shards: two for training, the last for
validation; upstream finds them as $NANOCHAT_BASE_DIR/base_data_climbmix via upstream_env.link_shards) and tokenize
with the same tokenizer (ours, saved in upstream's format by upstream_env.write_upstream_tokenizer). Upstream's
`tokenizing_distributed_data_loader_with_state_bos_bestfit` reads its rank and world size from RANK / LOCAL_RANK /
WORLD_SIZE, so two ranks of a world of 2 are emulated by setting those variables around each run. Compared, batch by
batch: inputs and targets (in full for the first batches, as SHA-256 digests for long runs that cross an epoch), the
position each side reports after each batch (upstream's state: shard, row group, epoch), and our exact resume from a
saved state against upstream's uninterrupted run.

    python bench/parity/run.py --upstream DIR --only data [--quick] [--write-fixtures]
"""
import hashlib
import os
from pathlib import Path

from common import compact, read_json, row, write_json

WIKI = Path("pretrain") / "wikipedia_en"
TOKENIZER = {"source": str(WIKI / "shard_00000.parquet"), "max_chars": 500_000, "doc_cap": 10_000, "vocab_size": 2048}
SHARDS = {"source": str(WIKI / "shard_00001.parquet"), "doc_cap": 2500, "row_group_size": 100,
          "documents": [[0, 430], [430, 700], [700, 950]]}  # [first, last) document of each shard; the last is validation
# name: split, B, T, world size, buffer size, tokenizer batch, batches, batches kept in full
CASES = {
    "train B4 T64": ("train", 4, 64, 1, 1000, 128, 6, 2),  # upstream's buffer and batch sizes: the buffer wraps the epoch
    "train B2 T256 buf100": ("train", 2, 256, 1, 100, 32, 8, 2),
    "train B4 T64 buf100 world2": ("train", 4, 64, 2, 100, 32, 6, 2),
    "train B4 T64 buf50 long": ("train", 4, 64, 1, 50, 16, 200, 0),  # 800 rows: more documents than the split holds
    "train B4 T64 buf50 long world2": ("train", 4, 64, 2, 50, 16, 120, 0),
    "val B4 T64": ("val", 4, 64, 1, 1000, 128, 3, 2),
    "val B4 T64 buf100 world2": ("val", 4, 64, 2, 100, 32, 3, 1),
}
QUICK_CASES = ("train B4 T64", "train B4 T64 buf100 world2", "train B4 T64 buf50 long", "val B4 T64")
RESUME = ("train B4 T64 buf50 long", 50, 10)  # case, batches before the save, batches after
FIXTURE_CASES = ("train B2 T256 buf100", "train B4 T64 buf100 world2", "val B4 T64")


def digest(values: list[int]) -> str:
    "SHA-256 of a flat list of ids written as space-separated numbers (what a fixture keeps of a long batch)."
    return hashlib.sha256(" ".join(map(str, values)).encode()).hexdigest()


def flat(rows: list[list[int]]) -> list[int]:
    return [t for r in rows for t in r]


def build_shards(data: Path, out: Path) -> list[Path]:
    "Our environment: the small shards of SHARDS, cut from the shared Wikipedia shard (documents cropped)."
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanochat.dataset import iter_documents
    last = SHARDS["documents"][-1][1]
    docs = [d[:SHARDS["doc_cap"]] for _, d in zip(range(last), iter_documents([data / SHARDS["source"]]))]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (a, b) in enumerate(SHARDS["documents"]):
        paths.append(out / f"shard_{i:05d}.parquet")
        pq.write_table(pa.table({"text": docs[a:b]}), paths[-1], row_group_size=SHARDS["row_group_size"])
    return paths


def prepare(work: Path, opts: dict) -> dict:
    import upstream_env

    from nanochat.common import shared_data_dir
    from nanochat.dataset import iter_documents
    from nanochat.tokenizer import Tokenizer, save_tokenizer
    data = shared_data_dir()
    if data is None or not (data / WIKI).is_dir(): raise SystemExit(f"data parity needs the shared data ({WIKI})")
    texts = list(iter_documents([data / TOKENIZER["source"]], max_chars=TOKENIZER["max_chars"], doc_cap=TOKENIZER["doc_cap"]))
    save_tokenizer(Tokenizer.train(texts, TOKENIZER["vocab_size"]), work / "ours_tokenizer")
    base = upstream_env.upstream_base(work)
    upstream_env.write_upstream_tokenizer(work / "ours_tokenizer", base)
    shards = build_shards(data, work / "shards")
    upstream_env.link_shards(shards, base)
    cases = {k: v for k, v in CASES.items() if not opts.get("quick") or k in QUICK_CASES}
    write_json(work / "cases.json", cases)
    return {"shards": [str(s) for s in shards], "cases": list(cases)}


def _record(batches: list, positions: list | None, keep: int) -> dict:
    "Each batch's digests, the first `keep` batches in full, and the position after each batch."
    return {"inputs": [digest(flat(x)) for x, _ in batches], "targets": [digest(flat(y)) for _, y in batches],
            "full": [{"inputs": x, "targets": y} for x, y in batches[:keep]], "positions": positions}


def upstream(work: Path, opts: dict) -> dict:
    from nanochat.dataloader import tokenizing_distributed_data_loader_with_state_bos_bestfit
    from nanochat.tokenizer import get_tokenizer
    tok = get_tokenizer()
    out = {}
    for name, (split, B, T, world, buffer, tok_batch, n, keep) in read_json(work / "cases.json").items():
        for rank in range(world):
            saved = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
            if world > 1: os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
            try:
                loader = tokenizing_distributed_data_loader_with_state_bos_bestfit(
                    tok, B, T, split, tokenizer_threads=4, tokenizer_batch_size=tok_batch, device="cpu", buffer_size=buffer)
                batches, positions = [], []
                for _ in range(n):
                    x, y, state = next(loader)  # the loader reuses its tensors: copy them out
                    batches.append((x.tolist(), y.tolist()))
                    positions.append(dict(state))
            finally:
                for k, v in saved.items():
                    if v is None: os.environ.pop(k, None)
                    else: os.environ[k] = v
            out[f"{name} rank{rank}"] = _record(batches, positions, keep)
    return out


def ours(work: Path, opts: dict) -> dict:
    from nanochat.dataloader import PretrainLoader, validation_batches
    from nanochat.dataset import list_shards
    from nanochat.tokenizer import load_tokenizer
    tok = load_tokenizer(work / "ours_tokenizer")
    out = {}
    cases = read_json(work / "cases.json")
    for name, (split, B, T, world, buffer, tok_batch, n, keep) in cases.items():
        shards = list_shards(work / "shards", split)
        for rank in range(world):
            if split == "val":  # what evaluation calls: a fresh loader on the validation shard
                batches = [(x.tolist(), y.tolist()) for x, y in validation_batches(
                    tok, shards, B, T, rank, world, "cpu", max_batches=n, buffer_docs=buffer, tokenize_batch=tok_batch)]
                positions = None
            else:
                loader = PretrainLoader(tok, shards, B, T, rank, world, "cpu", buffer_docs=buffer, tokenize_batch=tok_batch, threads=4)
                batches, positions = [], []
                for _ in range(n):
                    x, y = loader.next_batch()
                    batches.append((x.tolist(), y.tolist()))
                    positions.append(loader.position())
            out[f"{name} rank{rank}"] = _record(batches, positions, keep)
    name, before, after = RESUME
    if name in cases:  # save after `before` batches, restore into a new loader, continue
        split, B, T, world, buffer, tok_batch, n, keep = cases[name]
        loader = PretrainLoader(tok, list_shards(work / "shards", split), B, T, 0, 1, "cpu", buffer_docs=buffer, tokenize_batch=tok_batch)
        for _ in range(before): loader.next_batch()
        state = loader.state_dict()
        resumed = PretrainLoader(tok, list_shards(work / "shards", split), B, T, 0, 1, "cpu", buffer_docs=buffer, tokenize_batch=tok_batch)
        resumed.load_state_dict(state)
        out["resume"] = {"case": f"{name} rank0", "from": before,
                         "inputs": [digest(flat(resumed.next_batch()[0].tolist())) for _ in range(after)]}
    return out


def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    C = "data"
    rows = []
    for key, u in up.items():
        if key.startswith("_"): continue  # the runner's timing
        o = ours[key]
        n = len(u["inputs"])
        bad = [i for i in range(n) if (o["inputs"][i], o["targets"][i]) != (u["inputs"][i], u["targets"][i])]
        full_bad = sum(a != b for a, b in zip(o["full"], u["full"]))
        what = f"{key}: batches (inputs, targets) differing of {n}" + (f", {len(u['full'])} in full" if u["full"] else " (digests)")
        rows.append(row(C, what, (f"{len(bad)}, first at batch {bad[0]}" if bad else 0) if not full_bad else f"{full_bad} full batches differ",
                        not bad and not full_bad))
        if o["positions"] is not None:
            pos_bad = [i for i, (a, b) in enumerate(zip(o["positions"], u["positions"])) if a != b]
            rows.append(row(C, f"{key}: position (shard, row group, epoch) after each batch, of {n}",
                            f"{len(pos_bad)}, first at batch {pos_bad[0]}: ours {o['positions'][pos_bad[0]]}, upstream {u['positions'][pos_bad[0]]}"
                            if pos_bad else 0, not pos_bad))
            epochs = max(p["epoch"] for p in u["positions"])
            if epochs > 1 and not pos_bad: rows[-1]["difference"] = f"0 (crosses into epoch {epochs})"
    if "resume" in ours:
        r = ours["resume"]
        expect = up[r["case"]]["inputs"][r["from"]:r["from"] + len(r["inputs"])]
        bad = sum(a != b for a, b in zip(r["inputs"], expect))
        rows.append(row(C, f"our exact resume after {r['from']} batches vs upstream's uninterrupted run: batches differing of {len(expect)}",
                        bad, bad == 0))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    "The recipe for the shards and tokenizer (rebuilt in CI from the shared data) and upstream's first batches."
    cases = {}
    for name in FIXTURE_CASES:
        split, B, T, world, buffer, tok_batch, n, keep = CASES[name]
        for rank in range(world):
            u = up[f"{name} rank{rank}"]
            cases[f"{name} rank{rank}"] = {
                "split": split, "batch_size": B, "seq_len": T, "rank": rank, "world_size": world, "buffer_docs": buffer,
                "tokenize_batch": tok_batch, "inputs": [compact(r) for r in u["full"][0]["inputs"]],
                "targets": [compact(r) for r in u["full"][0]["targets"]],
                "positions": u["positions"][:1], "digests_inputs": u["inputs"]}
    return {"tokenizer": TOKENIZER, "shards": SHARDS, "digest": "sha256 of the batch's ids, row after row, as space-separated numbers",
            "cases": cases}
