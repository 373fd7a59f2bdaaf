"""Latency, memory and size of a .tflite model on the device's runtime: the library behind invo-bench."""

import dataclasses
import functools
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

from benchmarks import runtime as rt
from benchmarks.runtime import FP16_ALLOWED, FP32_AGREEMENT
from invo_base.options import Options


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
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
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
    """Compiles on the GPU in a child process first: some GPU drivers kill the process on ops they cannot run.

    Where no Vulkan driver is configured and the child found a GPU only on SwiftShader (a software Vulkan),
    this process is pointed at SwiftShader too, as ``invo-convert`` does; returns True then.
    """
    from benchmarks.gpu_check import compile_in_child

    r = compile_in_child(path)
    if r.get("crashed"):
        raise rt.RuntimeUnavailable(f"{path}: the GPU accelerator crashes while compiling this model; "
                                    "'invo-convert --report' names the ops it cannot take")
    if r.get("swiftshader_fallback"):  # LiteRT reads the Vulkan driver from the environment only
        os.environ["VK_ICD_FILENAMES"] = rt.SWIFTSHADER_ICD
        return True
    return False


def gpu_correctness(path, input_file=None, fp16_allowed=True):
    """The GPU accelerator's output against the CPU's on one input (``--input`` or random data): a line saying
    so when right, ``RuntimeUnavailable`` naming the largest difference when wrong or refused.  ``fp16_allowed``:
    the GPU may compute in FP16 (``gpu_check``'s rule); False: it is told to compute in float32."""
    from benchmarks.gpu_check import allowed_text, check_gpu, describe_failure, unit_suffix

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    inputs = None
    if input_file:
        inputs = load_input_file(input_file, rt.load(path, "litert-compiled"))
    r = check_gpu(path, inputs, fp16_allowed=fp16_allowed)
    if not r.get("ok"):
        raise rt.RuntimeUnavailable(describe_failure(path, r))
    unit = unit_suffix(r)
    where = "SwiftShader (software Vulkan)" if r.get("emulated") or r.get("swiftshader_fallback") else "the GPU"
    return (f"{os.path.basename(path)}: GPU check ok on {where}: fully accelerated, largest difference from the CPU "
            f"{r['max_abs_error']:.3g}{unit} ({allowed_text(r)})")


def accelerator_check(path, runtime, outputs, arrays, options):
    """A GPU or delegate run's ``outputs`` on ``arrays`` against the same runtime on the CPU, so that a timing of
    wrong numbers never passes silently (``--check_gpu`` makes it an error instead): {ok, max_abs_error,
    allowed_abs_error, unit, worst, precision} (``judge_gpu``).  Called after the timed runs and the memory
    reading, so that the CPU's copy of the model changes neither.  A LiteRT GPU run that may compute in FP16 is
    held to FP16's bound only when the same GPU in float32 agrees with the CPU (compiled again only then)."""
    from benchmarks.gpu_check import gpu_in_float32, judge_gpu, run_once

    cpu = rt.load(path, runtime, num_threads=options.num_threads, use_xnnpack=options.use_xnnpack)
    ref = run_once(cpu, arrays)
    rerun = None
    if options.use_gpu and runtime == "litert-compiled" and options.gpu_precision_loss_allowed:
        rerun = functools.partial(gpu_in_float32, path, arrays)
    judged = judge_gpu(ref, outputs, cpu.model, fp32_outputs=rerun)
    return {"ok": judged.pop("within"), **judged}


def wrong_numbers(result):
    """What is wrong with a timed run that computed other numbers than float32 does, in one line: a GPU or
    delegate against the CPU, an FP16 run past ``FP16_ALLOWED`` of float32 reference kernels; None when
    nothing is."""
    from benchmarks.gpu_check import describe_failure

    measured = result.get("diff_vs_fp32_reference")  # CPU FP16 runs; a GPU's is judged in accelerator_check
    if result.get("fp16_ran") and measured is not None and not measured <= FP16_ALLOWED:
        return (f"{result['model']}: the FP16 run's outputs differ from float32 reference kernels by "
                f"{result['diff_vs_fp32_reference']:.3g} of the output scale (FP16 rounding stays within "
                f"{FP16_ALLOWED}: an overflow past 65504, or rounding that ran away)")
    c = result.get("accelerator_check")
    if not c or c["ok"]:
        return None
    return describe_failure(result["model"], dict(c, available=True, fully_delegated=True))


