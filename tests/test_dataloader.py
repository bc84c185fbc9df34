"""The loader's promises across processes: rank coverage under torchrun, exact resume in a new process,
clear errors for bad shards."""
import subprocess
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import PYTHON, ROOT

from nanochat.dataloader import DataError, DocumentStream, PretrainLoader
from nanochat.dataset import iter_documents


@pytest.fixture
def shards(tmp_path):
    for s in range(3):
        texts = [f"doc-{s}-{i} " + "word " * (5 + (i * 37) % 300) for i in range(60)]
        pq.write_table(pa.table({"text": texts}), tmp_path / f"shard_{s:05d}.parquet", row_group_size=8)
    return sorted(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_every_document_once_per_epoch(shards, world_size):
    seen = []
    for rank in range(world_size):
        stream = DocumentStream(shards, rank, world_size)
        while stream.epoch == 0: seen += stream.next_documents(1)
    assert sorted(seen) == sorted(iter_documents(shards))  # each document exactly once: no rank skips or repeats one


WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist
    from pathlib import Path
    from nanochat.common import init_distributed, cleanup_distributed
    from nanochat.dataloader import DocumentStream
    info = init_distributed("cpu")
    stream, mine = DocumentStream(sorted(Path(sys.argv[1]).glob("*.parquet")), info.rank, info.world_size), []
    while stream.epoch == 0: mine += stream.next_documents(1)
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    if info.rank == 0:
        flat = [d for part in gathered for d in part]
        print("DOCS", len(flat), "UNIQUE", len(set(flat)), "OVERLAP", len(set(gathered[0]) & set(gathered[1])))
    cleanup_distributed()
''')


def test_rank_coverage_under_torchrun(shards, tmp_path, run_env):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(shards[0].parent)],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "DOCS 180 UNIQUE 180 OVERLAP 0" in out.stdout


RESUME = textwrap.dedent('''
    import sys, torch
    from pathlib import Path
    from nanochat.dataloader import PretrainLoader
    from nanochat.tokenizer import Tokenizer
    from nanochat.dataset import iter_documents
    mode, folder, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    shards = sorted(folder.glob("*.parquet"))
    tok = Tokenizer.train(iter_documents(shards), 300)
    loader = PretrainLoader(tok, shards, batch_size=2, seq_len=32, buffer_docs=20, tokenize_batch=7)
    if mode == "straight": torch.save([loader.next_batch() for _ in range(10)][5:], out / "straight.pt")
    elif mode == "first":
        for _ in range(5): loader.next_batch()
        torch.save(loader.state_dict(), out / "state.pt")
    else:
        loader.load_state_dict(torch.load(out / "state.pt"))
        torch.save([loader.next_batch() for _ in range(5)], out / "resumed.pt")
''')


def test_resume_in_a_new_process_gives_the_same_batches(shards, tmp_path, run_env):
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    for mode in ("straight", "first", "resumed"):
        out = subprocess.run([PYTHON, str(script), mode, str(shards[0].parent), str(tmp_path)], cwd=ROOT, env=run_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    for (xa, ya), (xb, yb) in zip(straight, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_bad_shards_are_named(shards, tmp_path):
    corrupt = tmp_path / "shard_00007.parquet"
    corrupt.write_bytes(pq.ParquetFile(shards[0]).metadata.to_dict().__repr__().encode()[:50])
    with pytest.raises(DataError, match="shard_00007.parquet is unreadable"): DocumentStream(shards + [corrupt])
    with pytest.raises(DataError, match="shard_00009.parquet is missing"): DocumentStream([tmp_path / "shard_00009.parquet"])
    with pytest.warns(UserWarning, match="shard_00007.parquet"): DocumentStream(shards + [corrupt], skip_corrupt=True)
    with pytest.raises(ValueError, match="rank 2 is not in 0..1"): DocumentStream(shards, rank=2, world_size=2)


def test_batches_start_with_bos_on_every_row(shards):
    from nanochat.tokenizer import Tokenizer
    tok = Tokenizer.train(iter_documents(shards), 300)
    loader = PretrainLoader(tok, shards, batch_size=4, seq_len=64, buffer_docs=30)
    for _ in range(5):
        x, y = loader.next_batch()
        assert (x[:, 0] == tok.get_bos_token_id()).all() and torch.equal(x[:, 1:], y[:, :-1])
    assert 0 <= loader.cropped_fraction < 1
