"""chat_sft from the command line: base -> SFT handoff by tag on the tiny profile, the packed layout, and clear refusals."""
import json
import subprocess

from conftest import PYTHON, ROOT


def run(args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_base_to_sft_handoff(run_env, private_base_dir):
    "Without a mid run, SFT's default source (auto) is the base run of the tag."
    for args in (["nanochat.scripts.tok_train", "--profile", "tiny"], ["nanochat.scripts.base_train", "--profile", "tiny"],
                 ["nanochat.scripts.chat_sft", "--profile", "tiny"]):
        out = run(args, run_env)
        assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    folder = private_base_dir / "checkpoints" / "sft" / "d2"
    meta = json.loads((folder / "step_000006" / "meta.json").read_text())
    assert meta["meta"]["source"].endswith("checkpoints/base/d2")
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 6
    # the stage ends as every training stage does (finish_stage): the summary line, and summary.json beside it
    summary = json.loads(out.stdout.split("summary: ")[-1].splitlines()[0])
    assert summary["steps"] == 6 and json.loads((folder / "summary.json").read_text()) == summary


def test_refusals_are_clear(run_env):
    cases = [(["--num-epochs", "0"], "num_epochs must be positive"), (["--init-lr-frac", "2"], "init_lr_frac must be in"),
             (["--model-tag", "nope"], "no checkpoints in"), (["--source-stage", "later"], "expected one of ['auto', 'base', 'mid']"),
             (["--source-stage", "mid"], "checkpoints/mid has no runs"),
             (["--layout", "packed", "--pad-to", "64"], "pad_to is for the padded layout"),
             (["--compile", "on"], "needs pad_to"), (["--layout", "rows"], "expected one of ['padded', 'packed']")]
    for args, message in cases:
        out = run(["nanochat.scripts.chat_sft", *args], run_env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr
    shown = run(["nanochat.scripts.chat_sft", "--help"], run_env)
    assert shown.returncode == 0
    for flag in ("--layout {padded,packed}", "--pad-to PAD_TO", "--compile {auto,on,off}"): assert flag in shown.stdout, flag


def test_packed_layout_trains(run_env, private_base_dir):
    "With --layout packed every micro-batch is device_batch_size rows of max_len tokens, and the loss goes down."
    for args in (["nanochat.scripts.tok_train", "--profile", "tiny"], ["nanochat.scripts.base_train", "--profile", "tiny"]):
        out = run(args, run_env)
        assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--layout", "packed", "--max-steps", "8"], run_env)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    assert "conversations, packed): 8 steps of 2 × 2 rows of 127 tokens × 1 rank(s)" in out.stdout, out.stdout[-2000:]
    summary = json.loads(out.stdout.split("summary: ")[-1].splitlines()[0])
    assert summary["steps"] == 8 and summary["final_loss"] < summary["first_loss"]
    folder = private_base_dir / "checkpoints" / "sft" / "d2"
    meta = json.loads((folder / "step_000008" / "meta.json").read_text())
    assert meta["meta"]["chat_sft"]["layout"] == "packed"
