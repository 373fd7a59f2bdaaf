"""Keras model -> .tflite bytes: float32, float16, dynamic-range or full int8, batch 1.

The converter's output is compacted by ``convert.compact.compact`` (shared constants, repaired
zero-range int8 scales, operators in depth-first order).  The converter's private switches are reached
through ``convert.compat`` only.
"""

import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

from convert import compat
from convert.compact import compact
from convert.errors import ConversionError
from invo_base.tflite_model import TFLiteModel

QUANTIZE = ("none", "float16", "dynamic", "int8")
INT8_NEEDS_DATA = ("int8 needs calibration data (--calib digits|cifar10|FILE.npz|IMAGE_DIR): random data is not "
                   "calibration")
IO_TYPES = ("int8", "uint8", "float32")
# How int8 calibration measures each tensor's range (``to_tflite``): its own values, or TF's calibrator.
CALIBRATORS = ("exact", "tf")


def check_quantization(quantize, io):
    """--quantize and --io values, checked where the library is entered (the CLIs' choices do it too)."""
    if quantize not in QUANTIZE:
        raise ConversionError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if io not in IO_TYPES:
        raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}; got {io!r}")


def check_float_aggregation(quantize, float_aggregation):
    if float_aggregation and quantize != "int8":
        raise ConversionError("--float-aggregation applies to --quantize int8 only")


def check_calibrator(quantize, calibrator):
    if calibrator not in CALIBRATORS:
        raise ConversionError(f"--calibrator must be one of {', '.join(CALIBRATORS)}; got {calibrator!r}")
    if calibrator != "exact" and quantize != "int8":
        raise ConversionError("--calibrator applies to --quantize int8 only")


def _tf_dtype(io):
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]


def input_name(i):
    """The name of a Keras model's ``i``-th input in the exported signature (calibration feeds by it)."""
    return f"input_{i}"


def export_saved_model(model, directory):
    """Writes ``model`` as a SavedModel with one batch-1 endpoint, ``serve`` (the export shape).

    ``model`` is a Keras model or a ``convert.load.SavedModelFunction`` (re-traced at batch 1, so
    that a dynamic batch leaves no SHAPE/PACK ops that a GPU refuses).  A Keras model is saved as a bare
    module holding its variables, with ``serve`` as its signature (``_save_lean``); one that uses a resource
    other than variables (a lookup table) through Keras's ExportArchive, which finds and tracks such resources.
    """
    import tensorflow as tf

    if hasattr(model, "signature"):
        spec = tf.TensorSpec([1, *model.input_shape], model.spec.dtype, name=model.input_name)
        serve = tf.function(lambda x: {model.output_name: model.signature(**{model.input_name: x})[model.output_name]},
                            input_signature=[spec])
        tf.saved_model.save(model.loaded, directory, signatures={"serve": serve.get_concrete_function()})
        return directory
    try:
        _save_lean(model, directory)
    except AssertionError as e:  # tf.saved_model.save: "... references an 'untracked' resource"
        if "untracked" not in str(e):
            raise
        _save_archive(model, directory)
    return directory


