"""invo-quantize: where int8 hurts, and what to keep in float.

    invo-quantize debug MODEL.h5 --calib digits             # per-layer error, worst first
    invo-quantize selective MODEL.h5 -o out.tflite --calib digits --keep-op MUL
    invo-quantize evaluate MODEL.h5 MODEL_int8.tflite --data digits
"""

import json

import click

from benchmarks.plumbing import cli_errors, import_tensorflow_quietly
from involution.catalog import STRATEGIES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """int8 post-training quantization: per-layer error reports and selective quantization."""


@main.command()
@click.argument("model", type=click.Path())
@click.option("--calib", required=True, help="digits, cifar10, FILE.npz/.npy or an image folder.")
@click.option("--calib-samples", default=100, show_default=True, type=int)
@click.option("--debug-samples", default=32, show_default=True, type=int)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="shift", show_default=True)
@click.option("--data-dir", type=click.Path())
@click.option("--custom-module", multiple=True, type=click.Path())
@click.option("--top", default=15, show_default=True, type=int, help="Rows to print.")
@click.option("--json", "json_path", type=click.Path(), help="Write every row as JSON.")
@cli_errors
def debug(model, calib, calib_samples, debug_samples, strategy, data_dir, custom_module, top, json_path):
    """Per-layer int8 error of MODEL, worst layers first."""
    import_tensorflow_quietly()
    from benchmarks.plumbing import write_atomic
    from quantize.debug import layer_errors

    rows = layer_errors(model, calib, calib_samples=calib_samples, strategy=strategy, data_dir=data_dir,
                        custom_modules=custom_module, debug_samples=debug_samples)
    if json_path:
        write_atomic(json_path, json.dumps(rows, indent=2))
    click.echo(f"{'op':<18}{'rmse/scale':>11}{'mean abs':>11}{'max abs':>11}  tensor")
    for r in rows[:top]:
        click.echo(f"{r['op']:<18}{r['rmse_over_scale']:>11.3f}{r['mean_abs_error']:>11.4g}{r['max_abs_error']:>11.4g}  {r['tensor']}")
    click.echo(f"({len(rows)} quantized tensors; rmse/scale near 0.29 is plain rounding; keep the worst in float "
               "with 'invo-quantize selective --keep-node TENSOR')")


@main.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path())
@click.option("--calib", required=True)
@click.option("--keep-node", multiple=True, help="Tensor name (from 'debug') whose op stays float.")
@click.option("--keep-op", multiple=True, help="Op type that stays float everywhere, e.g. MUL.")
@click.option("--io", type=click.Choice(["float32", "int8", "uint8"]), default="float32", show_default=True)
@click.option("--calib-samples", default=200, show_default=True, type=int)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="shift", show_default=True)
@click.option("--data-dir", type=click.Path())
@click.option("--custom-module", multiple=True, type=click.Path())
@click.option("--force", is_flag=True)
@cli_errors
def selective(model, output, calib, keep_node, keep_op, io, calib_samples, strategy, data_dir, custom_module, force):
    """int8 MODEL except the named layers or ops, which stay float."""
    import_tensorflow_quietly()
    from quantize.debug import selective_quantize

    v = selective_quantize(model, output, calib, keep_nodes=keep_node, keep_ops=keep_op, io=io,
                           calib_samples=calib_samples, strategy=strategy, data_dir=data_dir,
                           custom_modules=custom_module, force=force)
    click.echo(f"{output}: max rel error vs Keras {v['max_rel_error']:.3g}"
               + (f", top-1 Keras {v['top1_keras']:.4f} vs TFLite {v['top1_tflite']:.4f}" if "top1_keras" in v else ""))


@main.command()
@click.argument("keras_model", type=click.Path())
@click.argument("tflite_model", type=click.Path())
@click.option("--data", "source", required=True, help="Held-out data: digits, cifar10, FILE.npz or an image folder.")
@click.option("--samples", default=500, show_default=True, type=int)
@click.option("--data-dir", type=click.Path())
@click.option("--custom-module", multiple=True, type=click.Path())
@cli_errors
def evaluate(keras_model, tflite_model, source, samples, data_dir, custom_module):
    """Top-1 accuracy of KERAS_MODEL (float) vs TFLITE_MODEL (e.g. int8) on held-out data, and their agreement."""
    import_tensorflow_quietly()
    from quantize.evaluate import compare_accuracy

    r = compare_accuracy(keras_model, tflite_model, source, samples=samples, data_dir=data_dir,
                         custom_modules=custom_module)
    click.echo(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
