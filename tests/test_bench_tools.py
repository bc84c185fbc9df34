"""The parts of the GPU benchmarks that run without a GPU: reading a profiler trace, summarising nvidia-smi samples."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from record import GpuClocks  # noqa: E402
from trace_step import analyse, is_sync_call, merged  # noqa: E402


def kernel(ts, dur, correlation, name="triton_poi_fused_mul_0"):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "tid": 7, "args": {"correlation": correlation}}


def launch(ts, dur, correlation, name="cudaLaunchKernel", cat="cuda_runtime"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": 1, "args": {"correlation": correlation}}


def cpu_op(ts, dur, name):
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": 1}


def test_merged_joins_overlaps():
    assert merged([(5, 6), (0, 2), (1, 3), (3, 4)]) == [(0, 4), (5, 6)]


def test_analyse_charges_gaps_to_the_launching_op():
    events = [
        cpu_op(0, 1000, "Optimizer.step"), cpu_op(100, 50, "aten::mul"), cpu_op(500, 40, "aten::mm"),
        launch(110, 5, 1), kernel(120, 100, 1),                                      # busy 120-220
        launch(130, 5, 2, "cuLaunchKernelEx", "cuda_driver"), kernel(200, 50, 2),     # overlaps: busy to 250
        launch(505, 5, 3), kernel(600, 100, 3, "sm90_xmma_gemm_bf16"),                # gap 250-600, launched in mm
        launch(300, 200, 4, "cudaStreamSynchronize"),                                 # the CPU waited during the gap
        {"ph": "X", "cat": "gpu_memset", "name": "Memset", "ts": 710, "dur": 10, "tid": 7, "args": {"correlation": 5}},
        launch(650, 2, 5, "cudaMemsetAsync"),                                         # gap 700-710: under min_gap
    ]
    report = analyse({"traceEvents": events}, min_gap_us=20)
    assert report["span_ms"] == pytest.approx(0.6) and report["busy_ms"] == pytest.approx(0.24)  # 120-250, 600-700, 710-720
    assert report["idle_ms"] == pytest.approx(0.36)
    assert report["gaps_over_min"] == 1
    gap = report["top_gaps"][0]
    assert gap["gap_us"] == 350 and gap["launch_stack"] == ["Optimizer.step", "aten::mm"]
    assert gap["syncs"] == ["cudaStreamSynchronize"] and gap["next_kernel"] == "sm90_xmma_gemm_bf16"
    assert report["gap_ms_by_launching_op"] == {"Optimizer.step > aten::mm": {"ms": 0.35, "count": 1}}
    assert report["kernel_ms_by_kind"] == {"triton": 0.15, "matmul": 0.1, "copy": 0.01}


def test_sync_calls_are_the_blocking_ones():
    assert all(map(is_sync_call, ["cudaStreamSynchronize", "cuCtxSynchronize", "cudaMemcpy", "cudaFree"]))
    assert not any(map(is_sync_call, ["cudaMemcpyAsync", "cudaLaunchKernel", "cuLaunchKernelEx", "cudaMallocAsync"]))


def test_analyse_refuses_a_trace_without_gpu_work():
    with pytest.raises(ValueError, match="no GPU kernels"):
        analyse({"traceEvents": [cpu_op(0, 10, "aten::mm")]}, min_gap_us=20)


def test_gpu_clocks_summary():
    summary = GpuClocks.summarise("1980, 650.0, 61\n1700, 700.0, 70\n[N/A], [N/A], 70\n")
    assert summary == {"sm_mhz_mean": 1840, "sm_mhz_min": 1700, "power_w_mean": 675, "temp_c_max": 70, "clock_samples": 2}
    assert GpuClocks.summarise("") == {}
