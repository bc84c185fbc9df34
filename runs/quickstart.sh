#!/usr/bin/env bash
# README command 1: set up everything, then run the main job: the CPU speedrun (runs/cpu.sh), offline.
# To render the book instead: .venv/bin/python -m nanochat.devtools book
set -euo pipefail
cd "$(dirname "$0")/.."
bash runs/setup.sh
bash runs/cpu.sh
