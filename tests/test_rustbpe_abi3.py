"""The rustbpe wheel is abi3: the one built here for Python 3.11 also loads and trains under Python 3.12."""
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = """
import rustbpe, sys
t = rustbpe.Tokenizer()
t.train_from_iterator(iter(["hello hello world"] * 50), 260)
assert t.vocab_size == 260 and len(t.get_mergeable_ranks()) == 260
print(sys.version_info[:2], t.get_merges())
"""


def test_abi3_wheel_loads_on_python_3_12(tmp_path):
    wheels = sorted((ROOT / "rustbpe" / "target" / "wheels").glob("rustbpe-*-abi3-*.whl"))
    candidates = [shutil.which("python3.12"), *map(str, Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]
    working = [p for p in candidates if p and subprocess.run([p, "--version"], capture_output=True).returncode == 0]
    if not wheels: pytest.skip("no rustbpe wheel built: bash rustbpe/build.sh")
    if not working: pytest.skip("no python3.12 here")
    python312 = working[0]
    zipfile.ZipFile(wheels[-1]).extractall(tmp_path)
    out = subprocess.run([python312, "-c", SCRIPT], env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(3, 12)")