def _serve_function(model):
    """The batch-1 endpoint: inputs named ``input_{i}`` (``input_name``), inference mode, one output unwrapped."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype or tf.float32, name=input_name(i)) for i, t in enumerate(model.inputs)]
    single = len(model.outputs) == 1

    def serve(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return out[0] if single and isinstance(out, (list, tuple)) else out

    return serve, specs


def _save_lean(model, directory):
    """The SavedModel of a module that tracks only the model's variables, with ``serve`` as its signature.

    The converter's output is byte for byte that of ``_save_archive``, and a RedNet-26 conversion takes 10-12 s
    instead of 19 s (at 64x64, one run): ExportArchive walks every trackable of the model to find resources,
    and a function kept as an attribute of the saved object is traced a second time in the save's context.
    """
    import tensorflow as tf

    serve, specs = _serve_function(model)
    module = tf.Module()
    module.variables_ = [getattr(v, "value", v) for v in model.variables]  # Keras 3 variables wrap tf.Variables
    signature = tf.function(serve, input_signature=specs).get_concrete_function()
    tf.saved_model.save(module, directory, signatures={"serve": signature})


def _save_archive(model, directory):
    """The SavedModel written by Keras's ExportArchive, which also tracks resources such as lookup tables."""
    import keras

    serve, specs = _serve_function(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    archive.write_out(directory, verbose=False)


@contextlib.contextmanager
def tflite_converter(model, quantize="none", io="int8", representative=None, allow_flex=False, progress=False,
                     legacy_runtime=False):
    """A configured ``tf.lite.TFLiteConverter`` (the Keras model is exported at batch 1 meanwhile).

    ``representative`` is a list of input arrays (batch 1 each), needed for int8.  ``legacy_runtime``: only
    operator versions tflite-runtime 2.14 loads (dynamic range: Dense layers per tensor, ``compat.per_tensor_dense``).
    """
    import tensorflow as tf

    check_quantization(quantize, io)
    with tempfile.TemporaryDirectory() as tmp:
        conv = tf.lite.TFLiteConverter.from_saved_model(export_saved_model(model, tmp), signature_keys=["serve"])
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
            # Writes the reduced_precision_support metadata (fp16accfp16): XNNPACK's hint to run the model in
            # FP16 on CPUs with native FP16 arithmetic (ARMv8.2+ phones); elsewhere it runs float32
            # (docs/device.md).
            compat.allow_fp16_accumulation(conv)
        elif quantize == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if legacy_runtime:
                compat.per_tensor_dense(conv)
        elif quantize == "int8":
            if representative is None or len(representative) == 0:
                raise ConversionError(INT8_NEEDS_DATA)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative_dataset(representative, progress)
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = _tf_dtype(io)
            conv.inference_output_type = _tf_dtype(io)
        if allow_flex:
            ops = ops + [tf.lite.OpsSet.SELECT_TF_OPS]
        conv.target_spec.supported_ops = ops
        yield conv


def representative_dataset(samples, progress=False):
    """The converter's calibration callable over a list of batch-1 arrays (lists of them for several inputs).

    Progress goes to a copy of stderr taken now (the converter runs with fd 2 hidden, its C++ chatter, and
    calibration happens inside it): a bar on a terminal, one line when piped, where a bar's carriage returns
    would glue it onto the next message.
    """
    stream = os.fdopen(os.dup(2), "w") if progress else None

    def generate():
        items = samples
        if stream is not None and stream.isatty():
            from tqdm import tqdm

            items = tqdm(samples, desc="calibrating", unit="sample", leave=False, file=stream)
        elif stream is not None:
            stream.write(f"... calibrating on {len(samples)} samples\n")
        for x in items:
            if isinstance(x, (list, tuple)):  # by name: the converter's input order need not be the model's
                yield {input_name(i): np.asarray(a, np.float32) for i, a in enumerate(x)}
            else:
                yield [np.asarray(x, np.float32)]
        if stream is not None:
            stream.flush()

    return generate


def to_tflite(model, quantize="none", io="int8", representative=None, allow_flex=False, progress=False,
              float_aggregation=False, notes=None, calibrator="exact", legacy_runtime=False, layer_ops=None):
    """Converts to .tflite bytes (see ``tflite_converter`` for the arguments).

    ``notes``: a list that gets a line when the converter's output could not be compacted (``compact``).

    ``calibrator`` (int8): ``"exact"`` records each tensor's own range (``convert.calibration``), ``"tf"`` keeps
    TF's calibrator, whose ranges of inputs that an op overwrote in place take in that op's output.

    ``float_aggregation`` (int8 only): the own ops of every Involution layer (``involution_scopes``,
    ``scope_nodes``: its padding, transposes, windows, MULs and ADDs) stay float32, the rest is int8.

    ``layer_ops``: a dict that gets {Involution layer name: its ops}, counted while the converter's tensor
    names still say which layer an op came from (compaction drops them and keeps every op).
    """
    check_float_aggregation(quantize, float_aggregation)
    check_calibrator(quantize, calibrator)
    from convert.calibration import exact_calibration, tf_calibration

    calibration = exact_calibration() if calibrator == "exact" else tf_calibration()
    with tflite_converter(model, quantize, io, representative, allow_flex, progress, legacy_runtime) as conv, \
            calibration:
        if float_aggregation:
            flat = int8_keeping_float(conv, io, keep_scopes=involution_scopes(model))
        else:
            flat = run_converter(conv)
    if layer_ops is not None:
        from convert.targets import layer_op_counts

        layer_ops.update(layer_op_counts(TFLiteModel(flat).main, involution_scopes(model)))
    return compact(flat, notes)


# Kernel generation inside an Involution layer's name scope: these stay int8 under --float-aggregation.
KERNEL_GENERATION_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D")


def involution_scopes(model):
    """The names of the model's Involution layers (nested models included): their graph name scopes."""
    from involution.layer import Involution

    if not hasattr(model, "layers"):  # a SavedModel's function: its layers are not known
        return []
    return sorted({layer.name for layer in compat.all_layers(model) if isinstance(layer, Involution)})


def scope_nodes(sg, scopes, skip_ops=KERNEL_GENERATION_OPS):
    """Output tensor names of the ops directly inside the named layers' scopes, or inside their aggregation's
    (``involution.layer.WINDOW_SCOPE``), except ``skip_ops``.

    ``sg``: a subgraph as ``TFLiteModel`` reads it.  The converter names an op's output after the TF op
    (``model/LAYER_1/windows/mul_3``; fused ops join several names with ``;``).  Ops of the kernel generation
    (``LAYER_1/kernel/...``) and of a layer's own sublayers (``LAYER_1/reduce_1/...``) are not inside.
    """
    from involution.layer import WINDOW_SCOPE

    if not scopes:
        return []
    inside = re.compile(r"(^|/)(" + "|".join(map(re.escape, scopes)) + r")(_\d+)?/(" + re.escape(WINDOW_SCOPE)
                        + r"(_\d+)?/)?[^/]+$")
    names = []
    for op, (_, outs) in zip(sg["ops"], sg["op_io"]):
        if op in skip_ops:
            continue
        for o in outs:
            name = sg["tensors"][o].name
            if any(inside.search(part) for part in name.split(";") if part):
                names.append(name)
    return names


def int8_keeping_float(conv, io, keep_nodes=(), keep_ops=(), keep_scopes=()):
    """int8 conversion in which the named ops stay float32, between DEQUANTIZE and QUANTIZE.

    ``keep_nodes``: output tensor names; ``keep_ops``: op types; ``keep_scopes``: layer names whose own ops
    (``scope_nodes``) stay float.  Calibrates once, then quantizes as TF's QuantizationDebugger does for
    selective quantization (``mlir_quantize`` with a denylist), but with the requested input/output type:
    the debugger's own ``get_nondebug_quantized_model`` always leaves float32 inputs and outputs.
    """
    from invo_base.tflite_model import TFLiteModel

    calibrated = run_converter(compat.calibrated_only(conv))
    sg = TFLiteModel(calibrated).main
    _check_present(sg, keep_nodes, keep_ops)
    nodes = list(keep_nodes) + scope_nodes(sg, keep_scopes)
    if not nodes and not keep_ops:
        raise ConversionError("nothing to keep in float: the model has no op inside the named layers")
    try:
        with converter_quiet():
            return compat.quantize_calibrated(conv, calibrated, _tf_dtype(io), denylisted_nodes=nodes,
                                              denylisted_ops=[o.upper() for o in keep_ops])
    except Exception as exc:
        raise ConversionError(f"selective quantization failed: {' '.join(str(exc).split())[:300]}") from None


def _check_present(sg, nodes, ops):
    """A node or op type to keep that the subgraph lacks would be ignored silently by the quantizer: an error."""
    outputs = {sg["tensors"][o].name for _, outs in sg["op_io"] for o in outs}
    missing = [n for n in nodes if n not in outputs]
    if missing:
        raise ConversionError(f"no op output named {missing[0]!r} in the model ('invo-quantize debug' lists them)")
    missing = [o for o in ops if o.upper() not in set(sg["ops"])]
    if missing:
        raise ConversionError(f"no {missing[0].upper()} op in the model; it has {', '.join(sorted(set(sg['ops'])))}")


@contextlib.contextmanager
def converter_quiet():
    """The converter's and TF interpreter's C++ lines, Keras's "Saved artifact at ..." blocks (printed when
    ``from_keras_model`` exports the model), and TF's deprecation warning, kept from the user."""
    import io

    from invo_base.plumbing import native_logs_silenced

    with native_logs_silenced(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Calibrating by signature, the converter itself opens tf.lite.Interpreter, which warns it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield


def run_converter(conv):
    """``conv.convert()`` with its errors turned into one-line ``ConversionError``s."""
    try:
        with converter_quiet():
            flat = conv.convert()
    except Exception as exc:  # the converter reports unsupported ops as ConverterError
        text = str(exc)
        flex = compat.flex_ops_named(text)
        if flex:
            raise ConversionError(
                f"the model needs TensorFlow op(s) {', '.join(flex)} that are no TFLite builtins; "
                "load it from .h5/.keras so its involution layers can be rewritten, or pass --allow-flex"
            ) from None
        raise ConversionError(f"conversion failed: {' '.join(text.split())[:300]}") from None
    return flat
