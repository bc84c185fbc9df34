#!/usr/bin/env bash
# Build rustbpe into a Python environment, or run its Rust tests.
#   bash rustbpe/build.sh [PYTHON]   build a release wheel with maturin and install it into PYTHON's environment
#   bash rustbpe/build.sh test       cargo test (the core algorithm, no Python needed)
# With crates.io reachable this is a plain build. Without it (as on machines that only reach package registries),
# and when Debian's packaged crates are installed (librust-pyo3-dev, librust-rayon-dev, librust-fancy-regex-dev,
# librust-ahash-dev), cargo is pointed at /usr/share/cargo/registry through a throwaway CARGO_HOME under target/:
# the crate itself and its Cargo.toml stay the same in both cases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
DEBIAN_REGISTRY=/usr/share/cargo/registry

if ! timeout 5 bash -c 'exec 3<>/dev/tcp/index.crates.io/443' 2>/dev/null; then
  if [ -d "$DEBIAN_REGISTRY" ]; then
    export CARGO_HOME="$here/target/offline-cargo-home"
    mkdir -p "$CARGO_HOME"
    cat > "$CARGO_HOME/config.toml" <<TOML
[source.crates-io]
replace-with = "debian-packages"
[source.debian-packages]
directory = "$DEBIAN_REGISTRY"
[net]
offline = true
TOML
    # cargo and rustc still come from the normal toolchain; only the crate source is replaced.
    export PATH="$PATH:$HOME/.cargo/bin"
    echo "[rustbpe] crates.io unreachable: building against Debian's packaged crates in $DEBIAN_REGISTRY"
  else
    echo "[rustbpe] crates.io unreachable and no $DEBIAN_REGISTRY: apt-get install librust-pyo3-dev librust-rayon-dev librust-fancy-regex-dev librust-ahash-dev" >&2
    exit 1
  fi
fi

if [ "${1:-}" = "test" ]; then
  exec cargo test --release --no-default-features
fi

PYTHON=${1:-"$here/../.venv/bin/python"}
"$PYTHON" -m maturin --version >/dev/null 2>&1 || "$PYTHON" -m pip install -q "maturin>=1,<2"
rm -rf target/wheels
"$PYTHON" -m maturin build --release --interpreter "$PYTHON" --out target/wheels --quiet
"$PYTHON" -m pip install -q --force-reinstall --no-deps target/wheels/rustbpe-*.whl
"$PYTHON" -c "import rustbpe; print('[rustbpe] installed', rustbpe.__file__)"
