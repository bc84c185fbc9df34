"""A process killed with SIGKILL while saving checkpoints never leaves the run without a valid, loadable one.

A child process saves checkpoints of a few megabytes in a loop, forever; we kill it at random moments (often in the
middle of a write), restart it from the newest valid checkpoint, and after every kill check that the newest valid
checkpoint loads and that its files belong together (weights, optimizer and loader state of one and the same step).
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import ROOT

from nanochat.checkpoint import list_checkpoints, load_checkpoint, step_dir, validate_checkpoint

SAVER = r'''
import sys
import torch
from nanochat.checkpoint import latest_checkpoint, save_checkpoint

folder = sys.argv[1]
last = latest_checkpoint(folder)
step = 0 if last is None else last + 1
model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024))  # 8 MiB of fp32 weights
while True:
    with torch.no_grad():
        for p in model.parameters(): p.fill_(step)  # every file of a step says which step it is
    optimizer = {"momentum": torch.full((1024, 512), float(step)), "step": step}
    save_checkpoint(folder, step, model.state_dict(), optimizer, {"step": step}, meta={"step": step}, keep_last=2)
    print(step, flush=True)
    step += 1
'''

KILLS = 5


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_during_saves_leaves_a_valid_checkpoint(tmp_path, run_env):
    script, folder = tmp_path / "saver.py", tmp_path / "run"
    script.write_text(SAVER)
    rng = random.Random(0)
    started, newest = time.monotonic(), -1
    for kill in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(script), str(folder)], cwd=ROOT, env=run_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(30, proc.kill)  # a hung child must not hang the test
        watchdog.start()
        try:
            first = proc.stdout.readline()  # one more checkpoint saved: the loop is running
            assert first.strip().isdigit(), f"the saver failed before saving anything:\n{proc.stderr.read()}"
            time.sleep(rng.uniform(0.2, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            watchdog.cancel()
            proc.stdout.close(); proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL

        ckpt = load_checkpoint(folder)  # the newest valid step
        assert validate_checkpoint(step_dir(folder, ckpt.step)) is None
        assert [p.name for p in step_dir(folder, ckpt.step).iterdir() if p.name.startswith(".")] == []  # no leftovers
        assert ckpt.step > newest, f"kill {kill + 1}: newest valid step went from {newest} to {ckpt.step}"
        newest = ckpt.step
        assert ckpt.meta == {"step": newest} and ckpt.loader_state == {"step": newest}
        assert ckpt.optimizer_state["step"] == newest
        assert torch.equal(ckpt.optimizer_state["momentum"], torch.full((1024, 512), float(newest)))
        for name, tensor in ckpt.model_state.items():
            assert torch.equal(tensor, torch.full_like(tensor, newest)), f"{name} of step {newest} holds another step's values"
        # whatever the kill left (a step without meta.json, temporary files) is newer than the valid step, never older
        assert all(s <= newest + 1 for s in list_checkpoints(folder))
    assert time.monotonic() - started < 60
