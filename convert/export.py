"""Keras model -> .tflite bytes: float32, float16, dynamic-range or full int8, batch 1."""

import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

QUANTIZE = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float32")


class ConversionError(ValueError):
    """A conversion that cannot be done as asked; one line for the user."""


def _tf_dtype(io):
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]


def input_name(i):
    """The name of a Keras model's ``i``-th input in the exported signature (calibration feeds by it)."""
    return f"input_{i}"


def export_saved_model(model, directory):
    """Writes ``model`` as a SavedModel with one batch-1 endpoint, ``serve`` (the export shape).

    ``model`` is a Keras model or a ``convert.load.SavedModelFunction`` (re-traced at batch 1, so
    that a dynamic batch leaves no SHAPE/PACK ops that a GPU refuses).
    """
    import keras
    import tensorflow as tf

    if hasattr(model, "signature"):
        spec = tf.TensorSpec([1, *model.input_shape], model.spec.dtype, name=model.input_name)
        serve = tf.function(lambda x: {model.output_name: model.signature(**{model.input_name: x})[model.output_name]},
                            input_signature=[spec])
        tf.saved_model.save(model.loaded, directory, signatures={"serve": serve.get_concrete_function()})
        return directory

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype or tf.float32, name=input_name(i)) for i, t in enumerate(model.inputs)]
    single = len(model.outputs) == 1

    def serve(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return out[0] if single and isinstance(out, (list, tuple)) else out

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=specs)
    archive.write_out(directory, verbose=False)
    return directory


@contextlib.contextmanager
def tflite_converter(model, quantize="none", io="int8", representative=None, allow_flex=False, progress=False):
    """A configured ``tf.lite.TFLiteConverter`` (the Keras model is exported at batch 1 meanwhile).

    ``representative`` is a list of input arrays (batch 1 each), needed for int8.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise ConversionError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if io not in IO_TYPES:
        raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}; got {io!r}")
    with tempfile.TemporaryDirectory() as tmp:
        conv = tf.lite.TFLiteConverter.from_saved_model(export_saved_model(model, tmp), signature_keys=["serve"])
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif quantize == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int8":
            if representative is None or len(representative) == 0:
                raise ConversionError("int8 needs calibration data (--calib SOURCE): random data is not calibration")
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

    The progress bar writes to a copy of stderr taken now: the converter runs with
    fd 2 hidden (its C++ chatter), and calibration happens inside it.
    """
    stream = os.fdopen(os.dup(2), "w") if progress else None

    def generate():
        items = samples
        if stream is not None:
            from tqdm import tqdm

            items = tqdm(samples, desc="calibrating", unit="sample", leave=False, file=stream)
        for x in items:
            if isinstance(x, (list, tuple)):  # by name: the converter's input order need not be the model's
                yield {input_name(i): np.asarray(a, np.float32) for i, a in enumerate(x)}
            else:
                yield [np.asarray(x, np.float32)]
        if stream is not None:
            stream.flush()

    return generate


def to_tflite(model, quantize="none", io="int8", representative=None, allow_flex=False, progress=False):
    """Converts to .tflite bytes (see ``tflite_converter`` for the arguments)."""
    with tflite_converter(model, quantize, io, representative, allow_flex, progress) as conv:
        return compact(run_converter(conv))


def run_converter(conv):
    """``conv.convert()`` with its errors turned into one-line ``ConversionError``s."""
    from benchmarks.plumbing import native_logs_silenced

    try:
        with native_logs_silenced(), warnings.catch_warnings():
            # Calibrating by signature, the converter itself opens tf.lite.Interpreter, which warns it is deprecated.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            flat = conv.convert()
    except Exception as exc:  # the converter reports unsupported ops as ConverterError
        text = str(exc)
        flex = sorted(set(re.findall(r"tf\.(\w+)", text)))
        if "SELECT_TF_OPS" in text or "Flex" in text or flex:
            raise ConversionError(
                f"the model needs TensorFlow op(s) {', '.join(flex) or '?'} that are no TFLite builtins; "
                "load it from .h5/.keras so its involution layers can be rewritten, or pass --allow-flex"
            ) from None
        raise ConversionError(f"conversion failed: {' '.join(text.split())[:300]}") from None
    return flat


# The converter widens a calibrated range of exactly zero (min = max = 0: a dead ReLU) to [-1e-6, 1e-6],
# which it stores as this scale with zero point 0.  A small but real range gets its own scale and is
# never touched.
ZERO_RANGE_SCALE = np.float32(2e-6) / np.float32(255)  # computed in float32, as the converter does


