#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite on real WebGPU:
# wgpu-py on Mesa lavapipe, and headless Chromium for the emitted ES modules.
# Two pytest-xdist workers, a test file each at a time (its module fixtures, such as the example
# site's build in its own folder, made once): the files' tests are independent of other files'
# (each its own temporary projects, caches, servers on free ports), and on two cores two workers
# took the suite from 25-28 to about 19 minutes. `-n 0` among the arguments runs it in this
# process instead (the last -n given counts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
