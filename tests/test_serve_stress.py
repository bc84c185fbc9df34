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


def test_soak_samples_gpu_memory_and_fails_on_its_growth(monkeypatch):
    "Each sample reads the three GPU gauges when /metrics has them (NaN when not: a CPU server); growth fails the soak."
    import argparse
    sys.path.insert(0, str(ROOT / "bench"))
    import serve_stress
    exported = {"process_resident_memory_bytes": 2**30, "process_open_fds": 9.0}
    monkeypatch.setattr(serve_stress, "server_metrics", lambda url, headers: dict(exported))
    on_cpu = serve_stress.process_figures("http://server", {})
    assert on_cpu["rss_mb"] == 1024 and all(on_cpu[f"gpu_{f}_mb"] != on_cpu[f"gpu_{f}_mb"] for f in serve_stress.GPU_FIGURES)
    samples = []
    for i in range(6):  # allocated memory that keeps growing, 100 MB a sample; reserved and peak steady
        exported.update(nanochat_gpu_allocated_bytes=(200 + 100 * i) * 2**20, nanochat_gpu_reserved_bytes=2**30,
                        nanochat_gpu_max_allocated_bytes=2**29)
        samples.append(serve_stress.process_figures("http://server", {}))
    assert samples[0]["gpu_allocated_mb"] == 200 and samples[0]["gpu_reserved_mb"] == 1024
    record = {"kind": "soak", "errors": 0, "rss_growth_mb": 0.0, "fd_growth": 0.0,
              **{f"gpu_{f}_growth_mb": serve_stress.trend(samples, f"gpu_{f}_mb") for f in serve_stress.GPU_FIGURES}}
    args = argparse.Namespace(rss_tolerance_mb=50.0, fd_tolerance=8.0, gpu_tolerance_mb=64.0)
    assert serve_stress.verdicts([record], args) == ["soak: GPU memory (allocated) grew 400.0 MB"]
    cpu_record = record | {f"gpu_{f}_growth_mb": float("nan") for f in serve_stress.GPU_FIGURES}
    assert serve_stress.verdicts([cpu_record], args) == []


def test_open_files_are_compared_at_rest(monkeypatch):
    "Sockets still closing after the soak are waited for; a count that stays up is what the check reports."
    import asyncio
    sys.path.insert(0, str(ROOT / "bench"))
    import serve_stress
    counts = iter([25.0, 19.0, 12.0, 9.0])  # the clients' connections closing one poll after another
    monkeypatch.setattr(serve_stress, "server_metrics", lambda url, headers: {"process_open_fds": next(counts)})
    assert asyncio.run(serve_stress.fds_at_rest("http://server", {}, baseline=9.0)) == 9.0
    monkeypatch.setattr(serve_stress, "server_metrics", lambda url, headers: {"process_open_fds": 30.0})  # a leak
    assert asyncio.run(serve_stress.fds_at_rest("http://server", {}, baseline=9.0, settle_s=0.3)) == 30.0
    monkeypatch.setattr(serve_stress, "server_metrics", lambda url, headers: {})  # not exported: NaN, no waiting
    nan = asyncio.run(serve_stress.fds_at_rest("http://server", {}, baseline=9.0))
    assert nan != nan
