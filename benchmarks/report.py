"""The deployment report: seed conv vs involution CIFAR models, float32 vs int8, CPU threads vs GPU.

    invo-bench report [--train-dir runs/compare] [--out runs/report]
    python -m benchmarks.report ...

Host side: it converts (TensorFlow, imported inside) and then times the .tflite
files with the same code invo-bench runs on a device.  A GPU reached through a
software Vulkan (SwiftShader) is labelled "emulated": its outputs are real, its
timings are not GPU speed, and no ratio is drawn from them.
"""

import json
import os
import re
import subprocess
import sys

import click

from benchmarks.bench import benchmark
from benchmarks.errors import cli_errors
from benchmarks.files import write_atomic
from benchmarks.runtime import RuntimeUnavailable, gpu_is_emulated

MODELS = ("seed-conv", "seed-involution")


def _train(train_dir, epochs, out):
    """Model files: from an ``invo-train --compare`` directory, or trained here on the offline digits."""
    if train_dir:
        paths = {m: os.path.join(train_dir, m, "model.keras") for m in MODELS}
        missing = [p for p in paths.values() if not os.path.exists(p)]
        if missing:
            raise click.ClickException(f"{missing[0]}: not found; --train-dir takes an 'invo-train --compare' output")
        return paths
    from involution.train import train

    target = os.path.join(out, "train")
    train("seed-involution", "digits", epochs=epochs, batch_size=64, out=target, compare=True, force=True, quiet=True)
    return {m: os.path.join(target, m, "model.keras") for m in MODELS}


