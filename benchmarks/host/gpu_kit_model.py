"""One float16 file for the GPU record (scripts/gpu_loan.sh kit): a network built as invo-report networks builds
it, converted by invo-convert's library for a target, its outputs checked against Keras and on the GPU path.

    python -m benchmarks.host.gpu_kit_model NETWORK SIZE TARGET OUT.tflite
"""

import os
import sys
import tempfile


def main(argv=None):
    network, size, target, out = argv or sys.argv[1:]
    from benchmarks.host.network_bench import build_network
    from convert.api import convert_model

    with tempfile.TemporaryDirectory() as tmp:
        keras_path = os.path.join(tmp, f"{network}.keras")
        build_network(network, int(size)).save(keras_path)
        r = convert_model(keras_path, out, quantize="float16", target=target, force=True, verify_samples=2)
    print(f"{out}: {r['audit']['ops']} ops, GPU path {'ok' if (r.get('gpu') or {}).get('ok') else 'NOT ok'}")


if __name__ == "__main__":
    main()
