"""Stress, soak and faults: what a chat server does when it is pushed, left running, and mistreated.

Three checks, against a running server (`--url`, any host) or one this script starts on 127.0.0.1 (`chat_web
--tiny-random` on the CPU, `chat_web` with `--server-args` such as a checkpoint on a GPU, or the scripted stand-in
engine for the faults that need a step that fails):

- **stress**: `--clients` streaming requests sent at once (1,000 by default). Refusals the server means (503 when its
  queue is full, 429 over a rate limit) are counted apart; anything else (another status, a broken stream, a timeout)
  is an error. Reported: latency and time-to-first-token percentiles of the served requests.
- **soak**: `--soak-clients` clients sending requests of mixed sizes back to back for `--minutes`; every
  `--sample-s` seconds the server's resident memory and open file descriptors are read from its `/metrics`, and its
  GPU memory (allocated, reserved by the allocator, peak allocated) where the server exports it (a model on CUDA). A
  leak is a trend: the growth from the first third of the samples to the last (all taken under load, the ramp-up
  excluded) must stay under `--rss-tolerance-mb` and, for each GPU figure present, `--gpu-tolerance-mb`. Open files
  rise and fall with the connections in flight, so they are compared at rest: before the soak and once its clients
  have hung up, the difference under `--fd-tolerance`.
- **faults**: clients that disconnect mid-stream, a reader that sleeps between events, a burst larger than the slots
  and the queue together, and (with the stand-in engine, or a server started with a failing step) a step that raises.
  Afterwards every row must be free and a plain request must be answered.

    python bench/serve_stress.py                                      # all three, short, on the CPU (~1 minute)
    python bench/serve_stress.py --checks stress --clients 1000
    python bench/serve_stress.py --checks soak --minutes 30 --out bench/results/serve_soak-DATE.json
    python bench/serve_stress.py --url http://gpu-box:8000 --checks stress,soak --api-key "$KEY"

Prints a table and one JSON line, saved as bench/results/serve_stress-DATE.json (or --out).
"""
import argparse
import asyncio
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
from record import git_commit, save_result
from serve_load import ROOT, free_port, percentile, read_stream, request_body, server_metrics

CHECKS = ("stress", "soak", "faults")


class Started:
    "A server process on a free port of 127.0.0.1 (`command` gets `--port`), stopped on exit; `url` once it answers."
    def __init__(self, command: list[str], timeout: float = 120, log: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log = open(log or os.devnull, "w")  # `log`: keep the server's output there
        self.proc = subprocess.Popen([*command, "--port", str(self.port)], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200: return
            except httpx.HTTPError: pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"the server did not start: {' '.join(command)}")

    def close(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill()
        self.log.close()


def chat_web_server(slots: int, max_queue: int, model: list[str] | None = None, log: str | None = None) -> Started:
    """chat_web serving `model` (its command-line arguments; default: the tiny random model on the CPU). A checkpoint's
    server gets 300 s to answer: on a GPU it compiles and captures its graphs before it opens."""
    command = [sys.executable, "-m", "nanochat.scripts.chat_web", *(model or ["--tiny-random", "--device-type", "cpu"]),
               "--slots", str(slots), "--max-queue", str(max_queue), "--log-level", "warning"]
    return Started(command, timeout=300 if model else 120, log=log)


def stand_in_server(slots: int, max_queue: int, fail_every: int) -> Started:
    return Started([sys.executable, str(ROOT / "bench/stand_in_server.py"), "--step-ms", "2", "--slots", str(slots),
                    "--max-queue", str(max_queue), "--fail-every", str(fail_every)])


async def stream_once(client: httpx.AsyncClient, url: str, body: dict, outcome: dict) -> None:
    "One streaming request; its outcome counted: served (with latency and TTFT), refused (503/429), or an error."
    start = time.perf_counter()
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code in (429, 503):
                await r.aread()
                outcome[f"refused_{r.status_code}"] += 1
                if "retry-after" not in r.headers: outcome["errors"] += 1; outcome["samples"].append("no Retry-After")
                return
            if r.status_code != 200:
                outcome["errors"] += 1; outcome["samples"].append(f"{r.status_code} {(await r.aread())[:160]!r}"); return
            first, usage = await read_stream(r)
    except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
        outcome["errors"] += 1; outcome["samples"].append(repr(e)[:160]); return
    end = time.perf_counter()
    outcome["served"] += 1
    outcome["tokens"] += usage["completion_tokens"]
    outcome["latency"].append(end - start)
    outcome["ttft"].append((first or end) - start)


def new_outcome() -> dict:
    return {"served": 0, "refused_503": 0, "refused_429": 0, "errors": 0, "tokens": 0, "latency": [], "ttft": [],
            "samples": []}


def client_for(n: int, headers: dict, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30), headers=headers,
                             limits=httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8))