def trust_check(path, num_runs=200, num_threads=1):
    """Median of invo-bench vs ai_edge_litert/tools/benchmark_litert_model.py on the same model, same run."""
    cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", path,
           "--num_runs", str(num_runs), "--warmup_runs", "20", "--num_threads", str(num_threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = re.search(r"Inference \(median\):\s+([\d.]+) ms", proc.stdout)
    if not found:
        return {"error": f"benchmark_litert_model gave no median (exit {proc.returncode})"}
    theirs = float(found.group(1))
    ours = benchmark(path, "litert-compiled", num_threads=num_threads, warmup_runs=20, num_runs=num_runs, min_secs=0,
                     progress=False)["median_ms"]
    return {"model": os.path.basename(path), "invo_bench_median_ms": ours, "benchmark_litert_model_median_ms": theirs,
            "ratio": ours / theirs}


def build_report(train_dir=None, out="runs/report", epochs=15, num_runs=200, threads=(1, 2), gpu=True):
    from convert.api import convert_model

    os.makedirs(out, exist_ok=True)
    paths = _train(train_dir, epochs, out)
    rows = []
    for name, keras_path in paths.items():
        for quant in ("none", "int8"):
            target = os.path.join(out, f"{name}_{'int8' if quant == 'int8' else 'float32'}.tflite")
            conv = convert_model(keras_path, target, quantize=quant, calib="digits", force=True, gpu=False)
            base = {"model": name, "dtype": "int8" if quant == "int8" else "float32", "file": target,
                    "file_kb": os.path.getsize(target) / 1024, "params": conv["audit"]["parameters"],
                    "top1": conv["verify"].get("top1_tflite"), "top1_keras": conv["verify"].get("top1_keras")}
            for t in threads:
                r = benchmark(target, "litert", num_threads=t, warmup_runs=10, num_runs=num_runs, min_secs=0,
                              progress=False)
                base[f"cpu_{t}t_ms"] = r["median_ms"]
            base["gpu_ms"], base["gpu"] = None, "no GPU"
            if gpu:
                try:
                    r = benchmark(target, "litert-compiled", use_gpu=True, warmup_runs=10, num_runs=max(20, num_runs // 5),
                                  min_secs=0, progress=False)
                    base["gpu_ms"] = r["median_ms"]
                    base["gpu"] = ("emulated" if gpu_is_emulated() else "GPU") + ("" if r["fully_delegated"] else ", partial")
                except RuntimeUnavailable as exc:
                    base["gpu"] = f"no GPU ({str(exc)[:60]}...)"
            rows.append(base)
    trust = [trust_check(rows[i]["file"], num_runs) for i in (1, 3)]  # conv int8, involution int8
    report = {"rows": rows, "trust": trust, "gpu_emulated": gpu_is_emulated()}
    write_atomic(os.path.join(out, "report.json"), json.dumps(report, indent=2))
    write_atomic(os.path.join(out, "report.md"), markdown(report, threads))
    charts(rows, threads, out)
    return report


def markdown(report, threads=(1, 2)):
    rows = report["rows"]
    emulated = report["gpu_emulated"]
    gpu_head = "GPU ms (emulated, not speed)" if emulated else "GPU ms"
    lines = ["| model | dtype | params | file KB | top-1 | " + " | ".join(f"CPU {t} thr ms" for t in threads)
             + f" | {gpu_head} |", "|" + "---|" * (6 + len(threads))]
    for r in rows:
        top1 = f"{r['top1']:.3f}" if r["top1"] is not None else "-"
        gpu = f"{r['gpu_ms']:.2f} ({r['gpu']})" if r["gpu_ms"] is not None else r["gpu"]
        lines.append(f"| {r['model']} | {r['dtype']} | {r['params']:,} | {r['file_kb']:.1f} | {top1} | "
                     + " | ".join(f"{r[f'cpu_{t}t_ms']:.3f}" for t in threads) + f" | {gpu} |")
    by = {(r["model"], r["dtype"]): r for r in rows}
    c, i = by[("seed-conv", "float32")], by[("seed-involution", "float32")]
    ci, ii = by[("seed-conv", "int8")], by[("seed-involution", "int8")]
    t = threads[0]
    lines += ["", "Ratios measured in this run (CPU, 1 thread):",
              f"- file size, involution vs conv: {i['file_kb'] / c['file_kb']:.3f}x float32, {ii['file_kb'] / ci['file_kb']:.3f}x int8",
              f"- latency, involution vs conv: {i[f'cpu_{t}t_ms'] / c[f'cpu_{t}t_ms']:.2f}x float32, "
              f"{ii[f'cpu_{t}t_ms'] / ci[f'cpu_{t}t_ms']:.2f}x int8",
              f"- int8 speed-up over float32: conv {c[f'cpu_{t}t_ms'] / ci[f'cpu_{t}t_ms']:.2f}x, "
              f"involution {i[f'cpu_{t}t_ms'] / ii[f'cpu_{t}t_ms']:.2f}x"]
    if emulated:
        lines.append("- GPU: SwiftShader (software Vulkan): outputs are checked, timings are no GPU speed and are not compared")
    lines += ["", "invo-bench vs the runtime's own benchmark_litert_model.py (CompiledModel CPU, 1 thread, same run):"]
    for tr in report["trust"]:
        if "error" in tr:
            lines.append(f"- {tr['error']}")
        else:
            lines.append(f"- {tr['model']}: {tr['invo_bench_median_ms']:.3f} ms vs {tr['benchmark_litert_model_median_ms']:.3f} ms "
                         f"(ratio {tr['ratio']:.3f})")
    return "\n".join(lines) + "\n"


def charts(rows, threads, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['model'].replace('seed-', '')}\n{r['dtype']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(threads)
    for k, t in enumerate(threads):
        ax.bar(x + (k - (len(threads) - 1) / 2) * width, [r[f"cpu_{t}t_ms"] for r in rows], width, label=f"CPU {t} thread{'s' * (t > 1)}")
    ax.set_xticks(x, labels)
    ax.set_ylabel("median latency (ms)")
    ax.set_title("seed CIFAR models on ai-edge-litert (XNNPACK)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency.png"), dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x, [r["file_kb"] for r in rows], color=["tab:blue", "tab:cyan", "tab:orange", "tab:red"][: len(rows)])
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel(".tflite size (KB, log scale)")
    for xi, r in zip(x, rows):
        ax.text(xi, r["file_kb"], f"{r['file_kb']:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "size.png"), dpi=100)
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--train-dir", type=click.Path(), help="An 'invo-train --compare' output; default: train here on digits.")
@click.option("--epochs", default=15, show_default=True, type=int, help="Epochs when training here.")
@click.option("--out", default="runs/report", show_default=True, type=click.Path())
@click.option("--num_runs", default=200, show_default=True, type=int)
@click.option("--no-gpu", is_flag=True, help="Skip the GPU column.")
@cli_errors
def main(train_dir, epochs, out, num_runs, no_gpu):
    """Write report.md, report.json, latency.png and size.png into --out."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from benchmarks.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    if num_runs < 1:
        raise click.ClickException(f"--num_runs must be at least 1, got {num_runs}")
    build_report(train_dir, out, epochs, num_runs, gpu=not no_gpu)
    click.echo(open(os.path.join(out, "report.md")).read())


if __name__ == "__main__":
    main()
