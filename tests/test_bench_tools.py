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


def test_summarize_means_per_row():
    from merge_results import summarize
    rows = [{"kind": "train", "depth": 12, "pattern": "L", "variant": "default", "tok_per_s": t, "sm_mhz_mean": c}
            for t, c in [(530_000, 1650), (550_000, 1750)]]
    rows.append({"kind": "train", "depth": 12, "pattern": "L", "variant": "fp8=1", "tok_per_s": 500_000})
    rows.append({"kind": "trace", "depth": 12, "pattern": "L"})  # not a throughput row: ignored
    by_variant = {s["variant"]: s for s in summarize(rows, gpu="NVIDIA H100 80GB HBM3")}
    assert set(by_variant) == {"default", "fp8=1"}
    s = by_variant["default"]
    assert (s["runs"], s["tok_per_s_mean"], s["tok_per_s_min"], s["tok_per_s_max"], s["sm_mhz_mean"]) == (2, 540_000, 530_000, 550_000, 1700)
    assert s["vs_upstream_mean"] == round(540_000 / 490e3, 3)
    assert "sm_mhz_mean" not in by_variant["fp8=1"]
    assert "vs_upstream_same_card" not in s  # no upstream rows timed alongside


def test_summarize_ratio_against_upstream_timed_alongside():
    import copy

    from merge_results import beside_upstream, summarize
    rows = [{"kind": "train", "depth": 12, "pattern": "L", "variant": v, "tok_per_s": t}
            for v, t in [("default", 550_000), ("default", 530_000), ("upstream", 500_000)]]
    before = copy.deepcopy(rows)
    summaries = summarize(rows, gpu="NVIDIA H100 80GB HBM3")
    by_variant = {s["variant"]: s for s in summaries}
    assert by_variant["default"]["vs_upstream_same_card"] == 1.08
    assert "vs_upstream_same_card" not in by_variant["upstream"]
    marked = beside_upstream(rows, summaries)
    assert [r.get("upstream_tok_per_s") for r in marked] == [500_000, 500_000, None]  # our rows carry upstream's tok/s
    assert rows == before  # the inputs are left as they were


def test_same_card_ratio_pairs_precisions():
    "Our FP8 rows are compared with upstream's --fp8 step, our bf16 rows with its bf16 step; never across."
    from merge_results import summarize
    rows = [{"kind": "train", "depth": 20, "pattern": "L", "variant": v, "fp8": f, "tok_per_s": t}
            for v, f, t in [("default", False, 165_000), ("fp8=1", True, 193_000), ("upstream", False, 161_000), ("upstream-fp8", True, 175_000)]]
    by_variant = {s["variant"]: s for s in summarize(rows, gpu="NVIDIA H200")}
    assert by_variant["default"]["vs_upstream_same_card"] == round(165 / 161, 3)
    assert by_variant["fp8=1"]["vs_upstream_same_card"] == round(193 / 175, 3)
    rows = [r for r in rows if r["variant"] != "upstream-fp8"]  # no FP8 step of upstream's: no ratio for our FP8 row
    assert "vs_upstream_same_card" not in {s["variant"]: s for s in summarize(rows, gpu="NVIDIA H200")}["fp8=1"]


def test_fixed_reference_only_on_the_card_it_was_taken_on():
    "Upstream's fixed numbers were measured on an H100: another card's rows get no ratio to them, only same-card ones."
    from merge_results import summarize
    from record import reference_tok_per_s
    assert reference_tok_per_s("NVIDIA H100 80GB HBM3", 12, "L") == 490e3
    assert reference_tok_per_s("NVIDIA H200", 12, "L") is None and reference_tok_per_s("NVIDIA H100 80GB HBM3", 12, "SL") is None
    assert reference_tok_per_s("NVIDIA H100 PCIe", 12, "L") is None and reference_tok_per_s("NVIDIA H100 NVL", 12, "L") is None
    rows = [{"kind": "train", "depth": 12, "pattern": "L", "variant": v, "tok_per_s": t} for v, t in [("default", 580_000), ("upstream", 550_000)]]
    ours = {s["variant"]: s for s in summarize(rows, gpu="NVIDIA H200")}["default"]
    assert "vs_upstream_mean" not in ours and ours["vs_upstream_same_card"] == round(580 / 550, 3)


