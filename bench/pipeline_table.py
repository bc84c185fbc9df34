"""One row per stage of a finished run: tokens per second and MFU where the stage trains, and its wall time.

Reads what the run left in its base folder: the report's sections (`<base>/report/<stage>.json`, written by every
stage: steady tok/s and MFU for the training stages, the evaluations' timings) and the stage clock that
`runs/speedrun.sh` writes (`<base>/speedrun_times.tsv`: seconds since the start, stage name).

    python bench/pipeline_table.py --base-dir ~/.cache/nanochat --name pipeline_d12 --depth 12
    python bench/pipeline_table.py --base-dir DIR --name post_train_d20 --depth 20 --extra serve.json

`--extra` adds the records of other benchmark JSON files (e.g. serve_load's) to the same result. Prints a table and
one JSON line (bench/results/NAME-DATE.json or --out).
"""
import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from record import git_commit, save_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nanochat.report import STAGES  # noqa: E402  (the report's sections, in pipeline order)

KIND = {"tok_train": "tokenizer_train", "base_train": "train", "mid_train": "mid", "chat_sft": "sft", "chat_rl": "rl",
        "base_eval": "base_eval", "tok_eval": "tok_eval"}


def stage_clock(path: Path) -> dict[str, float]:
    "Wall seconds of each stage of the speedrun's clock file: the time from its line to the next one."
    if not path.exists(): return {}
    marks = [line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line]
    clock = {}
    for (at, name), (after, _) in zip(marks, marks[1:]):
        name = name.strip() if name.strip() not in clock else f"{name.strip()} (again)"  # the report is made twice
        clock[name] = float(after) - float(at)
    return clock


def stage_records(base: Path, depth: int | None) -> list[dict]:
    "A flat record per report section of the run in `base`."
    records, order = [], list(STAGES)
    for path in sorted((base / "report").glob("*.json"), key=lambda p: order.index(p.stem) if p.stem in order else 99):
        try: section = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError): continue
        name, data = section.get("section", path.stem), section.get("data") or {}
        if name not in KIND and not name.startswith("chat_eval"): continue
        record = {"kind": KIND.get(name, "chat_eval"), "stage": name, "depth": depth}
        for key in ("tok_per_s", "mfu", "steps", "train_seconds", "final_loss"):
            if isinstance(data.get(key), (int, float)): record[key] = data[key]
        if isinstance(section.get("seconds"), (int, float)): record["seconds"] = section["seconds"]
        records.append(record)
    return records


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-dir", type=Path, default=Path(os.environ.get("NANOCHAT_BASE_DIR", Path.home() / ".cache/nanochat")))
    p.add_argument("--name", default="pipeline")
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--extra", type=Path, nargs="*", default=[], help="benchmark JSON files whose records join this one")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if not (args.base_dir / "report").is_dir(): p.error(f"{args.base_dir}/report does not exist: no run there")
    records = stage_records(args.base_dir, args.depth)
    clock = stage_clock(args.base_dir / "speedrun_times.tsv")
    for name, seconds in clock.items(): records.append({"kind": "wall", "stage": name, "wall_s": round(seconds, 1)})
    for extra in args.extra:
        if extra.exists(): records += json.loads(extra.read_text().splitlines()[-1]).get("records", [])
    print("| stage | tok/s | MFU | seconds |\n| --- | --- | --- | --- |")
    for r in records:
        if r["kind"] == "wall": print(f"| {r['stage']} (wall) | | | {r['wall_s']} |"); continue
        if "stage" not in r: continue
        mfu = f"{r['mfu']:.1%}" if isinstance(r.get("mfu"), float) else ""
        tok = f"{r['tok_per_s']:,.0f}" if r.get("tok_per_s") else ""
        print(f"| {r['stage']} | {tok} | {mfu} | {r.get('train_seconds', r.get('seconds', ''))} |")
    gpu = os.environ.get("NANOCHAT_GPU")
    if gpu is None:
        try:
            import torch
            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except ImportError: gpu = None
    result = {"name": args.name, "date": date.today().isoformat(), **({"gpu": gpu} if gpu else {"cpu": f"{os.cpu_count()} cores"}),
              "commit": git_commit(), "records": records}
    save_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
