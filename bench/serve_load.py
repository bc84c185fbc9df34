"""Serving under load (chapters 21-21b): many concurrent streaming clients against `chat_web`, batched versus one at a time.

The server is the real program, `python -m nanochat.scripts.chat_web --tiny-random` (a 2-layer random GPT with a byte
tokenizer, on the CPU), started as a subprocess on 127.0.0.1 twice: once with `--slots 64` (continuous batching: every
busy request shares each decode step) and once with `--slots 1` (one request at a time; the rest wait in the queue).
`--clients` asyncio clients each send `--requests` streaming requests to `/v1/chat/completions` one after the other
(`max_tokens` each, usage included). The queue is smaller than the number of clients, so the one-at-a-time server
refuses some requests with 503 + Retry-After: the clients wait as told and retry, and those 503s are counted, not
errors. Anything else (another status, a broken stream, a timeout) is an error.

Reported per mode: requests served, errors, 503s, completion tokens per second over the whole run, latency
percentiles (first attempt to last token, waits after a 503 included) and time to first token, and the mean rows per
decode step read from the server's /metrics. Then the ratio of throughputs, batched over one at a time.

    python bench/serve_load.py                      # 64 clients × 4 requests × 64 tokens, two modes, under a minute on 2 cores
    python bench/serve_load.py --clients 16 --requests 1 --max-tokens 16

Prints a table and one JSON line, saved as bench/results/serve_load-DATE.json (or --out).
"""
import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from record import git_commit, save_result

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    "The q-th percentile (0-100) by linear interpolation between closest ranks."
    if not values: return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Server:
    "`chat_web --tiny-random` in a subprocess on a free port of 127.0.0.1."
    def __init__(self, slots: int, max_queue: int, threads: int, device_type: str = "cpu"):
        self.port, self.url = free_port(), None
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix=f"serve_load_slots{slots}_")
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
        env.pop("NANOCHAT_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "nanochat.scripts.chat_web", "--tiny-random", "--device-type", device_type,
                                      "--slots", str(slots), "--max-queue", str(max_queue), "--port", str(self.port),
                                      "--log-level", "warning", "--max-tokens", "512"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self):
        url, deadline = f"http://127.0.0.1:{self.port}", time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None: break
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200: self.url = url; return self
            except httpx.HTTPError: time.sleep(0.2)
        self.log.seek(0)
        raise RuntimeError(f"the server did not start:\n{self.log.read()[-3000:]}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try: self.proc.wait(30)
        except subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()


async def one_request(client: httpx.AsyncClient, url: str, body: dict, deadline: float, stats: dict) -> None:
    "Send one streaming request, retrying after 503 as Retry-After says; record its latency, first token and tokens."
    start = time.perf_counter()
    while True:
        if time.perf_counter() > deadline: stats["unfinished"] += 1; return
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                if r.status_code == 503:
                    stats["rejected_503"] += 1
                    await r.aread()
                    wait = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(min(wait, 5.0) * random.uniform(0.5, 1.0))  # jitter: the refused don't come back together
                    continue
                if r.status_code != 200:
                    stats["errors"] += 1; stats["error_samples"].append(f"{r.status_code} {(await r.aread())[:200]!r}"); return
                first, usage, done = None, None, False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "): continue
                    data = line[6:]
                    if data == "[DONE]": done = True; break
                    event = json.loads(data)
                    if "error" in event: raise RuntimeError(event["error"]["message"])
                    if first is None and event.get("choices") and event["choices"][0]["delta"].get("content"): first = time.perf_counter()
                    if event.get("usage"): usage = event["usage"]
                if not done or usage is None: raise RuntimeError("the stream ended without [DONE] and usage")
                end = time.perf_counter()
                stats["latency"].append(end - start)
                stats["ttft"].append((first or end) - start)
                stats["tokens"] += usage["completion_tokens"]
                stats["requests"] += 1
                stats["last_end"] = max(stats["last_end"], end)
                return
        except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
            stats["errors"] += 1; stats["error_samples"].append(repr(e)[:200]); return


async def run_clients(url: str, clients: int, requests: int, max_tokens: int, time_limit: float) -> dict:
    stats = {"requests": 0, "errors": 0, "rejected_503": 0, "unfinished": 0, "tokens": 0, "latency": [], "ttft": [],
             "error_samples": [], "last_end": 0.0}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    start = time.perf_counter()
    deadline = start + time_limit
    async with httpx.AsyncClient(timeout=httpx.Timeout(time_limit, connect=10), limits=limits) as client:
        async def one_client(i: int):
            for j in range(requests):
                body = {"model": "nanochat", "messages": [{"role": "user", "content": f"Client {i}, question {j}: tell me a story."}],
                        "max_tokens": max_tokens, "temperature": 1.0, "top_k": 0, "seed": i * 1000 + j, "stream": True,
                        "stream_options": {"include_usage": True}}
                await one_request(client, url, body, deadline, stats)
        await asyncio.gather(*(one_client(i) for i in range(clients)))
    stats["wall_s"] = (stats["last_end"] or time.perf_counter()) - start
    return stats


def server_rows_per_step(url: str) -> float:
    "Mean rows per decode step, from the server's Prometheus histogram."
    from prometheus_client.parser import text_string_to_metric_families
    values = {s.name: s.value for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples}
    return values.get("nanochat_step_rows_sum", 0) / max(values.get("nanochat_step_rows_count", 0), 1)


def run_mode(mode: str, slots: int, args) -> dict:
    with Server(slots, args.max_queue, args.threads, args.device_type) as server:
        stats = asyncio.run(run_clients(server.url, args.clients, args.requests, args.max_tokens, args.time_limit))
        rows = server_rows_per_step(server.url)
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 1)
    record = {"kind": "serve", "mode": mode, "slots": slots, "clients": args.clients, "requests": stats["requests"],
              "errors": stats["errors"] + stats["unfinished"], "rejected_503": stats["rejected_503"],
              "completion_tokens": stats["tokens"], "wall_s": round(stats["wall_s"], 2),
              "tok_per_s": round(stats["tokens"] / stats["wall_s"], 1), "req_per_s": round(stats["requests"] / stats["wall_s"], 2),
              "p50_ms": ms(stats["latency"], 50), "p95_ms": ms(stats["latency"], 95), "p99_ms": ms(stats["latency"], 99),
              "ttft_p50_ms": ms(stats["ttft"], 50), "ttft_p95_ms": ms(stats["ttft"], 95), "mean_rows_per_step": round(rows, 2)}
    if stats["error_samples"]: record["error_samples"] = stats["error_samples"][:5]
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64, help="concurrent streaming clients")
    p.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    p.add_argument("--max-tokens", type=int, default=64, help="reply length asked for (a random model may stop sooner)")
    p.add_argument("--slots", type=int, default=64, help="rows of the batched server")
    p.add_argument("--max-queue", type=int, default=32, help="the servers' queue (smaller than --clients: the one-at-a-time server answers some 503s)")
    p.add_argument("--time-limit", type=float, default=240, help="seconds per mode at most; requests not done by then count as errors")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (OMP_NUM_THREADS)")
    p.add_argument("--device-type", default="cpu", help="the servers' device (the recorded benchmark is the CPU one)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    records = [run_mode("batched", args.slots, args), run_mode("sequential", 1, args)]
    batched, sequential = records
    ratio = round(batched["tok_per_s"] / sequential["tok_per_s"], 2)
    print(f"\n{'mode':<11} {'slots':>5} {'reqs':>5} {'err':>4} {'503':>5} {'tok/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'ttft p50':>8} {'rows/step':>9}")
    for r in records:
        print(f"{r['mode']:<11} {r['slots']:>5} {r['requests']:>5} {r['errors']:>4} {r['rejected_503']:>5} {r['tok_per_s']:>8} "
              f"{r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['ttft_p50_ms']:>8} {r['mean_rows_per_step']:>9}")
    print(f"batched / one at a time: {ratio}x the tokens per second\n")
    import torch
    result = {"name": "serve_load", "date": date.today().isoformat(), "commit": git_commit(), "device": args.device_type,
              "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "model": "tiny-random (2 layers, width 64, byte tokenizer)", "max_tokens": args.max_tokens,
              "requests_per_client": args.requests, "max_queue": args.max_queue, "records": records,
              "batched_over_sequential": ratio}
    save_result(result, args.out)
    if any(r["errors"] for r in records): sys.exit("errors other than 503: see error_samples")
    return result


if __name__ == "__main__":
    main()
