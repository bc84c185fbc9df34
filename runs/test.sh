#!/usr/bin/env bash
# README command 2: every check CI runs, in the order CI runs them. pytest goes last: its closing
# line is the verdict. Set NANOCHAT_SLOW=1 to include the slow notebook cells and tests too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# Tests and the book build never touch the reader's own artifacts or exercise progress.
export NANOCHAT_BASE_DIR="${NANOCHAT_TEST_BASE_DIR:-$(mktemp -d)}"
export MPLBACKEND=Agg
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "notebooks are the source: export, clean, README and TOC are in sync"
python -m nanochat.devtools check
step "lint (ruff)"
ruff check .
step "rustbpe: cargo test (the Rust core)"
bash rustbpe/build.sh test
step "book: execute and render every chapter offline"
python -m nanochat.devtools book
step "pytest: notebooks (nbdev's runner, one test each), CLIs, processes, browser"
pytest -n "${NANOCHAT_TEST_WORKERS:-2}" tests
