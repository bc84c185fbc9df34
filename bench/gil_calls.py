"""What a torch call costs a server's worker thread while another thread holds the GIL.

PyTorch lets go of the GIL inside each operator it dispatches; a thread that wants it back waits until the holder
lets go, at most Python's switch interval (`sys.setswitchinterval`; `chat_web --gil-switch-ms`). In a server the
holder is the event loop writing to the clients, so every torch call the worker makes between two steps can cost it
a switch interval. This times, with a second thread spinning in Python (an event loop that never blocks, the worst
case), at several switch intervals:

- `python`: the same amount of pure Python, which lets go of the GIL only when the interval forces it;
- `calls_N`: N small indexed writes into a CPU tensor (the old admission wrote each field of its rows apart: 12 calls);
- `admit`: `DecodeBatch._admit` of 4 rows and their release, on a tiny CPU model (the current code: 4 calls to admit).

    python bench/gil_calls.py [--switch-ms 5,0.5,0.1] [--repeats 200]

Prints a table and one JSON line, saved as bench/results/gil_calls-DATE.json (or --out).
"""
import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from record import args_config, result_header, save_result

from nanochat.engine import DecodeBatch, SamplingParams, _Row
from nanochat.gpt import GPT, GPTConfig


class Spinner:
    "A thread that runs Python without pause (holding the GIL whenever it may) while the `with` block runs."
    def __enter__(self):
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def _spin(self):
        n = 0
        while self.running: n += 1

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def timed(fn, repeats: int) -> tuple[float, float]:
    "Mean and 90th percentile of `fn`'s wall time, in ms (the mean: a wait that comes one round in ten still counts)."
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.fmean(times), times[int(0.9 * (len(times) - 1))]


def workloads() -> dict:
    "Name -> a function doing one round of that work."
    target, index, values = torch.zeros(128, dtype=torch.long), torch.arange(4), torch.ones(4, dtype=torch.long)

    def calls(n):
        def run():
            for _ in range(n): target[index] = values
        return run

    def python():
        total = 0
        for i in range(2000): total += i

    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=256, n_layer=1, n_head=2, n_kv_head=2, n_embd=32))
    batch, prompts = DecodeBatch(model, slots=8, max_len=64), [[1, 2, 3]] * 4
    batch.add_many(prompts)  # once outside the timing: the prefill
    for slot in batch.busy: batch.release(slot)
    def admit():
        rows = [_Row(SamplingParams(), 2, 3, prev=2) for _ in prompts]
        batch._admit([0, 1, 2, 3], rows)
        for slot in range(4): batch.release(slot)

    return {"python": python, "calls_4": calls(4), "calls_12": calls(12), "admit": admit}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switch-ms", default="5,0.5,0.1", help="switch intervals to try, comma-separated (ms)")
    ap.add_argument("--repeats", type=int, default=200, help="rounds timed per workload and interval")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    intervals = [float(s) for s in args.switch_ms.split(",")]
    if any(s <= 0 for s in intervals): ap.error("--switch-ms: intervals must be > 0")
    torch.set_num_threads(1)
    work, records, before = workloads(), [], sys.getswitchinterval()
    alone = {name: timed(fn, args.repeats)[0] for name, fn in work.items()}
    print(f"{'switch ms':>9} {'workload':>9} {'alone ms':>9} {'busy mean':>9} {'busy p90':>9}")
    try:
        for interval in intervals:
            sys.setswitchinterval(interval / 1000)
            with Spinner():
                for name, fn in work.items():
                    busy, busy90 = timed(fn, args.repeats)
                    records.append({"kind": "gil_calls", "switch_ms": interval, "workload": name,
                                    "alone_ms": round(alone[name], 4), "busy_mean_ms": round(busy, 4),
                                    "busy_p90_ms": round(busy90, 4)})
                    print(f"{interval:>9} {name:>9} {alone[name]:>9.3f} {busy:>9.3f} {busy90:>9.3f}")
    finally: sys.setswitchinterval(before)
    save_result(result_header("gil_calls", "cpu") | {"config": args_config(args, "out"), "records": records}, args.out)


if __name__ == "__main__":
    main()
