"""`--device-batch-size auto` and `--max-memory-gb` through each training script's command line (CPU, tiny profile):
the micro-batch is settled before the run, the estimate is printed, and the total batch per step is kept."""
import json
import subprocess

import pytest
import torch
from conftest import PYTHON, ROOT

from nanochat.common import shared_data_dir


def run(args, env, ok=True):
    out = subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert (out.returncode == 0) == ok, (args, out.stdout[-1500:] + out.stderr[-2500:])
    return out


@pytest.mark.skipif(shared_data_dir() is None, reason="no local data folder (shared/data) for the tokenizer and shards")
def test_auto_micro_batch_in_every_training_script(run_env, private_base_dir):
    run(["nanochat.scripts.tok_train", "--profile", "tiny"], run_env)
    # tiny pretraining: 512 tokens a step in rows of 64 = 8 rows; on the CPU all of them fit in one micro-batch
    out = run(["nanochat.scripts.base_train", "--profile", "tiny", "--device-batch-size", "auto",
               "--max-memory-gb", "24"], run_env)
    assert "memory: about" in out.stdout and "micro-batch: 8 row(s) × 1 accumulation step(s)" in out.stdout
    plan = json.loads((private_base_dir / "checkpoints" / "base" / "d2" / "plan.json").read_text())
    assert (plan["device_batch_size"], plan["grad_accum"], plan["total_batch_size"]) == (8, 1, 512)

    out = run(["nanochat.scripts.mid_train", "--profile", "tiny", "--device-batch-size", "auto"], run_env)
    assert "micro-batch: 4 row(s) × 1 accumulation step(s)" in out.stdout  # 508 tokens = 4 rows of 127

    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--device-batch-size", "auto", "--auto-rows", "3",
               "--grad-accum", "2", "--max-steps", "2"], run_env)
    assert "micro-batch: 6 row(s) × 1 accumulation step(s)" in out.stdout  # auto_rows × grad_accum, in one go
    assert "steps of 1 × 6 conversations" in out.stdout


def test_a_micro_batch_that_is_neither_a_number_nor_auto_is_refused(run_env):
    out = run(["nanochat.scripts.base_train", "--profile", "tiny", "--device-batch-size", "most"], run_env, ok=False)
    assert "expected an integer or one of ['auto'], got 'most'" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_probe_steps_down_under_a_memory_cap_on_cuda():
    "Under a cap that holds the weights but not the largest micro-batch, auto picks a smaller one that really runs."
    from nanochat import memory
    from nanochat.gpt import GPT, config_for_depth
    from nanochat.memory import GiB, cap_gpu_memory, choose_micro_batch, estimate_training_memory
    device = torch.device("cuda")
    model = GPT.build(config_for_depth(8, 32768, sequence_len=2048), device=device, seed=0)
    fixed = estimate_training_memory(model, 1, 2048).fixed
    per_row = estimate_training_memory(model, 1, 2048).activations
    cap_gpu_memory(device, (torch.cuda.memory_allocated(device) + fixed + 6 * per_row) / GiB)  # room for ~6 rows
    try:
        choice = choose_micro_batch(model, "auto", 32, 2048, compiled=False, dtype=torch.bfloat16, device=device)
        assert 1 <= choice.rows < 32 and 32 % choice.rows == 0 and choice.rows * choice.accumulation == 32
        assert choice.probed_peak is not None
    finally:  # the cap lifted, for the tests after this one
        torch.cuda.set_per_process_memory_fraction(1.0, memory._gpu_index(device))  # the card the cap was put on
        memory._CAPS.clear()
