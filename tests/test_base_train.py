"""base_train from the command line: a tiny real run, exact resume across kill -9, a truncated checkpoint, clear
refusals, and the trainer under torchrun (2 CPU ranks) against one process with gradient accumulation."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT

from nanochat.checkpoint import latest_checkpoint, list_checkpoints


def run(args, env, timeout=300, **kw):
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def tokenizer_env(run_env, private_base_dir):
    "A base dir holding a tiny trained tokenizer."
    out = run(["nanochat.scripts.tok_train", "--profile", "tiny"], run_env)
    assert out.returncode == 0, out.stderr
    return run_env


def losses(metrics: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in map(json.loads, metrics.read_text().splitlines()) if "loss" in m}


def test_tiny_run(tokenizer_env, private_base_dir):
    out = run(["nanochat.scripts.base_train", "--profile", "tiny"], tokenizer_env)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.split("summary: ")[-1].splitlines()[0])
    assert summary["steps"] == 12 and summary["val_bpb"] < 10
    folder = private_base_dir / "checkpoints" / "base" / "d2"
    assert list_checkpoints(folder) == [8, 12]  # keep_last 2 of 4, 8, 12
    for line in ("tokens per scaling parameter", "accumulation step", "val bpb"): assert line in out.stdout
    assert sorted(losses(folder / "metrics.jsonl")) == list(range(1, 13))


def test_kill9_then_resume_is_bitwise_identical(tokenizer_env, private_base_dir):
    "An uninterrupted run vs one killed with SIGKILL after a checkpoint and resumed: the same losses, bit for bit."
    common = ["nanochat.scripts.base_train", "--profile", "tiny", "--num-iterations", "24", "--save-every", "4", "--keep-last", "3"]
    straight = run(common + ["--model-tag", "straight"], tokenizer_env)
    assert straight.returncode == 0, straight.stderr
    folder = private_base_dir / "checkpoints" / "base" / "killed"
    proc = subprocess.Popen([PYTHON, "-m", *common, "--model-tag", "killed"], cwd=ROOT, env=tokenizer_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (latest_checkpoint(folder) or 0) < 8 and proc.poll() is None: time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    killed_at = latest_checkpoint(folder)  # the newest complete one: the kill may have cut a later save short
    assert 8 <= killed_at < 24, f"the run was not killed mid-way (last checkpoint {killed_at})"
    resumed = run(common + ["--model-tag", "killed", "--resume"], tokenizer_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from step {killed_at}" in resumed.stdout
    a, b = losses(private_base_dir / "checkpoints" / "base" / "straight" / "metrics.jsonl"), losses(folder / "metrics.jsonl")
    assert sorted(b) == list(range(1, 25))
    assert a == b, "losses after resume differ from the uninterrupted run"


def test_truncated_checkpoint_falls_back(tokenizer_env, private_base_dir):
    common = ["nanochat.scripts.base_train", "--profile", "tiny", "--num-iterations", "8", "--save-every", "4"]
    assert run(common, tokenizer_env).returncode == 0
    folder = private_base_dir / "checkpoints" / "base" / "d2"
    weights = folder / "step_000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a crash mid-copy, a full disk...
    out = run(common + ["--num-iterations", "10", "--resume"], tokenizer_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resumed from step 4" in out.stdout
    assert "step_000008" in out.stderr and "truncated" in out.stderr  # the bad checkpoint is named, with the reason


def test_sigterm_saves_and_exits(tokenizer_env, private_base_dir):
    proc = subprocess.Popen([PYTHON, "-m", "nanochat.scripts.base_train", "--profile", "tiny", "--num-iterations", "100000",
                             "--save-every", "-1", "--eval-every", "-1", "--log-every", "1"],
                            cwd=ROOT, env=tokenizer_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("step") and "/100000" in line and " 3/" in line: break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stdout
    assert list_checkpoints(private_base_dir / "checkpoints" / "base" / "d2")


def test_refusals_are_clear(run_env, tokenizer_env, tmp_path):
    assert run(["nanochat.scripts.base_train", "--help"], run_env).returncode == 0
    cases = [(["--window-pattern", "SXL"], run_env, "made of S and L"),
             (["--depth", "0"], run_env, "depth must be at least 1"),
             (["--profile", "tiny", "--tokenizer-dir", str(tmp_path / "none")], run_env, "no tokenizer in"),
             (["--profile", "tiny", "--data", str(tmp_path)], tokenizer_env, "no .parquet shards in"),
             (["--profile", "tiny", "--resume", "--model-tag", "never"], tokenizer_env, "no checkpoint in"),
             (["--profile", "tiny", "--total-batch-size", "1000"], tokenizer_env, "not a multiple"),
             (["--profile", "tiny", "--no-such-flag", "1"], run_env, "unknown flag"),
             (["--profile", "tiny", "--fp8"], tokenizer_env, "fp8 needs a CUDA GPU")]
    for args, env, message in cases:
        out = run(["nanochat.scripts.base_train", *args], env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stdout[-500:], out.stderr[-2000:])
        assert "Traceback" not in out.stderr, (args, out.stderr)


def test_torchrun_two_ranks_equal_one_process_with_accumulation(run_env, tmp_path):
    """Tolerance: float32 rounding. The two ranks' gradients are averaged by the sharded optimizers in another order
    than one process accumulates them, and Muon's orthogonalisation amplifies rounding in weak directions (see
    tests/dist_optim_worker.py), so losses agree to 1e-4 relative, not bit for bit."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    single = subprocess.run([PYTHON, "tests/dist_train_worker.py", str(one), "4", "256", "8"], cwd=ROOT, env=run_env,
                            capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tests/dist_train_worker.py",
                            str(two), "4", "256", "8"], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=180)
    assert multi.returncode == 0, multi.stdout + multi.stderr
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["world_size"], a["grad_accum"], b["world_size"], b["grad_accum"]) == (1, 2, 2, 1)
    assert len(a["losses"]) == len(b["losses"]) == 8
    for step, (x, y) in enumerate(zip(a["losses"], b["losses"])):
        assert abs(x - y) <= 1e-4 * abs(x), f"step {step + 1}: one process {x}, two ranks {y}"
    assert a["losses"][-1] < a["losses"][0]


