"""chat_cli from the command line: one prompt against a tiny checkpoint, the interactive loop on piped input, --help,
and clear refusals."""
import subprocess
from dataclasses import asdict

import pytest
import torch
from conftest import PYTHON, ROOT

from nanochat.checkpoint import checkpoint_dir, save_checkpoint
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer, save_tokenizer


def run(args, env, stdin=None, timeout=120):
    return subprocess.run([PYTHON, "-m", "nanochat.scripts.chat_cli", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tiny_checkpoint(private_base_dir):
    "A tokenizer and an SFT checkpoint of a tiny random model in the private base dir."
    tok = Tokenizer.train(iter(["How much is 3 + 4? It is 7.", "Hello! How can I help you today?"] * 50), vocab_size=300)
    save_tokenizer(tok)
    model = GPT.build(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=64, n_head=2, n_kv_head=2, sequence_len=128))
    torch.manual_seed(0)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
        for stop in (tok.encode_special("<|assistant_end|>"), tok.get_bos_token_id()):
            model.lm_head.weight[stop] = 0  # a logit of 0 is never the largest here: the reply is never empty
    save_checkpoint(checkpoint_dir("sft", "tiny"), 3, model.state_dict(), None, None, meta={"model_config": asdict(model.config)})
    return tok


def test_one_prompt(tiny_checkpoint, run_env):
    args = ["-p", "Hello!", "--max-tokens", "10", "--temperature", "0", "--device-type", "cpu"]
    first, second = run(args, run_env), run(args, run_env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.endswith("\n") and first.stdout.strip()  # a reply, and nothing else on stdout
    assert first.stdout == second.stdout  # greedy: the same reply
    assert "Traceback" not in first.stderr


def test_interactive_on_piped_input(tiny_checkpoint, run_env):
    out = run(["--max-tokens", "6", "--device-type", "cpu"], run_env, stdin="Hi\nclear\nHow are you?\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("Assistant: ") == 2 and "(conversation cleared)" in out.stdout


def test_help_and_refusals(run_env):
    help_ = run(["--help"], run_env)
    assert help_.returncode == 0 and "--temperature" in help_.stdout and "--prompt" in help_.stdout
    cases = [(["--temperature", "-1"], "temperature and top_k must not be negative"), (["--tool", "shell"], "tool must be calculator"),
             (["--top-p", "0"], "top_p must be in (0, 1]"), (["--bogus", "1"], "unknown flag"),
             (["-p", "hi"], "no SFT checkpoint yet")]  # no checkpoint in the private base dir
    for args, message in cases:
        out = run(args, run_env)
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr
