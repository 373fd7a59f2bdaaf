#!/usr/bin/env bash
# Installs everything the project, its tests (scripts/test.sh, .ci/run) and its main job (main.sh) need on a
# fresh Debian machine, idempotently:
#   .venv/         the host side: this package (editable) with TensorFlow, ai-edge-litert and the test tools;
#   .venv-legacy/  a legacy board: tflite-runtime 2.14, numpy<2 and this package's device side, no TensorFlow;
#   apt            chromium (for its SwiftShader, a software Vulkan for the GPU path) and libvulkan1.
# Nothing goes into the system interpreter; both venvs are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=(--disable-pip-version-check --root-user-action=ignore)  # pip's own lines show progress: installs take a while

say() { echo "setup: $*" >&2; }

# Software Vulkan for the LiteRT GPU path on machines without a GPU: chromium ships SwiftShader.
if [ ! -f /usr/lib/chromium/vk_swiftshader_icd.json ] || ! ldconfig -p | grep -q libvulkan.so.1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing Debian's chromium and libvulkan1 (SwiftShader Vulkan for the GPU path)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libvulkan1 >/dev/null
  else
    say "install Debian's chromium and libvulkan1 for the GPU-path tests"
  fi
fi

# Host side.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
# find_spec, not import: importing TensorFlow only to see that it is there costs seconds on every run.
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in
    ('tensorflow', 'ai_edge_litert', 'pytest', 'xdist', 'flatbuffers', 'involution', 'tflite_micro', 'ruff')))" 2>/dev/null \
   || [ setup.cfg -nt .venv/.installed ]; then
  say "installing this package with its host extras into .venv (TensorFlow: a few minutes the first time)"
  .venv/bin/pip install "${PIP[@]}" -e '.[dev]'
  touch .venv/.installed
fi

# A legacy board: tflite-runtime 2.14 with numpy<2, no TensorFlow, and this package's device side.
if [ ! -x .venv-legacy/bin/python ] || ! .venv-legacy/bin/python -c "import tflite_runtime, tflite, flatbuffers, click" 2>/dev/null; then
  say "creating .venv-legacy (tflite-runtime 2.14, numpy<2: an old board)"
  rm -rf .venv-legacy
  "$PY" -m venv .venv-legacy
  .venv-legacy/bin/pip install "${PIP[@]}" "tflite-runtime==2.14.0" "numpy<2" "tflite==2.18.0" "click>=8" "flatbuffers>=23"
fi
# Installed as a board installs it (a copy, not a link), built outside the tree so no build/ is left here; only
# when the package's sources changed since the last install (a hash of them), as a copy does not follow edits.
sources=(setup.cfg pyproject.toml README.md invo_base involution convert quantize benchmarks)
digest=$(find "${sources[@]}" -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
if [ "$(cat .venv-legacy/.installed-sources 2>/dev/null)" != "$digest" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  cp -r "${sources[@]}" "$stage"
  say "installing this package's device side into .venv-legacy"
  .venv-legacy/bin/pip install "${PIP[@]}" -q --no-deps --force-reinstall "$stage" >/dev/null
  echo "$digest" > .venv-legacy/.installed-sources
fi