def float16_measured(path, runner, arrays, outs=None):
    """(FP16 ran?, relative difference): ``runner``'s float outputs on ``arrays`` (``outs``, when it has run them
    already) against TFLite's reference kernels, which compute in float32.  Measured, not assumed: None for
    integer outputs or without an Interpreter runtime to compare with; (None, why) where the reference kernels
    cannot run the model."""
    outs = runner(*arrays) if outs is None else outs
    if not outs or any(o.dtype.kind != "f" for o in outs):
        return None, None
    interp = next((r for r in ("litert", "tflite-runtime") if r in rt.available_runtimes()), None)
    if interp is None:
        return None, None
    from benchmarks.gpu_check import largest_difference

    try:
        reference = rt.InterpreterRunner(path, interp, use_xnnpack=False)
    except rt.RuntimeUnavailable as exc:  # e.g. an op the builtin kernels never finish
        return None, str(exc)
    ref = reference(*arrays)
    scale = max(float(np.max(np.abs(r))) for r in ref) or 1.0
    diff = largest_difference(ref, outs)["abs_error"] / scale  # infinite where FP16 overflowed or gave NaN
    return diff > FP32_AGREEMENT, diff


def _has_fp16_metadata(path):
    from invo_base.tflite_model import TFLiteModel

    return b"fp16" in TFLiteModel.from_file(path).metadata.get("reduced_precision_support", b"")


@dataclasses.dataclass(frozen=True)
class BenchOptions(Options):
    """How one model is run and timed, in benchmark_model's vocabulary (invo-bench's flags)."""

    what = "benchmark option"

    runtime: str = None              # litert, litert-compiled or tflite-runtime; None: the best one present
    use_gpu: bool = False            # the LiteRT GPU accelerator (or ``delegate`` on tflite-runtime)
    # The GPU may compute in FP16, as phones' GPUs do by default (benchmark_model's flag); False: float32.
    gpu_precision_loss_allowed: bool = True
    gpu_fallback: bool = False       # with use_gpu: ops the GPU refuses run on the CPU
    num_threads: int = 1
    warmup_runs: int = 1
    num_runs: int = 50               # at least this many timed runs ...
    min_secs: float = 1.0            # ... and at least this long, at most max_secs
    max_secs: float = 150.0
    use_xnnpack: bool = True
    delegate: str = None             # an external delegate library (.so)
    require_full_delegation: bool = False
    input_file: str = None           # .npy / .npz inputs; None: random
    # "fp16" forces XNNPACK's FP16 inference (ai-edge-litert CompiledModel) and fails when the outputs show
    # it did not run.
    precision: str = "default"
    # Whether an FP16 run is measured against float32 reference kernels (what fp16_ran reports); a timing loop
    # that runs the same file again measures it once (``benchmarks.host.timing``).
    check_fp16: bool = True
    # Before every timed run, write a buffer of this size (larger than the last-level cache) so that each run
    # starts with cold caches, as on a phone whose few MB of cache keep no model between runs; 0: warm.
    evict_cache_mb: int = 0


