"""Damaged or missing input, through the real command lines: a message that names the file and the fix, never a
traceback. Each case is listed, with its message, in the contributing appendix."""
import random
import subprocess
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import PYTHON, ROOT

from nanochat.checkpoint import checkpoint_dir, save_checkpoint, step_dir
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer, save_tokenizer


def run(script, args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", f"nanochat.scripts.{script}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def clean_refusal(out, *words):
    "A non-zero exit, every one of `words` in stderr, and no traceback."
    assert out.returncode != 0, out.stdout[-1500:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    for word in words: assert word in out.stderr, (word, out.stderr[-3000:])


@pytest.fixture
def shards(tmp_path):
    "A folder of three small shards: two for training, the last for validation."
    rng, words = random.Random(0), "the a model token learns from text of many words and numbers 12 345".split()
    folder = tmp_path / "shards"
    folder.mkdir()
    for k in range(3):
        docs = [" ".join(rng.choices(words, k=200)) for _ in range(40)]
        pq.write_table(pa.table({"text": docs}), folder / f"shard_{k:05d}.parquet", row_group_size=10)
    return folder


def cut_short(path):
    "Keep the first half of a file, as a download that stopped would."
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def test_damaged_training_shard_is_skipped_with_a_warning(shards, run_env, tmp_path):
    cut_short(shards / "shard_00000.parquet")
    out = run("tok_train", ["--data", str(shards), "--vocab-size", "600", "--out-dir", str(tmp_path / "tok")], run_env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert f"{shards / 'shard_00000.parquet'} cannot be read" in out.stderr
    assert "Delete it and fetch it again" in out.stderr and "python -m nanochat.dataset" in out.stderr
    assert (tmp_path / "tok" / "tokenizer.tiktoken").exists()


def test_damaged_validation_shard_is_an_error(shards, run_env, tmp_path):
    cut_short(shards / "shard_00002.parquet")
    out = run("tok_train", ["--data", str(shards), "--vocab-size", "600", "--out-dir", str(tmp_path / "tok")], run_env)
    clean_refusal(out, "the validation shard", f"{shards / 'shard_00002.parquet'} cannot be read",
                  "Delete it and fetch it again")


def test_damaged_shard_stops_pretraining_with_its_name(shards, run_env):
    save_tokenizer(Tokenizer.train(iter(["some text to learn a few merges from"] * 50), vocab_size=300))
    cut_short(shards / "shard_00001.parquet")
    out = run("base_train", ["--profile", "tiny", "--data", str(shards), "--device-type", "cpu"], run_env)
    clean_refusal(out, f"shard {shards / 'shard_00001.parquet'} is unreadable", "delete it and fetch it again")


def test_chat_without_any_checkpoint_says_how_to_train_one(run_env):
    clean_refusal(run("chat_cli", ["-p", "hi"], run_env), "no SFT checkpoint yet", "checkpoints/sft has no runs",
                  "python -m nanochat.scripts.chat_sft")


def test_chat_with_several_runs_asks_for_one(run_env, private_base_dir):
    for tag in ("d4", "d8"): checkpoint_dir("sft", tag, private_base_dir).mkdir(parents=True)
    clean_refusal(run("chat_cli", ["-p", "hi"], run_env), "--model-tag is needed", "2 runs (d4, d8)")


@pytest.fixture
def tiny_sft(private_base_dir):
    "A tokenizer and an SFT run of a tiny random model with steps 3 and 5; returns the run folder."
    tok = Tokenizer.train(iter(["Hello! How can I help you today?"] * 50), vocab_size=300)
    save_tokenizer(tok)
    model = GPT.build(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_embd=32, n_head=2, n_kv_head=2, sequence_len=64))
    torch.manual_seed(0)
    run_dir = checkpoint_dir("sft", "tiny")
    for step in (3, 5):
        save_checkpoint(run_dir, step, model.state_dict(), None, None, meta={"model_config": asdict(model.config)},
                        keep_last=None)
    return run_dir


CHAT = ["-p", "Hello!", "--max-tokens", "2", "--device-type", "cpu"]


def test_truncated_checkpoint_falls_back_to_the_step_before(tiny_sft, run_env):
    cut_short(step_dir(tiny_sft, 5) / "model.safetensors")
    out = run("chat_cli", CHAT, run_env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"skipping checkpoint {step_dir(tiny_sft, 5)}" in out.stderr and "the file is truncated" in out.stderr
    clean_refusal(run("chat_cli", [*CHAT, "--step", "5"], run_env), f"checkpoint {step_dir(tiny_sft, 5)} can't be loaded",
                  "model.safetensors", "the file is truncated", "Load another step (saved: [3, 5])")


def test_truncated_only_checkpoint_is_an_error(tiny_sft, run_env):
    for step in (3, 5): cut_short(step_dir(tiny_sft, step) / "model.safetensors")
    clean_refusal(run("chat_cli", CHAT, run_env), f"no valid checkpoint in {tiny_sft}", "the file is truncated",
                  "copy them again, or delete them")


def test_tokenizer_folder_missing_a_file(tiny_sft, run_env, private_base_dir):
    (private_base_dir / "tokenizer" / "pattern.txt").unlink()
    clean_refusal(run("chat_cli", CHAT, run_env), f"{private_base_dir / 'tokenizer' / 'pattern.txt'} is missing",
                  "python -m nanochat.scripts.tok_train")


def test_profile_that_does_not_parse(run_env, tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("tok_train:\n  vocab_size: [1024\n")
    clean_refusal(run("tok_train", ["--profile", str(bad)], run_env), str(bad), "is not valid YAML")
    bad.write_text("- just\n- a list\n")
    clean_refusal(run("tok_train", ["--profile", str(bad)], run_env), str(bad), "must map script names to settings")


def garble(path):
    "Overwrite a file with bytes that are not what it should hold, as a bad disk or a wrong copy would leave it."
    path.write_bytes(bytes(range(256)) * 8)


TOKENIZER_USERS = {"chat_cli": CHAT, "base_eval": ["--stage", "sft", "--device-type", "cpu"],
                   "chat_eval": ["--stage", "sft", "--device-type", "cpu", "--task", "GSM8K", "--max-problems", "1"],
                   "base_train": ["--profile", "tiny", "--device-type", "cpu"]}


@pytest.mark.parametrize("script", TOKENIZER_USERS)
def test_tokenizer_with_damaged_ranks(tiny_sft, run_env, private_base_dir, script):
    ranks = private_base_dir / "tokenizer" / "tokenizer.tiktoken"
    garble(ranks)
    clean_refusal(run(script, TOKENIZER_USERS[script], run_env), f"{script}: error: {ranks} is damaged",
                  "python -m nanochat.scripts.tok_train")


def test_tokenizer_cut_short(tiny_sft, run_env, private_base_dir):
    ranks = private_base_dir / "tokenizer" / "tokenizer.tiktoken"
    text = ranks.read_text()
    ranks.write_text(text[:text.index(" ", len(text) // 2)])  # stopped in the middle of a line
    clean_refusal(run("chat_cli", CHAT, run_env), f"{ranks} is damaged: line", "python -m nanochat.scripts.tok_train")
    ranks.write_text(text[:text.rindex("\n", 0, -1) + 1])  # the last line lost: it parses, and has a token too few
    clean_refusal(run("chat_cli", CHAT, run_env), f"{ranks} has", "token_bytes.pt", "was saved for",
                  "python -m nanochat.scripts.tok_train")


def test_damaged_validation_shard_stops_base_eval_with_its_name(tiny_sft, shards, run_env):
    cut_short(shards / "shard_00002.parquet")
    out = run("base_eval", ["--stage", "sft", "--device-type", "cpu", "--data", str(shards), "--no-core",
                            "--eval-tokens", "256", "--device-batch-size", "1"], run_env)
    clean_refusal(out, f"shard {shards / 'shard_00002.parquet'} is unreadable", "delete it and fetch it again")


def test_damaged_validation_shard_stops_pretraining_with_its_name(shards, run_env):
    save_tokenizer(Tokenizer.train(iter(["some text to learn a few merges from"] * 50), vocab_size=300))
    cut_short(shards / "shard_00002.parquet")
    out = run("base_train", ["--profile", "tiny", "--data", str(shards), "--device-type", "cpu"], run_env)
    clean_refusal(out, f"shard {shards / 'shard_00002.parquet'} is unreadable", "delete it and fetch it again")


@pytest.mark.parametrize("damage", ["missing", "cut short", "garbage"])
def test_chat_eval_with_damaged_task_data(tiny_sft, run_env, tmp_path, damage):
    data = tmp_path / "data"
    gsm8k = data / "eval" / "gsm8k" / "test.jsonl"
    gsm8k.parent.mkdir(parents=True)
    gsm8k.write_text("".join(f'{{"question": "What is {k} + 1?", "answer": "#### {k + 1}"}}\n' for k in range(5)))
    {"missing": Path.unlink, "cut short": cut_short, "garbage": garble}[damage](gsm8k)
    out = run("chat_eval", TOKENIZER_USERS["chat_eval"], run_env | {"NANOCHAT_DATA_DIR": str(data)})
    said = f"{gsm8k} does not exist" if damage == "missing" else f"{gsm8k} cannot be read"
    clean_refusal(out, "chat_eval: error:", said, "python -m nanochat.data fetch")


def test_chat_eval_with_task_rows_that_lack_their_fields(tiny_sft, run_env, tmp_path):
    gsm8k = tmp_path / "data" / "eval" / "gsm8k" / "test.jsonl"
    gsm8k.parent.mkdir(parents=True)
    gsm8k.write_text("".join(f'{{"query": "What is {k} + 1?"}}\n' for k in range(5)))  # JSON, but not GSM8K's fields
    out = run("chat_eval", TOKENIZER_USERS["chat_eval"], run_env | {"NANOCHAT_DATA_DIR": str(tmp_path / "data")})
    clean_refusal(out, "chat_eval: error: GSM8K: row 0 of its data is not in the format expected",
                  "python -m nanochat.data fetch")

def test_shard_stats_with_a_damaged_tokenizer(shards, run_env, tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    garble(tok / "tokenizer.tiktoken")
    out = subprocess.run([PYTHON, "-m", "nanochat.dataset", "stats", "--dir", str(shards), "--tokenizer-dir", str(tok)],
                         cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
    clean_refusal(out, f"the tokenizer in {tok} cannot be read", "python -m nanochat.scripts.tok_train")
