"""The one-GPU d12 speedrun stage by stage, before and after; then the d20 rows of SFT, midtraining, GSM8K and serving.

The stages come from two speedrun logs (`bench/mini_speedrun.sh` keeps one beside its results): the stage clock (the
`== [  Ns] stage` lines) and each stage's training summary (tok/s, MFU). The d20 rows come from the result files
named below, each with the card it ran on. Prints the tables, writes them as Markdown, and saves one JSON line
(bench/results/NAME-DATE.json, or --out).

    python bench/pipeline_before_after.py             # the defaults: the speedruns of 2026-11-25 and 2026-12-05
"""
import argparse
import ast
import json
import re
from datetime import date
from pathlib import Path

from record import git_commit, save_result

RESULTS = Path(__file__).resolve().parent / "results"
# serving on one H100 before prompt feeding (top-k selection, gathered writes), then with it; each beside the engine
# alone at the server's sampling on that machine
SERVES = [f"serve_load_d20_{mode}-2026-12-05.json=infer_bench_d20_{reference}-2026-12-05.json" for mode, reference in
          [("stream20", "server_sampling"), ("feed64_stream20", "feed_reference"),
           ("feed64_rows_stream20", "feed_reference"), ("feed64_rows_stream20_repeat", "feed_reference")]] + [
    # then with the start-up heap frozen out of the garbage collector's walks, and the run just before without it
    f"serve_load_d20_feed64_rows_stream20_{run}-2026-12-06.json=infer_bench_d20_server_sampling_{run}-2026-12-06.json"
    for run in ("nofreeze", "gcfreeze")]
MARK = re.compile(r"== \[\s*(\d+)s\] ([^\x1b\n]+)")  # the speedrun's stage clock, in bold on a terminal


def stage_name(text: str, seen: set) -> str:
    "A clock line's stage: the words before any ':' or '('; the first 'report' is the run's start (the report reset)."
    name = re.split(r"[:(]", text)[0].strip()
    if name == "report" and not seen: return "start"
    return name


def read_speedrun(log: Path) -> dict[str, dict]:
    "{stage: {'at': s, 'wall_s': s, 'tok_per_s', 'mfu', 'steps'}} from one speedrun log, in the order the run took."
    stages, current = {}, None
    for line in log.read_text(errors="replace").splitlines():
        if m := MARK.search(line):
            name = stage_name(m[2], set(stages))
            if name in stages: name += " (again)"
            stages[name], current = {"at": int(m[1])}, name
        elif line.startswith("summary: ") and current is not None:
            text = line[len("summary: "):]
            try: summary = json.loads(text)
            except json.JSONDecodeError: summary = ast.literal_eval(text)  # older runs printed a Python dict
            for key in ("tok_per_s", "mfu", "steps"):
                if isinstance(summary.get(key), (int, float)): stages[current][key] = summary[key]
    names = list(stages)
    for name, after in zip(names, names[1:]): stages[name]["wall_s"] = stages[after]["at"] - stages[name]["at"]
    if names: stages["total"] = {"wall_s": stages[names[-1]]["at"]}  # the clock's last line: done
    stages.pop("done", None)
    return stages


def stage_rows(before: dict, after: dict) -> list[dict]:
    "One flat record per stage of either run (the later run's order first), before_ fields beside the later ones."
    rows = []
    for name in list(after) + [n for n in before if n not in after]:
        row = {"kind": "pipeline_stage", "stage": name, "depth": 12}
        for prefix, run in (("before_", before), ("", after)):
            for key in ("wall_s", "tok_per_s", "mfu", "steps"):
                if key in run.get(name, {}): row[prefix + key] = run[name][key]
        rows.append(row)
    return rows


def last_json(path: Path) -> dict: return json.loads(path.read_text().strip().splitlines()[-1])


def d20_rows(post_train: Path, chat_eval: Path, serves: list[tuple[Path, Path]]) -> list[dict]:
    """The d20 rows: training stages and serving of the post-training run, GSM8K's speed, and each (serve_load result,
    infer_bench reference of the same card) pair."""
    rows, pt = [], last_json(post_train)
    for r in pt["records"]:
        if r["kind"] in ("train", "mid", "sft"):
            rows.append({"kind": r["kind"], "depth": 20, "tok_per_s": r["tok_per_s"], "mfu": r["mfu"], "gpu": pt["gpu"],
                         "source": post_train.name})
    evaluation = last_json(chat_eval)
    for r in evaluation["records"]:
        rows.append({"kind": "chat_eval", "task": r["task"], "depth": 20, "phase": r["phase"], "problems": r["problems"],
                     "seconds": r["seconds"], "gpu": evaluation["gpu"], "source": chat_eval.name})
    decode_before = {r["batch"]: r["tok_per_s"] for r in pt["records"] if r["kind"] == "decode"}
    for r in pt["records"]:
        if r["kind"] == "serve":
            rows.append(serve_row(r, decode_before, pt["gpu"], post_train.name, "default"))
    for path, reference in serves:
        decode, result = {r["batch"]: r["tok_per_s"] for r in last_json(reference)["records"]}, last_json(path)
        for r in result["records"]:
            rows.append(serve_row(r, decode, result["gpu"], path.name, result.get("server_args", "")))
    return rows


