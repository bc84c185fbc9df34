"""base_eval and chat_eval from the command line: a tiny checkpoint evaluated in one process and on two CPU ranks
under torchrun (the same numbers), and clear refusals."""
import json
import subprocess

import pytest
from conftest import PYTHON, ROOT


def run(args, env, timeout=300):
    return subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def trained(run_env):
    "A base dir with a tiny tokenizer and a tiny base model (12 steps)."
    for args in (["-m", "nanochat.scripts.tok_train", "--profile", "tiny"], ["-m", "nanochat.scripts.base_train", "--profile", "tiny"]):
        out = run(args, run_env)
        assert out.returncode == 0, out.stderr
    return run_env


def test_base_eval_two_ranks_equal_one(trained, private_base_dir):
    args = ["-m", "nanochat.scripts.base_eval", "--profile", "tiny", "--max-per-task", "6", "--no-samples"]
    one = run(args, trained)
    assert one.returncode == 0, one.stderr
    report = private_base_dir / "eval" / "base_d2_step12.json"
    single = json.loads(report.read_text())
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args], trained)
    assert two.returncode == 0, two.stdout + two.stderr
    double = json.loads(report.read_text())
    assert single["core"]["tasks"].keys() == double["core"]["tasks"].keys() and len(single["core"]["tasks"]) == 20
    for task, r in single["core"]["tasks"].items(): assert r["accuracy"] == double["core"]["tasks"][task]["accuracy"], task
    assert 0 < double["val_bpb"] < 10  # ranks read different row groups, so bits per byte is over other text
    assert "CORE is over 20 of 22 tasks" in one.stderr  # the subset is said out loud
    packed = run([*args, "--core-batch-tokens", "4096"], trained)  # several examples a forward: the same accuracies
    assert packed.returncode == 0, packed.stderr
    for task, r in json.loads(report.read_text())["core"]["tasks"].items():
        assert r["accuracy"] == single["core"]["tasks"][task]["accuracy"], task


def test_chat_eval_two_ranks_equal_one(trained, private_base_dir):
    args = ["-m", "nanochat.scripts.chat_eval", "--stage", "base", "--task", "ARC-Easy,SpellingBee", "--max-problems", "6",
            "--max-new-tokens", "4"]
    one = run(args, trained)
    assert one.returncode == 0, one.stderr
    report = private_base_dir / "eval" / "chat_base_d2_step12.json"
    single = json.loads(report.read_text())
    two = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args], trained)
    assert two.returncode == 0, two.stdout + two.stderr
    double = json.loads(report.read_text())
    assert [(r["task"], r["accuracy"], r["problems"]) for r in single["tasks"]] == [(r["task"], r["accuracy"], r["problems"]) for r in double["tasks"]]
    for a, b in zip(single["tasks"], double["tasks"]):  # the same verdict for every problem, whichever rank graded it
        assert [r["index"] for r in a["records"]] == list(range(6)) and a["records"] == b["records"], a["task"]
        assert a["entry"]["n"] == 6 and a["entry"]["low"] <= a["accuracy"] <= a["entry"]["high"]
    assert "ChatCORE" in one.stdout


def test_chat_eval_pipelined_gives_the_same_verdicts(trained, private_base_dir):
    "Generative tasks through an engine that launches each step early: the same replies and verdicts, problem by problem."
    args = ["-m", "nanochat.scripts.chat_eval", "--stage", "base", "--task", "SpellingBee,GSM8K", "--max-problems", "4",
            "--max-new-tokens", "12", "--slots", "3"]
    report = private_base_dir / "eval" / "chat_base_d2_step12.json"
    results = []
    for extra in ([], ["--pipeline"]):
        out = run(args + extra, trained)
        assert out.returncode == 0, out.stderr
        results.append([t["records"] for t in json.loads(report.read_text())["tasks"]])
    assert results[0] == results[1]


def test_refusals_are_clear(run_env, trained):
    cases = [(["-m", "nanochat.scripts.chat_eval", "--task", "Jeopardy"], run_env, "unknown task"),
             (["-m", "nanochat.scripts.chat_eval", "--num-samples", "4"], run_env, "needs a temperature"),
             (["-m", "nanochat.scripts.chat_eval", "--max-generative", "0"], run_env, "max_generative must be"),
             (["-m", "nanochat.scripts.chat_eval", "--stage", "sft"], trained, "no SFT checkpoint yet"),
             (["-m", "nanochat.scripts.base_eval", "--model-tag", "nope"], trained, "no checkpoints in"),
             (["-m", "nanochat.scripts.base_eval", "--max-per-task", "0"], run_env, "max_per_task must be"),
             (["-m", "nanochat.scripts.base_eval", "--core-batch-tokens", "-5"], run_env, "core_batch_tokens must be")]
    for args, env, message in cases:
        out = run(args, env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr, (args, out.stderr)
    for script in ("base_eval", "chat_eval"): assert run(["-m", f"nanochat.scripts.{script}", "--help"], run_env).returncode == 0
