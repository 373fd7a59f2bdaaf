"""invo-bench: size and latency of .tflite models on this device's CPU and GPU (no TensorFlow needed).

    invo-bench model.tflite [more.tflite ...] [--num_threads 2] [--use_gpu] [--json out.json]
"""

import csv
import os
import sys

import click

from benchmarks.runtime import FP16_ALLOWED, PRECISIONS, RUNTIMES, SWIFTSHADER_ICD
from invo_base.plumbing import cli_errors, json_text, write_atomic

# Every figure, for --json and --csv; the terminal table shows TABLE_COLUMNS, in about 100 columns.
COLUMNS = [("model", "model", "{}"), ("runtime", "runtime", "{}"), ("accelerator", "accel", "{}"),
           ("fully_delegated", "full", "{}"), ("num_threads", "thr", "{}"), ("precision_ran", "prec", "{}"),
           ("file_kb", "size KB", "{:.1f}"), ("init_ms", "init ms", "{:.1f}"), ("first_ms", "first ms", "{:.2f}"),
           ("median_ms", "median ms", "{:.3f}"), ("p90_ms", "p90", "{:.3f}"), ("p99_ms", "p99", "{:.3f}"),
           ("mean_ms", "mean", "{:.3f}"), ("std_ms", "std", "{:.3f}"), ("min_ms", "min", "{:.3f}"),
           ("max_ms", "max", "{:.3f}"), ("num_runs", "runs", "{}"), ("peak_rss_kb", "peak RSS KB", "{}"),
           ("rss_growth_kb", "RSS +KB", "{}"), ("peak_activations_kb", "act KB", "{:.1f}"),
           ("accelerator_ok", "out", "{}")]
TABLE_COLUMNS = ("model", "accelerator", "fully_delegated", "accelerator_ok", "num_threads", "precision_ran", "file_kb",
                 "init_ms", "median_ms", "p90_ms", "min_ms", "num_runs")
# The table's short names for the runner's accelerator (the JSON and CSV keep the full ones).
SHORT_ACCELERATOR = {"CPU (XNNPACK)": "XNNPACK", "CPU (builtin kernels)": "builtin", "GPU (emulated)": "GPU*",
                     "CPU (no GPU: fallback)": "no GPU"}


def precision_ran(r):
    """What the CPU computed in, as measured: fp16, fp32, or '-' (integer outputs, GPU, not measured)."""
    if r.get("fp16_ran") is None:
        return "fp16?" if r.get("precision") == "fp16" else "-"
    return "fp16" if r["fp16_ran"] else "fp32"


def accelerator_ok(r):
    """Whether a GPU, delegate or FP16 run computed what float32 on the CPU does on the benchmark's input (within
    the allowance of each): ok, WRONG, or '-' (a float32 or int8 CPU run, nothing to compare)."""
    if r.get("wrong_numbers"):
        return "WRONG"
    return "ok" if r.get("accelerator_check") or r.get("fp16_ran") else "-"


def _precision_cell(r):
    """The table's prec cell: FP16 that this CPU emulates is marked (footnote), as an emulated GPU is."""
    ran = precision_ran(r)
    return ran + "*" if ran == "fp16" and r.get("fp16_arithmetic") == "emulated" else ran


def format_table(results):
    """Several models side by side, one row each, in about 100 columns beside the names (every figure: --json /
    --csv)."""
    by_key = {c[0]: c for c in COLUMNS}
    cols = [by_key[k] for k in TABLE_COLUMNS]
    rows = [[h for _, h, _ in cols]]
    for r in results:
        accelerator = r.get("accelerator") or "-"
        r = dict(r, precision_ran=_precision_cell(r), accelerator_ok=accelerator_ok(r),
                 accelerator=SHORT_ACCELERATOR.get(accelerator, accelerator))
        r["model"] = os.path.basename(r["model"])  # whole: names differ at the end (-int8, -fp16)
        rows.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(cell.rjust(width) if col else cell.ljust(width)  # the model name left-aligned, figures right
                       for col, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    if any("*" in row[1] for row in rows[1:]):
        lines.append("* emulated GPU (SwiftShader): outputs are real GPU-path results, timings are not GPU speed")
    more = [r for r in results if r.get("num_runs_asked") and r["num_runs"] > r["num_runs_asked"]]
    if more:
        lines.append(f"runs: at least --num_runs ({more[0]['num_runs_asked']}) and --min_secs ({more[0]['min_secs']:g} s), "
                     "as benchmark_model does: fast models run more")
    if any(row[TABLE_COLUMNS.index("precision_ran")] == "fp16*" for row in rows[1:]):
        lines.append("fp16* emulated FP16: this CPU has no FP16 arithmetic (x86 without AVX512-FP16), so XNNPACK "
                     "converts around every op: FP16's outputs, timings slower than float32's and not FP16 speed")
    return "\n".join(lines)


def write_csv(results, path):
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _, _ in COLUMNS] + ["warmup_avg_ms", "input_dtype", "cache",
                                                                  "fp16_arithmetic"])
    w.writeheader()
    for r in results:
        derived = {"precision_ran": precision_ran(r), "accelerator_ok": accelerator_ok(r)}
        w.writerow({k: derived[k] if k in derived else r.get(k) for k in w.fieldnames})
    write_atomic(path, buf.getvalue())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--runtime", type=click.Choice((*RUNTIMES, "tflite-micro")),
              help="Default: ai-edge-litert if present, else tflite-runtime. 'tflite-micro': TFLite Micro's "
                   "interpreter (pip install '.[micro]'): the arena the model needs on a microcontroller, its flash, "
                   "and its outputs against LiteRT's kernels (exit 1 past 1 int8 step).")
