"""`--device-batch-size auto` and `--max-memory-gb` through each training script's command line (CPU, tiny profile):
the micro-batch is settled before the run, the estimate is printed, and the total batch per step is kept."""
import json
import subprocess

from conftest import PYTHON, ROOT


def run(args, env, ok=True):
    out = subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert (out.returncode == 0) == ok, (args, out.stdout[-1500:] + out.stderr[-2500:])
    return out


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
