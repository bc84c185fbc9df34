"""Whether the Hugging Face export of a trained checkpoint computes what our model computes, on a given device.

The checkpoint is written with `export_hf`, then loaded by transformers (trust_remote_code=True) in a separate Python
process where nanochat cannot be imported, so the folder has to stand on its own. Both sides run in float32 (TF32
off) on the same device, and we compare:
  - the logits over the first --tokens tokens of a fixed English paragraph (BOS first): the largest absolute
    difference, and the fraction of positions where the argmax agrees;
  - the chat template's prompt ids against `render_for_completion`;
  - a greedy `generate` of --new-tokens tokens against our Engine's greedy continuation (cut at the stop tokens);
  - the way back: `from_hf(folder)` gives our weights bit for bit.
It also records the folder's size, the seconds the export took and the seconds transformers took to load it.

usage: python bench/export_check.py --stage base|mid|sft [--model-tag d12] [--device cuda|cpu] [--tokens 256]
                                    [--new-tokens 32] [--atol 1e-3] [--folder DIR] [--out PATH]
It reads the checkpoint and tokenizer where the training scripts write them (NANOCHAT_BASE_DIR). Prints a table and
one JSON line, saved as bench/results/export_check-DATE.json; exits 1, naming what failed, when the check fails.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.record import git_commit, save_result  # noqa: E402
from nanochat.checkpoint import CheckpointError, find_run, load_gpt  # noqa: E402
from nanochat.config import ConfigError  # noqa: E402
from nanochat.engine import Engine  # noqa: E402
from nanochat.tokenizer import load_tokenizer, render_for_completion  # noqa: E402

PARAGRAPH = (
    "The river rose slowly through the night, and by morning the lower fields were under a sheet of brown water that "
    "reached almost to the stone wall of the churchyard. Nobody in the village was surprised. The old men said it "
    "happened every twenty years or so, when the snow melted early in the hills and the spring rains came on top of "
    "it, and they remembered the great flood of their childhood, when the water had come into the bakery and the "
    "baker had rowed his bread to the houses on the high street in a small green boat. The children were delighted, "
    "because the school was closed and the teacher lived on the other side of the river. Their parents were less "
    "pleased. The sheep had to be moved to the upper pasture, the hay in the barn by the mill was almost certainly "
    "ruined, and the only road to the market town was closed until the bridge could be inspected by an engineer, who "
    "would have to come from the city and who, everyone agreed, would take his time. In the afternoon the sun came "
    "out, and the flooded fields shone like a lake. Ducks arrived from nowhere and paddled between the fence posts. "
    "A photographer from the county newspaper walked along the wall taking pictures of the church tower reflected in "
    "the water, and the vicar, who had lived in the village for thirty years, told him that it was the most beautiful "
    "thing he had ever seen, and also the most expensive. By evening the water had begun to fall. It left behind a "
    "line of mud and broken reeds along every hedge, a smell of wet earth that lasted for a week, and a great many "
    "stories, which grew a little taller each time they were told in the pub on Saturday night.")

CHAT = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France, and which river flows through it?"}]

# Runs in a fresh interpreter with nanochat made unimportable: transformers alone loads the folder, then computes the
# logits of `ids`, the chat template's prompt and a greedy continuation of it, saved with torch.save.
LOAD_WITHOUT_NANOCHAT = """
import sys
sys.modules["nanochat"] = None  # any `import nanochat` now fails: the folder has to be enough
import json, time, torch
torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on a GPU too: TF32 would cost ~1e-3 per logit
torch.backends.cudnn.allow_tf32 = False
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, device, ids, chat, new_tokens, out = sys.argv[1:7]
ids, chat, new_tokens = json.loads(ids), json.loads(chat), int(new_tokens)
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).to(device).eval()
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
if device.startswith("cuda"): torch.cuda.synchronize()
load_s = time.perf_counter() - start
prompt = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
with torch.no_grad():
    logits = model(torch.tensor([ids], device=device)).logits.float().cpu()
    greedy = model.generate(torch.tensor([prompt], device=device), max_new_tokens=new_tokens,
                            do_sample=False)[0].tolist()
torch.save({"logits": logits, "greedy": greedy, "prompt": prompt, "load_s": load_s}, out)
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def text_ids(tokenizer, n: int, limit: int) -> list[int]:
    "BOS, then the paragraph's tokens (repeated if a small vocabulary encodes it in few), `n` ids in all, at most `limit`."
    body = tokenizer.encode(PARAGRAPH)
    ids = [tokenizer.get_bos_token_id()]
    while len(ids) < min(n, limit): ids += body
    return ids[:min(n, limit)]


def load_with_transformers(folder: Path, device: str, ids: list[int], new_tokens: int, scratch: Path) -> dict:
    "Run LOAD_WITHOUT_NANOCHAT on `folder`; its saved results, or RuntimeError with the end of its stderr."
    env = dict(os.environ)
    # nothing on the path may lead back to this repository, and transformers' copy of the remote code goes to scratch
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if not paths: env.pop("PYTHONPATH")
    env["HF_HOME"] = str(scratch / "hf_home")
    out = scratch / "transformers.pt"
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NANOCHAT, str(folder), device, json.dumps(ids),
                           json.dumps(CHAT), str(new_tokens), str(out)], cwd=scratch, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"transformers could not load or run {folder}:\n{done.stderr[-3000:]}")
    return torch.load(out)


