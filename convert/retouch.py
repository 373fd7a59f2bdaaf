"""An existing .tflite, from any converter, given what invo-convert's own exports have: operators in depth-first
order, shared constants, no dead names, with every metadata entry and signature kept (``compact``).

For a model converted in a user's own pipeline (``tf.lite.TFLiteConverter.from_keras_model(model).convert()``):
before the layer's name scopes (``involution.layer.KERNEL_SCOPE``) the stock converter listed an involution's K*K
windows all first, and its RedNet-26/50 files ran 1.29x/1.33x slower on XNNPACK (1 thread) than the same layers
reordered; with them 1.03x/1.05x (invo-report networks, stock-float32).  Files from an older layer, or with
other layers a converter lists badly, still gain the full difference.  Nothing here changes a value: the result
must compute bit-identical outputs on the interpreter, or it is not written.
"""

import os
import time

import numpy as np

from benchmarks.runtime import InterpreterRunner, random_inputs
from benchmarks.xnnpack_check import xnnpack_coverage
from convert.checks import check_output
from convert.compact import compact
from convert.errors import ConversionError
from convert.publish import audit, staged
from invo_base.plumbing import json_text, write_atomic
from invo_base.tflite_model import TFLiteModel


def default_output(path):
    """model.tflite -> model.invo.tflite (the input is never overwritten by default)."""
    return os.path.splitext(path)[0] + ".invo.tflite"


def retouch_tflite(path, output=None, *, force=False, report=None, gpu=True, seed=0, progress=None):
    """Compacts and reorders ``path`` into ``output``; returns invo-convert's report dict.

    Refuses (``ConversionError``) when the outputs on random inputs are not bit-identical to the input's.
    """
    say = progress or (lambda msg: None)
    output = output or default_output(path)
    if os.path.abspath(output) == os.path.abspath(path):
        raise ConversionError(f"{output}: is the input; give another -o")
    check_output(output, force)
    if report:
        check_output(report, True)
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        flat = f.read()
    before = TFLiteModel(flat, path)
    if before.flex_ops:
        raise ConversionError(f"{path}: needs Flex op(s) {', '.join(before.flex_ops)}, which no runtime here runs: "
                              "convert the Keras model with invo-convert instead")
    notes = []
    say("reordering and compacting")
    new = compact(flat, notes)
    info = audit(new, output)
    result = {"input": path, "output": output, "format": "tflite", "quantize": "as given", "rewritten": [],
              "notes": notes, "audit": info.summary(), "input_bytes": len(flat),
              "input_peak_activation_bytes": before.peak_activations()["bytes"]}
    with staged(output, new) as s:  # not bit-identical: an exception, and nothing at the output path
        say("checking the outputs are bit-identical to the input file's")
        result["identical_outputs"] = _same_outputs(path, s.path, seed)
        result["convert_seconds"] = time.perf_counter() - t0
        result["xnnpack"] = xnnpack_coverage(s.path)
        if gpu:
            from benchmarks.gpu_check import check_gpu

            say("compiling on the LiteRT GPU accelerator")
            result["gpu"] = check_gpu(s.path)
    if report:
        write_atomic(report, json_text(result))
    return result


def _same_outputs(original, edited, seed):
    """Both files on the interpreter with the same random inputs: every output equal to the bit, or an error."""
    a, b = InterpreterRunner(original), InterpreterRunner(edited)
    inputs = random_inputs(a.inputs, seed)
    for n, (x, y) in enumerate(zip(a(*inputs), b(*inputs))):
        if x.dtype != y.dtype or not np.array_equal(x, y):
            raise ConversionError(f"the reordered model's output {n} differs from the input file's; not written")
    return True
