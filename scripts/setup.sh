#!/usr/bin/env bash
# Installs everything the project, its tests (.ci/run) and its main job (main.sh) need on a fresh Debian machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Software Vulkan for the LiteRT GPU path on machines without a GPU: chromium ships SwiftShader.
if [ ! -f /usr/lib/chromium/vk_swiftshader_icd.json ] || ! ldconfig -p | grep -q libvulkan.so.1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libvulkan1 >/dev/null
  else
    echo "setup: install Debian's chromium and libvulkan1 for the GPU-path tests" >&2
  fi
fi

# Host side: this package with TensorFlow, ai-edge-litert and the test tools.
"$PY" -m pip install -q --disable-pip-version-check -e '.[dev]'

# A legacy board: tflite-runtime 2.14 with numpy<2, no TensorFlow, and this package's benchmarks.
if [ ! -x .venv-legacy/bin/python ] || ! .venv-legacy/bin/python -c "import tflite_runtime, tflite, click, benchmarks" 2>/dev/null; then
  rm -rf .venv-legacy
  "$PY" -m venv .venv-legacy
  .venv-legacy/bin/pip install -q --disable-pip-version-check "tflite-runtime==2.14.0" "numpy<2" "click>=8" "tflite>=2.18"
fi
.venv-legacy/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall --no-build-isolation . 2>/dev/null \
  || .venv-legacy/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall .
