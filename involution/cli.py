"""invo-train: train the seed's CIFAR models or RedNet on a dataset and save them for invo-convert."""

import json

import click

from invo_base.plumbing import cli_errors
from involution.catalog import DISTRIBUTE, MODEL_NAMES, check_train_options
from involution.host_env import import_tensorflow_quietly, require_tensorflow


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model", default="seed-involution", show_default=True, help=f"One of: {', '.join(MODEL_NAMES)}.")
@click.option("--dataset", default="digits", show_default=True, help="digits (offline, ships with scikit-learn), cifar10, a .npz (x, y) or an image folder.")
@click.option("--data-dir", type=click.Path(), help="Local cifar-10-batches-py directory for --dataset cifar10.")
@click.option("--epochs", default=10, show_default=True, type=int)
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--learning-rate", default=1e-3, show_default=True, type=float)
@click.option("--seed", default=1, show_default=True, type=int, help="Same seed, same weights and metrics on CPU.")
@click.option("--out", default="runs/train", show_default=True, type=click.Path(), help="Output directory.")
@click.option("--strategy", "distribute", default="default", show_default=True, help=f"tf.distribute strategy: {', '.join(DISTRIBUTE)}.")
@click.option("--input-size", type=int, help="Square input size (default 32; 224 for rednet26/38/50 on real data).")
@click.option("--compare", is_flag=True, help="Also train seed-conv on the same data and plot both.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--quiet", is_flag=True, help="No progress or per-epoch lines and no JSON summary: one line per model.")
@cli_errors
def main(model, dataset, out, input_size, compare, force, quiet, **training):
    """Train an involution (or convolution) classifier and save .h5/.keras, curves and kernel maps."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    import os

    from involution.data import check_source

    # What can be checked without TensorFlow first, so that a typo costs a second, not the import.
    t = training  # epochs, batch_size, learning_rate, seed, distribute, data_dir: TrainOptions' fields
    check_train_options(model, t["distribute"], t["epochs"], t["batch_size"], t["learning_rate"])
    check_source(dataset, t["data_dir"])
    if t["distribute"] != "multi-worker" and os.path.isdir(out) and os.listdir(out) and not force:
        raise ValueError(f"{os.path.abspath(out)} exists and is not empty; pass --force to replace it")
    if not quiet:
        click.echo("... loading TensorFlow", err=True)
    import_tensorflow_quietly()
    import warnings

    from involution.train import TrainOptions, train

    warnings.showwarning = lambda msg, *a, **k: click.echo(f"warning: {msg}", err=True)
    shape = (input_size, input_size, 3) if input_size else None
    results = train(model, dataset, TrainOptions(**training, input_shape=shape), out=out, compare=compare, force=force,
                    quiet=quiet)
    for name, r in results.items():
        click.echo(f"{name}: {r['params']:,} params, val_accuracy {r['val_accuracy']:.4f}, "
                   f"val_loss {r['val_loss']:.4f} -> {r['dir']}")
    if not quiet:
        click.echo(json.dumps(results))


if __name__ == "__main__":
    main()