async def stress(url: str, clients: int, max_tokens: int, headers: dict, timeout: float) -> dict:
    "`clients` streaming requests at once."
    outcome, start = new_outcome(), time.perf_counter()
    async with client_for(clients, headers, timeout) as client:
        await asyncio.gather(*(stream_once(client, url, request_body(f"stress {i}", i, max_tokens), outcome)
                               for i in range(clients)))
    wall = time.perf_counter() - start
    ms = lambda xs, q: round(1000 * percentile(xs, q), 1)
    return {"kind": "stress", "clients": clients, "max_tokens": max_tokens, "served": outcome["served"],
            "refused_503": outcome["refused_503"], "refused_429": outcome["refused_429"], "errors": outcome["errors"],
            "wall_s": round(wall, 2), "tok_per_s": round(outcome["tokens"] / wall, 1),
            **{f"p{q}_ms": ms(outcome["latency"], q) for q in (50, 95, 99)},
            **{f"ttft_p{q}_ms": ms(outcome["ttft"], q) for q in (50, 95, 99)}, "error_samples": outcome["samples"][:3]}


GPU_FIGURES = ("allocated", "reserved", "max_allocated")  # the server's nanochat_gpu_<figure>_bytes, all devices summed


def process_figures(url: str, headers: dict) -> dict:
    "One sample of the server's memory and open files; a figure the server does not export is NaN (GPU on a CPU)."
    m = server_metrics(url, headers)
    return {"rss_mb": m.get("process_resident_memory_bytes", float("nan")) / 2**20,
            "fds": m.get("process_open_fds", float("nan")),
            **{f"gpu_{f}_mb": m.get(f"nanochat_gpu_{f}_bytes", float("nan")) / 2**20 for f in GPU_FIGURES}}


def trend(samples: list[dict], key: str) -> float:
    "Growth from the first third of the samples to the last third (means), robust to one noisy sample."
    values = [s[key] for s in samples if s[key] == s[key]]  # NaN: not exported
    if len(values) < 3: return float("nan")
    third = max(1, len(values) // 3)
    return sum(values[-third:]) / third - sum(values[:third]) / third


async def fds_at_rest(url: str, headers: dict, baseline: float, settle_s: float = 5.0) -> float:
    "The server's open files once the clients' sockets have closed: polled until back to `baseline` or `settle_s`."
    deadline = time.monotonic() + settle_s
    while True:
        fds = process_figures(url, headers)["fds"]
        if not fds > baseline or time.monotonic() >= deadline: return fds  # NaN (not exported) returns at once
        await asyncio.sleep(0.2)


async def soak(url: str, clients: int, minutes: float, sample_s: float, headers: dict, timeout: float) -> tuple[dict, list]:
    "Clients sending mixed requests back to back for `minutes`, the server's memory and descriptors sampled."
    outcome, samples, end = new_outcome(), [], time.monotonic() + 60 * minutes
    rng = random.Random(0)

    async def one_client(i: int, client: httpx.AsyncClient):
        j = 0
        while time.monotonic() < end:
            body = request_body(f"soak {i} " + "word " * rng.choice((1, 20, 100)), i * 100_000 + j, rng.choice((4, 32, 128)))
            await stream_once(client, url, body, outcome)
            j += 1

    async def sampler():  # the first sample one interval in: the clients are connected and the load is steady
        while True:
            await asyncio.sleep(min(sample_s, max(0.0, end - time.monotonic())))
            samples.append({"t": round(time.monotonic() - (end - 60 * minutes), 1), **process_figures(url, headers)})
            if time.monotonic() >= end: return

    fds_before = process_figures(url, headers)["fds"]
    async with client_for(clients, headers, timeout) as client:
        await asyncio.gather(sampler(), *(one_client(i, client) for i in range(clients)))
    fds_after = await fds_at_rest(url, headers, fds_before)
    record = {"kind": "soak", "clients": clients, "minutes": minutes, "served": outcome["served"],
              "errors": outcome["errors"], "refused_503": outcome["refused_503"], "samples": len(samples),
              "rss_mb_first": round(samples[0]["rss_mb"], 1), "rss_mb_last": round(samples[-1]["rss_mb"], 1),
              "rss_growth_mb": round(trend(samples, "rss_mb"), 1), "fds_before": fds_before, "fds_after": fds_after,
              "fd_growth": fds_after - fds_before,
              **{f"gpu_{f}_growth_mb": round(trend(samples, f"gpu_{f}_mb"), 1) for f in GPU_FIGURES},
              "error_samples": outcome["samples"][:3]}
    return record, samples


def rows_busy(url: str, headers: dict) -> int:
    return sum(w["active"] for w in httpx.get(url + "/health", headers=headers, timeout=10).json()["workers"])


def wait_idle(url: str, headers: dict, timeout: float = 30) -> bool:
    "Whether every row of the server is free within `timeout` seconds."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows_busy(url, headers) == 0: return True
        time.sleep(0.2)
    return False


def plain_request_works(url: str, headers: dict) -> bool:
    r = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=60,
                   json={**request_body("after", 1, 8), "stream": False})
    return r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


