"""invo-bench: size and latency of .tflite models on this device's CPU and GPU (no TensorFlow needed).

    invo-bench model.tflite [more.tflite ...] [--num_threads 2] [--use_gpu] [--json out.json]
"""

import csv
import json
import os
import sys

import click

from benchmarks.plumbing import cli_errors, write_atomic
from benchmarks.runtime import RUNTIMES

COLUMNS = [("model", "model", "{}"), ("runtime", "runtime", "{}"), ("accelerator", "accel", "{}"),
           ("fully_delegated", "full", "{}"), ("num_threads", "thr", "{}"), ("file_kb", "size KB", "{:.1f}"),
           ("init_ms", "init ms", "{:.1f}"), ("first_ms", "first ms", "{:.2f}"), ("median_ms", "median ms", "{:.3f}"),
           ("p90_ms", "p90", "{:.3f}"), ("p99_ms", "p99", "{:.3f}"), ("mean_ms", "mean", "{:.3f}"),
           ("std_ms", "std", "{:.3f}"), ("min_ms", "min", "{:.3f}"), ("max_ms", "max", "{:.3f}"),
           ("num_runs", "runs", "{}"), ("peak_rss_kb", "peak RSS KB", "{}"), ("rss_growth_kb", "RSS +KB", "{}")]


def format_table(results):
    """Several models side by side: one row each."""
    rows = [[h for _, h, _ in COLUMNS]]
    for r in results:
        rows.append([fmt.format(os.path.basename(r[k]) if k == "model" else r[k]) if r.get(k) is not None else "-"
                     for k, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) if col else cell.ljust(width)  # the model name left-aligned, figures right
                       for col, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_csv(results, path):
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _, _ in COLUMNS] + ["warmup_avg_ms", "input_dtype"])
    w.writeheader()
    for r in results:
        w.writerow({k: r.get(k) for k in w.fieldnames})
    write_atomic(path, buf.getvalue())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--runtime", type=click.Choice(RUNTIMES), help="Default: ai-edge-litert if present, else tflite-runtime.")
@click.option("--num_threads", default=1, show_default=True, type=int)
@click.option("--warmup_runs", default=1, show_default=True, type=int)
@click.option("--num_runs", default=50, show_default=True, type=int)
@click.option("--min_secs", default=1.0, show_default=True, type=float)
@click.option("--max_secs", default=150.0, show_default=True, type=float)
@click.option("--use_gpu", is_flag=True, help="LiteRT GPU accelerator (or --delegate on tflite-runtime).")
@click.option("--gpu_fallback", is_flag=True, help="With --use_gpu: let ops the GPU refuses run on the CPU.")
@click.option("--use_xnnpack", type=bool, default=True, show_default=True, help="XNNPACK on the Interpreter runtimes.")
@click.option("--delegate", type=click.Path(), help="External delegate library (.so), e.g. the device's GPU delegate.")
@click.option("--require_full_delegation", is_flag=True)
@click.option("--input", "input_file", type=click.Path(), help=".npy (one input) or .npz; default random data.")
@click.option("--json", "json_path", type=click.Path(), help="Write the figures as JSON.")
@click.option("--csv", "csv_path", type=click.Path(), help="Write the figures as CSV.")
@click.option("--quiet", is_flag=True, help="No table, no progress bar.")
@cli_errors
def bench(models, runtime, num_threads, warmup_runs, num_runs, min_secs, max_secs, use_gpu, gpu_fallback,
          use_xnnpack, delegate, require_full_delegation, input_file, json_path, csv_path, quiet):
    """Benchmark one or more .tflite MODELS in the vocabulary of TFLite's benchmark_model.

    Runs where TensorFlow is absent (ai-edge-litert or tflite-runtime, and numpy); the host-side reports
    that also build and convert models are 'invo-report'.
    """
    from benchmarks.bench import benchmark

    results = [benchmark(m, runtime=runtime, use_gpu=use_gpu, num_threads=num_threads, warmup_runs=warmup_runs,
                         num_runs=num_runs, min_secs=min_secs, max_secs=max_secs, use_xnnpack=use_xnnpack,
                         delegate=delegate, input_file=input_file, require_full_delegation=require_full_delegation,
                         gpu_fallback=gpu_fallback, progress=not quiet)
               for m in models]
    if json_path:
        write_atomic(json_path, json.dumps(results, indent=2))
    if csv_path:
        write_csv(results, csv_path)
    if not quiet:
        click.echo(format_table(results))
        if any("emulated" in (r["accelerator"] or "") for r in results):
            click.echo("note: GPU runs on a software Vulkan (SwiftShader): outputs are real, timings are not GPU speed")


def main(argv=None):
    return bench(sys.argv[1:] if argv is None else argv, prog_name="invo-bench")


if __name__ == "__main__":
    main()
