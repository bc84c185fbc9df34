"""What every benchmark does last: name the commit it measured, print its one JSON line, save it in bench/results/."""
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    "The commit being measured: $NANOCHAT_COMMIT (set it where the copy has no .git), else git's HEAD."
    if os.environ.get("NANOCHAT_COMMIT"): return os.environ["NANOCHAT_COMMIT"]
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError: return "unknown"


def save_result(result: dict, out: Path | None = None) -> Path:
    "Print `result` as one JSON line and write it to `out` (default bench/results/NAME-DATE.json); returns the path."
    line = json.dumps(result)
    print(line)
    out = out or ROOT / "bench" / "results" / f"{result['name']}-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")
    return out