def serve_row(r: dict, decode: dict, gpu: str, source: str, server: str) -> dict:
    "A serving record with its ratio to the engine alone at the same rows per step (`infer_bench`, same card)."
    ref = decode.get(r["clients"])
    words, flags = server.split(), []
    for i, word in enumerate(words):  # the serving flags with their values, not the checkpoint's
        if word.startswith("--") and word not in ("--stage", "--model-tag", "--device-type", "--max-len"):
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
            flags.append(f"{word} {value}".strip())
    flags = " ".join(flags)
    return {"kind": "serve", "depth": 20, "clients": r["clients"], "server": flags or "default", "tok_per_s": r["tok_per_s"],
            "of_infer_bench": round(r["tok_per_s"] / ref, 3) if ref else None, "infer_bench_tok_per_s": ref,
            "engine_tok_per_s": r.get("engine_tok_per_s"), "p99_ms": r["p99_ms"], "errors": r["errors"], "gpu": gpu,
            "source": source}


def markdown(stages: list[dict], d20: list[dict], before: str, after: str) -> str:
    "The two tables."
    cell = lambda v, f="{:,.0f}": "" if v is None else f.format(v)
    lines = [f"## The one-GPU d12 speedrun, stage by stage\n\nBefore: `{before}`. After: `{after}`. The horizons differ "
             "(the steps columns; a step's tokens are in each run's log): compare a stage's rate, and its wall time "
             "as what the stage costs on that horizon.\n",
             "| stage | wall s before | wall s after | steps before | steps after | tok/s before | tok/s after | MFU before "
             "| MFU after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in stages:
        lines.append(f"| {r['stage']} | {cell(r.get('before_wall_s'))} | {cell(r.get('wall_s'))} | "
                     f"{cell(r.get('before_steps'))} | {cell(r.get('steps'))} | "
                     f"{cell(r.get('before_tok_per_s'))} | {cell(r.get('tok_per_s'))} | "
                     f"{cell(r.get('before_mfu'), '{:.1%}')} | {cell(r.get('mfu'), '{:.1%}')} |")
    lines += ["\n## d20\n", "| row | GPU | tok/s | MFU | seconds | of `infer_bench` | p99 ms | source |",
              "|---|---|---|---|---|---|---|---|"]
    for r in d20:
        what = r["kind"]
        if what == "serve": what = f"serving, {r['clients']} streams, {r['server']}"
        if what == "chat_eval": what = f"{r['task']} {r['phase']}, {r['problems']} problems"
        lines.append(f"| {what} | {r['gpu']} | {cell(r.get('tok_per_s'))} | {cell(r.get('mfu'), '{:.1%}')} | "
                     f"{cell(r.get('seconds'), '{:.1f}')} | {cell(r.get('of_infer_bench'), '{:.2f}')} | "
                     f"{cell(r.get('p99_ms'))} | {r['source']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, default=RESULTS / "mini_speedrun-2026-11-25/speedrun.log")
    p.add_argument("--after", type=Path, default=RESULTS / "mini_speedrun-2026-12-05/speedrun.log")
    p.add_argument("--post-train", type=Path, default=RESULTS / "post_train_d20-2026-12-04.json")
    p.add_argument("--chat-eval", type=Path, default=RESULTS / "chat_eval_speed-2026-12-04.json")
    p.add_argument("--serve", nargs="*", default=SERVES, help="SERVE_LOAD.json=INFER_BENCH.json pairs (file names in "
                   "bench/results or paths): a serving result and the engine alone at the server's sampling, same card")
    p.add_argument("--name", default="pipeline_before_after")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    serves = []
    for pair in args.serve:
        if pair.count("=") != 1: p.error(f"--serve takes SERVE_LOAD.json=INFER_BENCH.json, got {pair!r}")
        serves.append(tuple(path if path.exists() else RESULTS / path for path in map(Path, pair.split("="))))
    for path in [args.before, args.after, args.post_train, args.chat_eval, *(x for pair in serves for x in pair)]:
        if not path.exists(): p.error(f"{path} does not exist")
    stages = stage_rows(read_speedrun(args.before), read_speedrun(args.after))
    d20 = d20_rows(args.post_train, args.chat_eval, serves)
    table = markdown(stages, d20, args.before.parent.name, args.after.parent.name)
    print(table)
    today = date.today().isoformat()
    out = args.out or RESULTS / f"{args.name}-{today}.json"
    out.with_suffix(".md").write_text(table)
    result = {"name": args.name, "date": today, "gpu": "see each record", "commit": git_commit(), "records": stages + d20}
    save_result(result, out)
    return result


if __name__ == "__main__":
    main()
