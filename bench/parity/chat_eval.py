"""The chat evaluation: our tasks and grading against upstream's, example by example.

Upstream's side runs its own chat tasks (tasks/arc.py, mmlu.py, gsm8k.py, humaneval.py at the pinned commit, and
tasks/spellingbee.py from the last upstream commit that had it, `--set spellingbee_checkout=DIR`, default
/work/upstream-spell, imported from that file with the pinned commit's engine and tokenizer) on the same rows, read
offline (prepare() writes them where upstream's loader caches hub downloads, see upstream_env.py). For the first
`chat_items` problems of each task (`--set chat_items=N`; HumanEval gets at most `humaneval_items`, its grading runs
programs):
- the prompt each side renders for completion (token ids, with the same tokenizer: ours, trained here on Wikipedia
  text and converted with upstream_env.write_upstream_tokenizer), the answer letters and the gold answer;
- each side's grader on the SAME fixed replies (every letter of a multiple-choice question; right, wrong and
  malformed `#### n` answers; HumanEval's reference solution in and out of a code fence, its body alone, a wrong one):
  this isolates grading from the model;
- with the model in the loop (when our GPT has upstream's architecture: `smear_lambda` in nanochat/gpt.py): one set of
  seeded weights (common.synthetic_state) in both GPTs; upstream's own run_categorical_eval / run_generative_eval
  (its Engine, calculator on, greedy) against our chat_eval (letter logits; generate_completions through our Engine),
  compared per problem: the letter, the reply's text, the verdict. `--set model=0` skips it.

fixture(): the rendered prompts (a hash and a length per problem), letters, gold answers, the fixed replies and
upstream's verdicts on them; chapter 19c's test cell rebuilds the tokenizer, the word list and the tasks and checks
our side against it (no upstream code in CI).
"""
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from common import read_json, row, synthetic_state, to_upstream, write_json

TASKS = ("ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee")
CATEGORICAL = ("ARC-Easy", "ARC-Challenge", "MMLU")
TOKENIZER = {"shard": "pretrain/wikipedia_en", "max_chars": 1_000_000, "vocab_size": 2048}  # the CI test retrains the same
WORDS = {"n": 5000}  # our offline word list (load_words' Wikipedia fallback), written as words_alpha.txt for both sides
MODEL = dict(n_layer=2, n_embd=128, n_head=2, n_kv_head=2, sequence_len=1024, window_pattern="L")
MODEL_SEED, MODEL_NEW_TOKENS = 4321, 48
DEFAULT_SPELL = "/work/upstream-spell"


def _items(opts) -> int: return int(opts.get("chat_items", 8 if opts.get("quick") else 24))
def _humaneval_items(opts) -> int: return min(_items(opts), int(opts.get("humaneval_items", 4 if opts.get("quick") else 8)))
def _count(name, opts) -> int: return _humaneval_items(opts) if name == "HumanEval" else _items(opts)
def _digest(ids: list[int]) -> str: return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:16]


# --- the shared inputs ---------------------------------------------------------------------------------------------
def train_tokenizer():
    "The tokenizer both sides use: ours, trained on the first TOKENIZER['max_chars'] of the local Wikipedia shards."
    from nanochat.common import shared_data_dir
    from nanochat.dataset import iter_documents, list_shards
    from nanochat.tokenizer import Tokenizer
    folder = shared_data_dir() / TOKENIZER["shard"]
    docs = iter_documents(list_shards(folder, split="train"), max_chars=TOKENIZER["max_chars"])
    return Tokenizer.train(docs, vocab_size=TOKENIZER["vocab_size"])


