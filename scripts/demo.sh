#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds the example project's models with `kuma build`, checks them
# against PyTorch on the local WebGPU adapter with `kuma verify`, then bundles the example site
# with Vite (through the kuma-build plugin) into example-site/dist/, ready for any static server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
export KUMA_PYTHON="$PWD/.venv/bin/python"  # the Vite plugin runs kuma with this Python
cd example-site
../.venv/bin/kuma build
../.venv/bin/kuma verify
npm run build
echo "[demo] serve example-site/dist/ from any static server, e.g.: python3 -m http.server -d example-site/dist 8000 (index.html: the digit page; generate.html: the text generator)"
