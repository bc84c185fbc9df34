"""Same inputs, same numbers: run our code and upstream nanochat's on identical inputs, component by component.

    python bench/parity/run.py --upstream ~/src/nanochat                  # every component, on the CPU
    python bench/parity/run.py --upstream DIR --only core,chat_eval        # some of them
    python bench/parity/run.py --upstream DIR --device cuda --only model   # bf16 logits on a GPU
    python bench/parity/run.py --upstream DIR --write-fixtures            # refresh tests/parity/*.json from upstream

DIR is a checkout of upstream nanochat at the pinned commit (see PINNED_COMMIT in common.py); nothing of it is copied
here. Each component runs in three processes (prepare the shared inputs, upstream's side, our side), so the two
packages, which are both called `nanochat`, never meet. Upstream's side runs with `--upstream-python` (default: DIR's
own .venv if it has one, else this interpreter); that environment must not have our package installed.
Prints one table (component, what was compared, difference, verdict) and one JSON line; saves both in bench/results/
(parity-DATE.json and .md). Exits 1 if any row differs.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
from common import FIXTURES, PINNED_COMMIT, ROOT, read_json, row, write_json  # noqa: E402
from record import git_commit, save_result  # noqa: E402

COMPONENTS = ("tokenizer", "data", "model", "optim", "loss_eval", "core", "chat_eval", "sft", "rl")


def upstream_commit(checkout: Path) -> str:
    "The upstream commit of a checkout: its UPSTREAM_COMMIT file (an exported tree), else git's HEAD."
    marker = checkout / "UPSTREAM_COMMIT"
    if marker.is_file(): return marker.read_text().strip()
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def run_step(python: str, component: str, step: str, work: Path, opts: dict, timeout: float) -> dict:
    "Run one step of one component in a fresh process; its JSON result, or {'_error': ...} when it failed."
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONUNBUFFERED="1",
               NANOCHAT_BASE_DIR=str(work / ("upstream_base" if step == "upstream" else "ours_base")))
    if step == "upstream": env.pop("PYTHONPATH", None)  # upstream's side must not see our package through it
    else: env["PYTHONPATH"] = str(ROOT)  # ours finds this checkout's package even where it is not installed
    cmd = [python, str(HERE / "side.py"), component, step, str(work), json.dumps(opts)]
    log = work / f"{step}.log"
    try:
        with open(log, "w") as f: proc = subprocess.run(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired: return {"_error": f"{step} ran past {timeout:.0f} s (log: {log})"}
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-12:]
        return {"_error": f"{step} exited with {proc.returncode}:\n    " + "\n    ".join(tail)}
    return read_json(work / f"{step}.json")


def run_component(name: str, args, opts: dict, work_root: Path) -> tuple[list[dict], dict | None]:
    "All steps of one component, then its comparison rows; also upstream's result (for fixtures)."
    import importlib
    module = importlib.import_module(name)
    work = work_root / name
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for step, python in (("prepare", sys.executable), ("upstream", args.upstream_python), ("ours", sys.executable)):
        if step == "prepare" and not hasattr(module, "prepare"): continue
        start = time.time()
        results[step] = run_step(python, name, step, work, opts, args.timeout)
        print(f"  {name:<10} {step:<8} {time.time() - start:6.1f} s{'  FAILED' if '_error' in results[step] else ''}", flush=True)
        if "_error" in results[step]:
            return [row(name, f"{step} step", results[step]["_error"], False)], None
    try: rows = module.compare(results["ours"], results["upstream"], opts)
    except Exception as e: return [row(name, "comparison", f"compare failed: {type(e).__name__}: {e}", False)], None
    return rows, results["upstream"]


def format_table(rows: list[dict]) -> str:
    "The parity table in Markdown: component, what was compared, difference (and tolerance), verdict."
    def cell(r):
        d = r["difference"]
        d = f"{d:.3g}" if isinstance(d, float) else str(d)
        return d if r.get("tolerance") is None else f"{d} (≤ {r['tolerance']:g})"
    lines = ["| component | compared | difference | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['component']} | {r['compared']} | {cell(r).splitlines()[0]} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", type=Path, required=True, help="checkout of upstream nanochat (the pinned commit)")
    p.add_argument("--upstream-python", default=None, help="Python for upstream's side (default: DIR/.venv/bin/python, else this one)")
    p.add_argument("--only", default=",".join(COMPONENTS), help=f"comma-separated components (default: all of {', '.join(COMPONENTS)})")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model-running components run")
    p.add_argument("--quick", action="store_true", help="fewer examples per component (a smoke test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a component option (repeatable)")
    p.add_argument("--work", type=Path, default=None, help="folder for inputs, logs and each side's numbers (default: a temporary one)")
    p.add_argument("--write-fixtures", action="store_true", help="write upstream's numbers to tests/parity/ for CI")
    p.add_argument("--allow-other-commit", action="store_true", help=f"run against a checkout that is not {PINNED_COMMIT}")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for one step of one component")
    p.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/parity-DATE.json; with --only "
                   "or --device cuda, parity_<components>[_cuda]-DATE.json)")
    args = p.parse_args(argv)

    if not (args.upstream / "nanochat" / "gpt.py").is_file(): p.error(f"--upstream {args.upstream}: no nanochat/gpt.py there")
    commit = upstream_commit(args.upstream)
    if not commit.startswith(PINNED_COMMIT) and not args.allow_other_commit:
        p.error(f"--upstream is at {commit}, not the pinned {PINNED_COMMIT} (--allow-other-commit to run anyway)")
    if args.upstream_python is None:
        venv = args.upstream / ".venv" / "bin" / "python"
        args.upstream_python = str(venv) if venv.exists() else sys.executable
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if unknown := [n for n in names if n not in COMPONENTS]: p.error(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    if missing := [n for n in names if not (HERE / f"{n}.py").is_file()]: p.error(f"component(s) not written yet: {missing}")
    extra = {}
    for kv in args.set:
        if "=" not in kv: p.error(f"--set wants KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        extra[k] = json.loads(v) if v[:1] in "[{0123456789-" or v in ("true", "false", "null") else v
    opts = {"device": args.device, "quick": args.quick, "upstream": str(args.upstream.resolve()), "upstream_commit": commit,
            "root": str(ROOT), **extra}

    work_root = args.work or Path(tempfile.mkdtemp(prefix="parity-"))
    print(f"parity against upstream {commit} ({args.upstream}), device {args.device}, work in {work_root}", flush=True)
    rows, fixtures = [], {}
    for name in names:
        comp_rows, up = run_component(name, args, opts, work_root)
        rows += comp_rows
        if up is not None: fixtures[name] = up
    table = format_table(rows)
    print("\n" + table + "\n")

    if args.write_fixtures:
        import importlib
        for name, up in fixtures.items():
            data = getattr(importlib.import_module(name), "fixture", lambda up, opts: None)(up, opts)
            if data is None: continue
            path = write_json(FIXTURES / f"{name}.json", {
                "upstream_commit": commit, "created": date.today().isoformat(), "device": args.device,
                "regenerate": f"python bench/parity/run.py --upstream DIR --only {name} --write-fixtures", "data": data})
            print(f"fixture: {path.relative_to(ROOT)}")

    import torch
    gpu = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None
    result = {"name": "parity", "date": date.today().isoformat(), **({"gpu": gpu} if gpu else {"cpu": f"{os.cpu_count()} cores"}),
              "commit": git_commit(), "upstream_commit": commit, "device": args.device, "quick": args.quick,
              "records": [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]}
    # a run of every component is `parity-DATE`; a partial run is named after its components, so it never overwrites that
    tags = ([] if set(names) == set(COMPONENTS) else names) + ([args.device] if args.device != "cpu" else [])
    out = args.out or ROOT / "bench" / "results" / f"parity{''.join('_' + t for t in tags)}-{result['date']}.json"
    save_result(result, out)
    out.with_suffix(".md").write_text(f"Parity against upstream nanochat {commit}, {args.device}, at {result['commit']}:\n\n{table}\n")
    differs = sum(r["verdict"] != "match" for r in rows)
    print(f"{len(rows) - differs} of {len(rows)} rows match" + (f"; {differs} differ" if differs else ""))
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
