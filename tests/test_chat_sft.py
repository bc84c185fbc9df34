"""chat_sft from the command line: base -> SFT handoff by tag on the tiny profile, and clear refusals."""
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
             (["--source-stage", "mid"], "checkpoints/mid has no runs")]
    for args, message in cases:
        out = run(["nanochat.scripts.chat_sft", *args], run_env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr
    assert run(["nanochat.scripts.chat_sft", "--help"], run_env).returncode == 0
