#!/bin/bash
# The GPU benchmark in one device call (docs/performance.md, "Real GPU"). From the repository root:
#   device run, carry [".gl", ".whl", "bench/gpu/out"] (and the sweep folders below, when built: they
#   are ignored by git):  bash bench/gpu/run_on_device.sh [MODEL...] [--runs N]
# .gl holds the Vulkan loader debs and .whl the wgpu wheels (wgpu, cffi, pycparser, rendercanvas), both
# fetched here as .library/device/README.md says; bench/gpu/out holds the models `kuma build` made here
# from bench/gpu/kuma.toml (the device has torch but is not where we compile). Logs land in $OUT.
set -o pipefail
OUT=${OUT:-/tmp/kuma-gpu-bench}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/xdg
mkdir -p -m 700 /tmp/xdg
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
{ nvidia-smi; ldconfig -p | grep libvulkan; echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"; } 2>&1 | tee "$OUT/machine.txt"
python3 bench/gpu/device.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt" || exit 1
# the GEMM tile and split-K sweep, when built (gemm_sweep.py)
if [ -d bench/gpu/sweep ]; then
  python3 bench/gpu/gemm_sweep.py run bench/gpu/sweep --results "$OUT/sweep.json" 2>&1 | tee "$OUT/sweep.txt"
fi
# the attention kernels' sweep, when built (attention_sweep.py)
if [ -d bench/gpu/attention_sweep ]; then
  python3 bench/gpu/attention_sweep.py run bench/gpu/attention_sweep --results "$OUT/attention_sweep.json" 2>&1 | tee "$OUT/attention_sweep.txt"
fi
