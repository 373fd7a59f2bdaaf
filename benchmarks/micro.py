"""TFLite Micro (TFLM) as a runtime of the device side: the RAM a model needs on a microcontroller, and its
outputs against LiteRT's reference kernels.  No TensorFlow: ``pip install '.[micro]'`` adds the ``tflite-micro``
interpreter, TFLM's kernels in a Python wrapper.

TFLM plans every tensor into one arena.  Its recording allocator says how much the model took: the head holds
the activations (their lifetimes planned into shared space), the tail what lives for the whole run, most of it per
operator (a node struct, the kernel's own data such as requantization multipliers) and per tensor.
"""

import contextlib
import os
import re
import tempfile
import time

import numpy as np

from benchmarks.runtime import RuntimeUnavailable, random_inputs
from invo_base.tflite_model import TFLiteModel

MICRO_MODULE = "tflite_micro.python.tflite_micro.runtime"
# The largest difference from LiteRT's kernels an int8 output may have, in quantization steps: TFLM's kernels round
# as the reference ones do except where they compute a requantization another way.
MICRO_ALLOWED_STEPS = 1
# LiteRT's reference int8 SUM accumulates in int8 and overflows (google-ai-edge/LiteRT issue 4079; measured: 98
# steps off on the GPU target's seed model, where TFLM and LiteRT's builtin kernels agree within 1): a file with
# an int8 SUM is checked against the builtin kernels instead (without XNNPACK).
REFERENCE_WRONG_INT8 = ("SUM",)
# What a line of TFLM's allocation record says: the arena's parts, and what each kind of allocation used.
_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_USED = re.compile(r"'([^']+)' used (\d+) bytes")


def import_micro():
    """TFLM's Python interpreter module, or ``RuntimeUnavailable`` saying what to install."""
    try:
        import importlib

        return importlib.import_module(MICRO_MODULE)
    except ImportError:
        raise RuntimeUnavailable("TFLite Micro is not installed: pip install 'involution-tflite[micro]' "
                                 "(the tflite-micro package)") from None


