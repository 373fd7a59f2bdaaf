"""``convert_model``: Keras file -> verified, audited .tflite (the library behind invo-convert).

The steps, each a function below: check the options and the input, load (or build from an official
checkpoint) and rewrite the model, take calibration and held-out data, convert, audit the ops, check the
result against Keras (quality gate), compile it on the GPU path, and only then put it at the output path.
"""

import contextlib
import time

import numpy as np

from benchmarks.gpu_check import check_gpu
from benchmarks.runtime import TFLITE_RUNTIME_LAST, needs_newer_runtime, to_input_dtype
from benchmarks.xnnpack_check import xnnpack_coverage
from convert.checks import preflight
from convert.errors import ConversionError
from convert.export import to_tflite
from convert.load import load_model
from convert.options import ConvertOptions
from convert.publish import audit, staged
from convert.rewrite import max_difference, rewrite_model
from convert.targets import target_audit
from convert.verification import calibration_and_held_out, gate_bounds, quality_gate, verify
from invo_base.plumbing import json_text, write_atomic


def convert_model(model_path, output=None, options=None, *, report=None, force=False, progress=None, **fields):
    """Converts, verifies and audits; returns the report dict (also written to ``report``).

    ``options``: a ``ConvertOptions`` (precision, data, model source, checks); ``fields`` replace its fields
    by name, so ``convert_model(path, quantize="int8", calib="digits")`` reads as the CLI does.

    With ``check`` (the default), a model that misses the quality gate against Keras on the held-out
    samples (``convert.verification.quality_gate``) raises ``ConversionError`` and is left only as
    ``failed_name(output)``.  With ``arch`` (``rednet26`` ... ``rednet152``), ``model_path`` is an official
    PyTorch checkpoint, built at ``input_size`` taking ``input_range`` input (see ``involution.pretrained``).
    ``progress``: a callable taking one-line messages.  ``float_aggregation`` (int8): each Involution layer's
    aggregation stays float32 (``convert.export.to_tflite``).
    """
    o = ConvertOptions.of(options, **fields)
    output = preflight(model_path, output, o, report=report, force=force)
    say = progress or (lambda msg: None)

    t0 = time.perf_counter()
    say(f"loading {model_path}" + (f" as {o.arch}" if o.arch else ""))
    model, kind, image_rule, input_expects = _load(model_path, o)
    result = {"input": model_path, "output": output, "format": kind, "quantize": o.quantize,
              "io": o.io if o.quantize == "int8" else "float32", "strategy": o.strategy, "rewritten": []}
    layer_ops = {}
    if o.arch:
        result["arch"], result["input_expects"] = o.arch, input_expects
    keras_model, input_shape, result["rewritten"] = _builtin_model(model, kind, o.strategy, model_path)
    if o.quantize == "int8":
        result["calibrator"] = o.calibrator
    if o.float_aggregation:
        _check_has_involution(keras_model, model_path)
        result["float_aggregation"] = True

    if o.calib:
        say(f"loading calibration data from {o.calib}")
        cal_x, held_x, held_y = calibration_and_held_out(o.calib, input_shape, o.calib_samples, o.data_dir, image_rule)
    else:  # float conversions need no data: random inputs check the arithmetic, and there are no labels
        cal_x, held_y = None, None
        held_x = np.random.default_rng(o.seed).random((8, *input_shape), dtype=np.float32)
    if result["rewritten"]:
        result["rewrite_max_abs_error"] = _check_rewrite(model, keras_model, held_x[:8])

    say(f"converting ({o.quantize})")
    flat = _convert(keras_model, o, cal_x, progress is not None, result.setdefault("notes", []), layer_ops)
    info = audit(flat, output, o.allow_flex)
    result["audit"] = info.summary()
    result["target"] = target_audit(o.target, result["audit"]["ops"], layer_ops)
    need = needs_newer_runtime(info.min_runtime_version)
    if o.legacy_runtime and need:
        raise ConversionError(f"--legacy-runtime: the {o.quantize if o.quantize != 'none' else 'float32'} model "
                              f"needs TFLite {need} or newer (its min_runtime_version), which tflite-runtime "
                              f"{TFLITE_RUNTIME_LAST} cannot load; nothing written")
    if info.max_rank > 4:
        result.setdefault("notes", []).append(
            f"a tensor of rank {info.max_rank} remains (the model's own reshapes): the mobile GPU takes at most 4-D")

    # Checked under a temporary name: the output path gets the model only once it has passed.
    with staged(output, flat) as s:
        result["convert_seconds"] = time.perf_counter() - t0
        if not info.flex_ops:  # no runtime here runs Flex ops: nothing to measure
            result["xnnpack"] = xnnpack_coverage(s.path)
            say("verifying against Keras" if kind != "savedmodel" else "verifying against the SavedModel")
            x = held_x[:o.verify_samples]
            result["verify"] = verify(keras_model, s.path, x, None if held_y is None else held_y[: len(x)],
                                      precision="fp16" if o.quantize == "float16" else "default")
            if o.check:
                s.failures = quality_gate(result["verify"], o.quantize, o.min_agreement, o.max_rel_error)
                result["quality_gate"] = {"passed": not s.failures, "failures": s.failures}
            if o.quantize == "int8":  # what a microcontroller needs of it
                from benchmarks.micro import micro_audit

                result["micro"] = micro_audit(s.path)
            if o.gpu and not s.failures:
                say("compiling on the LiteRT GPU accelerator")
                result["gpu"] = _gpu_check(s.path, result, held_x[:1],
                                           gate_bounds(o.quantize, None, o.max_rel_error)[1])
    failures, final = s.failures, s.final
    if o.c_array and not failures:
        from invo_base.c_array import write_c_array

        result["c_array"] = write_c_array(final)
    if report:
        write_atomic(report, json_text(result))
    if failures:
        raise ConversionError(f"the {o.quantize if o.quantize != 'none' else 'float32'} model fails the check against "
                              f"Keras on {result['verify']['samples']} held-out samples: {'; '.join(failures)}; "
                              f"left as {final} for inspection, not as {output}")
    return result


