"""Serving under load (chapters 21-21b): many concurrent streaming clients against `chat_web`, batched versus one at a time.

By default the server is the real program, `python -m nanochat.scripts.chat_web --tiny-random` (a 2-layer random GPT
with a byte tokenizer, on the CPU), started as a subprocess on 127.0.0.1 twice: once with `--slots 64` (continuous
batching: every busy request shares each decode step) and once with `--slots 1` (one request at a time; the rest wait
in the queue). `--clients` asyncio clients each send `--requests` streaming requests to `/v1/chat/completions` one
after the other (`max_tokens` each, usage included). The queue is smaller than the number of clients, so the
one-at-a-time server refuses some requests with 503 + Retry-After: the clients wait as told and retry, and those 503s
are counted, not errors. Anything else (another status, a broken stream, a timeout) is an error.

Before the timed runs, `--warmup` requests go through each server (on a GPU the first steps of a new length capture
CUDA graphs, and a server start compiles for a minute: `--start-timeout` is how long to wait for /health).

Reported per mode and client count (one flat record each): requests served, errors, 503s, completion tokens per second
over the whole run (`tok_per_s`), latency percentiles (first attempt to last token, waits after a 503 included) and
time to first token, and from the server's /metrics (the change over the run): the mean rows per decode step, the
engine's own rate (`engine_tok_per_s`: tokens emitted per second of decode-step time; a row feeding its prompt emits none), the mean decode step and
`engine_busy` (the share of the run's wall time its workers spent in decode steps and admissions, `admit_busy` the
admissions' part: prefills, during which no row decodes; the rest is host time, during which a GPU waits; `admissions`
the rounds that admitted newcomers and `admit_ms` one's mean: many short ones, or few long ones; `prefill_admissions`
and `prefill_admit_ms` the rounds among them that ran a prefill, where the others fed their prompts through the steps),
`gc_pause_ms` and `gc_full` (the server's garbage collections: the time every thread stood still in them, and how
many were full ones) and `server_cpu` (the cores the server process used: near 1, its Python threads, which share
one GIL, are the limit).
`client_cpu` is the cores the clients used: near `client_procs`, the clients are the bottleneck, not the server
(spread them over more processes). Then the ratio of throughputs, batched over one at a time.

    python bench/serve_load.py                      # 64 clients × 4 requests × 64 tokens, two modes, under a minute on 2 cores
    python bench/serve_load.py --clients 16 --requests 1 --max-tokens 16
    python bench/serve_load.py --clients 32,128 --modes batched --slots 128             # two rows, one server start
    python bench/serve_load.py --server-args "--stage sft --device-type cuda" --slots 128 --clients 32,128 --modes batched
    python bench/serve_load.py --url http://gpu-box:8000 --clients 128 --api-key "$KEY"  # a server already running
    python bench/stand_in_server.py --step-ms 2 &     # the host path alone (a scripted engine), then:
    python bench/serve_load.py --url http://127.0.0.1:8100 --clients 128

Options beyond the load itself:

- `--clients 32,128`: a comma list; each count is one run (and one record) against the same server start.
- `--modes batched,sequential`: which servers to start (`--slots` rows, then one row); default both.
- `--server-args "..."`: start `chat_web` with these arguments instead of `--tiny-random --device-type cpu` (a
  checkpoint on a GPU: `--stage sft --model-tag d20 --device-type cuda`). The bench adds `--slots`, `--max-queue`,
  `--port` and `--log-level`: don't put those in. The model's name is then read from the server.
- `--url URL`: drive a server that is already running (any host): one mode, "external", nothing started; its rows,
  model and metrics are read from /health and /metrics. `--api-key` (default $NANOCHAT_API_KEY) is sent as a Bearer key.
- `--client-procs N`: spread the clients over N processes (default 1); one Python process reads some tens of
  thousands of streamed tokens a second at most.
- `--warmup N` requests before timing (default 4), `--start-timeout` seconds for a started server to answer /health
  (default 300).

Prints a table and one JSON line, saved as bench/results/serve_load-DATE.json (or --out).
"""
import argparse
import asyncio
import json
import os
import platform
import random
import shlex
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
TINY_MODEL = "tiny-random (2 layers, width 64, byte tokenizer)"


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


