"""Scripts are real command-line programs: --help, profiles, env, flags, clear refusals, saved configs."""
import json
import subprocess

import yaml
from conftest import PYTHON, ROOT


def run(args, env, timeout=120):
    return subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_setting(run_env):
    out = run(["-m", "nanochat.scripts.sysinfo", "--help"], run_env)
    assert out.returncode == 0
    for flag in ["--profile", "--print-config", "--device", "--matmul-size", "--repeats", "--seed", "--out-dir"]:
        assert flag in out.stdout


def test_layers_and_print_config(run_env):
    env = run_env | {"NANOCHAT_REPEATS": "3"}
    out = run(["-m", "nanochat.scripts.sysinfo", "--profile", "tiny", "--seed", "7", "--print-config"], env)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()}
    assert rows["matmul_size"] == ["64", "profile tiny"]
    assert rows["repeats"] == ["3", "env NANOCHAT_REPEATS"]
    assert rows["seed"] == ["7", "command line"]
    assert rows["device"] == ["'auto'", "default"]


def test_mistakes_are_refused_with_a_clear_message(run_env):
    cases = {
        ("--matmul-sise", "8"): "unknown flag --matmul-sise in the command line. Did you mean --matmul-size?",
        ("--matmul-size", "big"): "expected an integer, got 'big'",
        ("--matmul-size", "0"): "matmul_size must be positive",
        ("--device", "tpu"): "expected one of ['auto', 'cpu', 'cuda', 'mps']",
        ("--profile", "huge"): "unknown profile 'huge'",
        ("stray",): "unexpected argument 'stray'",
    }
    for args, message in cases.items():
        out = run(["-m", "nanochat.scripts.sysinfo", *args], run_env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_a_run_saves_a_replayable_config(run_env, private_base_dir):
    out = run(["-m", "nanochat.scripts.sysinfo", "--profile", "tiny", "--device", "cpu"], run_env)
    assert out.returncode == 0, out.stderr
    saved = private_base_dir / "sysinfo"
    config = yaml.safe_load((saved / "config.yaml").read_text())
    assert config["sysinfo"]["matmul_size"] == 64 and config["sysinfo"]["device"] == "cpu"
    results = json.loads((saved / "results.json").read_text())
    assert results["matmul_flops"] > 0
    replay = run(["-m", "nanochat.scripts.sysinfo", "--profile", str(saved / "config.yaml"), "--print-config"], run_env)
    assert replay.returncode == 0 and "64" in replay.stdout


def test_sysinfo_under_torchrun_on_cpu(run_env, private_base_dir):
    out = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanochat.scripts.sysinfo",
               "--profile", "tiny", "--device", "cpu"], run_env, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[rank 0]" in out.stdout and "[rank 1]" in out.stdout
    assert out.stdout.count("matmul_size") == 1  # the config table is printed by rank 0 only
    assert json.loads((private_base_dir / "sysinfo" / "results.json").read_text())["world_size"] == 2


def test_every_shipped_profile_matches_the_scripts():
    from nanochat.config import available_profiles
    from nanochat.devtools import check_profiles
    assert set(available_profiles()) >= {"tiny", "cpu", "d12", "d20", "speedrun"}
    assert check_profiles() == []


DEVICE_SCRIPTS = ["base_train", "mid_train", "chat_sft", "chat_rl", "base_eval", "chat_eval", "chat_cli", "chat_web",
                  "infer_bench"]


def test_a_misspelt_device_is_refused_alike_everywhere(run_env):
    "device_type is one shared Literal setting (config.DeviceSettings): every script refuses a bad one the same way."
    for script in DEVICE_SCRIPTS:
        out = run(["-m", f"nanochat.scripts.{script}", "--device-type", "tpu"], run_env)
        assert out.returncode == 2, (script, out.stdout[-500:], out.stderr[-500:])
        assert "device_type (from command line): expected one of ['', 'cuda', 'cpu', 'mps'], got 'tpu'" in out.stderr
        assert "Traceback" not in out.stderr
    out = run(["-m", "nanochat.scripts.base_train", "--print-config"], run_env | {"NANOCHAT_DEVICE_TYPE": "gpu"})
    assert out.returncode == 2 and "device_type (from environment): expected one of" in out.stderr, out.stderr[-500:]


def test_shared_settings_keep_their_flags_and_defaults(run_env):
    "The settings the scripts inherit (run, source run, learning rates) print and parse as before, in the same place."
    out = run(["-m", "nanochat.scripts.chat_rl", "--device-type", "cpu", "--matrix-lr", "0.01", "--print-config"],
              run_env)
    assert out.returncode == 0, out.stderr[-1000:]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()}
    assert rows["device_type"] == ["'cpu'", "command line"] and rows["matrix_lr"] == ["0.01", "command line"]
    assert rows["init_lr_frac"] == ["0.05", "default"] and rows["tokenizer_dir"] == ["None", "default"]
    out = run(["-m", "nanochat.scripts.base_eval", "--print-config"], run_env)
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.stdout.splitlines()}
    assert rows["stage"] == ["'base'", "default"] and rows["step"] == ["-1", "default"]


def test_training_stages_end_a_fixable_error_with_one_line(run_env):
    "run_stage: a missing checkpoint or tokenizer is `<script>: error: ...` and exit status 1, not a traceback."
    for script in ("base_train", "mid_train", "chat_sft", "chat_rl"):
        out = run(["-m", f"nanochat.scripts.{script}", "--device-type", "cpu", "--model-tag", "nope"], run_env)
        assert out.returncode == 1, (script, out.stderr[-1000:])
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f"{script}: error: ") and "Traceback" not in out.stderr, out.stderr[-1000:]
