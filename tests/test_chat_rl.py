"""chat_rl from the command line: the whole tiny chain base -> mid -> SFT -> RL, each stage finding the previous one
by tag; two CPU ranks under torchrun; clear refusals."""
import json
import subprocess

from conftest import PYTHON, ROOT


def run(args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_chain(env, stages=("tok_train", "base_train", "mid_train", "chat_sft")):
    for stage in stages:
        out = run([f"nanochat.scripts.{stage}", "--profile", "tiny"], env)
        assert out.returncode == 0, (stage, out.stdout[-1000:] + out.stderr[-2000:])


def source_of(folder, step):
    return json.loads((folder / f"step_{step:06d}" / "meta.json").read_text())["meta"]["source"]


def test_base_mid_sft_rl_handoff(run_env, private_base_dir):
    tiny_chain(run_env)
    out = run(["nanochat.scripts.chat_rl", "--profile", "tiny"], run_env)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    ckpts = private_base_dir / "checkpoints"
    assert source_of(ckpts / "mid" / "d2", 6).endswith("checkpoints/base/d2")
    assert source_of(ckpts / "sft" / "d2", 6).endswith("checkpoints/mid/d2")
    assert source_of(ckpts / "rl" / "d2", 2).endswith("checkpoints/sft/d2")
    metrics = [json.loads(line) for line in (ckpts / "rl" / "d2" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2] and all({"pass@2", "length", "loss"} <= set(m) for m in steps)
    assert sum("eval_pass@1" in m for m in metrics) == 3  # before training, after step 1, at the end
    # resume continues from the saved step and keeps one log
    out = run(["nanochat.scripts.chat_rl", "--profile", "tiny", "--num-steps", "3", "--resume"], run_env)
    assert out.returncode == 0 and "resumed from step 2" in out.stdout, out.stderr[-2000:]
    metrics = [json.loads(line) for line in (ckpts / "rl" / "d2" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2, 3]


def test_two_ranks_under_torchrun(run_env, private_base_dir):
    tiny_chain(run_env, ("tok_train", "base_train", "chat_sft"))
    out = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanochat.scripts.chat_rl",
                          "--profile", "tiny", "--device-type", "cpu"], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-2500:]
    assert "1 problems per rank × 2 rank(s)" in out.stdout
    summary = json.loads((private_base_dir / "checkpoints" / "rl" / "d2" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["eval_problems"] == 2


def test_refusals_are_clear(run_env):
    cases = [(["--num-samples", "1"], "num_samples must be at least 2"), (["--temperature", "0"], "temperature must be positive"),
             (["--init-lr-frac", "0"], "init_lr_frac must be in"), (["--top-k", "-3"], "top_k must be 0"),
             (["--model-tag", "nope"], "no checkpoints in")]
    for args, message in cases:
        out = run(["nanochat.scripts.chat_rl", *args], run_env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr
    help_out = run(["nanochat.scripts.chat_rl", "--help"], run_env)
    assert help_out.returncode == 0 and "--num-samples" in help_out.stdout
