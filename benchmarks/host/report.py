"""The deployment report: seed conv vs involution CIFAR models, float32 vs int8, CPU threads vs GPU.

    invo-report deployment [--train-dir runs/compare] [--out runs/report]

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
import time

from benchmarks.bench import benchmark, machine_description, spread
from benchmarks.host.timing import Schedule, fmt_spread, interleaved
from benchmarks.runtime import RuntimeUnavailable, gpu_is_emulated
from invo_base.plumbing import json_text, one_line, write_atomic

MODELS = ("seed-conv", "seed-involution")


def _model_files(train_dir, epochs, out):
    """Model files: from an ``invo-train --compare`` directory, or trained here on the offline digits."""
    if train_dir:
        paths = {m: os.path.join(train_dir, m, "model.keras") for m in MODELS}
        missing = [p for p in paths.values() if not os.path.exists(p)]
        if missing:
            raise ValueError(f"{missing[0]}: not found; --train-dir takes an 'invo-train --compare' output")
        return paths
    from involution.train import train

    target = os.path.join(out, "train")
    train("seed-involution", "digits", epochs=epochs, batch_size=64, out=target, compare=True, force=True, quiet=True)
    return {m: os.path.join(target, m, "model.keras") for m in MODELS}


def trust_check(path, num_runs=200, num_threads=1, rounds=3):
    """invo-bench vs ai_edge_litert/tools/benchmark_litert_model.py on the same model, alternated over rounds.

    Returns both tools' per-round medians and the ratio of their medians with its spread over rounds.
    """
    cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", path,
           "--num_runs", str(num_runs), "--warmup_runs", "20", "--num_threads", str(num_threads)]
    ours, theirs = [], []
    for _ in range(rounds):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        found = re.search(r"Inference \(median\):\s+([\d.]+) ms", proc.stdout)
        if not found:
            return {"model": os.path.basename(path), "error": f"benchmark_litert_model gave no median (exit {proc.returncode})"}
        theirs.append(float(found.group(1)))
        ours.append(benchmark(path, runtime="litert-compiled", num_threads=num_threads, warmup_runs=20, num_runs=num_runs,
                              min_secs=0, progress=False)["median_ms"])
    return {"model": os.path.basename(path), "invo_bench_ms": spread(ours), "benchmark_litert_model_ms": spread(theirs),
            "ratio": spread([a / b for a, b in zip(ours, theirs)]),
            "ratio_of_medians": spread(ours)["median"] / spread(theirs)["median"]}


def _dataset_name(train_dir):
    """The data the models were trained on, from invo-train's results.json ('digits' when trained here)."""
    try:
        with open(os.path.join(train_dir, "results.json")) as f:
            return json.load(f).get("dataset") or "?"
    except (OSError, ValueError, TypeError):
        return "digits" if train_dir is None else "?"