@click.option("--num_threads", default=1, show_default=True, type=int)
@click.option("--warmup_runs", default=1, show_default=True, type=int)
@click.option("--num_runs", default=50, show_default=True, type=int)
@click.option("--min_secs", default=1.0, show_default=True, type=float)
@click.option("--max_secs", default=150.0, show_default=True, type=float)
@click.option("--use_gpu", is_flag=True, help="LiteRT GPU accelerator (or --delegate on tflite-runtime).")
@click.option("--gpu_fallback", is_flag=True, help="With --use_gpu: let ops the GPU refuses run on the CPU.")
@click.option("--gpu_precision_loss_allowed", type=bool, default=True, show_default=True,
              help="With --use_gpu: the GPU may compute in FP16, as phones' GPUs do by default; false: float32 "
                   "(LiteRT's enforce_f32). The 'prec' column says what the GPU computed in, measured against "
                   "the CPU.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="default", show_default=True,
              help="CPU arithmetic for float ops: 'default' (float32, or FP16 where the file's metadata allows it and "
                   "the CPU has FP16), 'fp16' (XNNPACK forced to FP16; ai-edge-litert only). The 'prec' column "
                   "says what ran, measured against float32 reference kernels, and 'out' whether an FP16 result "
                   "stayed within FP16's rounding of them.")
@click.option("--evict_cache_mb", default=0, show_default=True, type=int,
              help="Write a buffer of this many MB before every timed run, so each run starts with cold caches "
                   "(a phone's few MB of cache keep no model between runs); 0: runs back to back, caches warm.")
@click.option("--use_xnnpack", type=bool, default=True, show_default=True, help="XNNPACK on the Interpreter runtimes.")
@click.option("--delegate", type=click.Path(), help="External delegate library (.so), e.g. the device's GPU delegate.")
@click.option("--require_full_delegation", is_flag=True)
@click.option("--check_gpu", is_flag=True,
              help="Before timing, run each model once on the CPU and once on the GPU accelerator with the same "
                   "input; exit 1, naming the largest difference, when the GPU output is wrong (floats: 1e-3 of "
                   f"the output's largest magnitude, or FP16's {FP16_ALLOWED} where the GPU in float32 agrees; "
                   "int8: in quantization steps) or the GPU refuses part of it.")
@click.option("--input", "input_file", type=click.Path(), help=".npy (one input) or .npz; default random data.")
@click.option("--json", "json_path", type=click.Path(), help="Write the figures as JSON.")
@click.option("--csv", "csv_path", type=click.Path(), help="Write the figures as CSV.")
@click.option("--quiet", is_flag=True, help="No table, no progress bar.")
@cli_errors
def bench(models, check_gpu, json_path, csv_path, quiet, **settings):
    """Benchmark one or more .tflite MODELS in the vocabulary of TFLite's benchmark_model.

    Runs where TensorFlow is absent (ai-edge-litert or tflite-runtime, and numpy); the host-side reports
    that also build and convert models are 'invo-report'.
    """
    if settings["runtime"] == "tflite-micro":
        return _micro(models, settings, json_path, quiet)
    from benchmarks.bench import BenchOptions, benchmark, gpu_correctness

    options = BenchOptions(**settings)  # the flags' names are its fields
    if check_gpu:
        for m in models:
            click.echo(gpu_correctness(m, options.input_file, options.gpu_precision_loss_allowed), err=True)
    results = [benchmark(m, options, progress=not quiet) for m in models]
    for r in results:
        if r["wrong_numbers"]:
            click.echo(f"warning: {r['wrong_numbers']}; its timing is of wrong numbers"
                       + (" (--check_gpu makes this an error)" if r.get("accelerator_check") else ""), err=True)
    if json_path:
        write_atomic(json_path, json_text(results))
    if csv_path:
        write_csv(results, csv_path)
    if not quiet:
        click.echo(format_table(results))
        if any(r.get("swiftshader_fallback") for r in results):
            click.echo(f"note: no Vulkan driver configured (VK_ICD_FILENAMES): the GPU ran on SwiftShader, "
                       f"{SWIFTSHADER_ICD}")


def _micro(models, settings, json_path, quiet):
    """--runtime tflite-micro: each model's arena, flash and check against LiteRT; exit 1 when one is wrong."""
    from benchmarks.bench import BenchOptions, load_input_file
    from benchmarks.micro import format_micro, micro_benchmark

    defaults = BenchOptions()
    given = [f"--{k}" for k in ("use_gpu", "delegate", "precision", "gpu_fallback", "evict_cache_mb")
             if settings[k] != getattr(defaults, k)]
    if given:
        raise ValueError(f"--runtime tflite-micro runs on this CPU's TFLM kernels: {', '.join(given)} do not apply")
    results = []
    for m in models:
        arrays = None
        if settings["input_file"]:
            from benchmarks.runtime import load

            arrays = load_input_file(settings["input_file"], load(m, "litert"))
        results.append(micro_benchmark(m, num_runs=settings["num_runs"], input_file_arrays=arrays))
    if json_path:
        write_atomic(json_path, json_text(results))
    if not quiet:
        click.echo(format_micro(results))
    wrong = [r for r in results if not r["ok"]]
    if wrong:
        raise ValueError(f"{wrong[0]['model']}: TFLite Micro's outputs differ from LiteRT's {wrong[0]['checked_against']} "
                         f"kernels by {wrong[0].get('max_steps', wrong[0].get('max_rel_error')):g}"
                         f"{' int8 steps' if 'max_steps' in wrong[0] else ' of the output scale'}")


def main(argv=None):
    return bench(sys.argv[1:] if argv is None else argv, prog_name="invo-bench")


if __name__ == "__main__":
    main()
