"""The CORE bundle download against a local HTTP server on 127.0.0.1: fetched once (the first try cut short and
resumed), unpacked atomically, converted to core_tasks.csv, then evaluated; a damaged archive is refused."""
import http.server
import io
import json
import threading
import zipfile

import pytest
import yaml

from nanochat.core_eval import download_core_bundle, evaluate_core, load_core_tasks
from nanochat.dataset import DownloadError


def bundle_zip() -> bytes:
    "A bundle shaped like DCLM's: eval_bundle/{core.yaml, eval_meta_data.csv, eval_data/...}, two tasks present, one not."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("eval_bundle/core.yaml", yaml.safe_dump({"icl_tasks": [
            {"label": "copa", "dataset_uri": "commonsense_reasoning/copa.jsonl", "num_fewshot": [0], "icl_task_type": "multiple_choice"},
            {"label": "jeopardy", "dataset_uri": "world_knowledge/jeopardy_all.jsonl", "num_fewshot": [1],
             "icl_task_type": "language_modeling", "continuation_delimiter": "\nAnswer: "},
            {"label": "squad", "dataset_uri": "reading_comprehension/squad.jsonl", "num_fewshot": [10], "icl_task_type": "language_modeling"}]}))
        z.writestr("eval_bundle/eval_meta_data.csv", "Eval Task,Random baseline\ncopa,50\njeopardy,0\nsquad,0\n")
        z.writestr("eval_bundle/eval_data/commonsense_reasoning/copa.jsonl", "".join(
            json.dumps({"query": f"Event {i}, so", "choices": ["it rained.", "it was sunny."], "gold": i % 2}) + "\n" for i in range(6)))
        z.writestr("eval_bundle/eval_data/world_knowledge/jeopardy_all.jsonl", "".join(
            json.dumps({"context": f"Question {i}", "continuation": f"Answer {i}"}) + "\n" for i in range(6)))
    return buf.getvalue()


@pytest.fixture
def bundle_server():
    body, hits = bundle_zip(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            hits.append(self.headers.get("Range"))
            if self.path == "/damaged.zip": data, start = b"PK\x03\x04 not really a zip", 0
            else:
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                data = body
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start)); self.end_headers()
            if len(hits) == 1: self.wfile.write(data[start:start + 100]); return  # the first answer is cut short
            self.wfile.write(data[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_download_unpack_convert_evaluate(bundle_server, tmp_path):
    url, hits = bundle_server
    dest = download_core_bundle(tmp_path / "eval_bundle", f"{url}/eval_bundle.zip", retries=3, backoff=0.01)
    assert hits[0] is None and hits[1] == "bytes=100-"  # resumed where the cut-short answer stopped
    tasks = {t.label: t for t in load_core_tasks(dest)}
    assert tasks["copa"].available and tasks["jeopardy"].available and not tasks["squad"].available
    assert tasks["jeopardy"].delimiter == "\nAnswer: " and tasks["copa"].baseline == 0.5 and tasks["jeopardy"].shots == 1
    assert not list(tmp_path.glob("*.zip*")), "the archive and its .part are gone once unpacked"
    again = len(hits)
    assert download_core_bundle(dest, f"{url}/eval_bundle.zip") == dest and len(hits) == again  # once only

    from nanochat.tokenizer import Tokenizer
    tok = Tokenizer.train(iter(["Event 1, so it rained. Question 2 Answer 2"] * 20), vocab_size=300)

    class Uniform:
        def __call__(self, ids):
            import torch
            return torch.zeros(*ids.shape, tok.vocab_size)
    report = evaluate_core(Uniform(), tok, dest, log=False)
    assert report["missing"] == ["squad"] and set(report["tasks"]) == {"copa", "jeopardy"}
    assert report["tasks"]["jeopardy"]["accuracy"] == 0.0  # a uniform model predicts no answer token for token
    assert all(r["items"] == 6 for r in report["tasks"].values())


def test_damaged_archive_is_refused(bundle_server, tmp_path):
    url, hits = bundle_server
    hits.append("skip the cut-short first answer")
    with pytest.raises(DownloadError, match="not a zip archive"):
        download_core_bundle(tmp_path / "eval_bundle", f"{url}/damaged.zip", retries=2, backoff=0.01)
    assert not (tmp_path / "eval_bundle").exists()
