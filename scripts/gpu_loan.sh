#!/usr/bin/env bash
# The GPU record for a session lent a GPU machine (docs/gpu_cost_model.md says what it measures and why).
#
#   bash scripts/gpu_loan.sh kit        # here, no device time: the runtime kit and the float16 files, in batches
#   bash scripts/gpu_loan.sh device     # there, once per call: installs the kit, collects the carried batch
#   bash scripts/gpu_loan.sh device --run   # there, in the last call: checks and times every collected file
#
# A device call carries at most 64 MiB, so the files travel in batches (.dev/gpu_kit/batch1 ... ), one per call
# to a warm machine, where /tmp keeps what earlier calls brought; the last call times them all, interleaved.
# Each batch's call: run(command="bash scripts/gpu_loan.sh device", carry=[".dev/gpu_kit/rt", ".dev/gpu_kit/batchN"])
# and the last: "bash scripts/gpu_loan.sh device --run" carrying its batch too.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.dev/gpu_kit
SIZE=${INVO_GPU_SIZE:-224}

kit() {
    grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo /.dev/ >> .git/info/exclude
    mkdir -p "$KIT/rt" "$KIT/files" /tmp/gpu_whl /tmp/gpu_slim
    if [ ! -f "$KIT/rt/litert_slim.tar.xz" ]; then
        # The device machine's Python is 3.12 with numpy (docs/gpu_h200.md): the runtime without its NPU vendor
        # plugins, and the pure-Python packages the device side needs.
        pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_27_x86_64 -d /tmp/gpu_whl ai-edge-litert==2.3.0 backports.strenum click flatbuffers
        (cd /tmp/gpu_slim && for w in /tmp/gpu_whl/*.whl; do unzip -qo "$w"; done &&
            rm -rf ai_edge_litert/vendors ai_edge_litert/tools/apply_plugin_main)
        tar cJf "$KIT/rt/litert_slim.tar.xz" -C /tmp/gpu_slim .
        o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/gpu_apt'
        mkdir -p /tmp/gpu_apt/partial
        apt-get $o update -qq && (cd "$KIT/rt" && apt-get $o download -qq libvulkan1 libglvnd0 libglx0 libgl1 \
            libegl1 libopengl0 libgles2)
    fi
    # float16 files (what a phone's GPU runs; the record's gpu-fp32 setting runs them in float32): each network's
    # CPU-target and GPU-target file, and ResNet-50.
    for net in rednet26 rednet50; do
        for target in cpu gpu; do
            f="$KIT/files/${net}-${target}_fp16.tflite"
            [ -f "$f" ] || .venv/bin/python -m benchmarks.host.gpu_kit_model "$net" "$SIZE" "$target" "$f"
        done
    done
    f="$KIT/files/resnet50_fp16.tflite"
    [ -f "$f" ] || .venv/bin/python -m benchmarks.host.gpu_kit_model resnet50 "$SIZE" cpu "$f"
    # Batches of at most 50 MB (the runtime's 12 MB rides with each call).
    rm -rf "$KIT"/batch*
    n=1; used=0
    for f in $(ls -S "$KIT"/files/*.tflite); do
        size=$(stat -c %s "$f")
        if [ $((used + size)) -gt 52000000 ] && [ $used -gt 0 ]; then n=$((n + 1)); used=0; fi
        mkdir -p "$KIT/batch$n" && cp "$f" "$KIT/batch$n/"
        used=$((used + size))
    done
    du -sh "$KIT"/rt "$KIT"/batch*
}

device() {
    for f in "$KIT"/rt/*.deb; do dpkg -x "$f" /; done
    ldconfig
    [ -d /tmp/site/ai_edge_litert ] || { mkdir -p /tmp/site && tar xJf "$KIT/rt/litert_slim.tar.xz" -C /tmp/site; }
    mkdir -p /tmp/invo_gpu
    for b in "$KIT"/batch*; do [ -d "$b" ] && cp "$b"/*.tflite /tmp/invo_gpu/; done
    ls -la /tmp/invo_gpu
    [ "${1:-}" = --run ] || return 0
    export PYTHONPATH=/tmp/site:$PWD
    export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
    export INVO_GPU_NAME="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    python3 -m benchmarks.cli /tmp/invo_gpu/*.tflite --check_gpu --num_runs 3 --quiet   # correctness first
    python3 -m benchmarks.gpu_record /tmp/invo_gpu "${OUT:-/tmp/out}" --rounds "${INVO_GPU_ROUNDS:-3}" --num_runs 50
}

case "${1:-}" in
    kit) kit ;;
    device) shift; device "$@" ;;
    *) echo "usage: bash scripts/gpu_loan.sh kit | device [--run]" >&2; exit 2 ;;
esac