@contextlib.contextmanager
def _captured_fd(fd, into):
    """Everything written to file descriptor ``fd`` (native code's prints) goes to the file ``into``."""
    saved = os.dup(fd)
    try:
        os.dup2(into.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def parse_allocations(text):
    """TFLM's ``print_allocations`` record as {total, activations, persistent, by_kind: {kind: bytes}}: the head
    holds the activations, the tail everything kept for the whole run."""
    parts = {k: int(v) for k, v in _TOTAL.findall(text)}
    if "total" not in parts:
        raise RuntimeUnavailable(f"TFLite Micro printed no allocation record: {text.strip()[:200]!r}")
    return {"total": parts["total"], "activations": parts.get("head", 0), "persistent": parts.get("tail", 0),
            "by_kind": {kind: int(n) for kind, n in _USED.findall(text)}}


def _interpreter(micro, data, arena_size=None):
    try:
        return micro.Interpreter.from_bytes(data, arena_size=arena_size)
    except (RuntimeError, ValueError) as exc:
        raise RuntimeUnavailable(f"TFLite Micro cannot run it: {str(exc).strip().splitlines()[-1]}") from None


def arena(path):
    """The arena the model needs on TFLM (``parse_allocations``), recorded as its interpreter plans it."""
    with open(path, "rb") as f:
        return recorded_arena(_interpreter(import_micro(), f.read()))


def recorded_arena(interp):
    """``parse_allocations`` of what an interpreter's recording allocator says it allocated."""
    with tempfile.TemporaryFile("w+") as out:
        with _captured_fd(1, out), _captured_fd(2, out):  # native code prints the record
            interp.print_allocations()
        out.seek(0)
        return parse_allocations(out.read())


def micro_op_gaps(model):
    """What a microcontroller cannot run in ``model`` (a ``TFLiteModel``): {"flex", "custom", "float"}, the last
    the ops computing in float (besides a QUANTIZE / DEQUANTIZE at the model's edges), which an int8-only MCU
    lacks or runs in software."""
    sg = model.main
    floats = sorted({op for op, (_, outs) in zip(sg["ops"], sg["op_io"])
                     if op not in ("QUANTIZE", "DEQUANTIZE")
                     and any(o >= 0 and sg["tensors"][o].dtype in ("FLOAT32", "FLOAT16") for o in outs)})
    return {"flex": model.flex_ops, "custom": model.custom_ops, "float": floats}


def reference_kernels(model):
    """Which of LiteRT's kernels a TFLM run is checked against: "reference" (BUILTIN_REF), or "builtin" (the
    optimized builtin kernels, no XNNPACK) for a file with an op whose int8 reference kernel is wrong."""
    sg = model.main
    wrong = any(op in REFERENCE_WRONG_INT8 and sg["tensors"][ins[0]].dtype == "INT8"
                for op, (ins, _) in zip(sg["ops"], sg["op_io"]))
    return "builtin" if wrong else "reference"


def reference_outputs(path, arrays, kernels="reference"):
    """LiteRT's ``kernels`` ("reference": BUILTIN_REF; "builtin": the optimized builtin kernels; neither with
    XNNPACK) on ``arrays``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if kernels == "reference" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=path, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    for d, a in zip(interp.get_input_details(), arrays):
        interp.set_tensor(d["index"], a)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def micro_benchmark(path, num_runs=20, input_file_arrays=None):
    """Runs ``path`` on TFLM: {model, file_bytes, arena, ops, gaps, max_steps, ok, ms_per_run (this CPU)}.

    ``ok``: every output within ``MICRO_ALLOWED_STEPS`` of LiteRT's kernels (``reference_kernels``) on the same
    input (float outputs: within 1e-5 of their largest magnitude).  The time is TFLM's portable kernels on this
    CPU, not a microcontroller's speed.
    """
    micro = import_micro()
    with open(path, "rb") as f:
        data = f.read()
    model = TFLiteModel(data, path)
    interp = _interpreter(micro, data)
    record = recorded_arena(interp)  # planned when the interpreter was made, before any run
    n_in = len(model.main["inputs"])
    details = [interp.get_input_details(i) for i in range(n_in)]
    arrays = input_file_arrays or random_inputs([{"shape": tuple(d["shape"]), "dtype": d["dtype"],
                                                  **dict(zip(("scale", "zero_point"), _quantization(d)))}
                                                 for d in details])
    for i, a in enumerate(arrays):
        interp.set_input(np.asarray(a, dtype=details[i]["dtype"]), i)
    t0 = time.perf_counter()
    interp.invoke()
    first_ms = (time.perf_counter() - t0) * 1000
    outs = [np.array(interp.get_output(i)) for i in range(len(model.main["outputs"]))]
    times = []
    for _ in range(num_runs):
        t = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t) * 1000)
    kernels = reference_kernels(model)
    ref = reference_outputs(path, arrays, kernels)
    worst = 0.0
    for got, want in zip(outs, ref):
        if got.dtype.kind in "iu":
            worst = max(worst, float(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64)), initial=0)))
        else:
            scale = float(np.max(np.abs(want), initial=0)) or 1.0
            worst = max(worst, float(np.max(np.abs(got - want), initial=0)) / scale)
    integer = all(o.dtype.kind in "iu" for o in outs)
    return {"model": path, "runtime": "tflite-micro", "file_bytes": len(data), "arena": record,
            "ops": len(model.ops), "op_names": sorted(set(model.ops)), "gaps": micro_op_gaps(model),
            "max_steps" if integer else "max_rel_error": worst, "checked_against": kernels,
            "ok": worst <= (MICRO_ALLOWED_STEPS if integer else 1e-5),
            "first_ms": first_ms, "median_ms": float(np.median(times)) if times else first_ms}


def _quantization(detail):
    q = detail.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    return (float(scales[0]), int(zeros[0])) if scales is not None and len(scales) else (0.0, 0)


def format_micro(results):
    """The terminal's lines for TFLM runs: flash and RAM first, then the check and this CPU's time."""
    lines = [f"{'model':<28}{'flash KB':>9}{'arena KB':>9}{'activ. KB':>10}{'persistent KB':>14}{'ops':>5}"
             f"{'vs reference':>14}{'ms here*':>10}"]
    for r in results:
        a = r["arena"]
        check = (f"{r['max_steps']:.0f} step{'s' * (r['max_steps'] != 1)}" if "max_steps" in r
                 else f"{r['max_rel_error']:.1g} rel") + "+" * (r["checked_against"] == "builtin")
        lines.append(f"{os.path.basename(r['model'])[:27]:<28}{r['file_bytes'] / 1024:>9.1f}{a['total'] / 1024:>9.1f}"
                     f"{a['activations'] / 1024:>10.1f}{a['persistent'] / 1024:>14.1f}{r['ops']:>5}"
                     f"{check + (' ok' if r['ok'] else ' WRONG'):>14}{r['median_ms']:>10.3f}")
    lines.append("arena: TFLM's recording allocator (activations: the head, planned; persistent: the tail, kept "
                 "for the whole run, mostly per op). vs reference: largest output difference from LiteRT's reference "
                 f"kernels (int8: within {MICRO_ALLOWED_STEPS} step is ok; + against its builtin kernels, where the "
                 "file has an int8 SUM, whose reference kernel overflows). * TFLM's portable kernels on this CPU, "
                 "not a microcontroller's speed.")
    return "\n".join(lines)


def micro_audit(path):
    """What invo-convert's audit says of an int8 file for a microcontroller: {available, runs, arena, gaps,
    error}: whether TFLM's kernels take every op (it is run once) and the arena it needs; ``gaps`` names what a
    microcontroller cannot run (``micro_op_gaps``)."""
    with open(path, "rb") as f:
        model = TFLiteModel(f.read(), path)
    out = {"gaps": micro_op_gaps(model), "available": True, "runs": False}
    try:
        out["arena"] = arena(path)
        out["runs"] = True
    except RuntimeUnavailable as exc:
        out["available"] = "not installed" not in str(exc)
        out["error"] = str(exc)
    return out


def format_micro_audit(m):
    """The audit's line for a microcontroller."""
    gaps = "; ".join(f"{kind} ops {', '.join(ops)}" for kind, ops in m["gaps"].items() if ops)
    if not m["available"]:
        line = "TFLite Micro: not checked (pip install '.[micro]')"
    elif m["runs"]:
        a = m["arena"]
        line = (f"TFLite Micro: every op has a kernel; arena {a['total'] / 1024:.1f} KB\n"
                f"    (activations {a['activations'] / 1024:.1f} KB, kept for the run {a['persistent'] / 1024:.1f} KB)")
    else:
        line = f"TFLite Micro: cannot run it: {m['error']}"
    return line + (f"\n    a microcontroller cannot run: {gaps}" if gaps else "")
