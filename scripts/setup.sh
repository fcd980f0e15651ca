#!/usr/bin/env bash
# Installs everything kuma build and its tests need on a fresh Debian/Ubuntu machine:
# Mesa's Vulkan driver (lavapipe) for wgpu-py, Debian's Chromium for the browser tests,
# nginx (its WebDAV PUT plays the shared remote cache in the tests), gcc and the Vulkan headers (the
# pipeline-statistics layer of bench/gpu/vulkan),
# a Python venv in .venv with the package, and the npm packages of the browser harness,
# the example site, the bundler fixture apps of the npm shim's tests, and dawn.node (the npm package
# webgpu) for the Dawn benchmark's test.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)  # /usr/sbin may not be on PATH; the tests run it from there
# the pipeline-statistics layer (bench/gpu/vulkan/build.sh; tests/test_pipeline_stats.py builds it)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
[ -f /usr/include/vulkan/vk_layer.h ] || need_apt+=(libvulkan-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import kuma_build, torch, wgpu, safetensors, watchdog, pytest, xdist, transformers" 2>/dev/null; then
  echo "[setup] pip install (torch 2.13.0 CPU first, so the range in pyproject.toml pulls no CUDA build)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
fi

if [ ! -d tests/browser/node_modules/terser ]; then  # terser: scripts/minify_runtime.mjs
  echo "[setup] npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
if [ ! -d example-site/node_modules ]; then
  echo "[setup] npm ci in example-site (Vite, and the kuma-build shim from npm-shim/)"
  (cd example-site && npm ci --no-audit --no-fund --silent)
fi
if [ ! -d bench/gpu/dawn/node_modules/webgpu ]; then
  echo "[setup] npm ci in bench/gpu/dawn (dawn.node, for tests/test_dawn.py; ONNX Runtime Web is left to pack.sh)"
  (cd bench/gpu/dawn && npm ci --omit=optional --no-audit --no-fund --silent)
fi
for app in tests/fixtures/vite-app tests/fixtures/webpack-app tests/fixtures/vite-ts-app tests/fixtures/webpack-ts-app; do
  if [ ! -d "$app/node_modules" ]; then
    echo "[setup] npm ci in $app (the bundler, and the kuma-build shim from npm-shim/)"
    (cd "$app" && npm ci --no-audit --no-fund --silent)
  fi
done
echo "[setup] ready"
