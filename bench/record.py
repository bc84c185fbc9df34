"""What every benchmark does last: name the commit it measured, print its one JSON line, save it in bench/results/."""
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Upstream nanochat's training tok/s measured on an H100 80GB (torch 2.11, SDPA), batch 32 x 2048.
UPSTREAM_TOK_PER_S = {(12, "L"): 490e3, (12, "SSSL"): 409e3, (20, "L"): 146e3, (20, "SSSL"): 126e3}
# The card those numbers were taken on, as torch names it (the SXM part): on any other card, a PCIe or NVL H100
# included (lower clocks and power limit), a ratio to them means nothing.
REFERENCE_GPU = "H100 80GB HBM3"


def reference_tok_per_s(gpu: str, depth: int, pattern: str) -> float | None:
    "Upstream's fixed tok/s for this row, only where `gpu` is the card it was measured on (else None: time upstream on the same card)."
    return UPSTREAM_TOK_PER_S.get((depth, pattern)) if REFERENCE_GPU in gpu else None


def ratio_cell(value: float | None, digits: int = 3) -> str:
    "A ratio for a table cell ('1.104x'), or '-' where a row has none (no reference on this card)."
    return "-" if value is None else f"{value:.{digits}f}x"


def git_commit() -> str:
    "The commit being measured: $NANOCHAT_COMMIT (set it where the copy has no .git), else git's HEAD."
    if os.environ.get("NANOCHAT_COMMIT"): return os.environ["NANOCHAT_COMMIT"]
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError: return "unknown"


def result_header(name: str, device_type: str) -> dict:
    """The fields every result starts with: name, date, the machine (under `gpu`, or `cpu` with its thread count) and
    the commit measured."""
    import datetime

    import torch

    from nanochat.common import device_name
    where = device_name(device_type)
    if device_type == "cpu": where = f"CPU ({where}), {torch.get_num_threads()} thread(s)"
    return {"name": name, "date": datetime.date.today().isoformat(), ("gpu" if device_type == "cuda" else "cpu"): where,
            "commit": git_commit()}


def args_config(args, *leave_out: str) -> dict:
    "A script's parsed arguments as a result's `config` (paths as strings), without those named in `leave_out`."
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in leave_out}


def save_result(result: dict, out: Path | None = None) -> Path:
    "Print `result` as one JSON line and write it to `out` (default bench/results/NAME-DATE.json); returns the path."
    line = json.dumps(result)
    print(line)
    out = out or ROOT / "bench" / "results" / f"{result['name']}-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")
    return out


def profile_kernels(run, path: Path) -> None:
    "Run `run()` (say one micro-step's forward+backward) under the profiler; write its CUDA time per kernel to `path`."
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=90))


class GpuClocks:
    """Samples the GPU's SM clock, power and temperature (`nvidia-smi -lms`) while the `with` block runs; `.summary`
    holds their means and extremes afterwards ({} where nvidia-smi is missing). Sustained matmuls can hit the power cap
    and lower the clock, which slows every kernel: two runs of the same code differ by that much."""

    QUERY = "clocks.sm,power.draw,temperature.gpu"

    def __init__(self, interval_ms: int = 200, gpu: int = 0):
        self.command = ["nvidia-smi", f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits",
                        "-lms", str(interval_ms), "-i", str(gpu)]
        self.summary: dict = {}

    def __enter__(self):
        try: self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError: self.process = None
        return self

    def __exit__(self, *exc):
        if self.process is None: return False
        self.process.terminate()
        output, _ = self.process.communicate(timeout=10)
        self.summary = self.summarise(output)
        return False

    @staticmethod
    def summarise(output: str) -> dict:
        "Means and extremes of nvidia-smi's 'clock, power, temperature' lines (lines that do not parse are skipped)."
        rows = []
        for line in output.splitlines():
            try: rows.append([float(x) for x in line.split(",")])
            except ValueError: continue
        rows = [r for r in rows if len(r) == 3]
        if not rows: return {}
        clock, power, temp = zip(*rows)
        return {"sm_mhz_mean": round(sum(clock) / len(clock)), "sm_mhz_min": round(min(clock)),
                "power_w_mean": round(sum(power) / len(power)), "temp_c_max": round(max(temp)), "clock_samples": len(rows)}