def fixed_replies(name: str, conversation: dict, gold) -> list[str]:
    "Replies both graders judge, for one problem: built from its gold answer, right, wrong and malformed."
    if name in CATEGORICAL: return list(conversation["letters"])
    if name == "HumanEval":
        prompt, body = conversation["prompt"], conversation["solution"]
        return [f"```python\n{prompt}{body}\n```", f"Here it is:\n```python\n{prompt}{body}```\nDone.", f"{prompt}\n{body}", body,
                f"```python\n{prompt}    return None\n```", f"```python\n{prompt}{body}"]
    g = str(gold)
    wrong = str(int(float(g)) + 1) if g.lstrip("-").replace(".", "", 1).isdigit() else "0"
    grouped = f"{int(g):,}" if g.lstrip("-").isdigit() else g
    return [f"#### {g}", f"So the answer is\n#### {g}.", f"####{g}", f"#### {g}.0", f"#### {wrong}", f"#### {g} or #### {wrong}",
            f"#### {wrong}, no: #### {g}", g, "", f"#### {grouped}", f"#### -{g}", f"The answer: #### {g} apples"]


def _hub_rows():
    "Every local row of the evaluation datasets, in the hub's row layout and the files' order: {(repo, subset, split): rows}."
    from nanochat.tasks.arc import ARC
    from nanochat.tasks.gsm8k import GSM8K
    from nanochat.tasks.humaneval import HumanEval
    from nanochat.tasks.mmlu import MMLU
    out = {}
    for subset in ("ARC-Easy", "ARC-Challenge"):
        out["allenai/ai2_arc", subset, "test"] = [
            {"id": r["id"], "question": r["question"]["stem"], "answerKey": r["answerKey"],
             "choices": {"text": [c["text"] for c in r["question"]["choices"]], "label": [c["label"] for c in r["question"]["choices"]]}}
            for r in ARC(subset, "test", seed=None).rows]
    out["cais/mmlu", "all", "test"] = [dict(r) for r in MMLU("test", seed=None).rows]
    out["openai/gsm8k", "main", "test"] = [{"question": r["question"], "answer": r["answer"]} for r in GSM8K("test", seed=None).rows]
    out["openai/openai_humaneval", "openai_humaneval", "test"] = [
        {k: r[k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")} for r in HumanEval(seed=None).rows]
    return out


def write_hub_cache(base: Path) -> list[str]:
    """Upstream's hub cache, filled from the local files: base/task_data/<repo with / as -->/<subset>/<split>/00000.parquet
    and the manifest.json its loader checks for, so that upstream's tasks read these rows and download nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    written = []
    for (repo, subset, split), rows in _hub_rows().items():
        folder = Path(base) / "task_data" / repo.replace("/", "--") / subset / split
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
        (folder / "manifest.json").write_text(json.dumps(["00000.parquet"]))
        written.append(f"{repo}/{subset}/{split}: {len(rows)} rows")
    return written


def upstream_templates(opts: dict) -> list[str]:
    """Upstream's spelling-bee question templates, read from its checkout at run time (never stored here): our
    SpellingBee takes them through `templates=`, so both sides ask the very same questions."""
    import ast
    path = Path(opts.get("spellingbee_checkout", DEFAULT_SPELL)) / "tasks" / "spellingbee.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "USER_MSG_TEMPLATES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path}: no USER_MSG_TEMPLATES list")


def our_task(name: str, opts: dict):
    "Our task `name` as chat_eval builds it; the spelling bee with upstream's question templates."
    from nanochat.scripts.chat_eval import make_task
    from nanochat.tasks.spelling import SpellingBee
    if name == "SpellingBee": return SpellingBee(size=256, split="test", templates=upstream_templates(opts))
    return make_task(name)[0]


def has_upstream_architecture() -> bool:
    "Whether our GPT has upstream's architecture yet (its smear gate is the marker), so the same weights mean the same model."
    from nanochat import gpt
    return "smear_lambda" in Path(gpt.__file__).read_text()


def prepare(work: Path, opts: dict) -> dict:
    import torch
    from upstream_env import upstream_base, write_upstream_tokenizer

    from nanochat.tasks.spelling import load_words
    from nanochat.tokenizer import save_tokenizer
    tok = train_tokenizer()
    save_tokenizer(tok, work / "tokenizer")
    write_upstream_tokenizer(work / "tokenizer", upstream_base(work))
    words = load_words(Path("/nonexistent-words.txt"), n=WORDS["n"])  # the offline list (no words_alpha.txt here)
    for side in ("upstream_base", "ours_base"): (work / side).mkdir(exist_ok=True); (work / side / "words_alpha.txt").write_text("\n".join(words) + "\n")
    datasets = write_hub_cache(upstream_base(work))
    model = None
    if opts.get("model", "auto") not in (0, "0", False, "false") and has_upstream_architecture():
        from nanochat.gpt import GPT, GPTConfig
        cfg = dict(MODEL, vocab_size=-(-tok.vocab_size // 64) * 64)
        shapes = {n: tuple(p.shape) for n, p in GPT.build(GPTConfig(**cfg), seed=0).state_dict().items()}
        torch.save(synthetic_state(shapes, MODEL_SEED), work / "model.pt")
        write_json(work / "model.json", cfg)
        model = cfg
    return {"vocab_size": tok.vocab_size, "words": len(words), "datasets": datasets, "model": model}


# --- our side ------------------------------------------------------------------------------------------------------
def our_items(name: str, n: int, tokenizer, opts: dict) -> list[dict]:
    "Our first `n` problems of task `name`: prompt ids, letters, gold answer, and what the fixed replies need."
    from nanochat.scripts.chat_eval import gold_answer
    from nanochat.tokenizer import render_for_completion
    task = our_task(name, opts)
    out = []
    for i in range(min(n, len(task))):
        c = task[i]
        gold = gold_answer(c)
        item = {"ids": render_for_completion(tokenizer, c), "letters": c.get("letters"), "gold": gold}
        if name == "HumanEval": item["conversation"] = {"prompt": c["prompt"], "solution": c["messages"][1]["content"][len(c["prompt"]) + 1:]}
        item["replies"] = fixed_replies(name, dict(c, **item.get("conversation", {})), gold)
        item["verdicts"] = [bool(task.evaluate(c, r)) for r in item["replies"]]
        out.append(item)
    return out


def ours(work: Path, opts: dict) -> dict:
    from nanochat.tokenizer import load_tokenizer
    tok = load_tokenizer(work / "tokenizer")
    out = {"tasks": {name: [{k: v for k, v in it.items() if k != "conversation"} for it in our_items(name, _count(name, opts), tok, opts)]
                     for name in TASKS}}
    if (work / "model.pt").exists(): out["model"] = our_model_run(work, tok, opts)
    return out


def our_model_run(work: Path, tok, opts: dict) -> dict:
    "Our chat_eval with the shared weights: the letter per multiple-choice problem, the reply and verdict per open one."
    import torch

    from nanochat.engine import Engine
    from nanochat.gpt import GPT, GPTConfig
    from nanochat.scripts.chat_eval import categorical_answers, generate_completions
    model = GPT.build(GPTConfig(**read_json(work / "model.json")), seed=0).eval()
    model.load_state_dict(torch.load(work / "model.pt"))
    engine, out = Engine(model, tok, tool="upstream_calculator", cuda_graph=False, compile=False), {}
    for name in TASKS:
        task = our_task(name, opts)
        convs = [task[i] for i in range(_count(name, opts))]
        if name in CATEGORICAL:
            with torch.no_grad(): letters = categorical_answers(model, tok, convs)
            out[name] = [{"answer": a, "passed": bool(task.evaluate(c, a))} for c, a in zip(convs, letters)]
        else:
            replies = generate_completions(engine, tok, convs, max_new_tokens=MODEL_NEW_TOKENS, temperature=0.0, slots=8)
            out[name] = [{"reply": r, "passed": bool(task.evaluate(c, r))} for c, (r,) in zip(convs, replies)]
    return out


# --- upstream's side (its own package, never ours) -------------------------------------------------------------------
def _upstream_task(name: str, opts: dict):
    if name == "SpellingBee":
        path = Path(opts.get("spellingbee_checkout", DEFAULT_SPELL)) / "tasks" / "spellingbee.py"
        spec = importlib.util.spec_from_file_location("upstream_spellingbee", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # its imports (tasks.common, nanochat.common) resolve in the pinned checkout
        return module.SpellingBee(size=256, split="test"), module.extract_answer
    from functools import partial

    from tasks.arc import ARC
    from tasks.gsm8k import GSM8K, extract_answer
    from tasks.humaneval import HumanEval
    from tasks.mmlu import MMLU
    build = {"HumanEval": HumanEval, "MMLU": partial(MMLU, subset="all", split="test"),
             "ARC-Easy": partial(ARC, subset="ARC-Easy", split="test"), "ARC-Challenge": partial(ARC, subset="ARC-Challenge", split="test"),
             "GSM8K": partial(GSM8K, subset="main", split="test")}[name]  # as upstream's scripts/chat_eval.py builds them
    return build(), extract_answer


def _upstream_gold(name, conversation, extract):
    if name in CATEGORICAL: return conversation["messages"][-1]["content"]
    if name == "HumanEval": return None
    return extract(conversation["messages"][-1]["content"][-1]["text"])


def upstream(work: Path, opts: dict) -> dict:
    from nanochat.tokenizer import get_tokenizer
    tok, out = get_tokenizer(), {"tasks": {}}
    for name in TASKS:
        task, extract = _upstream_task(name, opts)
        items = []
        for i in range(min(_count(name, opts), len(task))):
            c = task[i]
            gold = _upstream_gold(name, c, extract)
            conv = dict(c, letters=list(c["letters"])) if name in CATEGORICAL else dict(c)
            if name == "HumanEval":
                prompt = c["messages"][0]["content"]
                conv = dict(conv, prompt=prompt, solution=c["messages"][1]["content"][len(prompt) + 1:])
            replies = fixed_replies(name, conv, gold)
            items.append({"ids": tok.render_for_completion(c), "letters": list(c["letters"]) if name in CATEGORICAL else None,
                          "gold": gold, "replies": replies, "verdicts": [bool(task.evaluate(c, r)) for r in replies]})
        out["tasks"][name] = items
    if (work / "model.pt").exists(): out["model"] = upstream_model_run(work, tok, opts)
    return out


def _recording(task, log: dict):
    "A view of an upstream task whose evaluate records (problem index, reply, verdict) as upstream's eval loop calls it."
    class Recording:
        eval_type = task.eval_type
        def __len__(self): return len(task)
        def __getitem__(self, i):
            c = task[i]
            c["_index"] = i
            return c
        def evaluate(self, conversation, reply):
            verdict = task.evaluate(conversation, reply)
            log[conversation["_index"]] = {"reply" if self.eval_type == "generative" else "answer": reply, "passed": bool(verdict)}
            return verdict
    return Recording()


def upstream_model_run(work: Path, tok, opts: dict) -> dict:
    "Upstream's own chat_eval loops (run_categorical_eval, run_generative_eval with its Engine) on the shared weights."
    import torch

    from nanochat.engine import Engine
    from nanochat.gpt import GPT, GPTConfig
    spec = importlib.util.spec_from_file_location("upstream_chat_eval", Path(opts["upstream"]) / "scripts" / "chat_eval.py")
    chat_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chat_eval)
    with torch.device("meta"): model = GPT(GPTConfig(**read_json(work / "model.json")))
    model.to_empty(device="cpu")
    model.init_weights()  # the buffers (rotary tables); the parameters come next
    model.load_state_dict(to_upstream(torch.load(work / "model.pt")))
    model.eval()
    engine, out = Engine(model, tok), {}
    for name in TASKS:
        task, _ = _upstream_task(name, opts)
        log, n = {}, _count(name, opts)
        view = _recording(task, log)
        if name in CATEGORICAL: chat_eval.run_categorical_eval(view, tok, model, batch_size=8, max_problems=n)
        else: chat_eval.run_generative_eval(view, tok, model, engine, num_samples=1, max_new_tokens=MODEL_NEW_TOKENS,
                                            temperature=0.0, top_k=50, max_problems=n)
        out[name] = [log[i] for i in range(n)]
    return out


# --- the comparison ------------------------------------------------------------------------------------------------
def compare(ours: dict, up: dict, opts: dict) -> list[dict]:
    from common import disagreements
    rows = []
    for name in TASKS:
        a, b = ours["tasks"][name], up["tasks"][name]
        n = len(a)
        if len(b) != n:
            rows.append(row("chat_eval", f"{name}: problems", f"{n} ours vs {len(b)} upstream", False)); continue
        prompts = disagreements([x["ids"] for x in a], [x["ids"] for x in b])
        rows.append(row("chat_eval", f"{name}: prompt token ids, {n} problems", len(prompts), not prompts, tolerance=0,
                        **({"first": prompts[0]} if prompts else {})))
        answers = disagreements([(x["letters"], x["gold"]) for x in a], [(x["letters"], x["gold"]) for x in b])
        rows.append(row("chat_eval", f"{name}: answer letters and gold answers", len(answers), not answers, tolerance=0))
        replies = disagreements([x["replies"] for x in a], [x["replies"] for x in b])
        verdicts = [(i, j) for i, (x, y) in enumerate(zip(a, b)) for j, (p, q) in enumerate(zip(x["verdicts"], y["verdicts"])) if p != q]
        total = sum(len(x["verdicts"]) for x in a)
        rows.append(row("chat_eval", f"{name}: grader verdicts on the same {total} fixed replies", len(verdicts) + len(replies),
                        not verdicts and not replies, tolerance=0, **({"first": verdicts[0]} if verdicts else {})))
    if "model" not in ours or "model" not in up:
        why = ("not run: nanochat/gpt.py has no smear_lambda (our GPT lacks upstream's architecture)" if "model" not in ours
               else "upstream's side did not run it")
        rows.append(row("chat_eval", "model in the loop (same weights, both chat evals)", why, opts.get("model", "auto") in (0, "0")))
        return rows
    for name in TASKS:
        a, b = ours["model"][name], up["model"][name]
        key = "answer" if name in CATEGORICAL else "reply"
        texts = disagreements([x[key] for x in a], [x[key] for x in b])
        verdicts = disagreements([x["passed"] for x in a], [x["passed"] for x in b])
        what = "predicted letters" if name in CATEGORICAL else f"greedy replies ({MODEL_NEW_TOKENS} tokens, calculator on)"
        rows.append(row("chat_eval", f"{name}, model in the loop: {what} and verdicts, {len(a)} problems",
                        len(set(texts) | set(verdicts)), not texts and not verdicts, tolerance=0,
                        accuracy_ours=sum(x["passed"] for x in a) / len(a), accuracy_upstream=sum(x["passed"] for x in b) / len(b)))
    return rows


def fixture(up: dict, opts: dict) -> dict:
    """Upstream's prompts (hashed), letters, gold answers, the fixed replies and its verdicts, per task. The spelling
    bee's prompts are left out: they hold upstream's template wording, which CI (without upstream's checkout) has not."""
    def prompt(name, ids): return (None, None) if name == "SpellingBee" else (_digest(ids), len(ids))
    return {"tokenizer": TOKENIZER, "words": WORDS,
            "tasks": {name: [{"prompt_sha1": prompt(name, x["ids"])[0], "prompt_len": prompt(name, x["ids"])[1], "letters": x["letters"], "gold": x["gold"],
                              "replies": x["replies"], "verdicts": x["verdicts"]} for x in items]
                      for name, items in up["tasks"].items()}}


if __name__ == "__main__":
    sys.exit("run through bench/parity/run.py --only chat_eval")
