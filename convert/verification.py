"""Is the .tflite model right?  Its outputs against Keras on held-out data, and the quality gate's bounds.

Also the data both sides of that check come from: calibration samples from the training part of a
source's one split (``involution.data.split_indices``), held-out samples from its validation part.
``convert`` gates every model with it; ``quantize`` reports with it.
"""


import numpy as np

from benchmarks.runtime import FP16_ALLOWED, RuntimeUnavailable, load, to_input_dtype

# The quality gate's default bounds against Keras on the held-out samples, by --quantize.  Classifiers
# (one output row of several classes) are held to top-1 agreement; every model to the largest error
# relative to the output's largest magnitude.
MIN_AGREEMENT = {"none": 0.99, "float16": 0.99, "dynamic": 0.98, "int8": 0.97}
MAX_REL_ERROR = {"none": 1e-3, "float16": FP16_ALLOWED, "dynamic": 0.1, "int8": 0.25}


def calibration_and_held_out(source, input_shape, count=200, data_dir=None, image_rule=None):
    """(calibration x, held-out x, held-out y or None) from a --calib source: ``count`` samples to calibrate
    on, and the held-out part that verification and accuracy use.

    Calibration draws only from the training part of the source's one split; verification and
    accuracy use its validation part.  ``image_rule`` maps image-folder pixels to the model's input
    (see ``involution.data.load_dataset``).
    """
    from involution.data import load_dataset

    ds = load_dataset(source, input_shape, data_dir=data_dir, labels=False, image_rule=image_rule)
    return ds.x_train[:count], ds.x_val, ds.y_val


def held_out(source, input_shape, data_dir=None):
    """(held-out x, held-out y or None) of a data source: what an accuracy comparison evaluates on."""
    _, x, y = calibration_and_held_out(source, input_shape, 0, data_dir)
    return x, y


def _cpu_runner(path, warnings=None):
    """XNNPACK first, as on a device; TFLite's builtin kernels when XNNPACK refuses the model."""
    try:
        return load(path, "litert")
    except RuntimeUnavailable as exc:
        runner = load(path, "litert", use_xnnpack=False)
        if warnings is not None:
            warnings.append(f"XNNPACK refused the model, which runs on TFLite's builtin kernels only: {exc} "
                            "(int8: look for layers whose activations are all zero)")
        return runner


def fp16_runner(path, warnings=None):
    """The model with XNNPACK forced to FP16 (ai-edge-litert CompiledModel), if FP16 arithmetic really runs here;
    else None, with a warning saying the check ran in float32."""
    from benchmarks.bench import float16_measured
    from benchmarks.runtime import random_inputs

    runner = None
    try:
        runner = load(path, "litert-compiled", precision="fp16")
        ran, diff = float16_measured(path, runner, random_inputs(runner.inputs))
    except RuntimeUnavailable as exc:
        ran, diff = False, str(exc)
    if ran:
        return runner
    if runner is not None:
        runner.close()  # freed here, where the runtime's teardown lines are hidden
    if warnings is not None:
        what = "does not run" if ran is False else "could not be measured"  # None: no float32 reference ran
        warnings.append(f"FP16 inference {what} here ({diff}): the float16 file was checked in float32 "
                        "arithmetic only")
    return None


def tflite_outputs(path, x, warnings=None, precision="default"):
    """Runs every sample of ``x`` (float, [N, ...]) through the .tflite model; dequantized float outputs.

    ``precision="fp16"``: with XNNPACK computing in FP16, as a phone runs a file carrying
    ``reduced_precision_support``, where this CPU can (else float32, with a warning)."""
    runner = (fp16_runner(path, warnings) if precision == "fp16" else None) or _cpu_runner(path, warnings)
    inp = runner.inputs[0]
    out = runner.model.io("outputs")[0]  # its quantization, read from the file: any runner
    o_scale, o_zero = out.scale, out.zero_point
    outs = []
    try:
        for sample in x:
            y = runner(to_input_dtype(sample[None], inp))[0]
            if y.dtype.kind in "iu" and o_scale:
                y = (y.astype(np.float32) - o_zero) * o_scale
            outs.append(y[0])
    finally:
        runner.close()  # now: a CompiledModel left to the garbage collector prints its teardown on stderr
    return np.stack(outs)