def test_merge_results_keeps_to_one_card(tmp_path):
    "merge_results refuses runs of different GPUs, and drops a stale H100 ratio from another card's rows."
    import json
    import subprocess
    bench = Path(__file__).resolve().parents[1] / "bench"
    def result(name, gpu, tok):
        path = tmp_path / name
        path.write_text(json.dumps({"name": "train_throughput", "date": "2026-12-03", "gpu": gpu, "commit": "x", "records": [
            {"kind": "train", "depth": 12, "pattern": "L", "variant": "default", "tok_per_s": tok, "vs_upstream": round(tok / 490e3, 3)}]}))
        return str(path)
    a, b, c = result("a.json", "NVIDIA H200", 580_000), result("b.json", "NVIDIA H200", 582_000), result("c.json", "NVIDIA H100 80GB HBM3", 540_000)
    run = lambda *files: subprocess.run([sys.executable, str(bench / "merge_results.py"), str(tmp_path / "out.json"), *files, "--summary"],
                                        capture_output=True, text=True)
    mixed = run(a, c)
    assert mixed.returncode != 0 and "different GPUs" in mixed.stderr
    assert run(a, b).returncode == 0
    records = json.loads((tmp_path / "out.json").read_text())["records"]
    assert all("vs_upstream" not in r and "vs_upstream_mean" not in r for r in records)


def test_compiled_autograd_backward_matches_plain():
    "The bench's compiled-autograd backward accumulates the same gradients as loss.backward() (CPU, a tiny MLP)."
    import torch
    from train_throughput import backward_fn
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    xs = torch.randn(2, 4, 8)
    grads = []
    for compiled in (False, True):
        model.zero_grad(set_to_none=True)
        backward = backward_fn(compiled)
        for x in xs: backward(model(x).square().mean(), 0.5)  # two micro-steps, each scaled as in accumulation
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, compiled in zip(*grads): torch.testing.assert_close(compiled, plain)


def test_fp8_quality_variants_and_verdict():
    "The FP8 quality bench: variants parse or fail clearly, gaps are to the first run, and the verdict sizes them by the seed gap."
    import argparse

    from fp8_quality import gaps, parse_variant, train_command, verdict
    assert parse_variant("fp8") == {"name": "fp8", "fp8": True, "seed": None}
    assert parse_variant("bf16:seed=43") == {"name": "bf16:seed=43", "fp8": False, "seed": 43}
    for bad in ("fp16", "bf16:seed=x", "fp8:lr=2"):
        with pytest.raises(argparse.ArgumentTypeError): parse_variant(bad)
    runs = {"bf16": {"evals": {50: 1.5, 100: 1.20}}, "fp8": {"evals": {50: 1.5, 100: 1.21}}, "bf16:seed=43": {"evals": {100: 1.185}}}
    assert gaps(runs, "bf16") == {"fp8": 0.01, "bf16:seed=43": -0.015}
    variants = [parse_variant(v) for v in runs]
    assert verdict(gaps(runs, "bf16"), variants).endswith("within the noise")
    runs["fp8"]["evals"][100] = 1.25
    assert verdict(gaps(runs, "bf16"), variants).endswith("larger than the noise")
    args = argparse.Namespace(depth=4, pattern="L", steps=10, total_batch_size=2048, device_batch_size=4, max_seq_len=256,
                              eval_every=5, eval_tokens=4096, seed=42, data=None, tokenizer_dir=None, extra=[])
    a, b = train_command(args, variants[0], "v0"), train_command(args, variants[1], "v1")
    assert [x for x in a if x not in b] == ["v0", "--no-fp8"] and [x for x in b if x not in a] == ["v1", "--fp8"]  # nothing else differs


