#!/usr/bin/env bash
# Build the sandbox pretraining corpus that every CPU run and demo uses, offline, into
# $NANOCHAT_BASE_DIR/base_data (default ~/.cache/nanochat/base_data), then report its size.
#
# Sources: the shared data folder's Wikipedia articles, ELTeC novels and Shakespeare, plus, when installed, Debian's
# python3.11-doc (the Python manual, HTML), dict-gcide (a dictionary) and jargon-text (the Jargon File).
#   bash runs/build_corpus.sh                 # what is there
#   bash runs/build_corpus.sh --with-debian   # apt-get install the Debian text packages first
# Measured on 2026-11-24 (all sources): see the table in the Documents chapter (nbs/03_dataset.ipynb).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=${NANOCHAT_DATA_DIR:-$($PY -c "from nanochat.common import shared_data_dir; print(shared_data_dir() or '')")}
OUT=${NANOCHAT_CORPUS_DIR:-$($PY -c "from nanochat.common import get_base_dir; print(get_base_dir() / 'base_data')")}

if [ "${1:-}" = "--with-debian" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3.11-doc dict-gcide jargon-text >/dev/null
fi

sources=()
[ -n "$DATA" ] && for s in "$DATA/pretrain/wikipedia_en" "$DATA/pretrain/eltec_eng" "$DATA/pretrain/tinyshakespeare.txt"; do
  [ -e "$s" ] && sources+=("$s")
done
for s in /usr/share/doc/python3.11/html /usr/share/dictd/gcide.dict.dz /usr/share/doc/jargon-text/jargon.txt.gz; do
  [ -e "$s" ] && sources+=("$s")
done
[ ${#sources[@]} -gt 0 ] || { echo "no corpus sources found: is the shared data folder beside the checkout?" >&2; exit 1; }
echo "building the sandbox corpus into $OUT from:"; printf '  %s\n' "${sources[@]}"
$PY -m nanochat.dataset build --from "${sources[@]}" --out "$OUT" --seed 42 --docs-per-shard 10000
$PY -m nanochat.dataset stats --dir "$OUT"
