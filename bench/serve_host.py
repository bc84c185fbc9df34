"""The host's cost of serving, with no model: how much of a GPU's decode rate the HTTP path lets through.

`bench/stand_in_server.py` serves a scripted engine whose decode step only sleeps (the GIL free meanwhile, as while a
GPU computes) for a fixed time whatever the rows; `bench/serve_load.py --url` drives it with streaming clients. The
engine could give at most `clients / step` tokens a second; what the clients get, as a share of that, is what the
server's Python (the worker handing out tokens, the event loop writing them, both under one GIL) lets through. Each
configuration is one server start; `--stream-intervals` compares writes at every step with writes gathered over a
few milliseconds (`chat_web --stream-interval-ms`), `--gil-switch-ms` the GIL's switch interval.

The default step times are a d20 model's on an H200 (`infer_bench`: 1.3 ms at 32 rows, 2.1 ms at 128).

    python bench/serve_host.py                                          # 32 and 128 clients, intervals 0 and 20 ms
    python bench/serve_host.py --stream-intervals 0,5,10,20 --repeats 2 --client-procs 2

Prints a table and one JSON line, saved as bench/results/serve_host-DATE.json (or --out).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from record import git_commit, save_result
from serve_load import ROOT, free_port


def numbers(kind):
    def parse(text: str) -> list:
        try: values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError: raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
        if not values or min(values) < 0: raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
        return values
    return parse


def start_server(step_ms: float, interval_ms: float, args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "stand_in_server.py", "--port", str(port), "--step-ms", str(step_ms),
               "--slots", str(args.slots), "--max-queue", str(args.slots), "--stream-interval-ms", str(interval_ms),
               "--gil-switch-ms", str(args.gil_switch_ms)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(command, cwd=ROOT / "bench", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise RuntimeError(f"the stand-in server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200: return proc, url
        except httpx.HTTPError: pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the stand-in server did not answer /health within 60 s")


def drive(url: str, clients: int, args) -> dict:
    "One serve_load run against `url`; its record."
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        subprocess.run([sys.executable, "serve_load.py", "--url", url, "--clients", str(clients), "--requests",
                        str(args.requests), "--max-tokens", str(args.max_tokens), "--client-procs", str(args.client_procs),
                        "--warmup", "8", "--out", str(out)], cwd=ROOT / "bench", check=True, capture_output=True)
        return json.loads(out.read_text())["records"][0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=numbers(int), default=[32, 128], help="concurrent streaming clients, a comma list")
    p.add_argument("--step-ms", type=numbers(float), default=[1.3, 2.1],
                   help="the engine's step for each client count (one value: the same for all)")
    p.add_argument("--stream-intervals", type=numbers(float), default=[0.0, 20.0], help="ms between a reply's writes")
    p.add_argument("--gil-switch-ms", type=float, default=0.5, help="the server's GIL switch interval")
    p.add_argument("--slots", type=int, default=128)
    p.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="runs of each configuration, interleaved")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if len(args.step_ms) not in (1, len(args.clients)): p.error("--step-ms takes one value or one per client count")
    if max(args.clients) > args.slots: p.error(f"--slots ({args.slots}) must hold every client ({max(args.clients)})")
    steps = args.step_ms * len(args.clients) if len(args.step_ms) == 1 else args.step_ms

    records = []
    print(f"{'clients':>7} {'step ms':>7} {'interval':>8} {'tok/s':>8} {'ideal':>8} {'share':>6} {'rows/step':>9} "
          f"{'step ms seen':>12} {'p99 ms':>7} {'ttft p50':>8} {'errors':>6}")
    for _ in range(args.repeats):
        for clients, step_ms in zip(args.clients, steps):
            for interval in args.stream_intervals:
                proc, url = start_server(step_ms, interval, args)
                try: load = drive(url, clients, args)
                finally: proc.terminate(); proc.wait(10)
                ideal = clients / (step_ms / 1000)
                r = {"kind": "serve", "engine": "scripted", "clients": clients, "slots": args.slots, "step_ms": step_ms,
                     "stream_interval_ms": interval, "gil_switch_ms": args.gil_switch_ms, "tok_per_s": load["tok_per_s"],
                     "ideal_tok_per_s": round(ideal, 1), "share_of_ideal": round(load["tok_per_s"] / ideal, 3),
                     "engine_tok_per_s": load.get("engine_tok_per_s"), "rows_per_step": load.get("mean_rows_per_step"),
                     "step_ms_seen": load.get("step_ms"), "p99_ms": load.get("p99_ms"),
                     "ttft_p50_ms": load.get("ttft_p50_ms"), "errors": load["errors"],
                     "server_cpu": load.get("server_cpu"), "client_cpu": load.get("client_cpu")}
                records.append(r)
                print(f"{clients:>7} {step_ms:>7} {interval:>8} {r['tok_per_s']:>8,.0f} {ideal:>8,.0f} "
                      f"{r['share_of_ideal']:>6.2f} {r['rows_per_step'] or 0:>9.1f} {r['step_ms_seen'] or 0:>12.2f} "
                      f"{r['p99_ms'] or 0:>7.0f} {r['ttft_p50_ms'] or 0:>8.0f} {r['errors']:>6}", flush=True)
    save_result({"name": "serve_host", "date": str(date.today()), "cpu": platform.machine(), "cpus": os.cpu_count(),
                 "gpu": None, "commit": git_commit(), "records": records}, args.out)


if __name__ == "__main__":
    main()
