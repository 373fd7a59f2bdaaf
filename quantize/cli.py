"""invo-quantize: where int8 hurts, and what to keep in float.

    invo-quantize debug MODEL.h5 --calib digits             # per-layer error, worst first
    invo-quantize selective MODEL.h5 -o out.tflite --calib digits --keep-op MUL
    invo-quantize evaluate MODEL.h5 MODEL_int8.tflite --data digits
"""

import click

from convert.checks import check_output
from convert.export import IO_TYPES
from invo_base.plumbing import cli_errors
from involution.catalog import STRATEGIES
from involution.host_env import import_tensorflow_quietly, require_tensorflow


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """int8 post-training quantization: per-layer error reports and selective quantization."""


@main.command()
@click.argument("model", type=click.Path())
@click.option("--calib", required=True, help="digits, cifar10, FILE.npz/.npy or an image folder.")
@click.option("--calib-samples", default=100, show_default=True, type=int)
@click.option("--debug-samples", default=32, show_default=True, type=int)
@click.option("--aggregation", "strategy", type=click.Choice(STRATEGIES), default="shift", show_default=True,
              help="The involution form (Involution's strategy argument; invo-convert --aggregation).")
@click.option("--data-dir", type=click.Path())
@click.option("--custom-module", multiple=True, type=click.Path())
@click.option("--top", default=15, show_default=True, type=int, help="Rows to print.")
@click.option("--json", "json_path", type=click.Path(), help="Write every row as JSON.")
@cli_errors
def debug(model, calib, calib_samples, debug_samples, strategy, data_dir, custom_module, top, json_path):
    """Per-layer int8 error of MODEL, worst layers first."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    from convert.checks import check_data_source, check_input

    check_input(model)
    check_data_source(calib, data_dir)
    if json_path:
        check_output(json_path, True)
    import_tensorflow_quietly()
    from invo_base.plumbing import json_text, write_atomic
    from quantize.debug import layer_errors

    rows = layer_errors(model, calib, calib_samples=calib_samples, strategy=strategy, data_dir=data_dir,
                        custom_modules=custom_module, debug_samples=debug_samples)
    if json_path:
        write_atomic(json_path, json_text(rows))
    click.echo(f"{'op':<18}{'rmse/scale':>11}{'mean abs':>11}{'max abs':>11}  tensor (end of its name)")
    for r in rows[:top]:
        click.echo(f"{r['op']:<18}{r['rmse_over_scale']:>11.3f}{r['mean_abs_error']:>11.4g}{r['max_abs_error']:>11.4g}"
                   f"  {short_name(r['tensor'])}")
    click.echo(f"({len(rows)} quantized tensors; rmse/scale near 0.29 is plain rounding. Full tensor names: --json;\n"
               " keep the worst in float with 'invo-quantize selective --keep-node TENSOR')")


NAME_WIDTH = 47  # the tensor column of 'debug', so that a row fits in 100 columns


def short_name(name, width=NAME_WIDTH):
    """The end of a long tensor name (its layer and op), marked as cut: the converter's names run to 300+
    characters, their beginning is the model's name scope."""
    name = name.split(";")[0]
    return name if len(name) <= width else "..." + name[-(width - 3):]


@main.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path())
@click.option("--calib", required=True)
@click.option("--keep-node", multiple=True, help="Tensor name (from 'debug') whose op stays float.")
@click.option("--keep-op", multiple=True, help="Op type that stays float everywhere, e.g. MUL.")
@click.option("--io", type=click.Choice(IO_TYPES), default="int8", show_default=True,
              help="Input/output type of the int8 model (as invo-convert's --io).")
@click.option("--calib-samples", default=200, show_default=True, type=int)
@click.option("--aggregation", "strategy", type=click.Choice(STRATEGIES), default="shift", show_default=True,
              help="The involution form (Involution's strategy argument; invo-convert --aggregation).")
@click.option("--data-dir", type=click.Path())
@click.option("--custom-module", multiple=True, type=click.Path())
@click.option("--force", is_flag=True)
@cli_errors
def selective(model, output, calib, keep_node, keep_op, io, calib_samples, strategy, data_dir, custom_module, force):
    """int8 MODEL except the named layers or ops, which stay float."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    from convert.checks import check_data_source, check_input

    check_input(model)
    check_data_source(calib, data_dir)
    check_output(output, force)
    import_tensorflow_quietly()
    from quantize.debug import selective_quantize

    v = selective_quantize(model, output, calib, keep_nodes=keep_node, keep_ops=keep_op, io=io,
                           calib_samples=calib_samples, aggregation=strategy, data_dir=data_dir,
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
@click.option("--json", "json_path", type=click.Path(), help="Write every figure as JSON.")
@cli_errors
def evaluate(keras_model, tflite_model, source, samples, data_dir, custom_module, json_path):
    """Top-1 accuracy of KERAS_MODEL (float) against TFLITE_MODEL (its int8 file, say) on held-out data."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    from convert.checks import check_evaluate_args

    check_evaluate_args(keras_model, tflite_model, source, data_dir)
    if json_path:
        check_output(json_path, True)
    import_tensorflow_quietly()
    from invo_base.plumbing import json_text, write_atomic
    from quantize.evaluate import compare_accuracy

    r = compare_accuracy(keras_model, tflite_model, source, samples=samples, data_dir=data_dir,
                         custom_modules=custom_module)
    if json_path:
        write_atomic(json_path, json_text(r))
    click.echo(format_accuracy(r, tflite_model))


def format_accuracy(r, tflite_model):
    """The comparison as a few lines for the terminal."""
    drop = r["top1_drop_points"]
    return "\n".join([
        f"held-out samples: {r['samples']}",
        f"top-1 Keras (float):  {r['top1_keras']:.4f}",
        f"top-1 {tflite_model}: {r['top1_tflite']:.4f} ({abs(drop):.2f} points {'below' if drop >= 0 else 'above'} Keras)",
        f"top-1 agreement:      {r['top1_agreement']:.4f}",
        f"largest output error vs Keras: {r['max_rel_error']:.3g} of the output's magnitude",
    ])


if __name__ == "__main__":
    main()