def benchmark(path, options=None, *, progress=True, **fields):
    """Benchmarks one model the way TFLite's benchmark_model does; returns a dict of figures (ms, KB).

    ``options``: a ``BenchOptions``; ``fields`` replace its fields by name (``benchmark(p, num_threads=2)``).
    """
    o = BenchOptions.of(options, **fields)
    if o.num_runs < 1:
        raise ValueError(f"--num_runs must be at least 1, got {o.num_runs}")
    if o.warmup_runs < 0:
        raise ValueError(f"--warmup_runs must be 0 or more, got {o.warmup_runs}")
    if o.num_threads < 1:
        raise ValueError(f"--num_threads must be at least 1, got {o.num_threads}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such model file")
    if o.evict_cache_mb < 0:
        raise ValueError(f"--evict_cache_mb must be 0 or more, got {o.evict_cache_mb}")
    runtime = o.runtime or ("litert-compiled" if o.precision == "fp16" else rt.pick_runtime(o.use_gpu, o.delegate))
    rt.check_precision(o.precision, runtime)
    swiftshader = o.use_gpu and runtime == "litert-compiled" and _preflight_gpu(path)
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    runner = rt.load(path, runtime, use_gpu=o.use_gpu, num_threads=o.num_threads, use_xnnpack=o.use_xnnpack,
                     delegate=o.delegate, gpu_fallback=o.gpu_fallback, precision=o.precision,
                     gpu_precision_loss_allowed=o.gpu_precision_loss_allowed)
    init_ms = (time.perf_counter() - t0) * 1000
    if o.require_full_delegation and not runner.fully_delegated:
        raise rt.RuntimeUnavailable(f"{path}: not fully delegated to {runner.accelerator} (--require_full_delegation)")
    arrays = load_input_file(o.input_file, runner) if o.input_file else rt.random_inputs(runner.inputs)
    arrays = runner.check_inputs(arrays)
    runner.set_inputs(arrays)

    t = time.perf_counter()
    runner.run()
    first_ms = (time.perf_counter() - t) * 1000
    first_outputs = [np.array(a, copy=True) for a in runner.outputs()]
    fp16, fp16_diff = None, None
    if o.check_fp16 and (o.precision == "fp16" or (not o.use_gpu and o.use_xnnpack and _has_fp16_metadata(path))):
        fp16, fp16_diff = float16_measured(path, runner, arrays, first_outputs)
        if o.precision == "fp16" and fp16 is False:
            raise rt.RuntimeUnavailable(
                f"{path}: FP16 inference did not run (outputs equal float32's to {fp16_diff:.1g}): XNNPACK runs FP16 "
                "on CPUs with FP16 arithmetic (ARMv8.2+, AVX512-FP16) and emulates it on x86 with AVX2; this CPU "
                "has neither, so it computed in float32")
    # A GPU or delegate run's outputs are compared with the CPU's once the timing is done (None: a CPU run).
    accelerated = (o.use_gpu or o.delegate) and not (runner.accelerator or "").startswith("CPU")
    warm = []
    for _ in range(o.warmup_runs):
        t = time.perf_counter()
        runner.run()
        warm.append((time.perf_counter() - t) * 1000)

    # The eviction buffer is allocated after the model's first runs and the RSS read before it, so that
    # peak_rss_kb stays the model's (ru_maxrss is the process's peak).
    rss_model = _rss_kb()
    evict = np.ones(o.evict_cache_mb * (1 << 20) // 8) if o.evict_cache_mb else None
    times = []
    bar = Progress(os.path.basename(path), o.num_runs, progress)
    start = time.perf_counter()
    # Like benchmark_model: at least num_runs and min_secs, at most max_secs.
    while True:
        if evict is not None:
            evict += 1.0  # reads and writes every cache line: the model's weights and activations are evicted
        t = time.perf_counter()
        runner.run()  # synchronous: CompiledRunner reads the outputs back inside run()
        times.append((time.perf_counter() - t) * 1000)
        bar.update(len(times))
        elapsed = time.perf_counter() - start
        if (len(times) >= o.num_runs and elapsed >= o.min_secs) or elapsed >= o.max_secs:
            break
    bar.close()
    s = sorted(times)
    rss1 = rss_model if evict is not None else _rss_kb()
    runner.close()
    check = accelerator_check(path, runtime, first_outputs, arrays, o) if accelerated else None
    if check and check.get("precision"):  # what the GPU computed in, measured against the CPU
        fp16 = check["precision"] == "fp16"
    result = {
        "model": path,
        "file_kb": os.path.getsize(path) / 1024,
        "runtime": runner.runtime,
        "accelerator": runner.accelerator,
        "fully_delegated": bool(runner.fully_delegated),
        "num_threads": o.num_threads,
        "input_dtype": runner.inputs[0]["dtype"] if runner.inputs else None,
        "init_ms": init_ms,
        "first_ms": first_ms,
        "warmup_avg_ms": statistics.mean(warm) if warm else None,
        "num_runs": len(times),
        # Why num_runs can exceed --num_runs: benchmark_model's rule, at least this many and this long.
        "num_runs_asked": o.num_runs,
        "min_secs": o.min_secs,
        "median_ms": statistics.median(times),
        "p90_ms": _percentile(s, 90),
        "p99_ms": _percentile(s, 99),
        "mean_ms": statistics.mean(times),
        "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "min_ms": s[0],
        "max_ms": s[-1],
        "peak_rss_kb": rss1,
        "rss_growth_kb": rss1 - rss0,
        # What the listed operator order keeps alive at once (TFLiteModel.peak_activations): on a phone's small
        # caches, whether a model's intermediates stay cached between its operators.
        "peak_activations_kb": runner.model.peak_activations()["bytes"] / 1024,
        "swiftshader_fallback": bool(swiftshader),
        "precision": o.precision,
        "fp16_ran": fp16,
        # How the CPU ran FP16 (rt.FP16_ARITHMETIC): "emulated" is FP16's numbers at worse than float32's speed.
        "fp16_arithmetic": rt.how_fp16_ran() if fp16 and not accelerated else None,
        "diff_vs_fp32_reference": fp16_diff,
        "cache": f"evicted ({o.evict_cache_mb} MB written before each run)" if o.evict_cache_mb else "warm (back to back)",
        "accelerator_check": check,
    }
    result["wrong_numbers"] = wrong_numbers(result)  # None, or what is wrong, in one line
    return result