async def disconnects(url: str, clients: int, headers: dict, timeout: float) -> dict:
    "Clients that read two events of a long reply and hang up."
    async def hang_up(client, i):
        async with client.stream("POST", url + "/v1/chat/completions", json=request_body(f"gone {i}", i, 4000)) as r:
            n = 0
            async for line in r.aiter_lines():
                n += line.startswith("data: ")
                if n >= 2: break  # leaving the block closes the connection mid-stream
    async with client_for(clients, headers, timeout) as client:
        await asyncio.gather(*(hang_up(client, i) for i in range(clients)))
    return {"fault": "disconnect mid-stream", "clients": clients}


async def slow_reader(url: str, headers: dict, timeout: float) -> dict:
    "One reader that sleeps between events while others are served; its reply must still arrive whole."
    outcome = new_outcome()
    async with client_for(8, headers, timeout) as client:
        async def sleepy():
            async with client.stream("POST", url + "/v1/chat/completions", json=request_body("slow", 7, 48)) as r:
                events = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: "): events += 1; await asyncio.sleep(0.02)
                return events
        events, _ = await asyncio.gather(sleepy(), asyncio.gather(*(stream_once(
            client, url, request_body(f"fast {i}", i, 32), outcome) for i in range(6))))
    return {"fault": "slow reader", "events": events, "others_served": outcome["served"], "errors": outcome["errors"]}


async def burst(url: str, n: int, headers: dict, timeout: float) -> dict:
    "More requests at once than rows and queue together: the excess must be refused with 503 and Retry-After."
    outcome = new_outcome()
    async with client_for(n, headers, timeout) as client:
        # long replies: the rows stay busy while the rest arrive
        await asyncio.gather(*(stream_once(client, url, request_body(f"burst {i}", i, 256), outcome) for i in range(n)))
    return {"fault": "full queue", "clients": n, "served": outcome["served"], "refused_503": outcome["refused_503"],
            "errors": outcome["errors"], "error_samples": outcome["samples"][:3]}


async def failing_steps(url: str, n: int, headers: dict, timeout: float) -> dict:
    "Requests through a server whose steps fail now and then: each ends (with its error or its reply), none hangs."
    outcome = new_outcome()
    async with client_for(n, headers, timeout) as client:
        await asyncio.wait_for(asyncio.gather(*(stream_once(client, url, request_body(f"fail {i}", i, 32), outcome)
                                                for i in range(n))), timeout)
    return {"fault": "a step raises", "clients": n, "served": outcome["served"], "failed_cleanly": outcome["errors"]}


def fault_records(url: str, headers: dict, slots: int, max_queue: int, timeout: float) -> list[dict]:
    "Disconnects, a slow reader and a burst past the queue, each followed by: are the rows free, does it still answer?"
    records = []
    for run in (lambda: disconnects(url, 16, headers, timeout), lambda: slow_reader(url, headers, timeout),
                lambda: burst(url, 2 * (slots + max_queue), headers, timeout)):
        record = asyncio.run(run())
        record["rows_freed"] = wait_idle(url, headers)
        record["then_serves"] = plain_request_works(url, headers)
        record["kind"] = "fault"
        records.append(record)
    return records


def step_fault_record(slots: int, timeout: float) -> dict:
    "The stand-in engine with a step that raises every 100 steps: the requests in it fail cleanly, the server goes on."
    server = stand_in_server(slots, 64, fail_every=100)
    try:
        record = asyncio.run(failing_steps(server.url, 24, {}, timeout))
        record.update(kind="fault", rows_freed=wait_idle(server.url, {}), then_serves=True)
        health = httpx.get(server.url + "/health", timeout=10)
        record["health"] = health.status_code
    finally: server.close()
    return record


