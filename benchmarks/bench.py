"""Latency, memory and size of a .tflite model on the device's runtime: the library behind invo-bench."""

import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

from benchmarks import runtime as rt


def _rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def spread(values):
    """{median, min, max} of per-round figures: the spread a timing on a shared machine needs beside it."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine_description():
    """CPU model, cores and architecture, for the heading of a table of timings."""
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {platform.machine()}"


def _percentile(sorted_ms, p):
    k = (len(sorted_ms) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(sorted_ms) - 1)
    return sorted_ms[f] + (k - f) * (sorted_ms[c] - sorted_ms[f])


class Progress:
    """A one-line progress bar on stderr, shown only for runs longer than a second."""

    def __init__(self, label, total, enabled=True):
        self.label, self.total, self.enabled = label, total, enabled and sys.stderr.isatty()
        self.start, self.shown = time.perf_counter(), False

    def update(self, done):
        if self.enabled and time.perf_counter() - self.start > 1.0 and (done % 10 == 0 or done == self.total):
            width = 30
            fill = int(width * done / max(self.total, 1))
            sys.stderr.write(f"\r{self.label[:40]:<40} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total}")
            sys.stderr.flush()
            self.shown = True

    def close(self):
        if self.shown:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def load_input_file(path, runner):
    """Inputs from ``.npy`` (one input) or ``.npz``, checked against the model.

    An ``.npz`` names each input by its tensor name or its signature name (``input_0``...), or by position
    (``arr_0``..., what ``np.savez(f, a, b)`` writes; position i is the model's i-th input).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such input file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npy/.npz file ({type(exc).__name__})") from None
    if isinstance(data, np.ndarray):
        arrays = [data]
    else:
        keys = [next((n for n in (d["name"], d.get("signature_name")) if n in data.files), f"arr_{i}")
                for i, d in enumerate(runner.inputs)]
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"{path}: missing input array(s) {missing}; found {data.files}")
        arrays = [data[k] for k in keys]
    arrays = [a[None] if list(a.shape) == list(d["shape"])[1:] else a  # one sample without the batch axis
              for a, d in zip(arrays, runner.inputs)]
    return runner.check_inputs(arrays)


def _preflight_gpu(path):
    """Compiles on the GPU in a child process first: some GPU drivers kill the process on ops they cannot run."""
    from benchmarks.gpu_check import _run_child

    r = _run_child([os.path.abspath(path), "--compile-only"], None, timeout=300)
    if r.get("crashed"):
        raise rt.RuntimeUnavailable(f"{path}: the GPU accelerator crashes while compiling this model; "
                                    "'invo-convert --report' names the ops it cannot take")


def benchmark(path, *, runtime=None, use_gpu=False, num_threads=1, warmup_runs=1, num_runs=50, min_secs=1.0,
              max_secs=150.0, use_xnnpack=True, delegate=None, input_file=None, require_full_delegation=False,
              gpu_fallback=False, progress=True):
    """Benchmarks one model the way TFLite's benchmark_model does; returns a dict of figures (ms, KB)."""
    if num_runs < 1:
        raise ValueError(f"--num_runs must be at least 1, got {num_runs}")
    if warmup_runs < 0:
        raise ValueError(f"--warmup_runs must be 0 or more, got {warmup_runs}")
    if num_threads < 1:
        raise ValueError(f"--num_threads must be at least 1, got {num_threads}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    runtime = runtime or rt.pick_runtime(use_gpu, delegate)
    if use_gpu and runtime == "litert-compiled":
        _preflight_gpu(path)
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    runner = rt.load(path, runtime, use_gpu=use_gpu, num_threads=num_threads, use_xnnpack=use_xnnpack,
                     delegate=delegate, gpu_fallback=gpu_fallback)
    init_ms = (time.perf_counter() - t0) * 1000
    if require_full_delegation and not runner.fully_delegated:
        raise rt.RuntimeUnavailable(f"{path}: not fully delegated to {runner.accelerator} (--require_full_delegation)")
    arrays = load_input_file(input_file, runner) if input_file else rt.random_inputs(runner.inputs)
    arrays = runner.check_inputs(arrays)
    runner.set_inputs(arrays)

    t = time.perf_counter()
    runner.run()
    first_ms = (time.perf_counter() - t) * 1000
    warm = []
    for _ in range(warmup_runs):
        t = time.perf_counter()
        runner.run()
        warm.append((time.perf_counter() - t) * 1000)

    times = []
    bar = Progress(os.path.basename(path), num_runs, progress)
    start = time.perf_counter()
    # Like benchmark_model: at least num_runs and min_secs, at most max_secs.
    while True:
        t = time.perf_counter()
        runner.run()  # synchronous: CompiledRunner reads the outputs back inside run()
        times.append((time.perf_counter() - t) * 1000)
        bar.update(len(times))
        elapsed = time.perf_counter() - start
        if (len(times) >= num_runs and elapsed >= min_secs) or elapsed >= max_secs:
            break
    bar.close()
    s = sorted(times)
    rss1 = _rss_kb()
    if hasattr(runner, "close"):
        runner.close()
    return {
        "model": path,
        "file_kb": os.path.getsize(path) / 1024,
        "runtime": runner.runtime,
        "accelerator": runner.accelerator,
        "fully_delegated": bool(runner.fully_delegated),
        "num_threads": num_threads,
        "input_dtype": runner.inputs[0]["dtype"] if runner.inputs else None,
        "init_ms": init_ms,
        "first_ms": first_ms,
        "warmup_avg_ms": statistics.mean(warm) if warm else None,
        "num_runs": len(times),
        "median_ms": statistics.median(times),
        "p90_ms": _percentile(s, 90),
        "p99_ms": _percentile(s, 99),
        "mean_ms": statistics.mean(times),
        "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min_ms": s[0],
        "max_ms": s[-1],
        "peak_rss_kb": rss1,
        "rss_growth_kb": rss1 - rss0,
    }
