#!/usr/bin/env bash
# README command 1: set up everything, then run the main job.
# Until the CPU speedrun lands, the main job is rendering the book (all chapters, executed, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash runs/setup.sh
.venv/bin/python -m nanochat.devtools book
