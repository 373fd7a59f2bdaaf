"""invo-convert: a Keras model with involution layers -> a builtin-only, verified .tflite."""

import click

from benchmarks.gpu_check import allowed_text, unit_suffix
from benchmarks.micro import format_micro_audit
from benchmarks.runtime import TFLITE_RUNTIME_LAST, needs_newer_runtime
from benchmarks.xnnpack_check import format_coverage
from convert.export import CALIBRATORS, IO_TYPES, QUANTIZE
from convert.targets import GPU_DISPATCH_US, TARGETS
from convert.verification import MAX_REL_ERROR, MIN_AGREEMENT
from invo_base.plumbing import cli_errors
from invo_base.tflite_model import BUILTIN_DEPTHWISE_MAX_DEPTH
from involution.catalog import INPUT_RANGES, REDNET_DEPTHS, STRATEGIES
from involution.host_env import import_tensorflow_quietly, require_tensorflow


def format_audit(result):
    """The op audit and checks as a short table for the terminal."""
    a = result["audit"]
    lines = [f"{result['output']}: {a['file_bytes'] / 1024:.1f} KB, {a['parameters']:,} parameters, "
             f"{a['ops']} ops, max tensor rank {a['max_tensor_rank']}, "
             f"{'builtin ops only' if a['builtin_only'] else 'NOT builtin-only'}"]
    t = result.get("target")
    if t:
        lines.append(format_target(t, result.get("strategy")))
        lines += [f"  warning: {w}" for w in t["warnings"]]
    if result.get("input_expects"):
        lines.append(f"  input: {result['input_expects']}")
    if a.get("metadata", {}).get("reduced_precision_support"):
        lines.append(f"  precision: FP16 inference allowed (reduced_precision_support="
                     f"{a['metadata']['reduced_precision_support']}): XNNPACK's hint to compute in FP16 on CPUs "
                     "with native FP16 arithmetic (ARMv8.2+ phones); 'invo-bench --precision fp16' forces it")
    if result.get("float_aggregation"):
        lines.append("  precision: int8, each involution's aggregation float32 (--float-aggregation)")
    if result.get("calibrator"):
        lines.append("  calibration: " + ("each tensor's own range (--calibrator exact)" if result["calibrator"] == "exact"
                                          else "TF's calibrator (--calibrator tf)"))
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    for r in result["rewritten"]:
        lines.append(f"  rewritten  {r}")
    lines.append(f"  {'op':<24}{'count':>6}")
    for op, n in a["op_histogram"].items():
        lines.append(f"  {op:<24}{n:>6}")
    f = a.get("gpu_fusion")
    if f:
        lines.append(f"  GPU fusion: longest elementwise chain {f['ops']} ops, {f['textures']} textures "
                     f"(WebGPU's default limit {f['limit']}): " + ("within" if f["within"] else "OVER"))
        if not f["within"]:
            lines.append("    a GPU delegate may fuse it into one shader that the device rejects")
    if a.get("peak_activation_bytes"):
        before = result.get("input_peak_activation_bytes")  # a .tflite reordered: what its own order kept
        lines.append(f"  activations: at most {a['peak_activation_bytes'] / 2**20:.2f} MiB alive at once in the "
                     "listed order" + (f" ({before / 2**20:.2f} MiB before)" if before is not None else ""))
    stalls = a.get("builtin_stalls")
    if stalls:
        lines.append(f"  builtin kernels: {len(stalls)} DEPTHWISE_CONV_2D op(s) deeper than {BUILTIN_DEPTHWISE_MAX_DEPTH} "
                     f"channels (op {stalls[0]['op']}: {stalls[0]['depth']}), on which TFLite's builtin kernel never "
                     "returns: the model runs only with XNNPACK or on a GPU")
    if a.get("metadata"):
        lines.append("  metadata: " + ", ".join(f"{k} ({v})" for k, v in a["metadata"].items()))
    need = needs_newer_runtime(a.get("metadata", {}).get("min_runtime_version"))
    if need:
        lines.append(f"  runtime: needs TFLite {need} or newer; tflite-runtime {TFLITE_RUNTIME_LAST} (its last release) "
                     "cannot load it, ai-edge-litert can" + (" (--legacy-runtime: Dense layers per tensor)"
                                                             if result.get("quantize") == "dynamic" else ""))
    for key in ("flex_ops", "custom_ops"):
        if a[key]:
            lines.append(f"  {key.replace('_', ' ')}: {', '.join(a[key])}")
    v = result.get("verify")
    if v:
        arithmetic = f" in {v['arithmetic'].upper()} arithmetic" if v.get("arithmetic") else ""
        if v.get("fp16_arithmetic") == "emulated":  # what the gate's bound means on a phone's FP16
            arithmetic = (" in FP16 emulated by XNNPACK (this CPU has no FP16 arithmetic: FP16 values, float32 "
                          "sums; a phone's FP16 arithmetic rounds more)")
        lines.append(f"  vs Keras on {v['samples']} samples{arithmetic}: max abs err {v['max_abs_error']:.3g}, "
                     f"rel {v['max_rel_error']:.3g}")
        if "top1_keras" in v:
            lines.append(f"    top-1 Keras {v['top1_keras']:.4f}, TFLite {v['top1_tflite']:.4f}, "
                         f"agreement {v['top1_agreement']:.4f}")
        for w in v.get("warnings", []):
            lines.append(f"  warning: {w}")
    if result.get("xnnpack"):
        lines.append(f"  {format_coverage(result['xnnpack'])}")
    if result.get("micro"):
        lines.append(f"  {format_micro_audit(result['micro'])}")
    g = result.get("gpu")
    if g:
        if not g.get("available"):
            lines.append(f"  GPU: not checked: {g.get('error', 'no GPU or Vulkan adapter')}")
        else:
            kind = "emulated GPU (SwiftShader)" if g.get("emulated") else "GPU"
            err = g.get("max_abs_error")
            unit = unit_suffix(g)
            lines.append(f"  {kind}: {'fully accelerated' if g['fully_delegated'] else 'NOT fully accelerated'}"
                         + (": ok" if g.get("ok") else f": FAILED{' (' + g['error'] + ')' if g.get('error') else ''}"))
            if err is not None:
                lines.append(f"    largest difference from the CPU {err:.3g}{unit}")
                lines.append(f"    ({allowed_text(g)})")
            if g.get("ops_on_cpu"):
                lines.append(f"  ops the GPU does not take (each compiled alone): {', '.join(g['ops_on_cpu'])}")
    if result.get("c_array"):
        lines.append(f"  C source for firmware: {', '.join(result['c_array'])}")
    if result.get("identical_outputs"):
        lines.append(f"  outputs bit-identical to {result['input']} ({result['input_bytes'] / 1024:.1f} KB before)")
    lines.append(f"  converted in {result['convert_seconds']:.1f} s")
    return "\n".join(lines)


