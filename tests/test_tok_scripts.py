"""tok_train and tok_eval from the command line: a real run on local data, and clear refusals."""
import json
import subprocess

from conftest import PYTHON, ROOT


def run(args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_train_then_eval_offline(run_env, private_base_dir, tmp_path):
    out = run(["nanochat.scripts.tok_train", "--profile", "tiny"], run_env)
    assert out.returncode == 0, out.stderr
    assert "trained a 1024-token tokenizer" in out.stdout
    saved = private_base_dir / "tokenizer"
    assert {"tokenizer.tiktoken", "pattern.txt", "token_bytes.pt", "config.yaml"} <= {p.name for p in saved.iterdir()}
    ev = run(["nanochat.scripts.tok_eval", "--profile", "tiny"], run_env)
    assert ev.returncode == 0, ev.stderr
    rows = json.loads((private_base_dir / "tok_eval" / "results.json").read_text())["rows"]
    assert [r["tokenizer"] for r in rows] == ["nanochat 1024", "hf_tokenizers 1024"]
    for kind in ("prose", "code", "math", "multilingual"): assert rows[0][kind] > 1.0


def test_text_files_work_as_training_data(run_env, tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(3): (tmp_path / "data" / f"doc{i}.txt").write_text(f"document number {i} " * 200)
    out = run(["nanochat.scripts.tok_train", "--profile", "tiny", "--data", str(tmp_path / "data"), "--vocab-size", "600",
               "--out-dir", str(tmp_path / "tok")], run_env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "tok" / "tokenizer.tiktoken").exists()


def test_refusals_are_clear(run_env, tmp_path):
    cases = [(["nanochat.scripts.tok_train", "--vocab-size", "100"], "vocab_size must be at least 512"),
             (["nanochat.scripts.tok_train", "--data", str(tmp_path / "nowhere")], "does not exist"),
             (["nanochat.scripts.tok_eval", "--tokenizer-dir", str(tmp_path / "none")], "no tokenizer in"),
             (["nanochat.scripts.tok_eval", "--vocab-sizes", "64"], "vocab sizes must be at least 512")]
    for args, message in cases:
        out = run(args, run_env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert run(["nanochat.scripts.tok_train", "--help"], run_env).returncode == 0
