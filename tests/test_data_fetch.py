"""`python -m nanochat.data fetch` against a mirror on 127.0.0.1 built from the shared data folder: the layout it writes
is the folder's own, a connection cut mid-file is resumed, a corrupt file is refused, an unreachable source is a clear
message; and (slow) the tiny CPU pipeline runs from a fetched folder with no shared data in sight."""
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nanochat import data

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir(): SHARED = Path(os.environ.get("NANOCHAT_DATA_DIR", "/nonexistent"))
needs_shared = pytest.mark.skipif(not (SHARED / "eval" / "gsm8k").is_dir(), reason="no shared data folder here")


class Mirror(http.server.SimpleHTTPRequestHandler):
    "A static mirror with HTTP Range; a path in `cut` is cut off after half its bytes the first time it is asked for."
    cut: set = set()
    requests: list = []

    def log_message(self, *args): pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file(): return self.send_error(404)
        body = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers["Range"] else 0
        Mirror.requests.append((self.path, start))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in Mirror.cut:
            Mirror.cut.discard(self.path)
            self.wfile.write(body[start:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body[start:])


@pytest.fixture
def mirror(tmp_path):
    """A mirror of the shared data folder (a tree of links), whose Wikipedia shards also stand in for the first
    ClimbMix shards and its validation shard; yields (address, folder)."""
    site = tmp_path / "site"
    for src in SHARED.rglob("*"):
        if src.is_file():
            (site / src.relative_to(SHARED)).parent.mkdir(parents=True, exist_ok=True)
            (site / src.relative_to(SHARED)).symlink_to(src)
    shards = sorted((SHARED / "pretrain" / "wikipedia_en").glob("*.parquet"))
    climb = site / "pretrain" / "climbmix-400b"
    climb.mkdir(parents=True)
    for i, name in ((0, "shard_00000"), (1, "shard_00001"), (-1, "shard_06542")):
        (climb / f"{name}.parquet").symlink_to(shards[i])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Mirror, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Mirror.cut, Mirror.requests = set(), []
    yield f"http://127.0.0.1:{server.server_address[1]}", site
    server.shutdown()


@needs_shared
def test_fetch_writes_the_shared_layout_and_resumes_a_cut_download(mirror, tmp_path, capsys):
    url, _ = mirror
    dest = tmp_path / "data"
    Mirror.cut = {"/eval/gsm8k/train.jsonl"}  # 4 MB: the cut leaves whole blocks behind to resume from
    assert data.main(["fetch", "--what", "eval,core,identity,gpteacher,tinyshakespeare", "--dest", str(dest),
                      "--base-url", url, "--retries", "3"]) == 0, capsys.readouterr()
    starts = [start for path, start in Mirror.requests if path == "/eval/gsm8k/train.jsonl"]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] > 0, starts  # asked again from where it stopped
    for d in data.select("eval,core,identity,gpteacher,tinyshakespeare"):
        assert not d.missing(dest), d.name
        for f in d.files:  # byte for byte the shared folder's files, in the same places
            if (SHARED / f.path).exists() and f.path != "eval/core/core_tasks.csv":
                assert (dest / f.path).stat().st_size == (SHARED / f.path).stat().st_size, f.path
    assert not list(dest.rglob("*.part")) and not (dest / ".upstream").exists()
    # the loaders read the fetched folder as they read the shared one
    os.environ["NANOCHAT_DATA_DIR"] = str(dest)
    try:
        from nanochat.tasks.gsm8k import GSM8K
        from nanochat.tasks.mmlu import MMLU
        assert len(GSM8K("test")) == 1319 and len(MMLU("dev")) == 285
    finally: del os.environ["NANOCHAT_DATA_DIR"]
    # nothing left to do: a second run opens no connection
    Mirror.requests = []
    assert data.main(["fetch", "--what", "eval", "--dest", str(dest), "--base-url", url]) == 0
    assert Mirror.requests == []


@needs_shared
def test_a_corrupt_file_is_refused_and_deleted(mirror, tmp_path):
    url, _ = mirror
    good = next(f for f in data.REGISTRY["gsm8k"].files if f.path.endswith("test.jsonl"))
    for wrong in (data.DataFile(good.path, None, good.size, hashlib.sha256(b"other").hexdigest()),
                  data.DataFile(good.path, None, good.size + 1)):
        dest = tmp_path / wrong.sha256[:6] if wrong.sha256 else tmp_path / "size"
        with pytest.raises(data.DownloadError, match="SHA-256" if wrong.sha256 else "where the registry says"):
            data.fetch_file(wrong, f"{url}/{good.path}", dest, retries=2, backoff=0.01)
        assert not (dest / good.path).exists() and not (dest / (good.path + ".part")).exists()
    corrupt = data.Dataset("gsm8k", "eval", (data.DataFile(good.path, good.url, good.size, "0" * 64),), "x", "MIT")
    result = data.fetch([corrupt], tmp_path / "fetch", base_url=url, retries=1)
    assert "SHA-256" in result["gsm8k"], result


def test_offline_names_the_mirror_settings(tmp_path, capsys):
    # port 9 (discard) has no listener here: the source is unreachable, and fetch says at once what to do
    assert data.main(["fetch", "--what", "humaneval", "--dest", str(tmp_path), "--base-url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "--base-url" in err and "NANOCHAT_DATA_URL" in err and "NANOCHAT_DATA_DIR" in err, err


def test_missing_task_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_DATA_DIR", str(tmp_path))
    from nanochat.tasks.common import DataUnavailable
    from nanochat.tasks.gsm8k import GSM8K
    from nanochat.tasks.identity import identity_conversations
    for make, name in ((lambda: GSM8K("test"), "gsm8k"), (identity_conversations, "identity")):
        with pytest.raises(DataUnavailable, match=f"python -m nanochat.data fetch --what {name}"): make()


@pytest.mark.slow
@needs_shared
def test_cpu_pipeline_from_a_fetched_folder(mirror, tmp_path):
    "runs/cpu.sh on a machine without a data folder: it fetches its small subset from the mirror, then runs."
    url, _ = mirror
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path / "base"), NANOCHAT_DATA_DIR=str(tmp_path / "data"),
               NANOCHAT_DATA_URL=url, NANOCHAT_PROFILE="tiny", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), NANOCHAT_PROMPT="Hello!")
    run = subprocess.run(["bash", str(ROOT / "runs" / "cpu.sh")], env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "fetching the CORE, eval and chat sets" in log and "pretraining shards: 2" in log
    assert (tmp_path / "data" / "pretrain" / "climbmix-400b" / "shard_06542.parquet").exists()
    assert "## Chat evaluation (SFT)" in (tmp_path / "base" / "report" / "report.md").read_text()
