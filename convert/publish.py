"""One publish path for every tool that writes a model: audited, staged under a temporary name beside the
output, checked there, and only then renamed to the output (or to ``NAME.FAILED.tflite`` when it fails its
checks); never a partial or unchecked file at the output path."""

import contextlib
import os

import numpy as np

from convert.errors import ConversionError
from invo_base.plumbing import write_atomic
from invo_base.tflite_model import TFLiteModel


def failed_name(output):
    """Where a model that fails the quality gate is left, for inspection: ``x.tflite`` -> ``x.FAILED.tflite``."""
    root, ext = os.path.splitext(output)
    return f"{root}.FAILED{ext or '.tflite'}"


def audit(flat, output, allow_flex=False):
    """The model's op audit; a model no runtime can load, or Flex ops not allowed, is an error."""
    info = TFLiteModel(flat, output)
    bad = [t.name or f"tensor {i}" for i, t in enumerate(info.main["tensors"]) if not np.isfinite(t.scale)]
    if bad:  # the runtimes abort the process on such a model
        raise ConversionError(f"calibration gave {len(bad)} tensor(s) a non-finite int8 scale (activations beyond "
                              "float32's range on the calibration data); check the model's weights and the data")
    if info.flex_ops and not allow_flex:
        raise ConversionError(f"the model needs Flex op(s) {', '.join(info.flex_ops)}; pass --allow-flex to accept that")
    return info


class Staged:
    """A model written beside its output under a temporary name; ``failures`` decide where it ends up."""

    def __init__(self, output, flat):
        self.output = output
        self.path = os.path.join(os.path.dirname(os.path.abspath(output)),
                                 f".invo-{os.getpid()}-{os.path.basename(output)}")
        self.failures = []
        self.final = None
        write_atomic(self.path, flat)


@contextlib.contextmanager
def staged(output, flat):
    """``with staged(output, flat) as s:`` check ``s.path``, set ``s.failures``; on leaving, the file is renamed
    to ``output`` (no failures) or ``failed_name(output)``, ``s.final`` says which; on an exception it is
    removed and the output path is untouched."""
    s = Staged(output, flat)
    try:
        yield s
        s.final = failed_name(output) if s.failures else output
        os.replace(s.path, s.final)
    finally:
        if os.path.exists(s.path):
            os.unlink(s.path)
