"""`python -m nanochat.export hf` from the command line: a tiny SFT checkpoint exported, then loaded by transformers in
a process where nanochat cannot be imported (the folder must stand on its own), and read back with `from_hf`."""
import json
import subprocess
from dataclasses import asdict

import pytest
import torch
from conftest import PYTHON, ROOT

from nanochat.checkpoint import checkpoint_dir, save_checkpoint
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer, render_for_completion, save_tokenizer

pytest.importorskip("transformers")

from nanochat.export import from_hf  # noqa: E402

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How much is 3 + 4?"},
        {"role": "assistant", "content": "It is 7."}]

# Runs in a fresh interpreter with nanochat made unimportable: prints the logits, greedy tokens and chat ids to a file.
LOAD_WITHOUT_NANOCHAT = """
import sys
sys.modules["nanochat"] = None  # any `import nanochat` now fails
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, ids, chat, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
prompt = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits
    greedy = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0].tolist()
torch.save({"logits": logits, "greedy": greedy, "prompt": prompt}, out)
"""


def run(args, env, timeout=180):
    return subprocess.run([PYTHON, "-m", "nanochat.export", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def tiny_sft(private_base_dir):
    "A tokenizer and an SFT checkpoint of a tiny random model (windows, GQA, value embeddings) in the private base dir."
    tok = Tokenizer.train(iter(["How much is 3 + 4? It is 7.", "Hello! How can I help you today?"] * 50), vocab_size=300)
    save_tokenizer(tok)
    config = GPTConfig(vocab_size=320, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, sequence_len=64,
                       window_pattern="SL", short_window=8)
    model = GPT.build(config, seed=1)
    torch.manual_seed(0)
    with torch.no_grad():  # away from the initialisation's zeros, so that every parameter matters
        for p in model.parameters(): p.add_(0.1 * torch.randn_like(p))
    save_checkpoint(checkpoint_dir("sft", "tiny"), 3, model.state_dict(), None, None,
                    meta={"model_config": asdict(model.config)})
    return model, tok


def test_export_load_with_transformers_and_back(tiny_sft, run_env, tmp_path):
    model, tok = tiny_sft
    out = tmp_path / "hf"
    done = run(["hf", "--stage", "sft", str(out)], run_env)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = torch.randint(0, tok.vocab_size, (30,), generator=torch.Generator().manual_seed(0)).tolist()
    env = {k: v for k, v in run_env.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # transformers copies the remote code there: not into ~/.cache
    loaded = subprocess.run([PYTHON, "-c", LOAD_WITHOUT_NANOCHAT, str(out), json.dumps(ids), json.dumps(CHAT),
                             str(tmp_path / "result.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=180)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = torch.load(tmp_path / "result.pt")
    with torch.no_grad(): ours = model(torch.tensor([ids]))
    torch.testing.assert_close(result["logits"], ours, atol=1e-5, rtol=0)
    prompt = render_for_completion(tok, {"messages": CHAT})
    assert result["prompt"] == prompt
    greedy = Engine(model, tok, tool=None, compile=False).generate_batch(prompt, max_tokens=16, temperature=0.0)[0][0]
    stops = {tok.encode_special("<|assistant_end|>"), tok.get_bos_token_id()}
    theirs = result["greedy"]
    theirs = theirs[:next((i for i, t in enumerate(theirs) if i >= len(prompt) and t in stops), len(theirs))]
    assert theirs == greedy
    back, back_tok = from_hf(out)
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert back_tok.encode("How much is 3 + 4?") == tok.encode("How much is 3 + 4?")


def test_help_and_refusals(run_env, tmp_path):
    help_ = run(["hf", "--help"], run_env)
    assert help_.returncode == 0 and "--stage" in help_.stdout and "--force" in help_.stdout
    out = run(["hf", "--stage", "sft", str(tmp_path / "hf")], run_env)  # nothing trained in the private base dir
    assert out.returncode == 1 and "no SFT checkpoint yet" in out.stderr, out.stderr[-1500:]
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    out = run(["hf", str(used)], run_env)
    assert out.returncode == 1 and "not empty" in out.stderr and "--force" in out.stderr
    assert (used / "notes.txt").read_text() == "mine"
    for stderr in (run(["hf"], run_env).stderr, run(["bogus", "x"], run_env).stderr):
        assert "usage:" in stderr and "Traceback" not in stderr


def test_force_writes_into_a_used_folder(tiny_sft, run_env, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    (used / "config.json").write_text("{}")  # an earlier export's file: written over
    done = run(["hf", "--force", str(used)], run_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (used / "notes.txt").read_text() == "mine"  # --force never deletes what is not ours
    assert "nanochat_config" in json.loads((used / "config.json").read_text())


def test_export_check_bench_on_a_checkpoint(tiny_sft, run_env, tmp_path):
    "bench/export_check.py, the same round trip on any checkpoint (a d12 on a GPU): here the tiny one, on the CPU."
    out = tmp_path / "export_check.json"
    done = subprocess.run([PYTHON, str(ROOT / "bench" / "export_check.py"), "--stage", "sft", "--model-tag", "tiny",
                           "--device", "cpu", "--tokens", "20", "--new-tokens", "8", "--out", str(out)], cwd=ROOT,
                          env=run_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    (record,) = result["records"]
    assert result["passed"] and record["greedy_match"] and record["roundtrip_equal"] and record["template_match"]
    assert record["max_abs_logit_diff"] < 1e-4 and record["argmax_agree"] == 1.0
