"""Does FP8 train as well as bf16? Short `base_train` runs on real text, identical but for `--fp8` (and, to size the
noise, a bf16 run with another seed), compared on validation bits per byte at every evaluation.

    python bench/fp8_quality.py --data SHARDS --tokenizer-dir TOK            # on a Hopper GPU (FP8 needs one)
    python bench/fp8_quality.py --depth 4 --steps 20 --variants bf16 bf16:seed=43 --device-batch-size 4 \\
        --max-seq-len 256 --total-batch-size 2048 --eval-tokens 4096 ...     # the machinery, on a CPU

Each variant is one `python -m nanochat.scripts.base_train` process in a fresh base folder. A variant is `bf16` or `fp8`,
optionally with `:seed=N`. Prints a table (val bpb per evaluation, and the gap to the first variant) and one JSON line,
saved as bench/results/fp8_quality-DATE.json (or --out). The verdict compares the FP8 gap with the seed gap: a
difference smaller than what another seed changes is no difference this run can see.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from record import git_commit, save_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nanochat.checkpoint import checkpoint_dir  # noqa: E402


def parse_variant(text: str) -> dict:
    "'fp8' or 'bf16:seed=43' -> {'name': text, 'fp8': bool, 'seed': int | None}; anything else is an error."
    precision, _, rest = text.partition(":")
    if precision not in ("bf16", "fp8"): raise argparse.ArgumentTypeError(f"variant {text!r}: precision must be bf16 or fp8")
    seed = None
    if rest:
        key, _, value = rest.partition("=")
        if key != "seed" or not value.isdigit(): raise argparse.ArgumentTypeError(f"variant {text!r}: the only option is seed=N")
        seed = int(value)
    return {"name": text, "fp8": precision == "fp8", "seed": seed}


def seed_of(variant: dict, args) -> int:
    "The variant's own seed, else the common one."
    return variant["seed"] if variant["seed"] is not None else args.seed


def train_command(args, variant: dict, tag: str) -> list[str]:
    "The base_train command line of one variant: everything equal across variants except precision and seed."
    command = [sys.executable, "-m", "nanochat.scripts.base_train", "--depth", str(args.depth),
               "--window-pattern", args.pattern, "--num-iterations", str(args.steps),
               "--total-batch-size", str(args.total_batch_size), "--device-batch-size", str(args.device_batch_size),
               "--max-seq-len", str(args.max_seq_len), "--eval-every", str(args.eval_every),
               "--eval-tokens", str(args.eval_tokens), "--sample-every", "-1", "--log-every", "50",
               "--model-tag", tag, "--seed", str(seed_of(variant, args)),
               "--fp8" if variant["fp8"] else "--no-fp8"]
    if args.data: command += ["--data", str(args.data)]
    if args.tokenizer_dir: command += ["--tokenizer-dir", str(args.tokenizer_dir)]
    return command + args.extra


def read_run(folder: Path) -> dict | None:
    """A run's evaluations {step: val_bpb}, its last smoothed training loss and its summary.json; a run cut short has
    no summary (`complete` False) but keeps the evaluations it made. None where it got to no evaluation at all."""
    metrics = folder / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    evals = {m["step"]: m["val_bpb"] for m in lines if "val_bpb" in m}
    if not evals: return None
    losses = [m["smooth_loss"] for m in lines if "smooth_loss" in m]
    complete = (folder / "summary.json").exists()
    summary = json.loads((folder / "summary.json").read_text()) if complete else {"steps": max(m["step"] for m in lines)}
    return {"evals": evals, "smooth_loss": losses[-1] if losses else None, "summary": summary, "complete": complete}


def runs_from_result(result: dict) -> dict[str, dict]:
    "Runs saved in an earlier fp8_quality JSON, in `read_run`'s shape, to compare new runs with (`--compare-with`)."
    runs = {}
    for r in result["records"]:
        run = runs.setdefault(r["variant"], {"evals": {}, "smooth_loss": None, "summary": {}, "seconds": None, "complete": True})
        if "val_bpb" in r: run["evals"][r["step"]] = r["val_bpb"]
        if "final_val_bpb" in r:
            run.update(smooth_loss=r["smooth_loss"], seconds=r["seconds"], complete=r.get("complete", True))
            run["summary"] = {"steps": r["step"], "unigram_bpb": r["unigram_bpb"], "tok_per_s": r["tok_per_s"], "mfu": r["mfu"]}
    return runs


def gaps(runs: dict[str, dict], baseline: str) -> dict[str, float]:
    """Each run's val bpb minus the baseline's (positive: worse than the baseline), at the last step both evaluated:
    the end, unless one of them was cut short."""
    base = runs[baseline]["evals"]
    out = {}
    for name, run in runs.items():
        common = set(run["evals"]) & set(base)
        if name != baseline and common: out[name] = round(run["evals"][max(common)] - base[max(common)], 4)
    return out


def verdict(gap_by_variant: dict[str, float], variants: list[dict]) -> str:
    "One sentence: the FP8 gap against the seed-to-seed gap of bf16 runs, where the run has both."
    fp8 = [gap_by_variant[v["name"]] for v in variants if v["fp8"] and v["name"] in gap_by_variant]
    seed = [abs(gap_by_variant[v["name"]]) for v in variants if not v["fp8"] and v["name"] in gap_by_variant]
    if not fp8: return "no FP8 run to judge"
    if not seed: return f"FP8 gap {fp8[0]:+.4f} bpb; no second bf16 seed to size the noise"
    inside = abs(fp8[0]) <= max(seed)
    return f"FP8 gap {fp8[0]:+.4f} bpb, seed gap {max(seed):.4f}: " + ("within the noise" if inside else "larger than the noise")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--pattern", default="SSSL", help="window pattern")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    p.add_argument("--total-batch-size", type=int, default=131072, help="tokens per optimizer step")
    p.add_argument("--device-batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=2048)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-tokens", type=int, default=1_048_576, help="validation tokens per evaluation")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", nargs="+", type=parse_variant, default=[parse_variant(v) for v in ("bf16", "fp8", "bf16:seed=43")],
                   help="runs to make; the first is the baseline the others are compared with")
    p.add_argument("--data", type=Path, default=None, help="folder of .parquet shards (the last one is validation)")
    p.add_argument("--tokenizer-dir", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep each run's log and metrics here (default: discarded)")
    p.add_argument("--compare-with", type=Path, default=None,
                   help="an earlier result of this bench (same steps and batch): its runs of these variants are reused, not rerun")
    p.add_argument("--run-timeout", type=float, default=None, help="seconds one run may take before it is stopped")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("extra", nargs="*", help="more base_train arguments, after --")
    args = p.parse_args()
    if len({v["name"] for v in args.variants}) != len(args.variants): p.error("--variants: each variant once")
    if args.steps < 1 or args.eval_every < 1: p.error("--steps and --eval-every must be positive")

    runs, base = {}, Path(tempfile.mkdtemp(prefix="fp8q-"))
    if args.compare_with:  # runs made before, with the same settings: only the variants not among them run now
        earlier = json.loads(args.compare_with.read_text())
        ran = {(r["depth"], r["pattern"]) for r in earlier["records"]}
        if (earlier["steps"], earlier["total_batch_size"]) != (args.steps, args.total_batch_size) or ran != {(args.depth, args.pattern)}:
            p.error(f"--compare-with: {args.compare_with} ran {earlier['steps']} steps of {earlier['total_batch_size']} tokens "
                    f"at {sorted(ran)}, not these settings")
        runs = {name: run for name, run in runs_from_result(earlier).items() if name in {v["name"] for v in args.variants}}
        print(f"from {args.compare_with}: {', '.join(runs) or 'no run of these variants'}")
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base), PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for i, variant in enumerate(args.variants):
        if variant["name"] in runs: continue
        tag = f"v{i}"
        start = time.perf_counter()
        try: run = subprocess.run(train_command(args, variant, tag), env=env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=args.run_timeout)
        except subprocess.TimeoutExpired as e:
            print(f"{variant['name']}: stopped after {args.run_timeout} s (--run-timeout)", file=sys.stderr)
            run = subprocess.CompletedProcess(e.cmd, -1, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"))
        seconds = time.perf_counter() - start
        folder = checkpoint_dir("base", tag, base)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / f"{tag}.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print(f"{variant['name']}: base_train failed (exit {run.returncode}):\n{(run.stdout + run.stderr)[-3000:]}", file=sys.stderr)
        result = read_run(folder)
        if result is None: continue
        runs[variant["name"]] = result | {"seconds": round(seconds, 1)}
        cut = "" if result["complete"] else f" (cut short at step {result['summary']['steps']})"
        print(f"{variant['name']}: {len(result['evals'])} evaluations in {seconds:.0f} s{cut}", flush=True)
        if args.out:  # what is done so far survives a kill of this process (the JSON line is printed once, at the end)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(build_result(args, runs)) + "\n")
    if args.variants[0]["name"] not in runs: sys.exit("fp8_quality: the baseline run failed; nothing to compare")

    baseline, names = args.variants[0]["name"], [v["name"] for v in args.variants if v["name"] in runs]
    gap_by_variant = gaps(runs, baseline)
    print(f"\nval bpb, d{args.depth} {args.pattern}, {args.steps} steps of {args.total_batch_size:,} tokens")
    print("| step | " + " | ".join(names) + " |\n| --- |" + " --- |" * len(names))
    for step in sorted(runs[baseline]["evals"]):
        print(f"| {step} | " + " | ".join(f"{runs[n]['evals'].get(step, float('nan')):.4f}" for n in names) + " |")
    print("| gap to " + baseline + " | - | " + " | ".join(f"{gap_by_variant.get(n, float('nan')):+.4f}" for n in names[1:]) + " |")
    print(verdict(gap_by_variant, args.variants))
    save_result(build_result(args, runs), args.out)


def build_result(args, runs: dict[str, dict]) -> dict:
    "The benchmark's JSON: one record per evaluation of each run, and one summary record per run (its gap, speed, time)."
    import torch
    gap_by_variant = gaps(runs, args.variants[0]["name"]) if args.variants[0]["name"] in runs else {}
    records = []
    for variant in args.variants:
        if variant["name"] not in runs: continue
        run, summary = runs[variant["name"]], runs[variant["name"]]["summary"]
        common = {"kind": "quality", "depth": args.depth, "pattern": args.pattern, "variant": variant["name"],
                  "fp8": variant["fp8"], "seed": seed_of(variant, args)}
        records += [common | {"step": step, "val_bpb": bpb} for step, bpb in sorted(run["evals"].items())]
        records.append(common | {"step": summary["steps"], "complete": run["complete"], "final_val_bpb": run["evals"][max(run["evals"])],
                                 "gap_bpb": gap_by_variant.get(variant["name"], 0.0), "smooth_loss": run["smooth_loss"],
                                 "unigram_bpb": summary.get("unigram_bpb"), "tok_per_s": summary.get("tok_per_s"),
                                 "mfu": summary.get("mfu"), "seconds": run["seconds"]})
    return {"name": "fp8_quality", "date": date.today().isoformat(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "commit": git_commit(),
            "torch": torch.__version__, "steps": args.steps, "total_batch_size": args.total_batch_size,
            "verdict": verdict(gap_by_variant, args.variants), "records": records}


if __name__ == "__main__": main()