def gate_defaults(bounds):
    """A quality gate's default bounds for --help: '0.99 float32, 0.99 float16, ...'."""
    return ", ".join(f"{v:g} {'float32' if q == 'none' else q}" for q, v in bounds.items())


def format_target(t, strategy):
    """One line: the target, the involution form, and the op counts that decide a GPU's time."""
    per_layer = t["layer_ops"]
    layers = (f"; involution layers {min(per_layer.values())}-{max(per_layer.values())} ops each"
              if per_layer else "")
    bound = f" (bound {t['max_layer_ops']})" if "max_layer_ops" in t else ""
    return (f"  target: {t['target']} (involution form '{strategy}'){layers}{bound}\n    {t['ops']} ops: about "
            f"{t['dispatch_ms']:.2f} ms of GPU dispatches at {GPU_DISPATCH_US} us each (docs/gpu_cost_model.md)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Default: MODEL with a .tflite suffix.")
@click.option("--quantize", type=click.Choice(QUANTIZE), default="none", show_default=True)
@click.option("--io", type=click.Choice(IO_TYPES), default="int8", show_default=True, help="Input/output type of an int8 model.")
@click.option("--float-aggregation", is_flag=True,
              help="With --quantize int8: keep each involution's aggregation (window copies, MUL, ADD) in float32 "
                   "between DEQUANTIZE/QUANTIZE, the rest int8. Faster and closer to float on CPUs (XNNPACK); "
                   "not for int8-only accelerators.")
@click.option("--calib", help="Calibration data: digits, cifar10, FILE.npz/.npy or an image folder.")
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default="exact", show_default=True,
              help="With --quantize int8: 'exact' records each tensor's own range over the calibration samples; "
                   "'tf' is TF's calibrator (the stock converter's), whose ranges of tensors an op overwrote in "
                   "place take in that op's output.")
@click.option("--calib-samples", default=200, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(), help="Local cifar-10-batches-py for --calib cifar10.")
@click.option("--target", type=click.Choice(TARGETS), default="cpu", show_default=True,
              help="What runs the file: 'cpu' builds each involution from K*K shifted windows (fastest on CPU "
                   "threads, hundreds of ops); 'gpu' from a separable one-hot gather, one MUL and one SUM (about "
                   "ten ops per layer: a GPU pays per dispatch).")
@click.option("--aggregation", type=click.Choice(STRATEGIES),
              help="Override the target's involution form (Involution's strategy argument).")
