"""Time the CPU speedrun (`runs/cpu.sh`) from a fresh, empty base folder: total and per-stage wall time, and whether
its report is complete.

    python bench/cpu_run.py                   # the `cpu` profile; the target is 10 minutes on 2 cores
    python bench/cpu_run.py --profile tiny    # a quick check of the machinery

Prints a table and one JSON line, saved as bench/results/cpu_run-DATE.json (or --out). The run's report.md and
plots are copied next to it (bench/results/cpu_run-DATE/).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from record import git_commit, save_result

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r"== \[\s*(\d+)s\] (.+?)\x1b")
SECTIONS = ("## System", "## Tokenizer training", "## Base model training", "## Base model evaluation", "## Midtraining",
            "## Chat evaluation (mid)", "## Chat SFT", "## Chat evaluation (SFT)", "## Report card", "## Plots")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def machine_speed(threads: int | None = None) -> dict:
    """A few seconds of calibration of this machine, recorded with each run: fp32 matmul GFLOP/s on the run's threads and a
    pure-Python loop. A machine's speed varies from day to day; these say whether a slower run is the code or the machine."""
    code = """
import json, time, torch
x = torch.randn(1024, 1024)
for _ in range(3): x @ x
start = time.perf_counter()
for _ in range(40): x @ x
matmul = 40 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9
start = time.perf_counter()
sum(i * i for i in range(10_000_000))
print(json.dumps({"matmul_gflops": round(matmul), "python_loop_s": round(time.perf_counter() - start, 2)}))
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or os.cpu_count()))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {}


def measure_rates(base: str, num_gsm8k: int) -> dict:
    "chat_format_rates (chapter 17) of the run's mid and SFT models, in a child process with the run's base folder."
    code = f"""
import json
from nanochat.checkpoint import load_gpt
from nanochat.checkpoint import find_run
from nanochat.scripts.mid_train import chat_format_rates
from nanochat.tokenizer import load_tokenizer
out = {{}}
for stage in ("mid", "sft"):
    model, _ = load_gpt(find_run(stage, None), None, "cpu")
    out[stage] = chat_format_rates(model, load_tokenizer(), num_gsm8k={num_gsm8k})
print("RATES" + json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NANOCHAT_BASE_DIR=base), capture_output=True, text=True)
    if run.returncode: raise SystemExit(f"measuring the format rates failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.split("RATES", 1)[1])


def update_assets(rates: dict) -> None:
    "Chapter 17's and 18's stored measurements: the mid model's and the mid -> SFT model's rates from this run."
    assets = ROOT / "nbs" / "assets"
    for name, key, stage in (("mid_format_rates.json", "mid", "mid"), ("sft_format_rates.json", "mid → SFT", "sft")):
        path = assets / name
        stored = json.loads(path.read_text()) if path.exists() else {}
        stored[key] = rates[stage] | {"measured": f"bench/cpu_run.py, {date.today().isoformat()}"}
        path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", choices=["tiny", "cpu"])
    p.add_argument("--budget-s", type=float, default=600.0, help="the time the run should fit in")
    p.add_argument("--rates", type=int, default=50, help="GSM8K prompts for the chat-format rates of mid and SFT (0: skip)")
    p.add_argument("--update-assets", action="store_true", help="write the measured rates into nbs/assets/ (chapters 17, 18)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    speed = machine_speed()
    with tempfile.TemporaryDirectory() as base:
        env = dict(os.environ, NANOCHAT_BASE_DIR=base, NANOCHAT_PROFILE=args.profile, PYTHON=sys.executable)
        start = time.perf_counter()
        run = subprocess.run(["bash", str(ROOT / "runs" / "cpu.sh")], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        log = run.stdout + run.stderr
        if run.returncode: raise SystemExit(f"runs/cpu.sh failed ({run.returncode}):\n{log[-4000:]}")
        marks = [(int(s), name) for s, name in STEP.findall(log)]
        stages = [{"kind": "stage", "stage": name.split(":")[0].split(" (")[0], "seconds": later - s}
                  for (s, name), (later, _) in zip(marks, marks[1:])]
        report = (Path(base) / "report" / "report.md").read_text()
        missing = [s for s in SECTIONS if s not in report]
        folder = (args.out.parent if args.out else ROOT / "bench" / "results") / f"cpu_run-{date.today().isoformat()}"
        if args.profile == "cpu":  # keep the real run's report and plots
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(Path(base) / "report", folder, ignore=shutil.ignore_patterns("*.json"))
        rates = measure_rates(base, args.rates) if args.rates else {}
    answer = ANSI.sub("", log.rsplit("one answer", 1)[-1].split("== [")[0]).strip()[-500:]
    print(f"{'stage':<60} {'seconds':>8}")
    for s in stages: print(f"{s['stage']:<60} {s['seconds']:>8}")
    print(f"{'total':<60} {seconds:>8.0f}   (budget {args.budget_s:.0f} s: {'within' if seconds <= args.budget_s else 'OVER'})")
    print(f"report sections missing: {missing or 'none'}\nanswer: {answer!r}")
    print(f"machine: {speed.get('matmul_gflops', '?')} GFLOP/s fp32 matmul, {speed.get('python_loop_s', '?')} s Python loop")
    for stage, r in rates.items():
        print(f"{stage}: ends with <|assistant_end|> {r['end_rate']:.0%}, calculator call on GSM8K {r['calculator_rate']:.0%}, "
              f"GSM8K accuracy {r['gsm8k_accuracy']:.0%}")
    if args.update_assets and rates: update_assets(rates)
    stages += [{"kind": "format_rates", "stage": stage, **{k: v for k, v in r.items() if k != "samples"}} for stage, r in rates.items()]
    result = {"name": "cpu_run", "date": date.today().isoformat(), "cpu": f"{os.cpu_count()} cores", "commit": git_commit(),
              "records": [{"kind": "cpu_run", "profile": args.profile, "seconds": round(seconds, 1), "budget_s": args.budget_s,
                           "within_budget": seconds <= args.budget_s, "report_sections_missing": len(missing), **speed}, *stages]}
    save_result(result, args.out or (ROOT / "bench" / "results" / f"cpu_run-{result['date']}.json" if args.profile == "cpu"
                                     else Path(tempfile.gettempdir()) / "cpu_run-tiny.json"))


if __name__ == "__main__":
    main()
