"""`python -m nanochat.lab`: the module map, the progress table, diff, reset, and surviving a corrupt progress file."""
import json
import subprocess

from conftest import PYTHON, ROOT

RECORD = """
import random
from nanochat.lab import Exercise, check
ex = Exercise(chapter="00_common", name="double", reference=lambda x: 2 * x,
              make_inputs=lambda rng: {"x": rng.uniform(-5, 5)}, hints=["times two"])
check(lambda x: x + x, ex)     # a pass
check(lambda x: x * x, ex)     # a fail
other = Exercise(chapter="92_lab", name="negate", reference=lambda x: -x, make_inputs=lambda rng: {"x": rng.random()})
"""


def lab(args, env):
    return subprocess.run([PYTHON, "-m", "nanochat.lab", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_status_reset_and_help(run_env, private_base_dir):
    assert "No exercises attempted yet" in lab(["status"], run_env).stdout
    subprocess.run([PYTHON, "-c", RECORD], cwd=ROOT, env=run_env, check=True, timeout=60)
    status = lab(["status"], run_env)
    assert status.returncode == 0
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line[:2].isdigit()}
    assert rows["00_common"][1:3] == ["1/1", "2"]       # passed 1 of 1 exercise, in 2 attempts
    assert rows["92_lab"][1:3] == ["0/1", "0"]          # seen, never tried
    assert "1 of 2 exercises passed." in status.stdout
    assert "✓ 00_common" in status.stdout and "→ 01_config" in status.stdout  # the module map: done, then next
    assert "no source recorded for your attempt" in lab(["diff", "double"], run_env).stdout  # a lambda has none
    assert "no attempt at 'nope'" in lab(["diff", "nope"], run_env).stdout
    reset = lab(["reset", "00_common"], run_env)
    assert reset.returncode == 0 and "forgot 1 exercise" in reset.stdout
    after = lab(["status"], run_env).stdout
    assert not any(line.startswith("00_common") for line in after.splitlines()) and "→ 00_common" in after
    assert lab(["--help"], run_env).returncode == 0


def test_bad_subcommand_is_refused(run_env):
    out = lab(["frobnicate"], run_env)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_corrupt_progress_file_is_moved_aside(run_env, private_base_dir):
    (private_base_dir / "lab").mkdir(parents=True)
    (private_base_dir / "lab" / "progress.json").write_text("{ truncated")
    out = lab(["status"], run_env)
    assert out.returncode == 0 and "No exercises attempted yet" in out.stdout
    assert "was unreadable" in out.stderr
    assert any(p.name.startswith("progress.json.corrupt-") for p in (private_base_dir / "lab").iterdir())


def test_recording_is_off_under_tests(run_env, private_base_dir):
    subprocess.run([PYTHON, "-c", RECORD], cwd=ROOT, env=run_env | {"IN_TEST": "1"}, check=True, timeout=60)
    subprocess.run([PYTHON, "-c", RECORD], cwd=ROOT, env=run_env | {"NANOCHAT_LAB_RECORD": "0"}, check=True, timeout=60)
    assert not (private_base_dir / "lab" / "progress.json").exists()
    subprocess.run([PYTHON, "-c", RECORD], cwd=ROOT, env=run_env, check=True, timeout=60)
    saved = json.loads((private_base_dir / "lab" / "progress.json").read_text())
    assert saved["double"]["attempts"] == 2 and saved["double"]["passed"] is True


def test_defining_an_exercise_again_starts_its_hints_over():
    "A notebook run twice in one process (as the test session does) sees the first hint again, not the third."
    from nanochat.lab import EXERCISES, Exercise, hint
    make = lambda: Exercise(chapter="92_lab", name="hint_reset", reference=abs, make_inputs=lambda rng: {"x": 1},
                            hints=["first", "second", "third"])
    try:
        ex = make()
        assert "first" in hint(ex) and "second" in hint(ex)
        assert "hint 1/3" in hint(make())
    finally:
        EXERCISES.pop("hint_reset", None)
