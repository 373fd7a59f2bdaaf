"""Argument checks that need no TensorFlow: the CLIs run them before importing it, so that a wrong path, a
wrong file type or a swapped argument gets its one-line error at once, not after seconds of imports.

The library (``convert.api``, ``quantize``) runs the same checks, so a caller from Python gets them too.
"""

import os
import zipfile

from convert.errors import ConversionError
from convert.export import INT8_NEEDS_DATA, check_calibrator, check_float_aggregation, check_quantization
from involution.catalog import STRATEGIES
from involution.data import DataError, check_source


class ModelLoadError(ValueError):
    """The input is not a model this tool can load; one line for the user."""


def is_tflite(path):
    """True for a readable file that starts like a .tflite flatbuffer (TFL3 identifier)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(8)[4:8] == b"TFL3"


def model_kind(path):
    """'savedmodel', 'h5' or 'keras' for a loadable path; ``ModelLoadError`` naming what is wrong otherwise."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ModelLoadError(f"{path}: a directory that is not a SavedModel (no saved_model.pb)")
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if is_tflite(path):
        raise ModelLoadError(f"{path}: already a TFLite model; give the Keras model it came from (.keras, .h5, a "
                             "SavedModel), or time it with invo-bench")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        return "h5"
    if zipfile.is_zipfile(path):
        return "keras"
    raise ModelLoadError(f"{path}: not a Keras model (.h5, .keras) or SavedModel directory")


def check_options(quantize, io, strategy, calib, calib_samples, arch=None, input_range=None):
    check_quantization(quantize, io)
    if strategy not in STRATEGIES:
        raise ConversionError(f"--aggregation must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if strategy == "separable" and quantize == "dynamic":
        raise ConversionError("the GPU target's involution (separable) cannot be dynamic-range quantized: its one-hot "
                              "gather would get int8 weights, which the GPU and XNNPACK refuse; use --quantize none, "
                              "float16 or int8")
    if calib_samples < 1:
        raise ConversionError(f"--calib-samples must be at least 1, got {calib_samples}")
    if quantize == "int8" and not calib:
        raise ConversionError(INT8_NEEDS_DATA)
    if input_range and not arch:
        raise ConversionError("--input-range applies to official checkpoints: pass --arch too")


def check_input(model_path, arch=None):
    if arch:
        if not os.path.isfile(model_path):
            raise ConversionError(f"{model_path}: no such checkpoint file")
    else:
        model_kind(model_path)  # raises for a missing or unsupported model


def check_output(output, force):
    if os.path.isdir(output):
        raise ConversionError(f"{output}: is a directory; give a .tflite file path")
    if os.path.exists(output) and not force:
        raise ConversionError(f"{output}: exists; pass --force to overwrite")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ConversionError(f"{directory}: output directory does not exist")
    if not os.access(directory, os.W_OK):
        raise ConversionError(f"{directory}: output directory is not writable")


def check_data_source(source, data_dir=None, option="--calib"):
    """A data source exists before anything is loaded: a dataset name, a .npz/.npy file or an image folder."""
    try:
        check_source(source, data_dir, option)
    except DataError as exc:
        raise ConversionError(str(exc)) from None


def preflight(model_path, output, options, report=None, force=False):
    """Every check of an ``invo-convert`` call (``options``: a ``convert.options.ConvertOptions``) that needs
    no TensorFlow; returns the output path."""
    o = options
    # o.strategy resolves --target and --aggregation, and names a wrong one
    check_options(o.quantize, o.io, o.strategy, o.calib, o.calib_samples, o.arch, o.input_range)
    check_float_aggregation(o.quantize, o.float_aggregation)
    check_calibrator(o.quantize, o.calibrator)
    # The input first: a missing or wrong input is the real cause, whatever the output path says.
    check_input(model_path, o.arch)
    if o.calib:
        check_data_source(o.calib, o.data_dir)
    output = output or os.path.splitext(model_path.rstrip("/"))[0] + ".tflite"
    check_output(output, force)
    if report:
        check_output(report, True)
    return output


def check_evaluate_args(keras_model, tflite_model, source, data_dir=None):
    """invo-quantize evaluate KERAS_MODEL TFLITE_MODEL --data SOURCE, checked (a swapped pair is named)."""
    if is_tflite(keras_model) and not is_tflite(tflite_model) and os.path.exists(tflite_model):
        raise ConversionError(f"the two models are swapped: {keras_model} is the .tflite file; the Keras model "
                              f"comes first: invo-quantize evaluate {tflite_model} {keras_model} --data ...")
    model_kind(keras_model)
    if not os.path.isfile(tflite_model):
        raise ConversionError(f"{tflite_model}: no such .tflite file")
    if not is_tflite(tflite_model):
        raise ConversionError(f"{tflite_model}: not a TFLite model (no TFL3 identifier); convert it with invo-convert")
    check_data_source(source, data_dir, option="--data")
