"""Midtraining, SFT and RL resume exactly after `kill -9`: a run killed after a periodic checkpoint and resumed with `--resume`
logs the very losses (bit for bit, on CPU) of an uninterrupted run; `--resume auto` starts fresh when there is nothing
to resume and continues when there is.

The child stops for a while right after writing the checkpoint we kill it at, so the kill always lands between that
checkpoint and the next step, however fast or slow the machine is.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import PYTHON, ROOT

# run a stage's main() with save_checkpoint (as the stage's module imported it) pausing after step `pause_at`
PAUSING = r'''
import importlib, sys, time
module_name, where, pause_at, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
holder = importlib.import_module(where)
save = holder.save_checkpoint
def save_then_pause(folder, step, *args, **kwargs):
    path = save(folder, step, *args, **kwargs)
    if step == pause_at: print("paused after saving", step, flush=True); time.sleep(120)
    return path
holder.save_checkpoint = save_then_pause
importlib.import_module(module_name).main(argv)
'''


def run(args, env, timeout=300):
    out = subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (args, out.stdout[-1500:] + out.stderr[-2500:])
    return out


def prepare(env, stages):
    for stage in stages: run([f"nanochat.scripts.{stage}", "--profile", "tiny"], env)


def losses(folder):
    "step -> loss of every training step in the run's metrics.jsonl"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["loss"] for m in map(json.loads, lines) if "loss" in m}


def kill_after_checkpoint(module, where, step, args, env, folder):
    "Run `module` with `args` (`where`: the module whose save_checkpoint to slow); SIGKILL it once `step` is saved."
    proc = subprocess.Popen([PYTHON, "-c", PAUSING, module, where, str(step), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meta, deadline = folder / f"step_{step:06d}" / "meta.json", time.monotonic() + 120
    try:
        while not meta.exists():  # poll for the checkpoint folder's commit file
            assert proc.poll() is None, f"the run ended before saving step {step}:\n{proc.stderr.read()[-2500:]}"
            assert time.monotonic() < deadline, "no checkpoint within two minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None: proc.kill(); proc.wait()
        proc.stdout.close(); proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sft_resumes_exactly_after_kill(run_env, private_base_dir):
    prepare(run_env, ["tok_train", "base_train"])
    folder = private_base_dir / "checkpoints" / "sft" / "d2"
    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--resume", "auto"], run_env)  # nothing yet: fresh
    assert "resumed from" not in out.stdout
    expected = losses(folder)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert "resumed_from" not in json.loads((folder / "summary.json").read_text())
    shutil.rmtree(folder)

    kill_after_checkpoint("nanochat.scripts.chat_sft", "nanochat.trainer", 2,
                          ["--profile", "tiny", "--save-every", "2", "--keep-last", "2"], run_env, folder)
    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--save-every", "2", "--keep-last", "2", "--resume"],
              run_env)
    assert "resumed from step 2" in out.stdout
    assert losses(folder) == expected  # steps 1-2 from before the kill, 3-6 after: the same numbers, bit for bit
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps"] == 6


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_rl_resumes_exactly_after_kill(run_env, private_base_dir):
    prepare(run_env, ["tok_train", "base_train", "chat_sft"])
    folder = private_base_dir / "checkpoints" / "rl" / "d2"
    args = ["--profile", "tiny", "--num-steps", "4", "--eval-every", "-1"]
    out = run(["nanochat.scripts.chat_rl", *args, "--resume", "auto"], run_env)  # nothing yet: fresh
    assert "resumed from" not in out.stdout
    expected = rl_steps(folder)
    assert sorted(expected) == [1, 2, 3, 4]
    shutil.rmtree(folder)

    kill_after_checkpoint("nanochat.scripts.chat_rl", "nanochat.scripts.chat_rl", 2, [*args, "--save-every", "2"],
                          run_env, folder)
    out = run(["nanochat.scripts.chat_rl", *args, "--save-every", "2", "--resume"], run_env)
    assert "resumed from step 2" in out.stdout
    assert rl_steps(folder) == expected  # the same replies sampled, the same rewards and losses
    assert json.loads((folder / "summary.json").read_text())["resumed_from"] == 2


def rl_steps(folder):
    "step -> (loss, reward, length) of every RL step in the run's metrics.jsonl"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: (m["loss"], m["reward"], m["length"]) for m in map(json.loads, lines) if "reward" in m}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_mid_resumes_exactly_after_kill(run_env, private_base_dir):
    prepare(run_env, ["tok_train", "base_train"])
    folder = private_base_dir / "checkpoints" / "mid" / "d2"
    run(["nanochat.scripts.mid_train", "--profile", "tiny"], run_env)
    expected = losses(folder)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    shutil.rmtree(folder)

    kill_after_checkpoint("nanochat.scripts.mid_train", "nanochat.trainer", 2, ["--profile", "tiny", "--save-every", "2"],
                          run_env, folder)
    out = run(["nanochat.scripts.mid_train", "--profile", "tiny", "--save-every", "2", "--resume"], run_env)
    assert "resumed from step 2" in out.stdout
    assert losses(folder) == expected  # the packed rows, the schedule and the RNG all pick up where they stopped
    assert json.loads((folder / "summary.json").read_text())["resumed_from"] == 2
