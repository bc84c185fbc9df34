"""The chat server (chapters 21-21b) over real sockets and in-process: limits, errors, auth, CORS, the bounded queue,
client disconnects, continuous batching, metrics, the `openai` client, and the `chat_web` command line."""
import json
import socket
import subprocess
import threading
import time

import httpx
import pytest
from conftest import PYTHON, ROOT
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nanochat.batching import EngineSlots, ScriptedSlots
from nanochat.engine import Engine
from nanochat.sampling import SamplingParams
from nanochat.scripts.chat_web import byte_tokenizer, tiny_random_model
from nanochat.server import ServerConfig, create_app, serve_in_thread

TOK = byte_tokenizer()
END = TOK.encode_special("<|assistant_end|>")
REPLY = "Hello! I am a scripted reply. 🙂"
USER = {"messages": [{"role": "user", "content": "Hi"}]}


def scripted(slots=4, step_s=0.0, reply=REPLY, max_len=4096):
    return ScriptedSlots(lambda prompt: TOK.encode(reply), slots=slots, max_len=max_len, stop_token=END, step_s=step_s)


def events(text):
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def metric(text, name, labels=None):
    "The value of one sample in Prometheus text."
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())): return s.value
    return None


# --- bad inputs: 4xx with a JSON message, never a 5xx

def test_bad_inputs_get_4xx_with_a_message():
    app = create_app(scripted(), TOK, ServerConfig(max_body_bytes=1 << 20))
    huge = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(10_000)]
    with TestClient(app) as client:
        cases = {
            "malformed JSON": (client.post("/v1/chat/completions", content=b'{"messages": [}', headers={"content-type": "application/json"}), 400, "not valid JSON"),
            "not JSON at all": (client.post("/chat/completions", content=b"hello", headers={"content-type": "application/json"}), 400, "not valid JSON"),
            "10 MB body": (client.post("/v1/chat/completions", content=b"x" * (10 << 20), headers={"content-type": "application/json"}), 413, "larger than"),
            "10k messages": (client.post("/v1/chat/completions", json={"messages": huge}), 422, "at most 500"),
            "wrong role": (client.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 422, "messages.0.role"),
            "roles out of order": (client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}), 422, "roles alternate"),
            "answer to nothing": (client.post("/chat/completions", json={"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}), 422, "last message"),
            "temperature 99": (client.post("/v1/chat/completions", json={**USER, "temperature": 99}), 422, "temperature"),
            "negative top_k": (client.post("/chat/completions", json={**USER, "top_k": -3}), 422, "top_k"),
            "top_k too large": (client.post("/chat/completions", json={**USER, "top_k": 100_000}), 422, "top_k"),
            "max_tokens 0": (client.post("/v1/chat/completions", json={**USER, "max_tokens": 0}), 422, "max_tokens"),
            "n = 2": (client.post("/v1/chat/completions", json={**USER, "n": 2}), 422, "n:"),
            "no messages": (client.post("/v1/chat/completions", json={"messages": []}), 422, "messages"),
            "a long message": (client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 10_000}]}), 422, "8000"),
            "a typo in a field": (client.post("/chat/completions", json={**USER, "temprature": 0.5}), 422, "temprature"),
            "NaN temperature": (client.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', headers={"content-type": "application/json"}), 422, "temperature"),
            "wrong method": (client.get("/v1/chat/completions"), 405, "Method Not Allowed"),
            "no such route": (client.get("/v2/models"), 404, "Not Found"),
        }
        for name, (r, status, words) in cases.items():
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            body = r.json()
            assert words in body["error"]["message"], (name, body)
            assert body["error"]["code"] == status and body["error"]["type"], name
            assert len(r.text) < 2000, (name, "the error echoes the input")
        assert client.get("/health").status_code == 200  # and the server is fine


