#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian/Ubuntu machine, idempotently:
#   system packages (apt) -> .venv with torch + nanochat[dev] -> MathJax for the offline book -> git hooks.
# Re-running it is cheap: each step checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { printf '\n\033[1m[setup] %s\033[0m\n' "$*"; }
setting() { sed -n "s/^$1 *= *//p" settings.ini | head -n1; }

# 1. System tools, installed with apt only when missing (a machine may already have them from elsewhere,
#    e.g. Node.js from its own repository, whose npm must not be replaced by Debian's).
declare -A NEEDS=([git]=git [npm]="nodejs npm" [chromium]=chromium [cc]=build-essential [cargo]="cargo rustc")
missing=()
for tool in "${!NEEDS[@]}"; do command -v "$tool" >/dev/null || missing+=(${NEEDS[$tool]}); done
${PYTHON:-python3} -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
    say "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "cannot install ${missing[*]} (no apt-get/sudo); continuing, the steps that need them will say so"
  fi
fi

# 2. Python environment. torch is pinned; pip picks the local CPU wheel (2.13.0+cpu) when the machine
#    keeps one in its find-links folder, and a normal PyPI build everywhere else.
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${NANOCHAT_TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  $PYTHON -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  say "installing $TORCH_SPEC"
  "${PIP[@]}" install "$TORCH_SPEC"
fi
say "installing nanochat (editable) with its dev dependencies from settings.ini"
"${PIP[@]}" install -e ".[dev]"

# 3. rustbpe, the Rust BPE trainer. Offline (no crates.io), it builds against Debian's packaged crates.
if ! timeout 5 bash -c 'exec 3<>/dev/tcp/index.crates.io/443' 2>/dev/null && command -v apt-get >/dev/null; then
  CRATES=(librust-pyo3-dev librust-rayon-dev librust-fancy-regex-dev librust-ahash-dev)
  need=(); for p in "${CRATES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    say "crates.io unreachable: installing Debian's packaged crates ${need[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
stamp=$(cat rustbpe/Cargo.toml rustbpe/pyproject.toml rustbpe/src/*.rs | sha256sum | cut -c1-16)
if [ "$(cat .venv/.rustbpe-stamp 2>/dev/null)" != "$stamp" ] || ! .venv/bin/python -c "import rustbpe" 2>/dev/null; then
  say "building rustbpe"
  bash rustbpe/build.sh "$ROOT/.venv/bin/python"
  echo "$stamp" > .venv/.rustbpe-stamp
fi

# 4. MathJax for the book, from the npm registry, kept out of git in .vendor/.
MJ=$(setting mathjax_version)
if [ ! -f ".vendor/node_modules/mathjax/es5/tex-chtml.js" ] || ! grep -q "\"version\": \"$MJ\"" .vendor/node_modules/mathjax/package.json; then
  if command -v npm >/dev/null; then
    say "fetching mathjax@$MJ for the offline book"
    mkdir -p .vendor
    npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix .vendor "mathjax@$MJ"
  else
    say "npm not found: the book will build, but without MathJax its math stays as TeX source"
  fi
fi

# 5. Developer habits: clean notebooks on commit, lint with ruff (hooks are local: no network).
if [ -d .git ] && [ -z "${CI:-}" ]; then
  .venv/bin/pre-commit install >/dev/null 2>&1 || true
fi
say "done: activate with 'source .venv/bin/activate'"