def build_report(train_dir=None, out="runs/report", epochs=15, num_runs=200, threads=(1, 2), gpu=True, rounds=3,
                 progress=None):
    """Converts each model (float32, int8), then times every file in ``rounds`` interleaved rounds.

    ``progress``: a callable taking one-line messages (each step says what it does)."""
    from convert.api import convert_model

    say = progress or (lambda msg: None)
    os.makedirs(out, exist_ok=True)
    if not train_dir:
        say(f"training seed-conv and seed-involution on digits ({epochs} epochs)")
    paths = _model_files(train_dir, epochs, out)
    rows = []
    for name, keras_path in paths.items():
        for quant in ("none", "int8"):
            say(f"converting {name} to {'int8' if quant == 'int8' else 'float32'} and checking it on every "
                "validation sample")
            target = os.path.join(out, f"{name}_{'int8' if quant == 'int8' else 'float32'}.tflite")
            conv = convert_model(keras_path, target, quantize=quant, calib="digits", force=True, gpu=False,
                                 verify_samples=100_000)  # every validation sample
            rows.append({"model": name, "dtype": "int8" if quant == "int8" else "float32", "file": target,
                         "file_kb": os.path.getsize(target) / 1024, "params": conv["audit"]["parameters"],
                         "top1": conv["verify"].get("top1_tflite"), "top1_keras": conv["verify"].get("top1_keras"),
                         "validation_samples": conv["verify"]["samples"]})
    say(f"timing {len(rows)} files on the CPU, {len(threads)} thread counts x {rounds} interleaved rounds of "
        f"{num_runs} runs")
    per_round = interleaved([(row["file"], row["file"]) for row in rows],
                            Schedule(rounds, num_runs, tuple(threads), warmup_runs=10))
    for row in rows:
        for t in threads:
            row[f"cpu_{t}t"] = spread(per_round[row["file"], t, "warm"])
            row[f"cpu_{t}t_ms"] = row[f"cpu_{t}t"]["median"]
        row["gpu_ms"], row["gpu"] = None, "no GPU"
        if gpu:
            say(f"running {os.path.basename(row['file'])} on the LiteRT GPU accelerator")
            try:
                r = benchmark(row["file"], runtime="litert-compiled", use_gpu=True, warmup_runs=10, num_runs=max(20, num_runs // 5),
                              min_secs=0, progress=False)
                row["gpu_ms"] = r["median_ms"]
                row["gpu"] = (("emulated" if gpu_is_emulated() else "GPU") + ("" if r["fully_delegated"] else ", partial")
                              + (", WRONG outputs" if r["wrong_numbers"] else ""))
            except RuntimeUnavailable as exc:
                row["gpu"] = f"no GPU ({one_line(exc, 60)})"
    int8 = [r["file"] for r in rows if r["dtype"] == "int8"]
    say("timing the int8 files with the runtime's own benchmark_litert_model too (trust check)")
    trust = [trust_check(f, num_runs, rounds=rounds) for f in int8]
    samples = sorted({r["validation_samples"] for r in rows})  # one split, so one count
    report = {"rows": rows, "trust": trust, "validation_samples": " / ".join(map(str, samples)), "gpu_emulated": gpu_is_emulated(), "machine": machine_description(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": rounds, "num_runs": num_runs,
              "dataset": _dataset_name(train_dir or os.path.join(out, "train"))}
    write_atomic(os.path.join(out, "report.json"), json_text(report))
    write_atomic(os.path.join(out, "report.md"), markdown(report, threads))
    charts(rows, threads, out, report["dataset"])
    return report


def markdown(report, threads=(1, 2)):
    rows = report["rows"]
    emulated = report["gpu_emulated"]
    gpu_head = "GPU ms (emulated, not speed)" if emulated else "GPU ms"
    lines = [f"Measured on {report['machine']}, {report['date']}; ai-edge-litert, XNNPACK; CPU times are the median "
             f"of {report['rounds']} interleaved rounds of {report['num_runs']} runs (min-max over rounds); top-1 on "
             f"the {report['validation_samples']} validation samples, which no model was trained on.", "",
             "| model | dtype | params | file KB | top-1 | " + " | ".join(f"CPU {t} thr ms" for t in threads)
             + f" | {gpu_head} |", "|" + "---|" * (6 + len(threads))]
    for r in rows:
        top1 = f"{r['top1']:.3f}" if r["top1"] is not None else "-"
        gpu = f"{r['gpu_ms']:.2f} ({r['gpu']})" if r["gpu_ms"] is not None else r["gpu"]
        lines.append(f"| {r['model']} | {r['dtype']} | {r['params']:,} | {r['file_kb']:.1f} | {top1} | "
                     + " | ".join(fmt_spread(r[f"cpu_{t}t"], 3) for t in threads) + f" | {gpu} |")
    by = {(r["model"], r["dtype"]): r for r in rows}
    conv, inv = by[("seed-conv", "float32")], by[("seed-involution", "float32")]
    conv8, inv8 = by[("seed-conv", "int8")], by[("seed-involution", "int8")]
    t = threads[0]

    def ratio(a, b):  # of medians, with the range of per-round ratios' extremes
        sa, sb = a[f"cpu_{t}t"], b[f"cpu_{t}t"]
        return f"{sa['median'] / sb['median']:.2f}x ({sa['min'] / sb['max']:.2f}-{sa['max'] / sb['min']:.2f})"

    lines += ["", f"Ratios of medians in this run (CPU, {t} thread; in brackets the extremes the rounds allow):",
              f"- file size, involution vs conv: {inv['file_kb'] / conv['file_kb']:.3f}x float32, "
              f"{inv8['file_kb'] / conv8['file_kb']:.3f}x int8",
              f"- latency, involution vs conv: {ratio(inv, conv)} float32, {ratio(inv8, conv8)} int8",
              f"- int8 speed-up over float32: conv {ratio(conv, conv8)}, involution {ratio(inv, inv8)}"]
    if emulated:
        lines.append("- GPU: SwiftShader (software Vulkan): outputs are checked, timings are no GPU speed and are not compared")
    lines += ["", f"invo-bench vs the runtime's own benchmark_litert_model.py (CompiledModel CPU, 1 thread), the two "
              f"alternated over {report['rounds']} rounds:"]
    for tr in report["trust"]:
        if "error" in tr:
            lines.append(f"- {tr['model']}: {tr['error']}")
        else:
            lines.append(f"- {tr['model']}: {fmt_spread(tr['invo_bench_ms'], 3)} ms vs {fmt_spread(tr['benchmark_litert_model_ms'], 3)} ms; "
                         f"ratio of medians {tr['ratio_of_medians']:.3f}, per-round ratios "
                         f"{tr['ratio']['min']:.3f}-{tr['ratio']['max']:.3f}")
    return "\n".join(lines) + "\n"


def charts(rows, threads, out, dataset="digits"):
    from involution.plots import pyplot

    plt = pyplot()
    import numpy as np

    labels = [f"{r['model'].replace('seed-', '')}\n{r['dtype']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(threads)
    for k, t in enumerate(threads):
        ax.bar(x + (k - (len(threads) - 1) / 2) * width, [r[f"cpu_{t}t_ms"] for r in rows], width, label=f"CPU {t} thread{'s' * (t > 1)}")
    ax.set_xticks(x, labels)
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"Seed models trained on {dataset}: CPU latency, ai-edge-litert (XNNPACK)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency.png"), dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x, [r["file_kb"] for r in rows], color=["tab:blue", "tab:cyan", "tab:orange", "tab:red"][: len(rows)])
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel(".tflite size (KB, log scale)")
    ax.set_title(f"Seed models trained on {dataset}: .tflite file size", fontsize=10)
    for xi, r in zip(x, rows):
        ax.text(xi, r["file_kb"], f"{r['file_kb']:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "size.png"), dpi=100)
    plt.close(fig)
