#!/usr/bin/env bash
# The Dawn benchmark (issue 12), or with `decode` first the decode benchmark (issue 10, decode.py),
# or with `host` first the host-time probe (host.py: where run()'s time beyond the GPU goes),
# in one device call, from the repository root:
#   device run, carry [".dawn"]:  bash bench/gpu/dawn/run_on_device.sh [decode|host] [bench.py, decode.py or host.py options]
# .dawn/kit.tar.xz comes from bench/gpu/dawn/pack.sh (Node, dawn.node, onnxruntime-web, the wgpu
# wheels, the Vulkan loader). The models are built there (torch and transformers are on the
# device), so no weights travel. $OUT gets dawn_bench.md and .json (decode: decode_bench.md and .json;
# host: host.md, host.json and host.log), log.txt, machine.txt. The device returns at most 8 files a
# call: for several runs in one call give each an OUT under /tmp and tar them into the device's $OUT
# at the end (14:43's JSON was lost to that limit).
# STATS=1 in the environment loads the kit's pipeline-statistics layer (bench/gpu/vulkan/pipeline_stats.c)
# into every Vulkan instance: each compute pipeline's driver statistics (registers...), machine code
# and SPIR-V go to $OUT/pipeline-stats.tgz (bench/gpu/vulkan/report.py reads it, unpacked).
set -o pipefail
script=bench.py
[ "$1" = decode ] && script=decode.py && shift
[ "$1" = host ] && script=host.py && shift
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${OUT:-/tmp/kuma-dawn-bench}
KIT=/tmp/kuma-dawn-kit
mkdir -p "$OUT" "$KIT" && tar -xJf "$ROOT/.dawn/kit.tar.xz" -C "$KIT" || exit 1
for f in "$KIT"/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$ROOT PYTHONUNBUFFERED=1 XDG_RUNTIME_DIR=/tmp/xdg KUMA_NODE=$KIT/node/node KUMA_DAWN_MODULES=$KIT/node_modules
mkdir -p -m 700 /tmp/xdg
if [ -n "${STATS:-}" ]; then
  export VK_LAYER_PATH=$KIT/vulkan-layer VK_INSTANCE_LAYERS=VK_LAYER_KUMA_pipeline_stats KUMA_PIPELINE_STATS=/tmp/kuma-pipeline-stats
  mkdir -p "$KUMA_PIPELINE_STATS"
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
{ nvidia-smi; nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,power.draw --format=csv; ldconfig -p | grep libvulkan; echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"; "$KUMA_NODE" --version; } 2>&1 | tee "$OUT/machine.txt"
# 480 s: steps not started by then are skipped, so the table comes back inside the 10-minute call
python3 "$ROOT/bench/gpu/dawn/$script" --out "$OUT" --work /tmp/kuma-dawn-work --deadline 480 "$@" 2>&1 | tee "$OUT/log.txt"
status=$?
[ -n "${STATS:-}" ] && tar czf "$OUT/pipeline-stats.tgz" -C "$KUMA_PIPELINE_STATS" .
exit $status
