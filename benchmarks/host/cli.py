"""invo-report: the host-side benchmark programs (they build and convert models; TensorFlow needed).

    invo-report deployment [--train-dir runs/demo/train] [--out runs/report]   # seed conv vs involution
    invo-report networks [--networks rednet26,resnet50] [--out runs/network_bench]
    invo-report layers [--out runs/layer_bench]
"""

import os

import click

from invo_base.plumbing import cli_errors
from involution.host_env import import_tensorflow_quietly, require_tensorflow


def _positive(**values):
    bad = [f"--{name.replace('_', '-')} must be at least 1, got {v}" for name, v in values.items() if v < 1]
    if bad:
        raise click.UsageError("; ".join(bad))


def _int_list(name, text):
    """Comma-separated positive integers; 'all' is every core of this machine."""
    try:
        values = tuple(os.cpu_count() if t == "all" else int(t) for t in text.split(",") if t)
    except ValueError:
        raise click.UsageError(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.UsageError(f"--{name} takes comma-separated integers of at least 1, got {text!r}")
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Host-side benchmarks: each converts models with invo-convert's library, then times the .tflite
    files with invo-bench's (ai-edge-litert, XNNPACK), in interleaved rounds."""


@main.command()
@click.option("--train-dir", type=click.Path(), help="An 'invo-train --compare' output; default: train here on digits.")
@click.option("--epochs", default=15, show_default=True, type=int, help="Epochs when training here.")
@click.option("--out", default="runs/report", show_default=True, type=click.Path())
@click.option("--num-runs", "--num_runs", "num_runs", default=200, show_default=True, type=int)
@click.option("--rounds", default=3, show_default=True, type=int, help="Interleaved timing rounds (spread = min-max).")
@click.option("--no-gpu-check", "--no-gpu", "no_gpu", is_flag=True,
              help="Skip the GPU column (--no-gpu, its former name, still works).")
@cli_errors
def deployment(train_dir, epochs, out, num_runs, rounds, no_gpu):
    """The seed conv vs involution models, float32 vs int8, CPU threads vs GPU: report.md, report.json,
    latency.png and size.png in --out."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    _positive(num_runs=num_runs, rounds=rounds, epochs=epochs)
    from benchmarks.host.report import MODELS

    if train_dir:  # before TensorFlow: a wrong directory is named in a second
        missing = [p for p in (os.path.join(train_dir, m, "model.keras") for m in MODELS) if not os.path.exists(p)]
        if missing:
            raise ValueError(f"{missing[0]}: not found; --train-dir takes an 'invo-train --compare' output")
    say = lambda msg: click.echo(f"... {msg}", err=True)  # noqa: E731
    say("loading TensorFlow")
    import_tensorflow_quietly()
    from benchmarks.host.report import build_report

    build_report(train_dir, out, epochs, num_runs, gpu=not no_gpu, rounds=rounds, progress=say)
    with open(os.path.join(out, "report.md")) as f:
        click.echo(f.read())


@main.command()
@click.option("--networks", default=None, help="Comma-separated; default all of: rednet26, rednet38, rednet50, "
              "resnet50, mobilenetv2, rednet26-without-involution, rednet50-without-involution; 'none': the "
              "per-layer table only.")
@click.option("--dtypes", default="float32,fp16,int8,int8-float-agg,gpu-float32,gpu-fp16", show_default=True,
              help="fp16: the float16 file with XNNPACK forced to FP16 (invo-bench --precision fp16); dynamic: int8 "
                   "weights, float activations (invo-convert --quantize dynamic); int8-float-agg: "
                   "int8 with each involution's aggregation in float32 (invo-convert --float-aggregation); "
                   "gpu-float32, gpu-fp16: the GPU target's files (invo-convert --target gpu); also "
                   "stock-float32: the stock TFLiteConverter's file, as a user's own pipeline makes it.")
@click.option("--threads", default="1,2,all", show_default=True, help="Thread counts; 'all': every core.")
@click.option("--caches", default="warm,evicted", show_default=True,
              help="Cache regimes: warm (runs back to back), evicted (512 MB written before every run).")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--num-runs", "--num_runs", "num_runs", type=int, default=20, show_default=True)
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option("--calib", help="int8 calibration data (FILE.npz or an image folder); default standard-normal images.")
@click.option("--weights", multiple=True, metavar="NAME=FILE",
              help="Official checkpoint for a RedNet, e.g. rednet26=rednet26.pth (repeatable).")
@click.option("--no-layers", is_flag=True, help="Skip the per-layer table.")
@click.option("--no-gpu-check", is_flag=True, help="Skip the GPU-path check of each RedNet.")
@click.option("--gpu-timing", is_flag=True,
              help="Also time the float files on the GPU (a real one: SwiftShader's timings are refused), each "
                   "run's outputs checked against the CPU's.")
@click.option("--out", default="runs/network_bench", show_default=True, type=click.Path())
@cli_errors
def networks(networks, dtypes, threads, caches, rounds, num_runs, input_size, calib, weights, no_layers, no_gpu_check,
             gpu_timing, out):
    """RedNet-26/38/50 against ResNet-50 and MobileNetV2 on the CPU fast path, and RedNet's involution layers
    next to a DepthwiseConv2D of the same shape: network_bench.md/.json and latency_vs_top1.png in --out."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    from benchmarks.host import network_bench as nb

    chosen = [] if networks == "none" else [n for n in (networks or ",".join(nb.NETWORKS)).split(",") if n]
    if not chosen and no_layers:
        raise click.UsageError("--networks none with --no-layers leaves nothing to time")
    unknown = [n for n in chosen if n not in nb.NETWORKS]
    if unknown:
        raise click.UsageError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(nb.NETWORKS)}")
    kinds = [d for d in dtypes.split(",") if d]
    if not kinds or set(kinds) - set(nb.DTYPES):
        raise click.UsageError(f"--dtypes takes {', '.join(nb.DTYPES)}, got {dtypes!r}")
    regimes = [c for c in caches.split(",") if c]
    if not regimes or set(regimes) - set(nb.CACHES):
        raise click.UsageError(f"--caches takes {', '.join(nb.CACHES)}, got {caches!r}")
    malformed = [w for w in weights if "=" not in w]
    if malformed:
        raise click.UsageError(f"--weights takes NAME=FILE, got {malformed[0]!r}")
    _positive(rounds=rounds, num_runs=num_runs)
    import_tensorflow_quietly()
    from benchmarks.host.timing import Schedule

    schedule = Schedule(rounds, num_runs, tuple(_int_list("threads", threads)), tuple(regimes))
    _, md = nb.run(chosen, tuple(kinds), schedule, input_size=input_size, out=out, calib=calib,
                   weights=dict(w.split("=", 1) for w in weights), layers=not no_layers, gpu=not no_gpu_check,
                   gpu_timing=gpu_timing)
    click.echo(md)


@main.command()
@click.option("--num-runs", "--num_runs", "num_runs", type=int, default=100, show_default=True)
@click.option("--threads", default="1,2", show_default=True)
@click.option("--out", default="runs/layer_bench", show_default=True, type=click.Path())
@cli_errors
def layers(num_runs, threads, out):
    """One involution layer per strategy against a DepthwiseConv2D and the MUL+ADD floor, float32 and int8:
    layer_bench.md/.json in --out."""
    require_tensorflow()  # a board: say what to install before judging the arguments
    _positive(num_runs=num_runs)
    import_tensorflow_quietly()
    from benchmarks.host.layer_bench import run

    run(num_runs, out, threads=_int_list("threads", threads))
    with open(os.path.join(out, "layer_bench.md")) as f:
        click.echo(f.read())


if __name__ == "__main__":
    main()