@click.option("--report", type=click.Path(), help="Write the audit and checks as JSON.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--allow-flex", is_flag=True, help="Accept TF Select (Flex) ops; most devices cannot run them.")
@click.option("--legacy-runtime", is_flag=True,
              help=f"A file tflite-runtime {TFLITE_RUNTIME_LAST} (its last release) loads, or an error: with "
                   "--quantize dynamic, Dense layers are quantized per tensor (as before TF 2.17); the other "
                   "precisions load there as they are.")
@click.option("--custom-module", multiple=True, type=click.Path(), help="A .py file registering custom layers.")
@click.option("--no-gpu-check", is_flag=True, help="Skip compiling on the LiteRT GPU accelerator.")
@click.option("--min-agreement", type=float,
              help="Quality gate: least top-1 agreement with Keras on the held-out samples, for classifiers. "
                   f"Default: {gate_defaults(MIN_AGREEMENT)}.")
@click.option("--max-rel-error", type=float,
              help="Quality gate: largest error vs Keras relative to the output's largest magnitude. "
                   f"Default: {gate_defaults(MAX_REL_ERROR)}.")
@click.option("--no-check", is_flag=True, help="Write the model even if it fails the quality gate.")
@click.option("--arch", type=click.Choice(list(REDNET_DEPTHS)),
              help="MODEL is an official RedNet checkpoint (.pth/.pt, .safetensors, .npz) of this architecture.")
@click.option("--input-size", default=224, show_default=True, type=int, help="With --arch: the square input size.")
@click.option("--input-range", type=click.Choice(INPUT_RANGES),
              help="With --arch: 'normalized' (default; (pixel - mean) / std) or '0-255' (raw RGB pixels, the "
                   "ImageNet normalisation folded into the model). Image folders are centre-cropped to match.")
@click.option("--c-array", is_flag=True,
              help="Also write the file as C source for microcontroller firmware (NAME.h, NAME.cc: a 16-byte "
                   "aligned array and its length) and NAME_ops.h, which registers only the model's ops in TFLite "
                   "Micro's MicroMutableOpResolver.")
@click.option("--quiet", is_flag=True, help="No progress lines and no audit table (errors still print); with "
                                             "--report, the audit is in the JSON.")
@cli_errors
def main(model, output, report, force, quiet, custom_module, no_gpu_check, no_check, **choices):
    """Convert MODEL (.h5, .keras, SavedModel dir, or with --arch an official RedNet checkpoint) to .tflite,
    verify it and audit its ops.  A .tflite MODEL from another converter is reordered and compacted as
    invo-convert's own exports are (default output NAME.invo.tflite), its outputs checked bit-identical.

    A model that misses the quality gate against Keras on held-out samples (see --min-agreement and
    --max-rel-error) is an error (exit 1) and is left only as NAME.FAILED.tflite.
    """
    from convert.checks import is_tflite, preflight
    from convert.options import ConvertOptions

    # The flags as one ConvertOptions (its field names are the flags'): what the library takes.
    options = ConvertOptions(**choices, custom_modules=custom_module, gpu=not no_gpu_check, check=not no_check)
    if is_tflite(model):  # a .tflite from the user's own converter: reorder and compact it, nothing else
        o = options
        given = [flag for flag, value in (("--quantize", o.quantize != "none"), ("--calib", o.calib), ("--arch", o.arch),
                                          ("--target", o.target != "cpu"), ("--aggregation", o.aggregation),
                                          ("--float-aggregation", o.float_aggregation),
                                          ("--legacy-runtime", o.legacy_runtime),
                                          ("--calibrator", o.calibrator != "exact"),
                                          ("--custom-module", o.custom_modules), ("--input-range", o.input_range)) if value]
        if given:
            raise ValueError(f"{model} is already a .tflite file: invo-convert only reorders and compacts it, so "
                             f"{', '.join(given)} need the Keras model it came from")
        say = None if quiet else (lambda msg: click.echo(f"... {msg}", err=True))
        from convert.retouch import retouch_tflite

        result = retouch_tflite(model, output, force=force, report=report, gpu=not no_gpu_check, progress=say)
        if options.c_array:
            from invo_base.c_array import write_c_array

            result["c_array"] = write_c_array(result["output"])
        if not quiet:
            click.echo(format_audit(result))
        return
    require_tensorflow()  # a board: say what to install before judging the arguments
    output = preflight(model, output, options, report=report, force=force)  # before TensorFlow: errors in a second
    say = None if quiet else (lambda msg: click.echo(f"... {msg}", err=True))
    if say:
        say("loading TensorFlow")
    import_tensorflow_quietly()
    from convert.api import convert_model

    result = convert_model(model, output, options, report=report, force=force, progress=say)
    if not quiet:
        click.echo(format_audit(result))


if __name__ == "__main__":
    main()
