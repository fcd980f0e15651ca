#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then builds the example project with `kuma build`
# and checks it against PyTorch on the local WebGPU adapter with `kuma verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
cd example-site
../.venv/bin/kuma build
../.venv/bin/kuma verify
