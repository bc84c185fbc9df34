"""Does our pretraining recipe learn as upstream's does? Our `base_train` and upstream nanochat's own
`scripts/base_train.py`, on the same shards and tokenizer, for the same steps, each from several seeds, compared on
validation bits per byte at every evaluation.

    python bench/recipe_vs_upstream.py --upstream DIR --data SHARDS --tokenizer-dir TOK               # on a GPU
    python bench/recipe_vs_upstream.py --upstream DIR --data SHARDS --tokenizer-dir TOK --device cpu \\
        --depth 2 --steps 6 --device-batch-size 2 --max-seq-len 128 --total-batch-size 512 --eval-every 3 \\
        --eval-tokens 1024                                                                        # the machinery, on a CPU
    python bench/recipe_vs_upstream.py --merge A.json B.json --out R.json --plot R.png            # join partial runs

Each run is one process in a fresh base folder. Ours: `python -m nanochat.scripts.base_train` with `--data` and
`--tokenizer-dir`. Upstream's: bench/parity/upstream_train.py (its script, unchanged, with the seed re-set after its
own `torch.manual_seed(42)`) under `--upstream-python`, with the tokenizer converted to its pickle and the shards
linked where it looks for them (bench/parity/upstream_env.py). Both sides get the same depth, steps, batch, sequence
length, window pattern and evaluation settings; learning rates, schedules and the rest are each side's defaults,
which is what is being compared.

The verdict: at every evaluation, the gap between the two sides' mean val bpb against the seed-to-seed spread (the
larger of the two sides' max - min). Prints a table and one JSON line (bench/results/recipe_vs_upstream-DATE.json or
--out); --plot draws the curves.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from record import git_commit, save_result

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
UPSTREAM_EVAL = re.compile(r"Step (\d+) \| Validation bpb: ([0-9.]+)")
UPSTREAM_TOKS = re.compile(r"tok/sec: ([0-9,]+)")


def common_args(args) -> dict[str, str]:
    "The settings both sides get, by meaning; each side spells them its own way below."
    return {"depth": args.depth, "steps": args.steps, "total_batch_size": args.total_batch_size,
            "device_batch_size": args.device_batch_size, "max_seq_len": args.max_seq_len, "pattern": args.pattern,
            "eval_every": args.eval_every, "eval_tokens": args.eval_tokens}


def ours_command(args, seed: int, tag: str) -> list[str]:
    c = common_args(args)
    return [sys.executable, "-m", "nanochat.scripts.base_train", "--depth", str(c["depth"]), "--window-pattern", c["pattern"],
            "--num-iterations", str(c["steps"]), "--total-batch-size", str(c["total_batch_size"]),
            "--device-batch-size", str(c["device_batch_size"]), "--max-seq-len", str(c["max_seq_len"]),
            "--eval-every", str(c["eval_every"]), "--eval-tokens", str(c["eval_tokens"]), "--sample-every", "-1",
            "--model-tag", tag, "--seed", str(seed), "--data", str(args.data), "--tokenizer-dir", str(args.tokenizer_dir),
            *(["--device-type", args.device] if args.device else [])]


def upstream_command(args, seed: int) -> list[str]:
    c = common_args(args)
    return [args.upstream_python, str(HERE / "parity" / "upstream_train.py"), "--upstream", str(args.upstream), "--seed", str(seed),
            "--", "--run", "dummy", "--depth", str(c["depth"]), "--window-pattern", c["pattern"],
            "--num-iterations", str(c["steps"]), "--total-batch-size", str(c["total_batch_size"]),
            "--device-batch-size", str(c["device_batch_size"]), "--max-seq-len", str(c["max_seq_len"]),
            "--eval-every", str(c["eval_every"]), "--eval-tokens", str(c["eval_tokens"]), "--core-metric-every", "-1",
            "--sample-every", "-1", *(["--device-type", args.device] if args.device else [])]


def prepare_upstream_base(args, base: Path) -> None:
    "Upstream's base folder: our tokenizer as its pickle, our shards (sorted; the last is validation) linked in."
    sys.path.insert(0, str(HERE / "parity"))
    from upstream_env import link_shards, write_upstream_tokenizer
    write_upstream_tokenizer(args.tokenizer_dir, base)
    link_shards(sorted(Path(args.data).glob("*.parquet")), base)


def our_run_folder(base: Path, tag: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from nanochat.checkpoint import checkpoint_dir
    return checkpoint_dir("base", tag, base)


def our_evals(base: Path, tag: str) -> dict[int, float]:
    "Val bpb by step from our run's metrics log."
    metrics = our_run_folder(base, tag) / "metrics.jsonl"
    if not metrics.exists(): return {}
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {m["step"]: m["val_bpb"] for m in lines if "val_bpb" in m}


def our_tok_per_s(base: Path, tag: str) -> int | None:
    "Training tok/s from our run's summary (None if the run did not finish)."
    summary = our_run_folder(base, tag) / "summary.json"
    return json.loads(summary.read_text()).get("tok_per_s") if summary.exists() else None


def upstream_evals(log: str) -> dict[int, float]:
    "Val bpb by step from upstream's printed log."
    return {int(s): float(v) for s, v in UPSTREAM_EVAL.findall(log)}


def run_one(args, side: str, seed: int, keep: Path | None) -> dict:
    "One training run; its evaluations, wall time and (for upstream) the last tok/s it printed."
    base = Path(tempfile.mkdtemp(prefix=f"recipe-{side}-"))
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base), PYTHONUNBUFFERED="1")
    if side == "ours":
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        command, cwd = ours_command(args, seed, f"s{seed}"), ROOT
    else:
        env.pop("PYTHONPATH", None)  # upstream's side must not see our package
        prepare_upstream_base(args, base)
        command, cwd = upstream_command(args, seed), base
    start = time.perf_counter()
    try: proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=args.run_timeout)
    except subprocess.TimeoutExpired as e:
        proc = subprocess.CompletedProcess(command, -1, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace"))
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        (keep / f"{side}-{seed}.log").write_text(log)
    evals = our_evals(base, f"s{seed}") if side == "ours" else upstream_evals(log)
    if proc.returncode != 0: print(f"{side} seed {seed}: exit {proc.returncode}\n{log[-3000:]}", file=sys.stderr)
    toks = UPSTREAM_TOKS.findall(log) if side == "upstream" else []
    rates = sorted(int(t.replace(",", "")) for t in toks[len(toks) // 2:])  # the second half: compiled and warm
    tok_per_s = our_tok_per_s(base, f"s{seed}") if side == "ours" else rates[len(rates) // 2] if rates else None
    return {"side": side, "seed": seed, "evals": evals, "seconds": round(seconds, 1), "ok": proc.returncode == 0, "tok_per_s": tok_per_s}


def compare(runs: list[dict]) -> list[dict]:
    "Per evaluation step both sides reached: each side's mean and spread, the gap, and whether it is inside the spread."
    rows, runs = [], [r for r in runs if r["evals"]]
    steps = sorted(set.intersection(*[set(r["evals"]) for r in runs])) if runs else []
    for step in steps:
        by = {side: [r["evals"][step] for r in runs if r["side"] == side] for side in ("ours", "upstream")}
        if not by["ours"] or not by["upstream"]: continue
        mean = {s: sum(v) / len(v) for s, v in by.items()}
        spread = max(max(v) - min(v) for v in by.values())
        gap = mean["ours"] - mean["upstream"]
        rows.append({"step": step, "ours": round(mean["ours"], 4), "upstream": round(mean["upstream"], 4),
                     "gap": round(gap, 4), "spread": round(spread, 4), "inside": abs(gap) <= spread})
    return rows


def build_result(args_dict: dict, runs: list[dict]) -> dict:
    import torch
    rows = compare(runs)
    final = rows[-1] if rows else None
    verdict = ("no step both sides evaluated" if final is None else
               f"final gap {final['gap']:+.4f} bpb vs seed spread {final['spread']:.4f}: "
               + ("inside" if final["inside"] else "outside") + f"; inside at {sum(r['inside'] for r in rows)} of {len(rows)} evaluations")
    records = [{"kind": "recipe", "side": r["side"], "seed": r["seed"], "step": s, "val_bpb": v, **args_dict}
               for r in runs for s, v in sorted(r["evals"].items())]
    records += [{"kind": "recipe_run", "side": r["side"], "seed": r["seed"], "seconds": r["seconds"], "ok": r["ok"],
                 "tok_per_s": r["tok_per_s"], "final_val_bpb": r["evals"][max(r["evals"])] if r["evals"] else None, **args_dict}
                for r in runs]
    records += [{"kind": "recipe_gap", **row, **args_dict} for row in rows]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"name": "recipe_vs_upstream", "date": date.today().isoformat(), **({"gpu": gpu} if gpu else {"cpu": f"{os.cpu_count()} cores"}),
            "commit": git_commit(), "upstream_commit": args_dict.get("upstream_commit"), "verdict": verdict, "records": records}


def runs_from_result(result: dict) -> list[dict]:
    "The runs stored in a result file, in run_one's shape (to merge partial results)."
    runs = {}
    for r in result["records"]:
        if r["kind"] not in ("recipe", "recipe_run"): continue
        key = (r["side"], r["seed"])
        run = runs.setdefault(key, {"side": r["side"], "seed": r["seed"], "evals": {}, "seconds": None, "ok": True, "tok_per_s": None})
        if r["kind"] == "recipe": run["evals"][r["step"]] = r["val_bpb"]
        if r["kind"] == "recipe_run": run.update(seconds=r["seconds"], ok=r["ok"], tok_per_s=r["tok_per_s"])
    return list(runs.values())


def settings_of(result: dict) -> dict:
    keys = ("depth", "steps", "total_batch_size", "device_batch_size", "max_seq_len", "pattern", "eval_every", "eval_tokens", "upstream_commit")
    first = next(r for r in result["records"] if r["kind"] == "recipe_run")
    return {k: first.get(k) for k in keys}


def print_table(result: dict) -> None:
    rows = [r for r in result["records"] if r["kind"] == "recipe_gap"]
    print("| step | ours (mean) | upstream (mean) | gap | seed spread | inside |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows: print(f"| {r['step']} | {r['ours']:.4f} | {r['upstream']:.4f} | {r['gap']:+.4f} | {r['spread']:.4f} | {'yes' if r['inside'] else 'no'} |")
    print(result["verdict"])


def plot(result: dict, path: Path) -> None:
    "Both sides' val bpb curves, one line per seed."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run in runs_from_result(result):
        steps = sorted(run["evals"])
        ax.plot(steps, [run["evals"][s] for s in steps], color="C0" if run["side"] == "ours" else "C3",
                linestyle="-" if run["side"] == "ours" else "--", label=f"{run['side']}, seed {run['seed']}")
    s = settings_of(result)
    ax.set(xlabel="step", ylabel="validation bits per byte", title=f"d{s['depth']} {s['pattern']}, {s['total_batch_size']:,} tokens a step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--upstream", type=Path, help="checkout of upstream nanochat (its nanochat/ and scripts/)")
    p.add_argument("--upstream-python", default=sys.executable, help="Python for upstream's side (without our package)")
    p.add_argument("--data", type=Path, help="folder of .parquet shards (the last one is validation)")
    p.add_argument("--tokenizer-dir", type=Path, help="our saved tokenizer (converted for upstream)")
    p.add_argument("--sides", nargs="+", default=["ours", "upstream"], choices=["ours", "upstream"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--pattern", default="SSSL")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--total-batch-size", type=int, default=131072)
    p.add_argument("--device-batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=2048)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-tokens", type=int, default=1_048_576)
    p.add_argument("--device", default=None, choices=["cuda", "cpu"], help="device type for both sides (default: each side's choice)")
    p.add_argument("--run-timeout", type=float, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep each run's log here")
    p.add_argument("--merge", nargs="+", type=Path, default=None, help="join earlier result files instead of running")
    p.add_argument("--plot", type=Path, default=None, help="draw the curves to this PNG")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    if args.merge:
        results = [json.loads(f.read_text()) for f in args.merge]
        settings = [settings_of(r) for r in results]
        if any(s != settings[0] for s in settings): p.error(f"--merge: the files ran different settings: {settings}")
        runs = {}
        for run in (run for r in results for run in runs_from_result(r)):
            if run["evals"] or (run["side"], run["seed"]) not in runs: runs[run["side"], run["seed"]] = run  # a later run replaces a failed one
        runs = list(runs.values())
        result = build_result(settings[0], runs)
    else:
        for name in ("upstream", "data", "tokenizer_dir"):
            if getattr(args, name) is None: p.error(f"--{name.replace('_', '-')} is required (or --merge)")
        args.upstream, args.data, args.tokenizer_dir = args.upstream.resolve(), args.data.resolve(), args.tokenizer_dir.resolve()
        if not (args.upstream / "scripts" / "base_train.py").is_file(): p.error(f"--upstream {args.upstream}: no scripts/base_train.py")
        if not sorted(args.data.glob("*.parquet"))[1:]: p.error(f"--data {args.data}: needs at least two .parquet shards (train + val)")
        marker = args.upstream / "UPSTREAM_COMMIT"
        settings = common_args(args) | {"upstream_commit": marker.read_text().strip() if marker.exists() else None}
        runs = []
        for seed in args.seeds:
            for side in args.sides:
                run = run_one(args, side, seed, args.keep)
                print(f"{side} seed {seed}: {len(run['evals'])} evaluations in {run['seconds']:.0f} s", flush=True)
                runs.append(run)
                if args.out: args.out.parent.mkdir(parents=True, exist_ok=True); args.out.write_text(json.dumps(build_result(settings, runs)) + "\n")
        result = build_result(settings, runs)
    print_table(result)
    if args.plot: plot(result, args.plot)
    save_result(result, args.out)


if __name__ == "__main__":
    main()
