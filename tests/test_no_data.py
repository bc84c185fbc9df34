"""Every chapter runs without a data folder: with `NANOCHAT_DATA_DIR` at an empty folder, a few representative
chapters run top to bottom, cells that need data saying `skipped: ... fetch ...` instead of failing (or working on a
stand-in made of sample text). NANOCHAT_SLOW=1 runs every notebook that way."""
import os

import pytest
from conftest import ROOT

from nanochat.devtools import chapter_notebooks, run_notebook_tests

# one of each kind: text only, pretraining shards (or their stand-in: tokenizer and base training on it), an eval set,
# the chat sets, CORE, a training stage that needs the chat sets
CHAPTERS = ["03_dataset", "04_bpe", "05a_tok_train", "06_dataloader", "12a_base_train", "14_tasks", "14a_arc",
            "14c_gsm8k", "14h_smoltalk", "15_core_eval", "17_mid_train"]
NOTEBOOKS = [ROOT / "nbs" / "index.ipynb", *chapter_notebooks(ROOT)]


def run_without_data(notebook, tmp_path, monkeypatch):
    empty = tmp_path / "data"
    empty.mkdir()
    # $NANOCHAT_DATA_DIR wins over shared/data beside the checkout and over <base dir>/data
    monkeypatch.setenv("NANOCHAT_DATA_DIR", str(empty))
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path / "base"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("NANOCHAT_SLOW", raising=False)  # the chapters' own slow cells stay skipped, as in CI
    from nanochat.common import shared_data_dir
    assert shared_data_dir() == empty
    run = run_notebook_tests(notebook)
    assert run.passed, f"{notebook.stem} failed without data:\n{run.report[-3000:]}"
    assert not any(empty.iterdir())  # nothing was written into the data folder either


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_without_data(chapter, tmp_path, monkeypatch):
    run_without_data(ROOT / "nbs" / f"{chapter}.ipynb", tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NANOCHAT_SLOW"), reason="slow: every notebook, minutes (NANOCHAT_SLOW=1)")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_runs_without_data(notebook, tmp_path, monkeypatch):
    run_without_data(notebook, tmp_path, monkeypatch)
