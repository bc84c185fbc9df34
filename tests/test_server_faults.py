"""Fault injection with the real engine behind the server (the tiny random model on the CPU): the decode step raises
in the middle of requests. The requests it held end with a clean error, never a hang; every row is freed; `/ready`
reports the failing worker and recovers once the step works again; the next request is served."""
import json
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nanochat.batching import FAILING_ROUNDS, EngineSlots
from nanochat.engine import Engine
from nanochat.scripts.chat_web import byte_tokenizer, tiny_random_model
from nanochat.server import ServerConfig, create_app, serve_in_thread

TOK = byte_tokenizer()
SLOTS = 4


def ask(url: str, i: int, max_tokens: int = 48) -> tuple[int, dict]:
    "A request that decodes long enough to be in flight when the step fails: sampled, so it rarely stops early."
    body = {"messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": max_tokens, "temperature": 1.0,
            "seed": i}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)  # a hang would raise ReadTimeout
    return r.status_code, r.json()


def stream_events(url: str, i: int) -> list[dict]:
    body = {"messages": [{"role": "user", "content": f"streamed {i}"}], "max_tokens": 48, "temperature": 1.0, "seed": i}
    with httpx.stream("POST", url + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def wait_for(condition, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition(): return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def server(monkeypatch):
    """An in-process server over the real engine, whose decode step can be made to fail: `fault["from_step"]` is the
    first step (counted from arming) that raises, after the step's own work on the batch's tensors is done, as a
    device error surfacing at the next synchronisation would."""
    backend = EngineSlots(Engine(tiny_random_model(TOK), TOK), slots=SLOTS)
    batch, real_step = backend.batch, backend.batch._step
    fault = {"armed": False, "steps": 0, "from_step": 4, "raised": 0}

    def faulty_step(filtered, span, rows=None):
        real_step(filtered, span, rows)
        if fault["armed"]:
            fault["steps"] += 1
            if fault["steps"] >= fault["from_step"]:
                fault["raised"] += 1
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(batch, "_step", faulty_step)
    with serve_in_thread(create_app(backend, TOK, ServerConfig(max_queue=16))) as url:
        yield url, backend, fault


def rows_in_use(url: str) -> int: return sum(w["active"] for w in httpx.get(url + "/health").json()["workers"])


def test_a_step_that_fails_mid_request_fails_cleanly_and_the_server_recovers(server):
    url, backend, fault = server
    assert ask(url, 0, 4)[0] == 200  # served before the fault
    fault["armed"] = True
    results, streamed = [None] * SLOTS, []
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(url, i))) for i in range(SLOTS - 1)]
    threads.append(threading.Thread(target=lambda: streamed.extend(stream_events(url, 99))))
    for t in threads: t.start()
    for t in threads: t.join(60)
    assert not any(t.is_alive() for t in threads), "a request hung after the step failed"
    assert fault["raised"] >= 1
    for status, body in results[:SLOTS - 1]:  # each ended: with its reply if it finished first, else a clean 500
        if status != 200:
            assert status == 500 and "generation failed: RuntimeError: CUDA error" in body["error"]["message"], body
    assert any(status == 500 for status, _ in results[:SLOTS - 1])
    assert streamed and ("error" in streamed[-1] or streamed[-1].get("done")), streamed[-3:]
    assert wait_for(lambda: rows_in_use(url) == 0) and backend.free == SLOTS  # every row is free again
    # the device keeps failing: after FAILING_ROUNDS failed rounds, /ready and /health say so
    for i in range(FAILING_ROUNDS):
        assert ask(url, 100 + i)[0] == 500
    ready = httpx.get(url + "/ready")
    assert ready.status_code == 503 and "worker0 failed its last" in ready.json()["problems"][0], ready.json()
    # the step works again: /ready recovers by itself (a load balancer sends nothing while it says 503), and the
    # next request is served in full
    fault["armed"] = False
    assert wait_for(lambda: httpx.get(url + "/ready").status_code == 200), httpx.get(url + "/ready").json()
    status, body = ask(url, 200, 8)
    assert status == 200 and body["usage"]["completion_tokens"] >= 1, body
    assert backend.free == SLOTS and rows_in_use(url) == 0
    metrics = httpx.get(url + "/metrics").text  # a CPU server has no GPU memory gauges
    assert not [f for f in text_string_to_metric_families(metrics) if f.name.startswith("nanochat_gpu")]