# Up to this many samples, ``keras_outputs`` calls the model eagerly rather than through ``predict``, which first
# traces it into a graph.  Measured on a RedNet-26 at 64x64 (about 2,000 operators): 8 samples 1.0 s eager against
# 4.4 s by predict, 32 samples 1.2 s against about 3 s; over 256 samples predict wins (5.3 s against 8.9 s), each
# eager batch costing about 0.8 s more than a traced one.
EAGER_MAX_SAMPLES = 64


def keras_outputs(keras_model, x, batch_size=32):
    """The Keras model's first output for every sample of ``x`` ([N, ...]), in batches of ``batch_size``.

    A few batches run eagerly, the same kernels without tracing the model first; more go through ``predict``."""
    if len(x) > EAGER_MAX_SAMPLES:
        out = keras_model.predict(x, verbose=0, batch_size=batch_size)
        return out[0] if isinstance(out, (list, tuple)) else out
    outs = []
    for i in range(0, len(x), batch_size):
        y = keras_model(x[i:i + batch_size], training=False)
        outs.append(np.asarray(y[0] if isinstance(y, (list, tuple)) else y))
    return np.concatenate(outs)


def verify(keras_model, path, x, y=None, precision="default"):
    """Float: max abs/rel error vs Keras.  Quantized: relative error, and top-1 float vs tflite with labels.

    ``precision="fp16"`` checks the outputs of FP16 arithmetic (``tflite_outputs``)."""
    ref = keras_outputs(keras_model, x)
    warnings = []
    got = tflite_outputs(path, x, warnings, precision)
    abs_err = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref))) or 1.0
    result = {"samples": int(len(x)), "max_abs_error": abs_err, "max_rel_error": abs_err / scale,
              "mean_abs_error": float(np.mean(np.abs(got - ref))),
              "mean_rel_error": float(np.mean(np.abs(got - ref))) / scale, "output_scale": scale, "warnings": warnings}
    if precision == "fp16":
        result["arithmetic"] = "float32" if any(w.startswith("FP16 inference ") for w in warnings) else "fp16"
        if result["arithmetic"] == "fp16":
            from benchmarks.runtime import how_fp16_ran

            # Emulated FP16 rounds every tensor to FP16 but accumulates in float32; FP16 arithmetic (a phone's)
            # accumulates in FP16 and rounds more.
            result["fp16_arithmetic"] = how_fp16_ran()
    if ref.ndim == 2 and ref.shape[1] > 1:
        top_f, top_q = ref.argmax(1), got.argmax(1)
        result["top1_agreement"] = float(np.mean(top_f == top_q))
        if y is not None:
            result["top1_keras"] = float(np.mean(top_f == y))
            result["top1_tflite"] = float(np.mean(top_q == y))
    return result


def gate_bounds(quantize, min_agreement=None, max_rel_error=None):
    """(least top-1 agreement, largest relative error): the user's, or the defaults for ``quantize``."""
    return (MIN_AGREEMENT[quantize] if min_agreement is None else min_agreement,
            MAX_REL_ERROR[quantize] if max_rel_error is None else max_rel_error)


def quality_gate(verify_result, quantize, min_agreement=None, max_rel_error=None):
    """The failures of a ``verify`` result against the bounds (defaults by ``quantize``); [] when it passes."""
    min_agreement, max_rel_error = gate_bounds(quantize, min_agreement, max_rel_error)
    failures = []
    agreement = verify_result.get("top1_agreement")
    if agreement is not None and agreement < min_agreement:
        failures.append(f"top-1 agreement with Keras {agreement:.3f} < {min_agreement:g} (--min-agreement)")
    rel = verify_result["max_rel_error"]
    if not rel <= max_rel_error:  # NaN fails too
        failures.append(f"max error {rel:.3g} of the output scale > {max_rel_error:g} (--max-rel-error)")
    return failures
