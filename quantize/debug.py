"""Per-layer int8 quantization error (TensorFlow's QuantizationDebugger) and selective quantization.

The debugger runs float and int8 side by side on calibration samples and
measures, at every quantized op output, how far int8 strays from float.  The
ranking metric is the one TF's guide uses: RMSE of the error divided by the
tensor's quantization scale (about 0.29 for a perfectly uniform rounding error).
"""

import csv
import io as _io

import numpy as np

from convert.compact import compact
from convert.errors import ConversionError
from convert.export import converter_quiet, int8_keeping_float, representative_dataset, tflite_converter
from convert.load import load_model
from convert.publish import audit, staged
from convert.rewrite import rewrite_model
from convert.verification import calibration_and_held_out, quality_gate, verify


def _prepare(model_path, calib, calib_samples, strategy, data_dir, custom_modules):
    model, kind = load_model(model_path, custom_modules)
    if kind == "savedmodel":
        shape = model.input_shape
    else:
        model, _ = rewrite_model(model, strategy)
        shape = tuple(model.inputs[0].shape[1:])
    cal_x, held_x, held_y = calibration_and_held_out(calib, shape, calib_samples, data_dir)
    return model, [s[None] for s in cal_x], held_x, held_y


def layer_errors(model_path, calib, *, calib_samples=100, strategy="shift", data_dir=None, custom_modules=(),
                 debug_samples=32):
    """Rows {op, tensor, scale, rmse_over_scale, mean_abs_error, max_abs_error}, worst first."""
    import tensorflow as tf

    model, cal, _, _ = _prepare(model_path, calib, calib_samples, strategy, data_dir, custom_modules)
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_debug_metrics={"mean_abs_error": lambda diff: float(np.mean(np.abs(diff)))})
    from convert.calibration import tf_calibration

    # TF's calibrator, as the debugger's guide runs it; only a model it would never finish is refused.
    with tflite_converter(model, "int8", "float32", cal) as conv, tf_calibration():
        with converter_quiet():
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=representative_dataset(cal[:debug_samples]), debug_options=options)
            debugger.run()
    buf = _io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for rec in csv.DictReader(_io.StringIO(buf.getvalue())):
        scale = float(rec["scale"]) or 1.0
        rows.append({
            "tensor": rec["tensor_name"],
            "op": rec["op_name"],
            "scale": scale,
            "rmse_over_scale": float(np.sqrt(float(rec["mean_squared_error"]))) / scale,
            "mean_abs_error": float(rec["mean_abs_error"]),
            "max_abs_error": float(rec["max_abs_error"]),
        })
    rows.sort(key=lambda r: r["rmse_over_scale"], reverse=True)
    return rows


def selective_quantize(model_path, output, calib, *, keep_nodes=(), keep_ops=(), force=False, options=None, **fields):
    """int8 everywhere except the named tensors (``keep_nodes``) or op types (``keep_ops``), which stay float.

    The data and model choices are invo-convert's (``convert.options.ConvertOptions``: ``io``, ``calib_samples``,
    ``target`` or ``aggregation``, ``data_dir``, ``custom_modules``), given as ``options`` or by name in ``fields``.
    Returns the verification of the result against Keras on the held-out samples (top-1 when labels exist).
    Held to invo-convert's int8 quality gate: a model that misses it raises and is left only as
    ``NAME.FAILED.tflite``.
    """
    from convert.checks import check_input, check_output
    from convert.options import ConvertOptions

    o = ConvertOptions.of(options, **fields)
    io = o.io
    check_input(model_path)  # the input first: a missing model is the cause, whatever the output path says
    check_output(output, force)
    if not keep_nodes and not keep_ops:
        raise ConversionError("name at least one --keep-node or --keep-op to leave in float")
    model, cal, held_x, held_y = _prepare(model_path, calib, o.calib_samples, o.strategy, o.data_dir, o.custom_modules)
    from convert.calibration import exact_calibration

    with tflite_converter(model, "int8", io, cal) as conv, exact_calibration():  # ranges as invo-convert records them
        flat = compact(int8_keeping_float(conv, io, keep_nodes=keep_nodes, keep_ops=keep_ops))
    audit(flat, output)  # the same audit as invo-convert's: a non-finite scale is an error, not a file
    with staged(output, flat) as s:  # the output path gets the model only once it has passed
        result = verify(model, s.path, held_x, held_y)
        s.failures = quality_gate(result, "int8")
    if s.failures:
        raise ConversionError(f"the selectively quantized model fails the int8 check against Keras on "
                              f"{result['samples']} held-out samples: {'; '.join(s.failures)}; left as {s.final}, "
                              f"not as {output}")
    return result
