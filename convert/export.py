"""Keras model -> .tflite bytes: float32, float16, dynamic-range or full int8, batch 1."""

import contextlib
import re
import tempfile

import numpy as np

QUANTIZE = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float32")


class ConversionError(ValueError):
    """A conversion that cannot be done as asked; one line for the user."""


def _tf_dtype(io):
    import tensorflow as tf

    return {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]


def export_saved_model(model, directory):
    """Writes ``model`` as a SavedModel with one batch-1 endpoint, ``serve`` (the export shape)."""
    import keras
    import tensorflow as tf

    specs = [tf.TensorSpec([1, *t.shape[1:]], t.dtype or tf.float32, name=f"input_{i}") for i, t in enumerate(model.inputs)]
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
def tflite_converter(model, quantize="none", io="int8", representative=None, allow_flex=False,
                     saved_model_dir=None, progress=False):
    """A configured ``tf.lite.TFLiteConverter`` (the Keras model is exported at batch 1 meanwhile).

    ``representative`` is a list of input arrays (batch 1 each), needed for int8.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise ConversionError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if io not in IO_TYPES:
        raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}; got {io!r}")
    with tempfile.TemporaryDirectory() as tmp:
        if saved_model_dir is None:
            conv = tf.lite.TFLiteConverter.from_saved_model(export_saved_model(model, tmp), signature_keys=["serve"])
        else:
            conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
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
    """The converter's calibration callable over a list of batch-1 arrays."""

    def generate():
        items = samples
        if progress:
            from tqdm import tqdm

            items = tqdm(samples, desc="calibrating", unit="sample", leave=False)
        for x in items:
            yield [np.asarray(x, np.float32)]

    return generate


def to_tflite(model, quantize="none", io="int8", representative=None, allow_flex=False, saved_model_dir=None,
              progress=False):
    """Converts to .tflite bytes (see ``tflite_converter`` for the arguments)."""
    with tflite_converter(model, quantize, io, representative, allow_flex, saved_model_dir, progress) as conv:
        return compact(run_converter(conv))


def run_converter(conv):
    """``conv.convert()`` with its errors turned into one-line ``ConversionError``s."""
    try:
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


DEGENERATE_SCALE = 1e-6


def compact(flat):
    """Drops the names of intermediate tensors and repairs degenerate int8 activation scales.

    The converter names every tensor after its TF graph path; with the ~100 small
    ops of an involution layer those names outweigh the int8 weights.

    An activation that was all zeros during calibration (a dead ReLU) gets a scale
    near 1e-8; XNNPACK then refuses the MUL/ADD that read it (their scale ratios
    leave its supported range) and the whole model fails to load.  Such a tensor
    holds only its zero point, so any scale represents it exactly: it gets 2^-8.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))
    for sg in model.subgraphs:
        keep = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = None
            q = t.quantization
            constant = t.buffer and model.buffers[t.buffer].data is not None
            if (not constant and t.type in (schema.TensorType.INT8, schema.TensorType.UINT8) and q is not None
                    and q.scale is not None and len(q.scale) == 1 and 0 < q.scale[0] < DEGENERATE_SCALE):
                q.scale = np.array([2.0**-8], np.float32)
    builder = flatbuffers.Builder(len(flat))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
