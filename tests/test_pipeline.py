"""The whole pipeline, end to end, as `runs/cpu.sh` runs it, on the `tiny` profile: every stage writes its report
section, the report is generated with its card and plots, and the final model answers a prompt."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_speedrun_tiny(tmp_path):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path), NANOCHAT_PROFILE="tiny", NANOCHAT_SKIP_CORPUS="1",
               PYTHON=sys.executable, OMP_NUM_THREADS="1", NANOCHAT_PROMPT="Hello! Who are you?")
    run = subprocess.run(["bash", str(ROOT / "runs" / "cpu.sh")], env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    report = (tmp_path / "report" / "report.md").read_text()
    for section in ("## System", "## Tokenizer training", "## Base model training", "## Base model evaluation", "## Midtraining",
                    "## Chat evaluation (mid)", "## Chat SFT", "## Chat evaluation (SFT)", "## Report card", "## Plots"):
        assert section in report, f"{section} missing from report.md"
    assert "| CORE |" in report and "| ChatCORE |" in report and "commit" in report
    # every chat score on the card comes with its sample, its interval and the constant answer's score
    assert "| Metric | Stage | Score | n | 95% interval | Chance | Best constant answer | Shows learning? |" in report
    for task in ("ARC-Easy", "GSM8K", "SpellingBee", "ChatCORE"): assert f"| {task} | SFT |" in report, task
    assert (tmp_path / "report" / "loss.png").stat().st_size > 1000
    answer = log.rsplit("one answer", 1)[-1].split("== [")[0]
    assert answer.strip(), "chat_cli printed no answer"
