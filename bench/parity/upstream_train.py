"""Upstream nanochat's own `scripts/base_train.py`, run offline with a chosen seed: the upstream side of
bench/recipe_vs_upstream.py. Runs in an environment where our package is not importable.

    python bench/parity/upstream_train.py --upstream DIR --seed 43 -- --depth 12 --num-iterations 300 ...

What it changes around upstream's script, and nothing inside it:
- `wandb` is imported at the top of upstream's script even when logging is off (`--run dummy`): a stand-in module
  answers if the package is not installed. So does `rustbpe`, which only tokenizer training needs.
- upstream seeds every run with 42 (in `compute_init`); to measure seed-to-seed spread, `compute_init` is wrapped so
  the global generators are re-seeded with `--seed` right after it (its weights are drawn from the global generator).
The tokenizer and shards must already be in $NANOCHAT_BASE_DIR in upstream's layout (see upstream_env.py).
"""
import argparse
import runpy
import sys
import types
from pathlib import Path


def stand_in(name: str, **attrs) -> None:
    "Register an empty module `name` (with `attrs`) unless the real one imports."
    try: __import__(name)
    except ImportError: sys.modules[name] = types.SimpleNamespace(__name__=name, **attrs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", type=Path, required=True, help="checkout of upstream nanochat")
    p.add_argument("--seed", type=int, default=42, help="seed of the weights (upstream's own is 42)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for upstream's base_train, after --")
    args = p.parse_args()
    script = args.upstream / "scripts" / "base_train.py"
    if not script.is_file(): p.error(f"--upstream {args.upstream}: no scripts/base_train.py there")
    sys.path.insert(0, str(args.upstream.resolve()))
    stand_in("wandb", init=lambda *a, **k: None, finish=lambda *a, **k: None)
    stand_in("rustbpe")
    import torch

    import nanochat.common as common
    if Path(common.__file__).resolve().parents[1] != args.upstream.resolve():
        sys.exit(f"imported nanochat from {common.__file__}, not from {args.upstream}: use upstream's environment")
    original = common.compute_init

    def compute_init(*a, **k):
        out = original(*a, **k)
        torch.manual_seed(args.seed)
        if torch.cuda.is_available(): torch.cuda.manual_seed(args.seed)
        return out

    common.compute_init = compute_init
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