def test_a_chunked_body_over_the_limit_is_refused():
    app = create_app(scripted(), TOK, ServerConfig(max_body_bytes=10_000))
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", content=iter([b"x" * 4000] * 5), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than 10,000 bytes" in r.json()["error"]["message"]


def test_context_overflow_is_a_400_and_long_requests_are_cut():
    app = create_app(scripted(max_len=64, reply="y" * 100), TOK, ServerConfig(max_tokens_cap=20))
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 100}]})
        assert r.status_code == 400 and r.json()["error"]["type"] == "context_length_exceeded"
        body = client.post("/v1/chat/completions", json={**USER, "max_tokens": 4000}).json()
        assert body["usage"]["completion_tokens"] == 20 and body["choices"][0]["finish_reason"] == "length"


# --- auth and CORS

def test_api_key_auth():
    with TestClient(create_app(scripted(), TOK, ServerConfig(api_key="k3y"))) as client:
        for path, method in [("/v1/chat/completions", "post"), ("/chat/completions", "post"), ("/v1/models", "get"), ("/metrics", "get")]:
            call = getattr(client, method)
            kwargs = {"json": USER} if method == "post" else {}
            r = call(path, **kwargs)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"], path
            assert r.headers["www-authenticate"] == "Bearer"
            assert call(path, headers={"Authorization": "Bearer wrong"}, **kwargs).status_code == 401
            assert call(path, headers={"Authorization": "Bearer k3y"}, **kwargs).status_code == 200, path
        assert client.get("/health").json()["auth"] is True  # open: load balancers and the page need it
        assert client.get("/").status_code == 200
        assert client.post("/v1/chat/completions", json=USER, headers={"X-API-Key": "k3y"}).status_code == 200


