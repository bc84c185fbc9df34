"""torchrun on the CPU: two ranks join a Gloo process group, talk, print once, and leave cleanly."""
import subprocess
import textwrap

from conftest import PYTHON, ROOT

WORKER = textwrap.dedent("""
    import torch, torch.distributed as dist
    from nanochat.common import init_distributed, cleanup_distributed, print0, get_logger
    info = init_distributed("cpu")
    assert dist.get_backend() == "gloo" and info.world_size == 2 and info.is_ddp
    total = torch.tensor([float(info.rank)])
    dist.all_reduce(total)
    print(f"rank {info.rank} of {info.world_size}: sum of ranks = {total.item():.0f}", flush=True)
    print0("only rank 0 says this", flush=True)
    get_logger("nanochat.test").warning("a warning from every rank")
    cleanup_distributed(); cleanup_distributed()  # idempotent
    assert not dist.is_initialized()
""")


def test_two_cpu_ranks_under_torchrun(tmp_path, run_env):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rank 0 of 2: sum of ranks = 1" in out.stdout and "rank 1 of 2: sum of ranks = 1" in out.stdout
    assert out.stdout.count("only rank 0 says this") == 1
    assert "[rank 0] WARNING" in out.stderr and "[rank 1] WARNING" in out.stderr


def test_incomplete_torchrun_environment_is_a_clear_error(run_env):
    env = run_env | {"RANK": "0"}
    env.pop("WORLD_SIZE", None); env.pop("LOCAL_RANK", None)
    out = subprocess.run([PYTHON, "-c", "from nanochat.common import init_distributed; init_distributed('cpu')"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "torchrun environment is incomplete" in out.stderr
    assert "'LOCAL_RANK', 'WORLD_SIZE'] missing" in out.stderr  # the error names what to fix


def test_sharded_optimizers_match_one_process(run_env):
    "DistAdamW and DistMuon on 2 CPU ranks (half a batch each) equal AdamW and Muon in one process on the whole batch."
    out = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tests/dist_optim_worker.py"],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("max |sharded - single|") == 2
