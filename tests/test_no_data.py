"""Every chapter runs without a data folder: with `NANOCHAT_DATA_DIR` at an empty folder, a few representative
chapters run top to bottom, cells that need data saying `skipped: ... fetch ...` instead of failing."""
import pytest
from conftest import ROOT

from nanochat.devtools import run_notebook_tests

CHAPTERS = ["03_dataset", "04_bpe", "14_tasks", "14c_gsm8k", "15_core_eval"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_without_data(chapter, tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    # $NANOCHAT_DATA_DIR wins over shared/data beside the checkout and over <base dir>/data
    monkeypatch.setenv("NANOCHAT_DATA_DIR", str(empty))
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from nanochat.common import shared_data_dir
    assert shared_data_dir() == empty
    run = run_notebook_tests(ROOT / "nbs" / f"{chapter}.ipynb")
    assert run.passed, f"{chapter} failed without data:\n{run.report[-3000:]}"
    assert not any(empty.iterdir())  # nothing was written into the data folder either