def test_cors_only_when_configured():
    preflight = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with TestClient(create_app(scripted(), TOK)) as client:
        r = client.get("/health", headers={"Origin": "https://chat.example"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(scripted(), TOK, ServerConfig(cors_origins=["https://chat.example"]))) as client:
        r = client.options("/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://chat.example"
        assert client.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"}).status_code == 400


# --- the queue, disconnects, batching, failures

def test_a_full_queue_answers_503_with_retry_after():
    backend = scripted(slots=1, step_s=0.02, reply="z" * 40)  # one row, busy for ~1 s per request
    app = create_app(backend, TOK, ServerConfig(max_queue=2, retry_after_s=3))
    with serve_in_thread(app) as url:
        results = []

        def ask():
            with httpx.Client(timeout=30) as c: results.append(c.post(url + "/v1/chat/completions", json=USER))
        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads: t.start(); time.sleep(0.05)
        for t in threads: t.join()
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) == 3 and statuses.count(503) == 3, statuses  # one in the row, two waiting, three refused
        refused = next(r for r in results if r.status_code == 503)
        assert refused.headers["retry-after"] == "3" and "busy" in refused.json()["error"]["message"]
        text = httpx.get(url + "/metrics").text
        assert metric(text, "nanochat_rejected_total") == 3
        assert metric(text, "nanochat_requests_total", {"route": "/v1/chat/completions", "status": "503"}) == 3


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(): return True
        time.sleep(0.02)
    return False


def test_a_client_that_disconnects_frees_its_row():
    backend = scripted(slots=1, step_s=0.01, reply="w" * 2000)  # a reply of ~20 s if nobody stops it
    app = create_app(backend, TOK, ServerConfig(max_queue=4, max_tokens=4000))
    with serve_in_thread(app) as url:
        health = lambda: httpx.get(url + "/health").json()
        with httpx.Client(timeout=10) as c:
            with c.stream("POST", url + "/chat/completions", json=USER) as r:  # takes the only row
                assert r.status_code == 200
                lines = r.iter_lines()  # kept: dropping the iterator would close the connection
                assert next(lines).startswith("data: ")
                with httpx.Client(timeout=10) as c2, c2.stream("POST", url + "/chat/completions", json=USER) as queued:
                    assert queued.status_code == 200
                    assert wait_for(lambda: health()["queue_depth"] == 1)
                # the queued client left: its ticket leaves the queue without ever taking a row
                assert wait_for(lambda: health()["queue_depth"] == 0)
                assert health()["workers"][0]["active"] == 1
        # the streaming client left too: its row is released before the next step
        assert wait_for(lambda: health()["workers"][0]["active"] == 0)
        assert backend.released == [0]
        assert backend.free == 1
        # and the server goes on serving
        body = httpx.post(url + "/v1/chat/completions", json={**USER, "max_tokens": 5}, timeout=10).json()
        assert body["usage"]["completion_tokens"] == 5
        assert metric(httpx.get(url + "/metrics").text, "nanochat_cancelled_total") >= 2


def test_concurrent_requests_share_decode_steps():
    backend = scripted(slots=8, step_s=0.005, reply="v" * 30)
    with serve_in_thread(create_app(backend, TOK)) as url:
        results = []

        def ask(i):
            with httpx.Client(timeout=30) as c:
                results.append(c.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": f"q{i}"}]}).json())
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert [r["choices"][0]["message"]["content"] for r in results] == ["v" * 30] * 8
        assert max(backend.step_sizes) >= 4  # requests joined each other's steps
        assert sum(backend.step_sizes) == 8 * 31  # every token of every reply, the stop tokens included, once
        text = httpx.get(url + "/metrics").text
        assert metric(text, "nanochat_completion_tokens_total") == 8 * 30
        assert metric(text, "nanochat_step_rows_count") == len(backend.step_sizes)
        assert metric(text, "nanochat_request_latency_seconds_count", {"route": "/v1/chat/completions"}) == 8
        assert metric(text, "nanochat_time_to_first_token_seconds_count") == 8
        assert metric(text, "nanochat_queue_depth") == 0


class FlakySlots(ScriptedSlots):
    "Fails its second step once."
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.steps = 0

    def step(self):
        self.steps += 1
        if self.steps == 2: raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().step()


def test_a_failed_step_fails_its_requests_not_the_server():
    backend = FlakySlots(lambda p: TOK.encode("abcdef"), slots=2, stop_token=END)
    with TestClient(create_app(backend, TOK)) as client:
        r = client.post("/v1/chat/completions", json=USER)
        assert r.status_code == 500 and "generation failed: RuntimeError: CUDA error" in r.json()["error"]["message"]
        stream = events(client.post("/chat/completions", json=USER).text)  # the worker goes on
        assert json.loads(stream[-1])["done"] is True
        assert backend.free == 2


def test_sse_formats():
    with TestClient(create_app(scripted(), TOK, ServerConfig(model_name="nano"))) as client:
        native = [json.loads(e) for e in events(client.post("/chat/completions", json=USER).text)]
        assert "".join(e.get("token", "") for e in native) == REPLY
        last = native[-1]
        assert last["done"] is True and last["finish_reason"] == "stop"
        assert last["usage"]["completion_tokens"] == len(TOK.encode(REPLY))
        assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
        raw = events(client.post("/v1/chat/completions", json={**USER, "stream": True}).text)
        assert raw[-1] == "[DONE]"
        chunks = [json.loads(e) for e in raw[:-1]]
        assert all(c["object"] == "chat.completion.chunk" and c["model"] == "nano" for c in chunks)
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" not in chunks[-1]  # usage only when asked


def test_a_reader_that_falls_behind_gets_every_token_once_in_order():
    "The server writes a slow reader's backlog at once: the text is whole, in order, nothing twice; the ending exact."
    reply = "Ünïcode 🙂, then plain words. " * 10
    tokens = len(TOK.encode(reply))
    with serve_in_thread(create_app(scripted(slots=2, reply=reply), TOK)) as url, httpx.Client(timeout=30) as client:
        for route, body in [("/v1/chat/completions", {**USER, "stream": True, "stream_options": {"include_usage": True}}),
                            ("/chat/completions", USER)]:
            with client.stream("POST", url + route, json=body) as r:
                lines = r.iter_lines()
                first = next(lines)
                time.sleep(0.3)  # the worker writes the whole reply meanwhile: it piles up for this reader
                data = [first[6:]] + events("\n".join(lines))
            if route == "/chat/completions":
                native = [json.loads(e) for e in data]
                assert "".join(e.get("token", "") for e in native) == reply
                assert all("token" in e for e in native[:-1]) and native[-1]["done"] is True
                assert (native[-1]["finish_reason"], native[-1]["usage"]["completion_tokens"]) == ("stop", tokens)
                continue
            assert data[-1] == "[DONE]"
            chunks = [json.loads(e) for e in data[:-1]]
            assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-2]) == reply
            assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
            assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == tokens


