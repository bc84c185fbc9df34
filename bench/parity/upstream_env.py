"""Making upstream nanochat run offline, on our inputs: what its code expects to find under NANOCHAT_BASE_DIR.

Upstream reads everything from its base folder (`$NANOCHAT_BASE_DIR`, default ~/.cache/nanochat):
- `tokenizer/tokenizer.pkl`: a pickled `tiktoken.Encoding` (ours keeps `tokenizer.tiktoken` + `pattern.txt`, the same
  ranks and pattern; both put the special tokens right after the learned ones), and `tokenizer/token_bytes.pt`, the
  same int32 tensor of bytes per token that ours writes;
- `base_data_climbmix/shard_NNNNN.parquet`: pretraining shards with a `text` column, the last one for validation,
  as ours (links to the same files);
- `eval_bundle/`: the CORE bundle (core.yaml, eval_meta_data.csv, eval_data/): only its evaluate_task is called here,
  with the rows and task settings passed in, so the bundle itself is not needed.
Its chat tasks load their rows with Hugging Face `datasets`; `chat_eval.py` gives them the local files instead.
- `task_data/<owner>--<name>/<subset>/<split>/`: at the pinned commit the chat tasks do not import `datasets`; their
  `load_hub_dataset` (tasks/common.py) reads the hub's parquet export from this cache (`00000.parquet`, ... and a
  `manifest.json` listing them, written last) and downloads only when the manifest is missing. `chat_eval.py`'s
  prepare() writes the cache from the local data files, every row in the hub's layout and the files' order, so
  upstream's own shuffle(seed=42) and row parsing run on exactly our rows; and `words_alpha.txt`, the SpellingBee word
  list that `download_file_with_lock` looks for before downloading (our offline list, the same file on both sides).
These functions run in our environment (they read our tokenizer) and write into the upstream side's base folder.
"""
import os
import pickle
import shutil
from pathlib import Path


def upstream_base(work: Path) -> Path:
    "The base folder the runner gives upstream's side of a component (see run.py)."
    return Path(work) / "upstream_base"


def write_upstream_tokenizer(our_tokenizer_dir: Path, base: Path) -> Path:
    "Our saved tokenizer as upstream loads it: base/tokenizer/tokenizer.pkl and token_bytes.pt."
    from nanochat.tokenizer import load_tokenizer
    tok = load_tokenizer(our_tokenizer_dir)
    folder = Path(base) / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "tokenizer.pkl", "wb") as f: pickle.dump(tok.enc, f)
    shutil.copyfile(Path(our_tokenizer_dir) / "token_bytes.pt", folder / "token_bytes.pt")
    return folder


def link_shards(shards: list[Path], base: Path) -> Path:
    "Upstream's pretraining folder, base/base_data_climbmix, holding links to `shards` (in order; the last is validation)."
    folder = Path(base) / "base_data_climbmix"
    folder.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        link = folder / f"shard_{i:05d}.parquet"
        if link.is_symlink() or link.exists(): link.unlink()
        os.symlink(Path(shard).resolve(), link)
    return folder
