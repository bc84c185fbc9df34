"""The real download code against a misbehaving local HTTP server on 127.0.0.1: retries, resume, verification,
atomic renames, errors that name the shard, and a clear message when the network is unreachable."""
import hashlib
import http.server
import subprocess
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PYTHON, ROOT

from nanochat.dataset import ShardSource, download_shards


def shard_bytes(i):
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": [f"shard {i} document {j} " * 40 for j in range(50)]}), sink, row_group_size=10)
    return sink.getvalue().to_pybytes()


@pytest.fixture
def flaky_server():
    """Serves shards 0-4 and SHA256SUMS. shard 1: 503 twice, then fine. shard 2: truncated once, then fine.
    shard 3: always corrupted (bytes flipped; its checksum is the good one). shard 4: not there (404)."""
    good = {f"shard_{i:05d}.parquet": shard_bytes(i) for i in range(5)}
    sums = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in good.items())
    requests, count = [], {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass

        def do_GET(self):
            name = self.path.lstrip("/")
            requests.append((name, self.headers.get("Range")))
            count[name] = count.get(name, 0) + 1
            if name == "SHA256SUMS": body = sums.encode()
            elif name not in good or name == "shard_00004.parquet": return self.send_error(404)
            elif name == "shard_00001.parquet" and count[name] <= 2: return self.send_error(503)
            else: body = good[name]
            if name == "shard_00003.parquet": body = body[:100] + bytes(b ^ 0xFF for b in body[100:200]) + body[200:]
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body) - start)); self.end_headers()
            if name == "shard_00002.parquet" and count[name] == 1:
                self.wfile.write(body[start:start + 300]); return  # truncated: connection closes early
            self.wfile.write(body[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", good, requests
    server.shutdown()


def test_retries_resume_and_verification(flaky_server, tmp_path):
    url, good, requests = flaky_server
    source = ShardSource("test", url, num_shards=5, checksums="SHA256SUMS")
    fetched, failed = download_shards(source, range(5), tmp_path, workers=3, retries=4, backoff=0.01)
    assert sorted(p.name for p in fetched) == [f"shard_{i:05d}.parquet" for i in range(3)]
    for p in fetched: assert p.read_bytes() == good[p.name]
    assert [r for r in requests if r[0] == "shard_00001.parquet"].__len__() == 3        # 503, 503, ok
    assert any(n == "shard_00002.parquet" and rng == "bytes=300-" for n, rng in requests)  # resumed where it was cut
    # the corrupted shard is retried, then reported by name, and never appears under its final name
    assert "shard_00003.parquet" in failed and "SHA-256" in failed["shard_00003.parquet"]
    assert sum(n == "shard_00003.parquet" for n, _ in requests) == 4
    assert not (tmp_path / "shard_00003.parquet").exists() and not (tmp_path / "shard_00003.parquet.part").exists()
    # a missing shard is not retried
    assert "404" in failed["shard_00004.parquet"] and sum(n == "shard_00004.parquet" for n, _ in requests) == 1
    # running again resumes: complete shards are not fetched again
    before = len(requests)
    download_shards(source, range(3), tmp_path, workers=2, retries=1, backoff=0.01)
    assert [n for n, _ in requests[before:]] == ["SHA256SUMS"]


def test_cli_says_clearly_when_the_network_is_unreachable(run_env, tmp_path):
    out = subprocess.run([PYTHON, "-m", "nanochat.dataset", "-n", "2", "--base-url", "http://127.0.0.1:9/nowhere",
                          "--total-shards", "2", "--retries", "1", "--dir", str(tmp_path)],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot reach http://127.0.0.1:9/nowhere" in out.stderr and "nanochat.dataset build" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("*.parquet"))


def test_build_and_stats_cli(run_env, tmp_path):
    src = tmp_path / "src"; src.mkdir()
    for i in range(5): (src / f"t{i}.txt").write_text(f"text file {i}. " * 100)
    out = subprocess.run([PYTHON, "-m", "nanochat.dataset", "build", "--from", str(src), "--out", str(tmp_path / "shards"),
                          "--docs-per-shard", "2"], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    stats = subprocess.run([PYTHON, "-m", "nanochat.dataset", "stats", "--dir", str(tmp_path / "shards")],
                           cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=60)
    assert '"documents": 5' in stats.stdout
    bad = subprocess.run([PYTHON, "-m", "nanochat.dataset", "build", "--from", str(tmp_path / "missing")],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