def _load(model_path, o):
    """(model, format, image rule for image-folder data, description of the input) of the input file."""
    if not o.arch:
        model, kind = load_model(model_path, o.custom_modules)
        return model, kind, None, None
    from involution import pretrained

    model = _official_model(model_path, o.arch, o.input_size, o.input_range, o.strategy)
    return (model, "checkpoint", pretrained.image_rule(o.input_range),
            pretrained.describe_input(o.input_range, o.input_size))


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


def _builtin_model(model, kind, strategy, model_path):
    """(model to export, its input shape, rewritten layers): involution layers swapped for builtin ones."""
    if kind == "savedmodel":
        return model, model.input_shape, []
    keras_model, rewritten = rewrite_model(model, strategy)
    input_shape = tuple(keras_model.inputs[0].shape[1:])
    if None in input_shape:
        raise ConversionError(f"{model_path}: the input shape {input_shape} must be fully known to export")
    return keras_model, input_shape, rewritten


def _check_rewrite(original, rewritten, x):
    """The rewritten model must compute what the user's model computes; returns the largest difference."""
    diff, scale = max_difference(original, rewritten, x)
    if not diff <= 1e-4 * max(1.0, scale):
        raise ConversionError(f"the rewritten model differs from the original by {diff:.3g}; not converting")
    return diff


def _check_has_involution(keras_model, model_path):
    from convert.export import involution_scopes

    if not hasattr(keras_model, "layers") or not involution_scopes(keras_model):
        raise ConversionError(f"{model_path}: --float-aggregation needs Involution layers (from .h5/.keras; "
                              "a SavedModel's layers are not known), and this model has none")


def _convert(keras_model, o, cal_x, progress, notes, layer_ops=None):
    representative = None if cal_x is None else [s[None] for s in cal_x]
    lowering = contextlib.nullcontext()
    if o.custom_modules:  # the user's own classes keep their code: their extract_patches is lowered to builtins
        from convert.lowering import builtin_extract_patches

        lowering = builtin_extract_patches()
    with lowering:
        return to_tflite(keras_model, o.quantize, o.io, representative, o.allow_flex, progress=progress,
                         float_aggregation=o.float_aggregation, notes=notes, calibrator=o.calibrator,
                         legacy_runtime=o.legacy_runtime, layer_ops=layer_ops)


def _gpu_check(path, result, x, max_rel_error):
    """The GPU path against the CPU on one held-out sample.

    Quantized outputs: the GPU and XNNPACK quantize activations differently, each within the int8 error of
    the float model, so they are held to the gate's bound against each other, in output steps.
    """
    inp, out = result["audit"]["inputs"][0], result["audit"]["outputs"][0]  # scale and zero point from the file
    steps = max_rel_error * result["verify"]["output_scale"] / out["scale"] if out.get("scale") else 0.0
    return check_gpu(path, [to_input_dtype(x, dict(inp, dtype=inp["dtype"].lower()))], int_steps=steps)
