#!/usr/bin/env bash
# Builds the pipeline-statistics layer (pipeline_stats.c: what the driver made of each compute
# pipeline) into DEST with its loader manifest. Needs gcc and the Vulkan headers (apt: libvulkan-dev).
#   bash bench/gpu/vulkan/build.sh DEST
# then, for any Vulkan program (dawn.node, wgpu-py):
#   VK_LAYER_PATH=DEST VK_INSTANCE_LAYERS=VK_LAYER_KUMA_pipeline_stats KUMA_PIPELINE_STATS=FOLDER ...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:?usage: build.sh DEST}
mkdir -p "$DEST"
[ -f /usr/include/vulkan/vk_layer.h ] || apt-get install -y -q libvulkan-dev >/dev/null
gcc -std=c11 -O2 -Wall -Wextra -Werror -shared -fPIC -fvisibility=hidden -o "$DEST/libkuma_pipeline_stats.so" "$HERE/pipeline_stats.c" -lpthread
cat > "$DEST/kuma_pipeline_stats.json" <<JSON
{
  "file_format_version": "1.1.2",
  "layer": {
    "name": "VK_LAYER_KUMA_pipeline_stats",
    "type": "GLOBAL",
    "library_path": "./libkuma_pipeline_stats.so",
    "api_version": "1.3.0",
    "implementation_version": "1",
    "description": "Kuma: each compute pipeline's executable statistics and SPIR-V (bench/gpu/vulkan/pipeline_stats.c)",
    "functions": {
      "vkNegotiateLoaderLayerInterfaceVersion": "vkNegotiateLoaderLayerInterfaceVersion"
    }
  }
}
JSON
echo "[vulkan] $DEST/libkuma_pipeline_stats.so"
