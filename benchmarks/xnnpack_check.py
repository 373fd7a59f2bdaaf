"""Measured XNNPACK delegation: which ops of a model the runtime actually gives to XNNPACK.

XNNPACK's support depends on each op's parameters (STRIDED_SLICE only with unit
strides, int8 scales within range, ...), so a list of supported op types says
little; an op left out runs on TFLite's reference kernels and splits the graph,
costing far more than its own time.  This loads the model on the runtime with
XNNPACK on and reads the partition the runtime made: after delegation the
interpreter lists the original nodes and one DELEGATE node per partition, and a
node belongs to a partition when it is reached walking back from the
partition's outputs without crossing its inputs.  No TensorFlow needed.

    python -m benchmarks.xnnpack_check MODEL.tflite
"""

import json
import sys

from benchmarks.runtime import import_runtime, plan_coverage
from invo_base.plumbing import native_logs_silenced, one_line


def xnnpack_coverage(path, runtime="litert", num_threads=1):
    """{ops, delegated_ops, partitions, outside: {op: count}, fully_delegated} as the runtime partitioned it."""
    mod = import_runtime(runtime)
    try:
        with native_logs_silenced():
            interp = mod.Interpreter(model_path=path, num_threads=num_threads)
            interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        return {"available": False, "error": f"{runtime} with XNNPACK cannot load the model ({one_line(exc, 200)})"}
    c = plan_coverage(interp)
    return {"available": True, "runtime": runtime, **c, "fully_delegated": not c["outside"] and c["partitions"] <= 1}


def format_coverage(c):
    """One line for a terminal."""
    if not c.get("available"):
        return f"XNNPACK: not checked: {c.get('error')}"
    if c["fully_delegated"]:
        return f"XNNPACK: all {c['ops']} ops in one partition"
    left = ", ".join(f"{op} x{n}" for op, n in c["outside"].items())
    return (f"XNNPACK: {c['delegated_ops']} of {c['ops']} ops in {c['partitions']} partition(s); "
            f"on TFLite's reference kernels: {left or 'none'}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(json.dumps(xnnpack_coverage(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
