"""chat_sft --data FILE from the command line: a file of your own conversations trains end to end on the tiny profile,
and a bad file stops the script before training with the file, the line number and what is wrong, no traceback."""
import json
import subprocess

from conftest import PYTHON, ROOT


def run(args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def conversation(i):
    return {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}


def test_own_data_trains_and_bad_lines_are_named(run_env, private_base_dir, tmp_path):
    for args in (["nanochat.scripts.tok_train", "--profile", "tiny"], ["nanochat.scripts.base_train", "--profile", "tiny"]):
        out = run(args, run_env)
        assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    mine = tmp_path / "mine.jsonl"
    lines = [json.dumps(conversation(i)) for i in range(7)]
    lines.append(json.dumps([{"role": "system", "content": "Answer briefly."}, *conversation(7)["messages"]]))
    mine.write_text("\n".join(lines) + "\n")
    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--data", str(mine), "--max-steps", "2"], run_env)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    assert f"8 conversations of {mine} (100% of the mixture)" in out.stdout, out.stdout[-2000:]
    summary = json.loads(out.stdout.split("summary: ")[-1].splitlines()[0])
    assert summary["steps"] == 2
    meta = json.loads((private_base_dir / "checkpoints" / "sft" / "d2" / "step_000002" / "meta.json").read_text())
    assert meta["meta"]["chat_sft"]["data"] == str(mine)

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], '{"messages": [', lines[1], json.dumps([{"role": "user", "content": "hi"}]),
                              json.dumps([{"role": "bot", "content": "hi"}])]) + "\n")
    out = run(["nanochat.scripts.chat_sft", "--profile", "tiny", "--data", str(bad), "--max-steps", "2"], run_env)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    for expected in (f"{bad}: 3 line(s) are not conversations", f"{bad}:2: not JSON",
                     f"{bad}:4: the last message is from the user", f"{bad}:5: message 1 has the unknown role 'bot'"):
        assert expected in out.stderr, (expected, out.stderr[-2000:])
    assert "SFT of" not in out.stdout  # stopped before training began


def test_own_text_trains_a_tokenizer_and_a_base_model(run_env, private_base_dir, tmp_path):
    "A folder of text in any language: tok_train and base_train read it with --data, shards built once on the way."
    texts = tmp_path / "my_texts"
    texts.mkdir()
    for i in range(12):
        (texts / f"greek_{i}.txt").write_text("\n\n".join(f"Κείμενο {i}.{j}: " + "λέξεις και φράσεις " * 30 for j in range(6)))
    (texts / "chinese.jsonl").write_text("\n".join(json.dumps({"text": f"文档 {i} " + "汉字词语 " * 80}) for i in range(20)))
    out = run(["nanochat.scripts.tok_train", "--profile", "tiny", "--data", str(texts)], run_env)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    out = run(["nanochat.scripts.base_train", "--profile", "tiny", "--data", str(texts), "--num-iterations", "3"], run_env)
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    assert "training on the text in" in out.stdout
    assert list((private_base_dir / "corpus").glob("my_texts-*/shard_00000.parquet"))
    summary = json.loads(out.stdout.split("summary: ")[-1].splitlines()[0])
    assert summary["steps"] == 3