def verdicts(records: list[dict], args) -> list[str]:
    "What went wrong, in words: empty when every check passed."
    bad = []
    for r in records:
        if r["kind"] == "stress" and r["errors"]: bad.append(f"stress: {r['errors']} errors, e.g. {r['error_samples']}")
        if r["kind"] == "soak":
            if r["errors"]: bad.append(f"soak: {r['errors']} errors, e.g. {r['error_samples']}")
            if r["rss_growth_mb"] > args.rss_tolerance_mb: bad.append(f"soak: memory grew {r['rss_growth_mb']} MB")
            if r["fd_growth"] > args.fd_tolerance: bad.append(f"soak: {r['fd_growth']} more open files")
            for f in GPU_FIGURES:  # NaN (not exported: a CPU server) compares False
                if r.get(f"gpu_{f}_growth_mb", float("nan")) > args.gpu_tolerance_mb:
                    bad.append(f"soak: GPU memory ({f}) grew {r[f'gpu_{f}_growth_mb']} MB")
        if r["kind"] == "fault":
            if not (r.get("rows_freed") and r.get("then_serves")): bad.append(f"{r['fault']}: rows not freed or no answer")
            if r["fault"] in ("full queue", "slow reader") and r.get("errors"): bad.append(f"{r['fault']}: errors")
            if r["fault"] == "full queue" and not r["refused_503"]: bad.append("full queue: nothing was refused")
            if r["fault"] == "a step raises" and r["served"] + r["failed_cleanly"] != r["clients"]:
                bad.append("a step raises: some requests never ended")
    return bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", default="stress,soak,faults", help="which: stress, soak, faults (comma-separated)")
    p.add_argument("--url", help="a running server (default: start chat_web --tiny-random on the CPU)")
    p.add_argument("--server-args", help="start chat_web with these arguments instead of --tiny-random "
                   "(e.g. '--stage sft --device-type cuda')")
    p.add_argument("--server-log", help="keep a started server's output in this file")
    p.add_argument("--api-key", default=os.environ.get("NANOCHAT_API_KEY"), help="sent as a Bearer key")
    p.add_argument("--clients", type=int, default=1000, help="stress: requests sent at once")
    p.add_argument("--max-tokens", type=int, default=16, help="stress: reply length")
    p.add_argument("--slots", type=int, default=64, help="rows of a started server")
    p.add_argument("--max-queue", type=int, default=256, help="queue of a started server")
    p.add_argument("--minutes", type=float, default=0.5, help="soak: how long")
    p.add_argument("--soak-clients", type=int, default=16)
    p.add_argument("--sample-s", type=float, default=10.0, help="soak: seconds between samples of memory and files")
    p.add_argument("--rss-tolerance-mb", type=float, default=50.0, help="soak: memory growth that fails the check")
    p.add_argument("--fd-tolerance", type=float, default=8.0, help="soak: open-file growth that fails the check")
    p.add_argument("--gpu-tolerance-mb", type=float, default=64.0,
                   help="soak: growth of GPU memory (allocated, reserved or peak) that fails the check")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds any one request may take")
    p.add_argument("--out", help="where to save the JSON (default bench/results/serve_stress-DATE.json)")
    args = p.parse_args(argv)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    if not checks or any(c not in CHECKS for c in checks):
        p.error(f"--checks takes {', '.join(CHECKS)} (comma-separated), got {args.checks!r}")
    if args.clients < 1 or args.minutes <= 0 or args.sample_s <= 0: p.error("--clients, --minutes and --sample-s must be positive")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    model = shlex.split(args.server_args) if args.server_args else None
    server = None if args.url else chat_web_server(args.slots, args.max_queue, model, args.server_log)
    url = args.url or server.url
    records, samples = [], []
    try:
        if "stress" in checks:
            records.append(asyncio.run(stress(url, args.clients, args.max_tokens, headers, args.timeout)))
            records[-1].update(rows_freed=wait_idle(url, headers), then_serves=plain_request_works(url, headers))
        if "soak" in checks:
            record, samples = asyncio.run(soak(url, args.soak_clients, args.minutes, args.sample_s, headers, args.timeout))
            records.append(record)
        if "faults" in checks:
            records += fault_records(url, headers, args.slots, args.max_queue, args.timeout)
    finally:
        if server: server.close()
    if "faults" in checks and not args.url: records.append(step_fault_record(8, args.timeout))
    for r in records:
        print(json.dumps({k: v for k, v in r.items() if k != "error_samples"}))
    bad = verdicts(records, args)
    print("\n".join(f"FAILED {b}" for b in bad) if bad else "every check passed")
    result = {"name": "serve_stress", "date": date.today().isoformat(), "commit": git_commit(),
              "cpu": platform.machine(), "cpus": os.cpu_count(), "gpu": os.environ.get("NANOCHAT_GPU"),
              "server": args.url or f"chat_web {args.server_args or '--tiny-random (cpu)'}", "records": records,
              "soak_samples": samples, "passed": not bad}
    save_result(result, Path(args.out) if args.out else None)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
