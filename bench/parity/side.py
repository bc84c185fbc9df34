"""One side of one parity component, in its own process: `side.py COMPONENT STEP WORK OPTS_JSON`.

STEP is prepare, ours or upstream. For upstream, the checkout named in the options goes first on sys.path and our
package must not be importable from there: the two `nanochat` packages share a name, so one process holds one.
The result (a JSON object) is written to WORK/STEP.json.
"""
import importlib
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    component, step, work, opts = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
    if step == "upstream":
        checkout = Path(opts["upstream"]).resolve()
        sys.path.insert(0, str(checkout))
        # upstream's tokenizer module imports its BPE trainer at the top; a machine without it can still encode,
        # decode and run models (only training needs the trainer), so a stand-in answers the import there
        if importlib.util.find_spec("rustbpe") is None: sys.modules["rustbpe"] = types.SimpleNamespace(__name__="rustbpe")
        import nanochat
        where = Path(nanochat.__file__).resolve()
        if checkout not in where.parents:
            raise SystemExit(f"upstream side imported nanochat from {where}, not from {checkout}: run it with a Python "
                             f"whose environment does not hold our package (--upstream-python)")
    sys.path.insert(1 if step == "upstream" else 0, str(HERE))
    module = importlib.import_module(component)
    start = time.time()
    result = getattr(module, step)(work, opts)
    if step == "prepare": result = {} if result is None else result
    result = dict(result, _seconds=round(time.time() - start, 2))
    from common import write_json
    write_json(work / f"{step}.json", result)


if __name__ == "__main__":
    main()