def client_counts(text: str) -> list[int]:
    "'32,128' -> [32, 128]."
    try: counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError: raise argparse.ArgumentTypeError(f"--clients takes counts separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1: raise argparse.ArgumentTypeError(f"--clients must be counts >= 1, got {text!r}")
    return counts


def mode_list(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("batched", "sequential") for m in modes):
        raise argparse.ArgumentTypeError(f"--modes takes batched and/or sequential, got {text!r}")
    return modes


class Server:
    "`chat_web` (by default `--tiny-random` on the CPU) in a subprocess on a free port of 127.0.0.1."
    def __init__(self, slots: int, args):
        self.port, self.url, self.start_timeout = free_port(), None, args.start_timeout
        if args.server_log_dir:  # kept for the caller (e.g. to check what the server said while it started)
            Path(args.server_log_dir).mkdir(parents=True, exist_ok=True)
            self.log = open(Path(args.server_log_dir) / f"chat_web_slots{slots}.log", "w+")
        else: self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix=f"serve_load_slots{slots}_")
        # the repo first, then whatever the caller's path holds (e.g. packages installed beside the checkout)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        if args.threads: env["OMP_NUM_THREADS"] = str(args.threads)
        env.pop("NANOCHAT_API_KEY", None)
        if args.server_args is None: model = ["--tiny-random", "--device-type", args.device_type or "cpu", "--max-tokens", "512"]
        else: model = shlex.split(args.server_args) + (["--device-type", args.device_type] if args.device_type else [])
        self.command = [sys.executable, "-m", "nanochat.scripts.chat_web", *model, "--slots", str(slots),
                        "--max-queue", str(args.max_queue), "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self):
        url, deadline = f"http://127.0.0.1:{self.port}", time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None: break
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200: self.url = url; return self
            except httpx.HTTPError: time.sleep(0.2)
        tail = self.log_tail()
        self.__exit__()
        raise RuntimeError(f"the server did not start ({shlex.join(self.command)}):\n{tail}")

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def __exit__(self, *exc):
        self.proc.terminate()
        try: self.proc.wait(30)
        except subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()


def request_body(tag: str, seed: int, max_tokens: int) -> dict:
    return {"model": "nanochat", "messages": [{"role": "user", "content": f"{tag}: tell me a story."}],
            "max_tokens": max_tokens, "temperature": 1.0, "top_k": 0, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}


async def read_stream(r: httpx.Response) -> tuple[float | None, dict]:
    """(time of the first content, usage) of an OpenAI stream. Only the lines that matter are parsed as JSON: the client
    must cost much less than the server it measures."""
    first, usage, done = None, None, False
    async for line in r.aiter_lines():
        if not line.startswith("data: "): continue
        data = line[6:]
        if data == "[DONE]": done = True; break
        if first is not None and '"usage"' not in data and '"error"' not in data: continue
        event = json.loads(data)
        if "error" in event: raise RuntimeError(event["error"]["message"])
        if first is None and event.get("choices") and event["choices"][0]["delta"].get("content"): first = time.perf_counter()
        if event.get("usage"): usage = event["usage"]
    if not done or usage is None: raise RuntimeError("the stream ended without [DONE] and usage")
    return first, usage


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
                first, usage = await read_stream(r)
                end = time.perf_counter()
                stats["latency"].append(end - start)
                stats["ttft"].append((first or end) - start)
                stats["tokens"] += usage["completion_tokens"]
                stats["requests"] += 1
                stats["last_end"] = max(stats["last_end"], end)
                return
        except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
            stats["errors"] += 1; stats["error_samples"].append(repr(e)[:200]); return


async def run_clients(url: str, clients: int, requests: int, max_tokens: int, time_limit: float, headers: dict,
                      tag: str = "Client", first: int = 0) -> dict:
    "`clients` concurrent clients (numbered from `first`), each sending `requests` streaming requests one after the other."
    stats = {"requests": 0, "errors": 0, "rejected_503": 0, "unfinished": 0, "tokens": 0, "latency": [], "ttft": [],
             "error_samples": [], "last_end": 0.0}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + time_limit
    async with httpx.AsyncClient(timeout=httpx.Timeout(time_limit, connect=10), limits=limits, headers=headers) as client:
        async def one_client(i: int):
            for j in range(requests):
                await one_request(client, url, request_body(f"{tag} {i}, question {j}", i * 1000 + j, max_tokens), deadline, stats)
        await asyncio.gather(*(one_client(first + i) for i in range(clients)))
    stats["start"], stats["cpu_s"] = start, time.process_time() - cpu
    return stats


def _client_process(barrier, results, url, clients, requests, max_tokens, time_limit, headers, first) -> None:
    "One process of --client-procs: its share of the clients, started with the others' at the barrier."
    barrier.wait()
    results.put(asyncio.run(run_clients(url, clients, requests, max_tokens, time_limit, headers, first=first)))


def drive(url: str, clients: int, args, headers: dict, tag: str = "Client", requests: int | None = None) -> dict:
    """Run the clients, in `--client-procs` processes (one Python process can only read so many streams a second);
    returns their merged stats with the run's wall time and the clients' CPU use (cores)."""
    requests = args.requests if requests is None else requests
    procs = max(1, min(args.client_procs, clients))
    if procs == 1:
        parts = [asyncio.run(run_clients(url, clients, requests, args.max_tokens, args.time_limit, headers, tag))]
        start = parts[0]["start"]
    else:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(procs + 1), ctx.Queue()
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        workers = [ctx.Process(target=_client_process, args=(barrier, results, url, n, requests, args.max_tokens,
                                                              args.time_limit, headers, sum(shares[:i])))
                   for i, n in enumerate(shares)]
        for w in workers: w.start()
        barrier.wait(timeout=120)
        start = time.perf_counter()
        parts = [results.get(timeout=args.time_limit + 120) for _ in workers]
        for w in workers: w.join(30)
    stats = {k: sum(p[k] for p in parts) for k in ("requests", "errors", "rejected_503", "unfinished", "tokens", "cpu_s")}
    for k in ("latency", "ttft", "error_samples"): stats[k] = [x for p in parts for x in p[k]]
    end = max(p["last_end"] for p in parts) or time.perf_counter()  # perf_counter is one clock for every process (Linux)
    stats["wall_s"] = end - start
    stats["client_cpu"] = stats["cpu_s"] / max(stats["wall_s"], 1e-9)
    return stats


def server_metrics(url: str, headers: dict) -> dict[str, float]:
    "Every sample of the server's /metrics, summed over labels ({} when it has none, or they cannot be read)."
    from prometheus_client.parser import text_string_to_metric_families
    try:
        r = httpx.get(url + "/metrics", headers=headers, timeout=10)
        if r.status_code != 200: return {}
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                values[s.name] = values.get(s.name, 0.0) + s.value
                if s.labels.get("generation") == "2": values[s.name + ":full"] = s.value  # full collections apart
        return values
    except (httpx.HTTPError, ValueError): return {}


def engine_figures(before: dict, after: dict, wall_s: float, workers: int) -> dict:
    """What the server's metrics say about a run: rows per step, the engine's own rate, how busy it was, and the CPU
    the server process used (cores; None where it does not say)."""
    d = lambda name: after.get(name, 0.0) - before.get(name, 0.0)
    steps, rows, step_s = d("nanochat_step_rows_count"), d("nanochat_step_rows_sum"), d("nanochat_step_seconds_sum")
    cpu = round(d("process_cpu_seconds_total") / wall_s, 2) if "process_cpu_seconds_total" in after and wall_s > 0 else None
    if not after or steps <= 0:
        return {"mean_rows_per_step": None, "engine_tok_per_s": None, "step_ms": None, "engine_busy": None,
                "admit_busy": None, "admissions": None, "admit_ms": None, "prefill_admissions": None,
                "prefill_admit_ms": None, "server_cpu": cpu, **gc_figures(d, after)}
    worker_s = max(wall_s * max(workers, 1), 1e-9)
    admit_s, admissions = d("nanochat_admit_seconds_sum"), d("nanochat_admit_seconds_count")
    # the admissions that ran a prefill, apart from those whose prompts were fed through the steps (None: not counted)
    prefill_s, prefills = d("nanochat_prefill_admit_seconds_sum"), d("nanochat_prefill_admit_seconds_count")
    counted = "nanochat_prefill_admit_seconds_count" in after
    return {"mean_rows_per_step": round(rows / steps, 2), "engine_tok_per_s": round(rows / step_s, 1) if step_s > 0 else None,
            "step_ms": round(step_s / steps * 1000, 3), "engine_busy": round((step_s + admit_s) / worker_s, 3),
            "admit_busy": round(admit_s / worker_s, 3) if "nanochat_admit_seconds_sum" in after else None,
            # admissions: the worker rounds that admitted newcomers (a round takes every request waiting), each's mean
            "admissions": int(admissions), "admit_ms": round(admit_s / admissions * 1000, 2) if admissions else None,
            "prefill_admissions": int(prefills) if counted else None,
            "prefill_admit_ms": round(prefill_s / prefills * 1000, 2) if prefills else None, "server_cpu": cpu,
            **gc_figures(d, after)}


def gc_figures(d, after: dict) -> dict:
    """The server's garbage collections during the run (None where its metrics do not count them): all of them and the
    full ones, and the time every thread stood still in them."""
    if "nanochat_gc_pause_seconds_total" not in after: return {"gc_pause_ms": None, "gc_full": None}
    return {"gc_pause_ms": round(d("nanochat_gc_pause_seconds_total") * 1000, 1),
            "gc_full": int(d("nanochat_gc_collections_total:full"))}


def server_info(url: str, headers: dict) -> dict:
    "The model's name, rows and devices, from /health (and /v1/models when /health does not name the model)."
    health = httpx.get(url + "/health", headers=headers, timeout=10).json()
    workers = health.get("workers", [])
    model = health.get("model")
    if model is None:
        try: model = httpx.get(url + "/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError): model = "unknown"
    return {"model": model, "slots": sum(w.get("slots", 0) for w in workers) or None, "workers": len(workers) or 1,
            "devices": sorted({w["device"] for w in workers if "device" in w})}


def run_counts(mode: str, url: str, args, headers: dict) -> tuple[list[dict], dict]:
    "Warm the server up, then one run (one record) per client count."
    info = server_info(url, headers)
    if args.warmup:
        warm = asyncio.run(run_clients(url, args.warmup, 1, args.max_tokens, args.start_timeout, headers, tag="Warm-up"))
        if warm["errors"]: raise RuntimeError(f"the warm-up failed: {warm['error_samples'][:3]}")
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 1)
    records = []
    for clients in args.clients:
        before = server_metrics(url, headers)
        stats = drive(url, clients, args, headers)
        after = server_metrics(url, headers)
        record = {"kind": "serve", "mode": mode, "slots": info["slots"], "clients": clients, "requests": stats["requests"],
                  "errors": stats["errors"] + stats["unfinished"], "rejected_503": stats["rejected_503"],
                  "completion_tokens": stats["tokens"], "wall_s": round(stats["wall_s"], 2),
                  "tok_per_s": round(stats["tokens"] / stats["wall_s"], 1), "req_per_s": round(stats["requests"] / stats["wall_s"], 2),
                  "p50_ms": ms(stats["latency"], 50), "p95_ms": ms(stats["latency"], 95), "p99_ms": ms(stats["latency"], 99),
                  "ttft_p50_ms": ms(stats["ttft"], 50), "ttft_p95_ms": ms(stats["ttft"], 95), "ttft_p99_ms": ms(stats["ttft"], 99),
                  **engine_figures(before, after, stats["wall_s"], info["workers"]), "client_cpu": round(stats["client_cpu"], 2),
                  "client_procs": max(1, min(args.client_procs, clients))}
        if stats["error_samples"]: record["error_samples"] = stats["error_samples"][:5]
        records.append(record)
    return records, info


def run_mode(mode: str, args) -> tuple[list[dict], dict]:
    with Server(args.slots if mode == "batched" else 1, args) as server:
        return run_counts(mode, server.url, args, {})


def print_table(records: list[dict]) -> None:
    print(f"\n{'mode':<11} {'slots':>5} {'clients':>7} {'reqs':>5} {'err':>4} {'503':>5} {'tok/s':>8} {'engine':>8} "
          f"{'busy':>5} {'p50 ms':>8} {'p99 ms':>8} {'ttft p50':>8} {'ttft p99':>8} {'rows/step':>9} {'server':>6} {'client':>6}")
    cell = lambda v: "-" if v is None else v
    for r in records:
        print(f"{r['mode']:<11} {cell(r['slots']):>5} {r['clients']:>7} {r['requests']:>5} {r['errors']:>4} {r['rejected_503']:>5} "
              f"{r['tok_per_s']:>8} {cell(r['engine_tok_per_s']):>8} {cell(r['engine_busy']):>5} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['ttft_p50_ms']:>8} {r['ttft_p99_ms']:>8} {cell(r['mean_rows_per_step']):>9} {cell(r['server_cpu']):>6} {r['client_cpu']:>6}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=client_counts, default=[64], help="concurrent streaming clients; a comma list runs each count in turn")
    p.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    p.add_argument("--max-tokens", type=int, default=64, help="reply length asked for (a random model may stop sooner)")
    p.add_argument("--slots", type=int, default=64, help="rows of the batched server")
    p.add_argument("--max-queue", type=int, default=32, help="the servers' queue (smaller than --clients: the one-at-a-time server answers some 503s)")
    p.add_argument("--modes", type=mode_list, default=["batched", "sequential"], help="servers to start: batched, sequential or both")
    p.add_argument("--time-limit", type=float, default=240, help="seconds per run at most; requests not done by then count as errors")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server (OMP_NUM_THREADS; default 1 for the tiny model, else unset)")
    p.add_argument("--device-type", default=None, help="the servers' device (default cpu for the tiny model; with --server-args, chat_web's own choice)")
    p.add_argument("--server-args", default=None, help="start chat_web with these arguments instead of --tiny-random (e.g. '--stage sft --device-type cuda')")
    p.add_argument("--server-log-dir", type=Path, default=None, help="keep each started server's output there (chat_web_slotsN.log) instead of a temporary file")
    p.add_argument("--url", default=None, help="drive this running server instead of starting one (mode 'external')")
    p.add_argument("--api-key", default=os.environ.get("NANOCHAT_API_KEY"), help="sent as 'Authorization: Bearer' (default $NANOCHAT_API_KEY)")
    p.add_argument("--client-procs", type=int, default=1, help="processes the clients are spread over (more when client_cpu nears 1)")
    p.add_argument("--warmup", type=int, default=4, help="requests through each server before timing")
    p.add_argument("--start-timeout", type=float, default=300, help="seconds for a started server to answer /health (a GPU server compiles first)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads is None and args.server_args is None: args.threads = 1

    if args.url:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        records, info = run_counts("external", args.url.rstrip("/"), args, headers)
    else:
        records, info = [], {}
        for mode in args.modes:
            more, info = run_mode(mode, args)
            records += more
    print_table(records)
    result = {"name": "serve_load", "date": date.today().isoformat(), "commit": git_commit()}
    by = {(r["mode"], r["clients"]): r for r in records}
    for r in records:
        if r["mode"] == "batched" and ("sequential", r["clients"]) in by:
            r["vs_sequential"] = round(r["tok_per_s"] / by["sequential", r["clients"]]["tok_per_s"], 2)
            print(f"{r['clients']} clients: batched / one at a time: {r['vs_sequential']}x the tokens per second")
    print()
    tiny = args.url is None and args.server_args is None
    devices = info.get("devices") or [args.device_type or "cpu"]
    result |= {"device": ",".join(devices), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if not args.url:
        import torch
        result["torch"] = torch.__version__
        if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available(): result["gpu"] = torch.cuda.get_device_name(0)
    result |= {"model": TINY_MODEL if tiny else info.get("model"), "max_tokens": args.max_tokens, "requests_per_client": args.requests,
               "max_queue": None if args.url else args.max_queue, "warmup": args.warmup, "records": records}
    if args.url: result["url"] = args.url
    if args.server_args: result["server_args"] = args.server_args
    ratios = [r["vs_sequential"] for r in records if "vs_sequential" in r]
    if len(ratios) == 1: result["batched_over_sequential"] = ratios[0]
    save_result(result, args.out)
    if any(r["errors"] for r in records): sys.exit("errors other than 503: see error_samples")
    return result


if __name__ == "__main__":
    main()