def check(model, tokenizer, folder: Path, device: torch.device, args, scratch: Path) -> dict:
    "Export `model` to `folder`, load it with transformers elsewhere, and compare: the record's fields."
    from nanochat.export import export_hf, from_hf
    start = time.perf_counter()
    export_hf(model, tokenizer, folder)
    export_s = time.perf_counter() - start
    size = folder_bytes(folder)

    ids = text_ids(tokenizer, args.tokens, model.config.sequence_len)
    theirs = load_with_transformers(folder, str(device), ids, args.new_tokens, scratch)
    with torch.no_grad(): ours = model(torch.tensor([ids], device=device)).float().cpu()
    diff = (theirs["logits"] - ours).abs().max().item()
    agree = (theirs["logits"].argmax(-1) == ours.argmax(-1)).float().mean().item()

    prompt = render_for_completion(tokenizer, {"messages": CHAT})
    engine = Engine(model, tokenizer, tool=None, dtype=torch.float32, compile=False)
    greedy = engine.generate_batch(prompt, max_tokens=args.new_tokens, temperature=0.0)[0][0]
    stops = {tokenizer.encode_special("<|assistant_end|>"), tokenizer.get_bos_token_id()}
    generated = theirs["greedy"]  # transformers keeps the stop token it ended on; our engine does not
    generated = generated[:next((i for i, t in enumerate(generated) if i >= len(prompt) and t in stops),
                                len(generated))]

    back, _ = from_hf(folder)
    roundtrip = all(a.dtype == b.dtype and torch.equal(a.cpu(), b)
                    for (_, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True))
    return {"kind": "export_check", "stage": args.stage, "depth": model.config.n_layer,
            "params": sum(p.numel() for p in model.parameters()), "folder_bytes": size,
            "export_s": round(export_s, 3), "load_s": round(theirs["load_s"], 3), "max_abs_logit_diff": diff,
            "argmax_agree": round(agree, 5), "template_match": theirs["prompt"] == prompt,
            "greedy_match": generated == greedy, "roundtrip_equal": roundtrip, "device": str(device)}


def failures(record: dict, atol: float) -> list[str]:
    "What the record fails, in words (empty: it passes)."
    failed = [f"{k} is false" for k in ("template_match", "greedy_match", "roundtrip_equal") if not record[k]]
    if record["argmax_agree"] < 0.99: failed.append(f"argmax agrees at only {record['argmax_agree']:.2%} of positions")
    if not record["max_abs_logit_diff"] <= atol:  # written so that a NaN fails too
        failed.append(f"max abs logit difference {record['max_abs_logit_diff']:.3g} > --atol {atol:g}")
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="base", choices=("base", "mid", "sft"))
    ap.add_argument("--model-tag", default=None)
    ap.add_argument("--device", default="", help="cuda or cpu (default: the best available)")
    ap.add_argument("--tokens", type=int, default=256, help="text tokens whose logits are compared (BOS included)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens of the greedy chat continuation")
    ap.add_argument("--atol", type=float, default=1e-3, help="largest absolute logit difference allowed")
    ap.add_argument("--folder", type=Path, default=None, help="export here and keep it (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("error: transformers is not installed: `pip install transformers` to check the export", file=sys.stderr)
        return 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False  # as in the transformers process: both sides in true float32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model, _ = load_gpt(find_run(args.stage, args.model_tag), None, device)
        tokenizer = load_tokenizer(None)
    except (CheckpointError, ConfigError, FileNotFoundError) as e:  # a missing tokenizer is a FileNotFoundError
        print(f"error: {e}", file=sys.stderr)
        return 1
    model.float().eval()
    model.select_attention(dtype=torch.float32)  # the device's compute dtype would pick a bfloat16 kernel on a GPU
    with tempfile.TemporaryDirectory(prefix="export_check-") as tmp:
        scratch = Path(tmp)
        folder = args.folder or scratch / "hf"
        try: record = check(model, tokenizer, folder, device, args, scratch)
        except (FileExistsError, RuntimeError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    failed = failures(record, args.atol)
    print(f"{'depth':>5} {'params':>12} {'folder MB':>9} {'export s':>8} {'load s':>7} {'max |dlogit|':>12} "
          f"{'argmax':>7} {'template':>8} {'greedy':>6} {'roundtrip':>9}")
    r = record
    print(f"{r['depth']:>5} {r['params']:>12,} {r['folder_bytes'] / 1e6:>9.1f} {r['export_s']:>8.2f} "
          f"{r['load_s']:>7.2f} {r['max_abs_logit_diff']:>12.3g} {r['argmax_agree']:>7.2%} {str(r['template_match']):>8} "
          f"{str(r['greedy_match']):>6} {str(r['roundtrip_equal']):>9}")
    save_result({"name": "export_check", "date": datetime.date.today().isoformat(),
                 "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "commit": git_commit(),
                 "records": [record], "passed": not failed}, args.out)
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("passed")
    return 0


if __name__ == "__main__": sys.exit(main())
