"""``convert_model``: Keras file -> verified, audited .tflite (the library behind invo-convert)."""

import contextlib
import json
import os
import time

import numpy as np

from benchmarks.gpu_check import check_gpu
from benchmarks.plumbing import write_atomic
from benchmarks.runtime import load as load_runner
from benchmarks.runtime import to_input_dtype
from benchmarks.tflite_model import TFLiteModel
from benchmarks.xnnpack_check import xnnpack_coverage
from convert.export import IO_TYPES, QUANTIZE, ConversionError, to_tflite
from convert.load import load_model, model_kind
from convert.rewrite import max_difference, rewrite_model
from involution.layer import STRATEGIES


def _check_output(output, force):
    if os.path.isdir(output):
        raise ConversionError(f"{output}: is a directory; give a .tflite file path")
    if os.path.exists(output) and not force:
        raise ConversionError(f"{output}: exists; pass --force to overwrite")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ConversionError(f"{directory}: output directory does not exist")
    if not os.access(directory, os.W_OK):
        raise ConversionError(f"{directory}: output directory is not writable")


def _cpu_runner(path, warnings=None):
    """XNNPACK first, as on a device; TFLite's builtin kernels when XNNPACK refuses the model."""
    from benchmarks.runtime import RuntimeUnavailable

    try:
        return load_runner(path, "litert")
    except RuntimeUnavailable as exc:
        runner = load_runner(path, "litert", use_xnnpack=False)
        if warnings is not None:
            warnings.append(f"XNNPACK refused the model, which runs on TFLite's builtin kernels only: {exc} "
                            "(int8: look for layers whose activations are all zero)")
        return runner


def tflite_outputs(path, x, warnings=None):
    """Runs every sample of ``x`` (float, [N, ...]) through the .tflite model; dequantized float outputs."""
    runner = _cpu_runner(path, warnings)
    inp = runner.inputs[0]
    out_det = runner.interp.get_output_details()[0]
    o_scale, o_zero = out_det.get("quantization", (0.0, 0))
    outs = []
    for sample in x:
        y = runner(to_input_dtype(sample[None], inp))[0]
        if y.dtype.kind in "iu" and o_scale:
            y = (y.astype(np.float32) - o_zero) * o_scale
        outs.append(y[0])
    return np.stack(outs)


def verify(keras_model, path, x, y=None):
    """Float: max abs/rel error vs Keras.  Quantized: relative error, and top-1 float vs tflite with labels."""
    ref = keras_model.predict(x, verbose=0, batch_size=32)
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    warnings = []
    got = tflite_outputs(path, x, warnings)
    abs_err = float(np.max(np.abs(got - ref)))
    scale = float(np.max(np.abs(ref))) or 1.0
    result = {"samples": int(len(x)), "max_abs_error": abs_err, "max_rel_error": abs_err / scale,
              "mean_abs_error": float(np.mean(np.abs(got - ref))),
              "mean_rel_error": float(np.mean(np.abs(got - ref))) / scale, "output_scale": scale, "warnings": warnings}
    if ref.ndim == 2 and ref.shape[1] > 1:
        top_f, top_q = ref.argmax(1), got.argmax(1)
        result["top1_agreement"] = float(np.mean(top_f == top_q))
        if y is not None:
            result["top1_keras"] = float(np.mean(top_f == y))
            result["top1_tflite"] = float(np.mean(top_q == y))
    return result


def calibration_samples(source, input_shape, count=200, data_dir=None, image_rule=None):
    """(calibration x, held-out x, held-out y or None) from a --calib source.

    Calibration draws only from the training part of the source's one split
    (``involution.data.split_indices``); verification and accuracy use its validation part.
    ``image_rule`` maps image-folder pixels to the model's input (see ``involution.data.load_dataset``).
    """
    from involution.data import load_dataset

    ds = load_dataset(source, input_shape, data_dir=data_dir, labels=False, image_rule=image_rule)
    return ds.x_train[:count], ds.x_val, ds.y_val


# The quality gate's default bounds against Keras on the held-out samples.  Classifiers (one output
# row of several classes) are held to top-1 agreement; every model to the largest error relative to
# the output's largest magnitude.
MIN_AGREEMENT = {"none": 0.99, "float16": 0.99, "dynamic": 0.98, "int8": 0.97}
MAX_REL_ERROR = {"none": 1e-3, "float16": 0.02, "dynamic": 0.1, "int8": 0.25}


