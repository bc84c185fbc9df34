"""The sandbox of nanochat.execution: every HumanEval reference solution passes in it, and hostile programs are
contained (clear result, bounded time) without harming the host (files, secrets, the parent, stray processes)."""
import gzip
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nanochat.common import shared_data_dir
from nanochat.execution import ExecutionResult, run_untrusted

SECRET_TEXT = "sk-not-for-the-model"


def _humaneval_path() -> Path | None:
    data = shared_data_dir()
    path = data / "eval" / "humaneval" / "HumanEval.jsonl.gz" if data else None
    return path if path is not None and path.exists() else None


@pytest.mark.skipif(_humaneval_path() is None, reason="no shared/data/eval/humaneval/HumanEval.jsonl.gz "
                    "(set NANOCHAT_DATA_DIR or put a shared/data folder beside the checkout)")
def test_humaneval_reference_solutions_pass_in_the_sandbox():
    with gzip.open(_humaneval_path(), "rt") as f: problems = [json.loads(line) for line in f]
    assert len(problems) == 164
    programs = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})" for p in problems]
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool: results = list(pool.map(lambda code: run_untrusted(code, timeout=10), programs))
    failed = {p["task_id"]: r.error for p, r in zip(problems, results) if not r.success}
    assert failed == {}, f"reference solutions that failed in the sandbox: {failed}"
    assert time.monotonic() - start < 60
    wrong = programs[0].replace(problems[0]["canonical_solution"], "    return True\n")
    assert run_untrusted(wrong).error == "AssertionError"


def refused(r: ExecutionResult) -> bool: return not r.success and r.error.startswith("PermissionError: sandbox")


HOSTILE = {  # name: (program, what must come back); CANARY and SECRET are replaced by the paths of this test's files
    "infinite loop": ("while True: pass", lambda r: r.timed_out and r.error == "timed out after 1.0 s" and r.returncode is None),
    "sleeps with its output closed": ("import os, time\nos.close(1); os.close(2)\ntime.sleep(60)", lambda r: r.timed_out),
    "fork bomb": ("import os\nwhile True: os.fork()", refused),
    "fork bomb via posix": ("import posix\nwhile True: posix.fork()", refused),
    "multiprocessing": ("import multiprocessing as mp\nmp.Process(target=print).start()", refused),
    "shell": ("import os\nos.system('echo pwned')", refused),
    "subprocess": ("import subprocess\nsubprocess.run(['echo', 'pwned'])", refused),
    "10 GB allocation": ("x = bytearray(10 * 2**30)", lambda r: r.memory_exceeded and "memory limit 256 MB" in r.error),
    "memory growing slowly": ("a = []\nwhile True: a.append(bytearray(10**7))", lambda r: r.memory_exceeded),
    "rm -rf outside": ("import shutil\nshutil.rmtree(CANARY)", refused),
    "rm -rf via shell": ("import os\nos.system('rm -rf ' + CANARY)", refused),
    "unlink via ../..": ("import os\nos.unlink(os.path.relpath(CANARY + '/precious.txt'))", refused),
    "socket": ("import socket\nsocket.socket().connect(('1.1.1.1', 80))", refused),
    "http": ("import urllib.request\nurllib.request.urlopen('http://example.com')",
             lambda r: r.error.startswith("urllib.error.URLError") and "sandbox: network access" in r.error),
    "read a secret": ("print(open(SECRET).read())", refused),
    "read a secret via FileIO": ("import io\nprint(io.FileIO(SECRET).read())", refused),
    "read a secret via pathlib": ("import pathlib\nprint(pathlib.Path(SECRET).read_text())", refused),
    # the program rebinds a builtin the guard's functions use: harmless, since it runs in a __main__ of its own
    "read a secret after rebinding any": ("any = lambda *args: True\nprint(open(SECRET).read())", refused),
    "kill the parent": ("import os\nos.kill(os.getppid(), 9)", refused),
    "kill everyone": ("import os\nos.kill(-1, 9)", refused),
    "escape the group": ("import os\nos.setsid()", refused),
    "raise its limits": ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", refused),
    "ctypes": ("import ctypes\nctypes.CDLL(None).fork()", lambda r: "ImportError: sandbox" in r.error),
    "huge stdout": ("while True: print('x' * 10_000)", lambda r: r.truncated and len(r.stdout) == 64_000),
    "huge stderr": ("import sys\nwhile True: sys.stderr.write('y' * 10_000)", lambda r: r.truncated and len(r.stderr) == 64_000),
    "huge file": ("open('big', 'wb').write(bytes(100 * 2**20))", lambda r: "File too large" in r.error),
}


def processes_in(folder: Path) -> list[int]:
    "Pids of the processes whose working directory is `folder` or inside it."
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try: where = os.readlink(proc / "cwd")
        except OSError: continue
        if where == str(folder) or where.startswith(f"{folder}/"): pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(name, tmp_path):
    canary, secret, workdir = tmp_path / "canary", tmp_path / "secret" / "api_key.txt", tmp_path / "run" / "a" / "b"
    canary.mkdir(); (canary / "precious.txt").write_text("still here")
    secret.parent.mkdir(); secret.write_text(SECRET_TEXT); secret.chmod(0o644)
    workdir.mkdir(parents=True)
    program, expected = HOSTILE[name]
    program = program.replace("CANARY", repr(str(canary))).replace("SECRET", repr(str(secret)))
    r = run_untrusted(program, timeout=1.0, memory_mb=256, cwd=workdir)
    assert expected(r), r
    assert r.seconds < 3
    assert (canary / "precious.txt").read_text() == "still here"
    assert SECRET_TEXT not in r.stdout + r.stderr
    assert processes_in(workdir) == [], "the program left processes behind"
    assert not list(workdir.iterdir()) or name == "huge file"


def test_temporary_folder_is_removed_and_output_is_clean():
    r = run_untrusted("import os; print(os.getcwd()); open('x', 'w').write('x'); print('é' * 40_000)", max_output_bytes=1001)
    folder = r.stdout.splitlines()[0]
    assert folder.startswith("/") and not Path(folder).exists()
    assert r.truncated and len(r.stdout.encode()) <= 1001 and not r.stdout.endswith("\ufffd")  # cut on a character boundary