def test_fp8_quality_keeps_a_cut_short_run(tmp_path):
    "A run stopped by --run-timeout has no summary.json: its evaluations still count, and gaps compare at a step both reached."
    import json

    from fp8_quality import gaps, read_run
    assert read_run(tmp_path) is None  # nothing written at all
    lines = [{"step": 50, "loss": 6.1, "smooth_loss": 6.2}, {"step": 50, "val_bpb": 1.94}, {"step": 100, "val_bpb": 1.66}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    run = read_run(tmp_path)
    assert run["complete"] is False and run["evals"] == {50: 1.94, 100: 1.66} and run["summary"] == {"steps": 100}
    base = {"evals": {50: 1.93, 100: 1.65, 150: 1.51}}
    assert gaps({"bf16": base, "fp8": run}, "bf16") == {"fp8": 0.01}  # at step 100, not the baseline's 150


def test_serve_load_drives_a_running_server(tmp_path):
    "serve_load --url: one flat record per client count against a server it did not start (a tiny model, on the CPU)."
    import json

    from serve_load import client_counts, main

    from nanochat.batching import EngineSlots
    from nanochat.engine import Engine
    from nanochat.scripts.chat_web import byte_tokenizer, tiny_random_model
    from nanochat.server import ServerConfig, create_app, serve_in_thread
    assert client_counts("2, 3") == [2, 3]
    tok = byte_tokenizer()
    engine = Engine(tiny_random_model(tok), tok, feed_prompts=64)  # short prompts joining busy rows are fed, not prefilled
    app = create_app(EngineSlots(engine, slots=4), tok, ServerConfig(model_name="nano-test"))
    with serve_in_thread(app) as url:
        result = main(["--url", url, "--clients", "2,3", "--requests", "2", "--max-tokens", "4", "--warmup", "1",
                       "--out", str(tmp_path / "serve.json")])
    assert json.loads((tmp_path / "serve.json").read_text()) == result
    assert result["model"] == "nano-test" and result["url"] == url and result["device"] == "cpu"
    records = result["records"]
    assert [(r["mode"], r["clients"], r["requests"], r["errors"], r["slots"]) for r in records] == [("external", 2, 4, 0, 4), ("external", 3, 6, 0, 4)]
    for r in records:
        assert all(not isinstance(v, (dict, list)) for v in r.values()), r  # flat
        assert r["tok_per_s"] > 0 and r["engine_tok_per_s"] > 0 and 0 < r["mean_rows_per_step"] <= 4  # rows that emitted: a fed prompt emits nothing
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["ttft_p99_ms"] >= r["ttft_p50_ms"] > 0 and 0 < r["engine_busy"] <= 1.1
        assert 1 <= r["admissions"] <= r["requests"] and r["admit_ms"] > 0  # a round admits every request waiting
        assert 1 <= r["prefill_admissions"] <= r["admissions"]  # at least the first, into an idle batch
        assert r["gc_pause_ms"] >= 0 and r["gc_full"] >= 0  # the server's garbage collections during the run


def run_bench(tmp_path, script: str, *args: str):
    "Run bench/`script` with `args` and `--out` in tmp_path: the finished process and its JSON's records (or None)."
    import json
    import subprocess
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench" / script), *args,
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    return done, json.loads(out.read_text())["records"] if out.exists() else None


def test_core_pack_runs_and_agrees(tmp_path):
    "bench/core_pack.py on a tiny CPU model: both ways of scoring CORE give the same verdict for every example."
    from nanochat.common import shared_data_dir
    data = shared_data_dir()
    if data is None or not (data / "eval" / "core" / "core_tasks.csv").exists(): pytest.skip("no CORE data here")
    done, records = run_bench(tmp_path, "core_pack.py", "--device", "cpu", "--depth", "1", "--aspect-ratio", "64",
                              "--head-dim", "64", "--per-task", "4", "--tasks", "arc_easy,lambada_openai", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["task"] for r in records] == ["arc_easy", "lambada_openai"]
    assert all(r["same_verdicts"] == r["examples"] == 4 for r in records)


def test_int8_matvec_runs(tmp_path):
    "bench/int8_matvec.py on the CPU, one small shape: a record with the three products' times."
    done, records = run_bench(tmp_path, "int8_matvec.py", "--device", "cpu", "--rows", "1", "--copies", "1",
                              "--repeats", "1", "--shapes", "attn_proj")
    if done.returncode != 0 and "CppCompileError" in done.stderr: pytest.skip("inductor cannot compile C++ here")
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = records
    assert record["matrix"] == "attn_proj" and min(record["bf16_us"], record["plain_us"], record["fused_us"]) > 0


def test_pipeline_before_after_reads_the_recorded_runs(tmp_path):
    "The before/after table from the committed speedrun logs and d20 results: every stage of both runs, ratios."
    from pipeline_before_after import main, read_speedrun, stage_name
    assert stage_name("report: a new run (profile d12)", set()) == "start"
    assert stage_name("report", {"start"}) == "report"
    result = main(["--out", str(tmp_path / "table.json")])
    stages = {r["stage"]: r for r in result["records"] if r["kind"] == "pipeline_stage"}
    assert stages["total"]["wall_s"] == 351 and stages["total"]["before_wall_s"] == 518
    assert stages["supervised fine-tuning"]["tok_per_s"] > 20 * stages["supervised fine-tuning"]["before_tok_per_s"]
    assert {"midtraining", "reinforcement learning on GSM8K"} <= set(stages)
    serve = [r for r in result["records"] if r["kind"] == "serve"]
    assert all(0 < r["of_infer_bench"] < 1.2 and r["errors"] == 0 for r in serve)
    assert "| total |" in (tmp_path / "table.md").read_text()
    after = read_speedrun(Path(__file__).resolve().parents[1] / "bench/results/mini_speedrun-2026-12-05/speedrun.log")
    assert sum(s["wall_s"] for name, s in after.items() if name != "total") == after["total"]["wall_s"]


def test_gemv_tune_searches_distinct_valid_plans():
    "bench/gemv_tune.py's first stage: each plan covers k exactly once, fits the register budget and fills the card."
    from gemv_tune import PRODUCTS_PER_PROGRAM, stage1_plans, stage2_plans
    for n, k in ((3840, 1280), (1280, 1280), (5120, 1280), (1280, 5120), (32768, 1280)):
        plans = stage1_plans(n, k, sms=132)
        keys = [(p["BLOCK_N"], p["BLOCK_K"], p["splits"]) for p in plans]
        assert plans and len(keys) == len(set(keys)), (n, k)
        for p in plans:
            assert p["k_per_split"] % p["BLOCK_K"] == 0 and p["BLOCK_N"] * p["BLOCK_K"] <= PRODUCTS_PER_PROGRAM
            assert (p["splits"] - 1) * p["k_per_split"] < k <= p["splits"] * p["k_per_split"]  # no empty slice
            assert 66 <= -(-n // p["BLOCK_N"]) * p["splits"] <= 64 * 132
    again = stage2_plans(plans[:2])
    assert len(again) == 2 * 8 and all((p["num_warps"], p["num_stages"]) != (4, 3) for p in again)


def test_gpu_checks_reads_its_batch1_settings(tmp_path):
    """gpu_checks.sh refuses an unknown batch-1 setting, or a tuned one with no plans to read, before anything runs (a
    typo must not cost a GPU machine's time); with ONLY naming no part, nothing runs."""
    import os
    import subprocess
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_checks.sh"
    env = dict(os.environ, OUT=str(tmp_path), ONLY="nothing", PYTHON="true", TEST_WORKERS="1")
    ok = subprocess.run(["bash", str(script)], env=env | {"B1": "reduce_mk tuned nopdl_cdt_lt"}, capture_output=True,
                        text=True, cwd=script.parents[1])
    assert ok.returncode == 0 and "exit" not in ok.stdout, ok.stdout + ok.stderr
    bad = subprocess.run(["bash", str(script)], env=env | {"B1": "reduce reduce_fast"}, capture_output=True, text=True,
                         cwd=script.parents[1])
    assert bad.returncode == 2 and "unknown batch-1 setting part fast of reduce_fast" in bad.stderr, bad.stderr
    tuned = env | {"B1": "tuned", "ONLY": "decode_b1_tuned"}  # the tuned step without the plan search or its file
    no_plans = subprocess.run(["bash", str(script)], env=tuned, capture_output=True, text=True, cwd=script.parents[1])
    assert no_plans.returncode == 2 and "needs the plans of a gemv_tune run" in no_plans.stderr, no_plans.stderr
    (tmp_path / "plans.json").write_text("{}")
    with_plans = subprocess.run(["bash", str(script)], env=tuned | {"GEMV_PLANS": str(tmp_path / "plans.json")},
                                capture_output=True, text=True, cwd=script.parents[1])
    assert with_plans.returncode == 0 and "== decode_b1_tuned: exit 0" in with_plans.stdout, with_plans.stdout