def failed_name(output):
    """Where a model that fails the quality gate is left, for inspection: ``x.tflite`` -> ``x.FAILED.tflite``."""
    root, ext = os.path.splitext(output)
    return f"{root}.FAILED{ext or '.tflite'}"


def quality_gate(verify_result, quantize, min_agreement=None, max_rel_error=None):
    """The failures of a ``verify`` result against the bounds (defaults by ``quantize``); [] when it passes."""
    min_agreement = MIN_AGREEMENT[quantize] if min_agreement is None else min_agreement
    max_rel_error = MAX_REL_ERROR[quantize] if max_rel_error is None else max_rel_error
    failures = []
    agreement = verify_result.get("top1_agreement")
    if agreement is not None and agreement < min_agreement:
        failures.append(f"top-1 agreement with Keras {agreement:.3f} < {min_agreement:g} (--min-agreement)")
    rel = verify_result["max_rel_error"]
    if not rel <= max_rel_error:  # NaN fails too
        failures.append(f"max error {rel:.3g} of the output scale > {max_rel_error:g} (--max-rel-error)")
    return failures


def convert_model(model_path, output=None, quantize="none", io="int8", calib=None, calib_samples=200,
                  strategy="shift", report=None, force=False, allow_flex=False, custom_modules=(),
                  data_dir=None, verify_samples=200, gpu=True, seed=0, progress=None, *, check=True,
                  min_agreement=None, max_rel_error=None, arch=None, input_size=224, input_range=None):
    """Converts, verifies and audits; returns the report dict (also written to ``report``).

    With ``check`` (the default), a model that misses the quality gate against Keras on the held-out
    samples (``quality_gate``) raises ``ConversionError`` and is left only as ``failed_name(output)``.
    With ``arch`` (``rednet26`` ... ``rednet152``), ``model_path`` is an official PyTorch checkpoint,
    built at ``input_size`` taking ``input_range`` input (see ``involution.pretrained``).
    """
    if quantize not in QUANTIZE:
        raise ConversionError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if io not in IO_TYPES:
        raise ConversionError(f"--io must be one of {', '.join(IO_TYPES)}; got {io!r}")
    if strategy not in STRATEGIES:
        raise ConversionError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if calib_samples < 1:
        raise ConversionError(f"--calib-samples must be at least 1, got {calib_samples}")
    if quantize == "int8" and not calib:
        raise ConversionError("int8 needs calibration data (--calib digits|cifar10|FILE.npz|IMAGE_DIR): random data is not calibration")
    # The input first: a missing or wrong input is the real cause, whatever the output path says.
    if arch:
        if not os.path.isfile(model_path):
            raise ConversionError(f"{model_path}: no such checkpoint file")
    else:
        model_kind(model_path)
    output = output or os.path.splitext(model_path.rstrip("/"))[0] + ".tflite"
    _check_output(output, force)
    if report:
        _check_output(report, True)
    say = progress or (lambda msg: None)

    t0 = time.perf_counter()
    image_rule = None
    if arch:
        from involution import pretrained

        model, kind = _official_model(model_path, arch, input_size, input_range, strategy), "checkpoint"
        image_rule = pretrained.image_rule(input_range)
    else:
        if input_range:
            raise ConversionError("--input-range applies to official checkpoints: pass --arch too")
        model, kind = load_model(model_path, custom_modules)
    result = {"input": model_path, "output": output, "format": kind, "quantize": quantize,
              "io": io if quantize == "int8" else "float32", "strategy": strategy, "rewritten": []}
    if arch:
        result["arch"], result["input_expects"] = arch, pretrained.describe_input(input_range, input_size)
    if kind == "savedmodel":
        keras_model, input_shape = model, model.input_shape
    else:
        keras_model, result["rewritten"] = rewrite_model(model, strategy)
        input_shape = tuple(keras_model.inputs[0].shape[1:])
        if None in input_shape:
            raise ConversionError(f"{model_path}: the input shape {input_shape} must be fully known to export")
    if calib:
        say(f"loading calibration data from {calib}")
        cal_x, held_x, held_y = calibration_samples(calib, input_shape, calib_samples, data_dir, image_rule)
    else:
        cal_x, held_y = None, None
        held_x = np.random.default_rng(seed).random((8, *input_shape), dtype=np.float32)
    if result["rewritten"]:
        diff, scale = max_difference(model, keras_model, held_x[:8])
        result["rewrite_max_abs_error"] = diff
        if not diff <= 1e-4 * max(1.0, scale):
            raise ConversionError(f"the rewritten model differs from the original by {diff:.3g}; not converting")

    say(f"converting ({quantize})")
    representative = None if cal_x is None else [s[None] for s in cal_x]
    lowering = contextlib.nullcontext()
    if custom_modules:  # the user's own classes keep their code: their extract_patches is lowered to builtins
        from convert.lowering import builtin_extract_patches

        lowering = builtin_extract_patches()
    with lowering:
        flat = to_tflite(keras_model, quantize, io, representative, allow_flex, progress=progress is not None)
    info = TFLiteModel(flat, output)
    bad = [t.name or f"tensor {i}" for i, t in enumerate(info.main["tensors"]) if not np.isfinite(t.scale)]
    if bad:  # the runtimes abort the process on such a model
        raise ConversionError(f"calibration gave {len(bad)} tensor(s) a non-finite int8 scale (activations beyond "
                              "float32's range on the calibration data); check the model's weights and the data")
    if info.flex_ops and not allow_flex:
        raise ConversionError(f"the model needs Flex op(s) {', '.join(info.flex_ops)}; pass --allow-flex to accept that")
    # Checked under a temporary name: the output path gets the model only once it has passed.
    staged = os.path.join(os.path.dirname(os.path.abspath(output)), f".invo-{os.getpid()}-{os.path.basename(output)}")
    write_atomic(staged, flat)
    try:
        result["convert_seconds"] = time.perf_counter() - t0
        result["audit"] = info.summary()
        if info.max_rank > 4:
            result.setdefault("notes", []).append(
                f"a tensor of rank {info.max_rank} remains (the model's own reshapes): the mobile GPU takes at most 4-D")
        failures = []
        if not info.flex_ops:
            result["xnnpack"] = xnnpack_coverage(staged)
            say("verifying against Keras" if kind != "savedmodel" else "verifying against the SavedModel")
            x = held_x[:verify_samples]
            y = None if held_y is None else held_y[: len(x)]
            result["verify"] = verify(keras_model, staged, x, y)
            if check:
                failures = quality_gate(result["verify"], quantize, min_agreement, max_rel_error)
                result["quality_gate"] = {"passed": not failures, "failures": failures}
        if gpu and not info.flex_ops and not failures:
            say("compiling on the LiteRT GPU accelerator")
            inp = result["audit"]["inputs"][0]  # scale and zero point as read from the file
            out = result["audit"]["outputs"][0]
            # Quantized outputs: the GPU and XNNPACK quantize activations differently, each within the int8
            # error of the float model; they are held to the gate's bound against each other.
            steps = 0.0
            if out.get("scale") and "verify" in result:
                bound = MAX_REL_ERROR[quantize] if max_rel_error is None else max_rel_error
                steps = bound * result["verify"]["output_scale"] / out["scale"]
            result["gpu"] = check_gpu(staged, [to_input_dtype(held_x[:1], dict(inp, dtype=inp["dtype"].lower()))],
                                      int_steps=steps)
        final = failed_name(output) if failures else output
        os.replace(staged, final)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    if report:
        write_atomic(report, json.dumps(result, indent=2, default=_json_default))
    if failures:
        raise ConversionError(f"the {quantize if quantize != 'none' else 'float32'} model fails the check against "
                              f"Keras on {result['verify']['samples']} held-out samples: {'; '.join(failures)}; "
                              f"left as {final} for inspection, not as {output}")
    return result


def _official_model(path, arch, input_size, input_range, strategy):
    """A Keras RedNet with an official checkpoint's weights; checkpoint problems as one-line errors."""
    from involution.checkpoint import CheckpointError
    from involution.models import REDNET_DEPTHS, build_model

    if arch not in REDNET_DEPTHS:
        raise ConversionError(f"--arch must be one of {', '.join(REDNET_DEPTHS)}; got {arch!r}")
    if input_size < 32 or input_size % 32:
        raise ConversionError(f"--input-size must be a multiple of 32 (RedNet downsamples 32x); got {input_size}")
    try:
        return build_model(arch, (input_size, input_size, 3), strategy=strategy, weights=path, input_range=input_range)
    except (CheckpointError, ValueError) as exc:
        raise ConversionError(str(exc)) from None


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return str(obj)
