"""Every notebook is a test suite: run each through nbdev's own runner, one pytest test per notebook.

Cells flagged with a test flag from settings.ini (`slow`, `cuda`, `notest`) are skipped, as `nbdev_test` does;
NANOCHAT_SLOW=1 runs the slow ones too. On failure, the report names the notebook and the cell.
"""
import json

import pytest
from conftest import ROOT

from nanochat.devtools import chapter_notebooks, run_notebook_tests

NOTEBOOKS = [ROOT / "nbs" / "index.ipynb", *chapter_notebooks(ROOT)]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(notebook, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    run = run_notebook_tests(notebook)
    assert run.passed, f"{notebook.name} failed:\n{run.report}"


def _with_broken_cell(src, dst, message):
    "Copy notebook `src` to `dst` with a failing cell after its first code cell (or its title); returns its number."
    nb = json.loads(src.read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    at = code_cells[0] + 1 if code_cells else 1  # never before the title: nbdev turns that into front matter
    nb["cells"].insert(at, {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                            "source": f"raise RuntimeError({message!r})"})
    dst.write_text(json.dumps(nb))
    return at + 1  # execnb numbers cells from 1


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_broken_cell_is_reported(notebook, tmp_path):
    "A deliberately broken cell in any notebook fails its test, and the report names the notebook and the cell."
    broken = tmp_path / notebook.name
    cell_number = _with_broken_cell(notebook, broken, "deliberately broken")
    run = run_notebook_tests(broken, root=ROOT)
    assert not run.passed
    assert notebook.name in run.report
    assert f"Cell #{cell_number}" in run.report
    assert "deliberately broken" in run.report