def _share_constants(model):
    """Makes ops that read identical constants (type, shape, bytes, quantization) read one tensor.

    The converter gives each of the K*K strided slices of an involution layer its
    own begin/end/strides tensors; most are equal.  Unread tensors are dropped and
    the rest renumbered (operators, subgraph inputs/outputs, signatures).
    """
    as_list = lambda v: [] if v is None else [int(i) for i in v]  # noqa: E731
    for si, sg in enumerate(model.subgraphs):
        io = set(as_list(sg.inputs)) | set(as_list(sg.outputs))
        canon, remap = {}, {}
        for i, t in enumerate(sg.tensors):
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is None or not len(data) or i in io or t.isVariable:
                continue
            q = t.quantization
            qkey = None if q is None else tuple(
                np.asarray(v).tobytes() for v in (q.scale, q.zeroPoint, q.min, q.max) if v is not None
            ) + (q.quantizedDimension,)
            key = (t.type, tuple(as_list(t.shape)), np.asarray(data, np.uint8).tobytes(), qkey)
            remap[i] = canon.setdefault(key, i)
        if all(k == v for k, v in remap.items()):
            continue
        for op in sg.operators:
            op.inputs = [remap.get(i, i) for i in as_list(op.inputs)]
        used = io | {i for i, t in enumerate(sg.tensors) if t.isVariable}
        for op in sg.operators:
            used |= {i for i in as_list(op.inputs) + as_list(op.outputs) + as_list(op.intermediates) if i >= 0}
        new = {old: n for n, old in enumerate(sorted(used))}
        sg.tensors = [sg.tensors[i] for i in sorted(used)]
        for op in sg.operators:
            op.inputs = [new[i] if i >= 0 else i for i in as_list(op.inputs)]
            op.outputs = [new[i] for i in as_list(op.outputs)]
            if op.intermediates is not None:
                op.intermediates = [new[i] for i in as_list(op.intermediates)]
        sg.inputs = [new[i] for i in as_list(sg.inputs)]
        sg.outputs = [new[i] for i in as_list(sg.outputs)]
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == si:
                for ref in (sig.inputs or []) + (sig.outputs or []):
                    ref.tensorIndex = new[ref.tensorIndex]
    read = {t.buffer for sg in model.subgraphs for t in sg.tensors}
    for b, buf in enumerate(model.buffers):
        if b not in read:
            buf.data = None


class _SharedTable:
    """A table packed once however many tensors point at it (FlatBuffers allows shared offsets)."""

    def __init__(self, table, cache, key):
        self.table, self.cache, self.key = table, cache, key

    def Pack(self, builder):  # noqa: N802 - the generated object API's name
        if self.key not in self.cache:
            self.cache[self.key] = self.table.Pack(builder)
        return self.cache[self.key]


def _share_quantization(model):
    """Slices, reshapes and transposes keep their input's scale: many tensors carry equal tables."""
    cache = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            q = t.quantization
            if q is None or isinstance(q, _SharedTable):
                continue
            key = tuple(None if v is None else np.asarray(v).tobytes()
                        for v in (q.scale, q.zeroPoint, q.min, q.max)) + (q.quantizedDimension, q.detailsType)
            if q.details is None:
                t.quantization = _SharedTable(q, cache, key)


def _drop_static_signatures(model):
    """An absent shape_signature means 'equal to shape' (schema.fbs): store it only for dynamic shapes."""
    for sg in model.subgraphs:
        for t in sg.tensors:
            sig = t.shapeSignature
            if sig is not None and t.shape is not None and list(sig) == list(t.shape) and min(sig, default=0) >= 0:
                t.shapeSignature = None


def _zero_range(q):
    """True for the converter's quantization of a calibrated range of exactly zero."""
    return (q is not None and q.scale is not None and len(q.scale) == 1 and q.zeroPoint is not None
            and len(q.zeroPoint) == 1 and int(q.zeroPoint[0]) == 0
            and abs(float(q.scale[0]) / float(ZERO_RANGE_SCALE) - 1) < 1e-6)


def _repair_zero_ranges(model, sg, schema):
    """Gives each int8 activation whose calibrated range was exactly zero a scale XNNPACK accepts.

    Such a tensor holds only zeros, so any scale is exact; what matters is the scale ratios of the
    ops around it, which XNNPACK bounds.  Walking the ops in order, a MUL's product gets the scale of
    the largest product its inputs can make (128 * s_a * s_b); any other op's output the largest
    scale of its activation inputs (a sum of zeros is as fine as its inputs); an op without such
    inputs 2^-8.  A window that reads only padding (2x2 maps with K=7) is such a product.
    """
    def zero_range(i):
        t = sg.tensors[i]
        constant = t.buffer and model.buffers[t.buffer].data is not None
        return not constant and t.type == schema.TensorType.INT8 and _zero_range(t.quantization)

    def activation_scale(i):
        t = sg.tensors[i]
        q = t.quantization
        constant = t.buffer and model.buffers[t.buffer].data is not None
        if constant or q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0])

    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    for op in sg.operators:
        for o in (int(i) for i in op.outputs):
            if not zero_range(o):
                continue
            scales = [s for s in (activation_scale(int(i)) for i in op.inputs if i >= 0) if s is not None]
            if codes[op.opcodeIndex] == schema.BuiltinOperator.MUL and len(scales) == 2:
                scale = 128.0 * scales[0] * scales[1]
            else:
                scale = max(scales, default=2.0**-8)
            sg.tensors[o].quantization.scale = np.array([scale], np.float32)


def compact(flat):
    """Shares equal constants and quantization tables, drops intermediate tensor names and static shape
    signatures, and repairs degenerate int8 activation scales.

    The converter names every tensor after its TF graph path and gives every small
    op its own constants; with the ~100 small ops of an involution layer that
    metadata outweighs the int8 weights.

    An activation that was all zeros during calibration (a dead ReLU) gets the
    converter's zero-range scale (``ZERO_RANGE_SCALE``, zero point 0); XNNPACK then
    refuses the MUL/ADD that read it (their scale ratios leave its supported range)
    and the whole model fails to load.  Such a tensor holds only its zero point, so
    any scale represents it exactly (``_repair_zero_ranges`` picks one XNNPACK accepts).
    Only that exact fingerprint is repaired: a tensor with a small non-zero range keeps
    its scale.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    _share_constants(model)
    for sg in model.subgraphs:
        keep = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = None
        _repair_zero_ranges(model, sg, schema)
    _drop_static_signatures(model)
    _share_quantization(model)
    builder = flatbuffers.Builder(len(flat))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
