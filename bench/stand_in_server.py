"""A chat server for load tests that needs no checkpoint: the real HTTP path, batching and event loop in front of a
stand-in engine, driven with `bench/serve_load.py --url`.

- `--depth 0` (default): a scripted engine whose decode step only sleeps `--step-ms` (the GIL is free meanwhile, as
  while a GPU computes), whatever the rows: the host's cost of serving, without a model's.
- `--depth D`: a GPT of depth D with random weights (nanochat's shape: width 64·D, heads of 128) and the byte
  tokenizer's vocabulary, behind the real engine on `--device`: a GPU's decode and prefill without a trained model.

    python bench/stand_in_server.py --port 8100 --step-ms 2 --slots 128 &
    python bench/serve_load.py --url http://127.0.0.1:8100 --clients 128 --requests 4 --max-tokens 64
    python bench/stand_in_server.py --depth 20 --device cuda --slots 64 --window L &   # then serve_load --url as above
"""
import argparse
import sys
import time

import uvicorn

from nanochat.batching import EngineSlots, ScriptedSlots
from nanochat.scripts.chat_web import byte_tokenizer, warm_up
from nanochat.server import ServerConfig, create_app


class FailingSlots(ScriptedSlots):
    "The scripted engine with a step that raises every `fail_every` steps (a fault to serve through)."
    def __init__(self, *args, fail_every: int, **kw):
        super().__init__(*args, **kw)
        self.fail_every, self.steps = fail_every, 0

    def step(self):
        self.steps += 1
        if self.steps % self.fail_every == 0: raise RuntimeError(f"injected failure at step {self.steps}")
        return super().step()


def backend_for(args, tok):
    if args.depth == 0:
        reply = tok.encode("The quick brown fox jumps over the lazy dog, then naps in the warm sun all day long. " * 4)
        kind, extra = (FailingSlots, {"fail_every": args.fail_every}) if args.fail_every else (ScriptedSlots, {})
        return kind(lambda prompt: reply, slots=args.slots, max_len=4096, stop_token=tok.encode_special("<|assistant_end|>"),
                    step_s=args.step_ms / 1000, prefill_s=args.prefill_ms / 1000, **extra)
    from nanochat.engine import Engine
    from nanochat.gpt import GPT, GPTConfig
    dim = 64 * args.depth
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=args.depth, n_embd=dim, n_head=max(1, dim // 128),
                       n_kv_head=max(1, dim // 128), sequence_len=2048, window_pattern=args.window)
    backend = EngineSlots(Engine(GPT.build(config, device=args.device).eval(), tok, tool=None), args.slots, 1024)
    warm_up(backend, tok)
    return backend


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--depth", type=int, default=0, help="0: the scripted engine; else a random GPT of this depth")
    p.add_argument("--step-ms", type=float, default=2.0, help="the scripted engine's decode step, however many rows")
    p.add_argument("--prefill-ms", type=float, default=0.0,
                   help="the scripted engine's admission (one prefill), however many prompts")
    p.add_argument("--fail-every", type=int, default=0, help="the scripted engine's step raises every N steps (0: never)")
    p.add_argument("--admit-wait-ms", type=float, default=0.0,
                   help="as chat_web's: newcomers wait to be prefilled together")
    p.add_argument("--stream-interval-ms", type=float, default=0.0,
                   help="as chat_web's: a reply's writes at least this far apart (0: one per step)")
    p.add_argument("--device", default="cuda", help="the random GPT's device")
    p.add_argument("--window", default="SSSL", help="the random GPT's window pattern")
    p.add_argument("--slots", type=int, default=128)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--gil-switch-ms", type=float, default=0.5, help="as chat_web's (0: Python's 5 ms)")
    args = p.parse_args(argv)
    if args.gil_switch_ms: sys.setswitchinterval(args.gil_switch_ms / 1000)
    tok, start = byte_tokenizer(), time.time()
    backend = backend_for(args, tok)
    name = "scripted" if args.depth == 0 else f"random-d{args.depth}"
    print(f"{name}: {backend.slots} rows, ready in {time.time() - start:.0f} s", flush=True)
    config = ServerConfig(model_name=name, max_queue=args.max_queue, admit_wait_s=args.admit_wait_ms / 1000,
                          stream_interval_s=args.stream_interval_ms / 1000)
    uvicorn.run(create_app(backend, tok, config), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
