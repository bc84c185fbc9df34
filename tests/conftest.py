"""Shared fixtures: the project root, a private artifact directory, and the interpreter of the project's venv."""
import os
import sys
from pathlib import Path

import pytest
import torch

# Triton decides whether a kernel is interpreted when the kernel is made, at import: on a machine without a GPU the
# decode-kernel tests need the interpreter on before any test module (the engine's imports Triton through inductor)
# is collected, whatever order the files run in.
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_base_dir(tmp_path, monkeypatch):
    "Every test gets its own NANOCHAT_BASE_DIR, so no test reads or writes the reader's artifacts or progress."
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "nanochat_base"))
    return tmp_path / "nanochat_base"


@pytest.fixture
def run_env(private_base_dir):
    "Environment for child processes: the private base dir, no test flag inherited from notebook runs."
    env = dict(os.environ)
    env.pop("IN_TEST", None)
    env["NANOCHAT_BASE_DIR"] = str(private_base_dir)
    # the repo first, then whatever the caller had (a GPU machine may keep extra packages on its PYTHONPATH)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


PYTHON = sys.executable