@pytest.mark.skipif(not os.environ.get("NANOCHAT_SLOW"), reason="slow: the cpu profile trains for minutes (NANOCHAT_SLOW=1)")
def test_cpu_profile_learns(run_env, private_base_dir):
    "The cpu profile's model ends well below the unigram bits per byte of its validation text (the chapter's plot)."
    assert run(["nanochat.scripts.tok_train", "--profile", "cpu"], run_env, timeout=600).returncode == 0
    out = run(["nanochat.scripts.base_train", "--profile", "cpu"], run_env, timeout=1800)
    assert out.returncode == 0, out.stderr
    summary = json.loads((private_base_dir / "checkpoints" / "base" / "d4" / "summary.json").read_text())
    assert summary["val_bpb"] < 0.8 * summary["unigram_bpb"], summary


@pytest.mark.parametrize("mlp", ["swiglu", "moe"])
def test_tiny_run_with_another_mlp(tokenizer_env, private_base_dir, mlp):
    "`--mlp` trains that MLP, saves the choice with the checkpoint's config, and load_gpt builds it back."
    from nanochat.checkpoint import load_gpt
    out = run(["nanochat.scripts.base_train", "--profile", "tiny", "--mlp", mlp, "--num-iterations", "4",
               "--save-every", "-1"], tokenizer_env)
    assert out.returncode == 0, out.stdout + out.stderr
    model, meta = load_gpt(private_base_dir / "checkpoints" / "base" / "d2")
    assert meta["model_config"]["mlp"] == model.config.mlp == mlp
    steps = [json.loads(line) for line in (private_base_dir / "checkpoints" / "base" / "d2" / "metrics.jsonl").open()]
    steps = [m for m in steps if "loss" in m]
    assert len(steps) == 4, steps
    if mlp == "moe":  # the experts' load in every step's metrics and in the log line
        assert all(1 <= m["moe_max_load"] <= model.config.moe_experts and 0 <= m["moe_dropped"] <= 1 for m in steps), steps
        assert "| experts max/even " in out.stdout, out.stdout
    else: assert not any(k.startswith("moe_") for m in steps for k in m) and "experts" not in out.stdout
