"""CORE, example by example: our core_eval against upstream's on the same tokenizer, model, items and few-shot draws.

    python bench/parity/run.py --upstream DIR --only core                          # 100 examples a task (+ the fixture's 24)
    python bench/parity/run.py --upstream DIR --only core --set core_items=1000    # further
    python bench/parity/run.py --upstream DIR --only core --quick                  # the fixture's setup only

Inputs (prepare): a 4,096-token tokenizer trained with our Tokenizer.train on the first 2M characters of the shared
Wikipedia shard (written for upstream too), and, for each number of examples n, the toy model of toymodel.py: an
interpolated 8-gram model fitted on the solved texts of a seeded half of the first n examples of every task, so it
gets a fair share of answers right (a random model gets every language-modelling answer wrong on both sides and proves
little). Both sides read every CORE task the shared data has, shuffle it with random.Random(1337) and keep the first
n, as upstream's base_eval does (the n are then also the few-shot pool), and score each example: ours with
`task_verdicts`, upstream's with `core_eval.evaluate_example` (the body of its evaluate_task). The model crops to 256
tokens on both sides (upstream crops to `model.max_seq_len` when the model has one).

One row per task and n: the number of examples whose verdicts differ (an example upstream cannot score counts as a
difference), which ones, and both accuracies. Examples whose options our code cannot compare (an option that is a
prefix of another: scored wrong by us, by NaN comparisons upstream) and answers longer than the model's window (we
score their last tokens, upstream's assertion refuses them) are listed apart and do not fail the row.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import disagreements, read_json, row  # noqa: E402
from toymodel import NGramModel, core_task_list, fit_core_model, shuffled_items, wiki_text  # noqa: E402

DEFAULTS = {"core_items": 100, "fixture_items": 24, "vocab": 4096, "tok_chars": 2_000_000, "order": 8, "seed": 0,
            "max_seq_len": 256}
PROBE = "The capital of France is Paris.\nAnswer: Brazil"  # a fixture's check that CI rebuilt the same tokenizer


def settings(opts: dict) -> dict:
    return {k: type(v)(opts.get(k, v)) for k, v in DEFAULTS.items()}


def sizes(opts: dict) -> list[int]:
    "The numbers of examples per task to compare: the fixture's, and (unless quick) core_items."
    s = settings(opts)
    return [s["fixture_items"]] if opts.get("quick") else sorted({s["fixture_items"], s["core_items"]})


def model_path(work: Path, n: int) -> Path: return Path(work) / f"toymodel_{n}.pt"


def prepare(work, opts):
    from upstream_env import upstream_base, write_upstream_tokenizer

    from nanochat.common import shared_data_dir
    from nanochat.tokenizer import Tokenizer, save_tokenizer
    s, data = settings(opts), shared_data_dir()
    if data is None: raise SystemExit("core parity needs the shared data folder (../shared/data)")
    tok = Tokenizer.train(wiki_text(data, s["tok_chars"]), s["vocab"])
    save_tokenizer(tok, Path(work) / "tokenizer")
    write_upstream_tokenizer(Path(work) / "tokenizer", upstream_base(work))
    bos = tok.get_bos_token_id()
    models = {}
    for n in sizes(opts):
        model = fit_core_model(lambda texts: tok.encode(texts, prepend=bos), data / "eval" / "core", n, tok.vocab_size,
                               s["seed"], s["order"], s["max_seq_len"])
        model.save(model_path(work, n))
        models[str(n)] = model.digest()
    return {"core_dir": str(data / "eval" / "core"), "probe_ids": tok.encode(PROBE), "models": models}


def one_thread() -> None:
    "Evaluation here is one small batch at a time; on a busy 2-core machine a second thread only waits (10x slower)."
    import torch
    torch.set_num_threads(1)


def ours(work, opts):
    one_thread()
    from nanochat.core_eval import (
        UnscorableExample,
        fewshot_examples,
        load_core_tasks,
        load_items,
        render_example,
        task_verdicts,
        tokenize_example,
    )
    from nanochat.tokenizer import load_tokenizer
    prep = read_json(Path(work) / "prepare.json")
    core_dir = Path(prep["core_dir"])
    tok = load_tokenizer(Path(work) / "tokenizer")
    tasks = [t for t in load_core_tasks(core_dir) if t.available]
    out = {"probe_ids": tok.encode(PROBE), "sizes": {}}
    for n in sizes(opts):
        model = NGramModel.load(model_path(work, n))
        per_task = {}
        for task in tasks:
            items = load_items(core_dir, task)[:n]
            verdicts = task_verdicts(model, tok, task, items, max_len=model.max_seq_len)
            unscorable, clipped, old_empty, longest = [], [], 0, 0
            for idx, item in enumerate(items):  # facts about the spans, for the report
                pairs = render_example(task, item, fewshot_examples(items, idx, task.shots))
                longest = max(longest, max(len(tok.encode(c + k)) + 1 for c, k in pairs))
                try: spans = tokenize_example(tok, task, pairs)
                except UnscorableExample: unscorable.append(idx); continue
                if any(b - a > model.max_seq_len - 1 for _, a, b in spans): clipped.append(idx)  # upstream asserts there
                if task.task_type == "language_modeling":  # the earlier rule: the span starts after context + delimiter
                    whole = pairs[0][0] + pairs[0][1]
                    old_context = whole[:len(whole) - len(item["continuation"])]
                    old_empty += len(tok.encode(old_context)) >= len(tok.encode(whole))
            per_task[task.label] = {"verdicts": "".join("1" if v else "0" for v in verdicts), "unscorable": unscorable,
                                    "clipped": clipped, "old_rule_empty_spans": old_empty, "longest_tokens": longest}
        out["sizes"][str(n)] = per_task
    return out


def upstream(work, opts):
    one_thread()
    from upstream_env import upstream_base

    from nanochat.core_eval import evaluate_example, evaluate_task
    from nanochat.tokenizer import RustBPETokenizer
    prep = read_json(Path(work) / "prepare.json")
    core_dir = Path(prep["core_dir"])
    tok = RustBPETokenizer.from_directory(str(upstream_base(work) / "tokenizer"))
    out = {"probe_ids": tok.encode(PROBE), "sizes": {}, "models": {}, "setup": settings(opts)}
    for n in sizes(opts):
        model = NGramModel.load(model_path(work, n))
        out["models"][str(n)] = model.digest()
        per_task = {}
        for task in core_task_list(core_dir):
            data = shuffled_items(core_dir, task, n)  # base_eval: shuffle with 1337, then data[:max_per_task]
            meta = {"task_type": task["task_type"], "num_fewshot": task["shots"], "continuation_delimiter": task["delimiter"]}
            verdicts = []
            for idx in range(len(data)):
                try: verdicts.append("1" if evaluate_example(idx, model, tok, data, "cpu", meta) else "0")
                except AssertionError: verdicts.append("E")  # upstream refuses the example
            per_task[task["label"]] = {"verdicts": "".join(verdicts), "baseline": task["baseline"]}
        # evaluate_task is a loop over evaluate_example; check that once, on the smallest task
        small = min(core_task_list(core_dir), key=lambda t: len(per_task[t["label"]]["verdicts"]))
        meta = {"task_type": small["task_type"], "num_fewshot": small["shots"], "continuation_delimiter": small["delimiter"]}
        v = per_task[small["label"]]["verdicts"]
        out.setdefault("evaluate_task_check", {})[str(n)] = {
            "task": small["label"], "items": len(v), "evaluate_task": evaluate_task(model, tok, shuffled_items(core_dir, small, n), "cpu", meta),
            "mean_of_verdicts": v.count("1") / len(v)}
        out["sizes"][str(n)] = per_task
    return out


def accuracy(verdicts: str) -> float: return verdicts.count("1") / max(1, len(verdicts))


def centered_mean(tasks: dict, baselines: dict) -> float:
    return sum((accuracy(v) - baselines[k]) / (1 - baselines[k]) for k, v in tasks.items()) / max(1, len(tasks))


def compare(ours, up, opts):
    rows = [row("core", "tokenizer (probe ids)", "same" if ours["probe_ids"] == up["probe_ids"] else "differ",
                ours["probe_ids"] == up["probe_ids"])]
    for n, check in up.get("evaluate_task_check", {}).items():
        rows.append(row("core", f"upstream evaluate_task = mean of its verdicts ({check['task']}, {check.get('items', n)} items)",
                        abs(check["evaluate_task"] - check["mean_of_verdicts"]), abs(check["evaluate_task"] - check["mean_of_verdicts"]) < 1e-6, 1e-6))
    for n, up_tasks in up["sizes"].items():
        our_tasks = ours["sizes"][n]
        if set(our_tasks) != set(up_tasks):
            rows.append(row("core", f"tasks at {n} items", f"ours {sorted(our_tasks)} vs upstream {sorted(up_tasks)}", False))
        total, differ, designed = 0, 0, 0
        for label in sorted(set(our_tasks) & set(up_tasks)):
            o, u = our_tasks[label], up_tasks[label]
            diff = disagreements(list(o["verdicts"]), list(u["verdicts"]))
            # differences by design: options ours cannot compare, and answers longer than the window (upstream asserts)
            by_design = set(o["unscorable"]) | {i for i in o.get("clipped", []) if u["verdicts"][i] == "E"}
            expected = [i for i in diff if i in by_design]
            unexpected = [i for i in diff if i not in by_design]
            total += len(o["verdicts"]); differ += len(unexpected); designed += len(expected)
            rows.append(row("core", f"{label}: {len(o['verdicts'])} items, verdicts differing", len(unexpected), not unexpected, 0,
                            items=len(o["verdicts"]), differing=unexpected, differing_by_design=expected,
                            accuracy_ours=round(accuracy(o["verdicts"]), 4), accuracy_upstream=round(accuracy(u["verdicts"]), 4),
                            old_rule_empty_spans=o["old_rule_empty_spans"], longest_tokens=o["longest_tokens"]))
        baselines = {k: v["baseline"] for k, v in up_tasks.items()}
        shared = sorted(set(our_tasks) & set(up_tasks))
        core_o = centered_mean({k: our_tasks[k]["verdicts"] for k in shared}, baselines)
        core_u = centered_mean({k: up_tasks[k]["verdicts"] for k in shared}, baselines)
        rows.append(row("core", f"toy-model CORE over {len(shared)} tasks, {n} items each ({total} examples, {differ} differ"
                        f"{f', {designed} more by design' if designed else ''})", abs(core_o - core_u), differ == 0,
                        core_ours=round(core_o, 6), core_upstream=round(core_u, 6)))
    return rows


def fixture(up, opts):
    n = str(settings(opts)["fixture_items"])
    return {"setup": {k: v for k, v in up["setup"].items() if k != "core_items"}, "probe": PROBE, "probe_ids": up["probe_ids"],
            "model": up["models"][n], "verdicts": {k: v["verdicts"] for k, v in up["sizes"][n].items()}}


if __name__ == "__main__":  # a look at the toy model's accuracy per task, without upstream: python bench/parity/core.py WORK
    work = Path(sys.argv[1])
    work.mkdir(parents=True, exist_ok=True)
    opts = {"quick": True}
    from common import write_json
    write_json(work / "prepare.json", prepare(work, opts))
    for label, r in ours(work, opts)["sizes"][str(settings(opts)["fixture_items"])].items():
        print(f"{label:<34} {accuracy(r['verdicts']):.2f}  {r['verdicts']}  (old rule: {r['old_rule_empty_spans']} empty)")