def test_a_stream_interval_gathers_writes_and_keeps_the_text():
    "With writes at least 20 ms apart, a reply of ~80 tokens at 2 ms a step arrives whole, in a handful of writes."
    reply = "Ünïcode 🙂, then plain words. " * 3
    config = ServerConfig(stream_interval_s=0.02)
    with serve_in_thread(create_app(scripted(slots=2, step_s=0.002, reply=reply), TOK, config)) as url, \
            httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/chat/completions", json=USER) as r:
            writes = list(r.iter_raw())  # a chunk per write of the server (or fewer, when the socket merges them)
        native = [json.loads(e) for e in events(b"".join(writes).decode())]
        assert "".join(e.get("token", "") for e in native) == reply and native[-1]["finish_reason"] == "stop"
        assert len(writes) < len(TOK.encode(reply)) / 4, len(writes)
        whole = client.post(url + "/v1/chat/completions", json=USER).json()  # not streamed: the same text
        assert whole["choices"][0]["message"]["content"] == reply


# --- the openai client, over a socket

def test_openai_client_stream_and_not(tmp_path):
    from openai import APIStatusError, OpenAI
    with serve_in_thread(create_app(scripted(), TOK, ServerConfig(api_key="sk-test", model_name="nanochat-test"))) as url:
        client = OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
        assert [m.id for m in client.models.list()] == ["nanochat-test"]
        messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
        done = client.chat.completions.create(model="nanochat-test", messages=messages, temperature=0.2, max_tokens=64)
        assert done.choices[0].message.content == REPLY and done.choices[0].finish_reason == "stop"
        assert done.usage.completion_tokens == len(TOK.encode(REPLY)) and done.usage.prompt_tokens > 5
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
        chunks = list(client.chat.completions.create(model="nanochat-test", messages=messages, stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5  # streamed, not one blob
        with pytest.raises(APIStatusError) as e:
            client.chat.completions.create(model="x", messages=messages, temperature=99)
        assert e.value.status_code == 422 and "temperature" in e.value.message
        with pytest.raises(APIStatusError) as e:
            OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert e.value.status_code == 401


def test_the_real_engine_behind_the_server():
    model = tiny_random_model(TOK)
    backend = EngineSlots(Engine(model, TOK), slots=4)
    with TestClient(create_app(backend, TOK)) as client:
        for seed in range(3):
            body = client.post("/v1/chat/completions", json={**USER, "max_tokens": 10, "seed": seed, "temperature": 1.0}).json()
            assert body["usage"]["completion_tokens"] <= 10 and body["choices"][0]["finish_reason"] in ("stop", "length")
        # the same seed, the same reply, whatever else shares the batch
        a = client.post("/v1/chat/completions", json={**USER, "max_tokens": 10, "seed": 7}).json()
        b = client.post("/v1/chat/completions", json={**USER, "max_tokens": 10, "seed": 7}).json()
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert backend.free == backend.slots


def test_a_pipelined_or_feeding_engine_serves_the_same_replies():
    """Concurrent requests through an engine that launches each step early, or feeds short prompts through its steps,
    get the replies of the plain engine."""
    model = tiny_random_model(TOK)
    bodies = [{"messages": [{"role": "user", "content": f"Hi {i}" * (1 + i % 3)}], "max_tokens": 6 + 5 * (i % 4),
               "seed": i, "temperature": 1.0, "top_k": 50} for i in range(12)]

    def replies(**engine_args):
        backend = EngineSlots(Engine(model, TOK, **engine_args), slots=4)  # fewer rows than requests: they queue
        with TestClient(create_app(backend, TOK)) as client:
            out = [None] * len(bodies)
            def ask(i): out[i] = client.post("/v1/chat/completions", json=bodies[i]).json()["choices"][0]["message"]
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
            for t in threads: t.start()
            for t in threads: t.join(60)
        assert backend.free == backend.slots
        return out

    plain = replies()
    assert replies(pipeline=True) == plain
    assert replies(feed_prompts=64) == plain  # every prompt here is shorter: those joining busy rows are fed
    assert replies(feed_prompts=64, pipeline=True) == plain


# --- the command line

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_web_cli_serves_the_openai_client(run_env):
    from openai import OpenAI
    port = free_port()
    env = run_env | {"NANOCHAT_API_KEY": "from-env"}
    proc = subprocess.Popen([PYTHON, "-m", "nanochat.scripts.chat_web", "--tiny-random", "--port", str(port), "--slots", "4",
                             "--device-type", "cpu", "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(url), timeout=60), proc.stdout.read() if proc.poll() is not None else "not up in 60 s"
        client = OpenAI(base_url=url + "/v1", api_key="from-env", max_retries=0)
        r = client.chat.completions.create(model="nanochat-tiny-random", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
        assert r.usage.completion_tokens <= 8 and r.model == "nanochat-tiny-random"
        chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "from-env" not in out and "'***'" in out  # the key is not printed
    assert "chat page: http://127.0.0.1" in out


def _up(url):
    try: return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError: return False


def test_chat_web_cli_refuses_clearly(capsys):
    from nanochat.scripts.chat_web import main
    for args, words in [(["--slots", "0"], "slots must be at least 1"), (["--port", "70000"], "port must be in"),
                        (["--stage", "sft"], "no SFT checkpoint yet"), (["--tool", "shell"], "tool must be"),
                        (["--slotz", "3"], "unknown flag --slotz")]:
        try: main(["--device-type", "cpu", *args]); raise AssertionError(f"{args} was accepted")
        except SystemExit as e: message = f"{e.code} {capsys.readouterr().err}"
        assert words in message, (args, message)


def test_engine_slots_adapter_follows_the_engine():
    "The adapter is the only place the server touches the engine: admit, step, release, free."
    backend = EngineSlots(Engine(tiny_random_model(TOK), TOK), slots=3, max_len=64)
    assert (backend.slots, backend.max_len, backend.free) == (3, 64, 3)
    slot = backend.add([TOK.get_bos_token_id(), 65, 66], SamplingParams(max_tokens=5, seed=1))
    assert backend.free == 2
    out = backend.step()
    assert set(out) == {slot} and isinstance(out[slot].token, int)
    backend.release(slot)
    assert backend.free == 3 and backend.step() == {}


def test_many_workers_share_one_queue():
    backends = [scripted(slots=2, step_s=0.01), scripted(slots=2, step_s=0.01)]
    with serve_in_thread(create_app(backends, TOK)) as url:
        threads = [threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", json=USER, timeout=30)) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
    assert all(b.step_sizes for b in backends)


def test_batching_loads_no_web_library(run_env):
    "nanochat.batching is the queue and the decode loop alone: importing it loads no HTTP, schema or metrics library."
    code = ("import sys, nanochat.batching; "
            "web = [m for m in ('fastapi', 'starlette', 'pydantic', 'prometheus_client', 'uvicorn') if m in sys.modules]; "
            "assert not web, f'nanochat.batching loaded {web}'")
    done = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
