"""bench/serve_stress.py in short: a burst of 200 streams, a 6-second soak, and the faults (disconnects, a slow reader,
a burst past the queue, a step that raises), each followed by the check that every row is free and the server answers."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stress_soak_and_faults_pass_on_the_tiny_server(tmp_path):
    out = tmp_path / "stress.json"
    run = subprocess.run([sys.executable, "serve_stress.py", "--clients", "200", "--minutes", "0.1", "--sample-s", "2",
                          "--slots", "16", "--max-queue", "64", "--out", str(out)], cwd=ROOT / "bench",
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"]
    kinds = {r.get("fault", r["kind"]): r for r in result["records"]}
    assert kinds["stress"]["errors"] == 0 and kinds["stress"]["served"] > 0
    assert kinds["full queue"]["refused_503"] > 0  # refused as meant, with Retry-After, never an error
    assert all(r["rows_freed"] and r["then_serves"] for r in result["records"] if r["kind"] == "fault")
    assert kinds["a step raises"]["served"] + kinds["a step raises"]["failed_cleanly"] == 24  # none hung


def test_bad_arguments_are_refused():
    run = subprocess.run([sys.executable, "serve_stress.py", "--checks", "stress,chaos"], cwd=ROOT / "bench",
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--checks takes stress, soak, faults" in run.stderr
