#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite on real WebGPU:
# wgpu-py on Mesa lavapipe, and headless Chromium for the emitted ES modules.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
exec .venv/bin/python -m pytest -q "$@"
