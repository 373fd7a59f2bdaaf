"""Whole networks on the CPU fast path: RedNet against ResNet-50 and MobileNetV2, and RedNet's involution layers.

    invo-report networks [--rounds 3] [--num_runs 20] [--out runs/network_bench]

A host script: it builds the networks, converts each with ``convert.api.convert_model`` (what
``invo-convert`` runs: float32, int8 calibrated on the --calib data, and for networks with involution
layers int8 with their aggregation in float32, ``--float-aggregation``), then times every file through
``benchmarks.bench`` on ai-edge-litert with XNNPACK, as on a device.  Timing is interleaved: each round
runs every (network, dtype, threads) once, and the table gives the median of the per-round medians with
the min and max over rounds, so that ratios come from one run.  Latency does not depend on the weight
values, so the Keras applications are built with ``weights=None``; RedNets take ``--weights NAME=FILE``.

It also times every involution configuration of RedNet at 224x224 (each stride-2 layer beside the
stride-1 layer of the same input) next to a DepthwiseConv2D of the same shape and stride.
"""

import dataclasses
import os
import time

import numpy as np

from benchmarks.bench import machine_description, spread
from benchmarks.host.layer_bench import export_for_timing, floor_model, random_weights, slice_floor_model
from benchmarks.host.timing import EVICT_MB, Schedule, fmt_spread, interleaved
from benchmarks.runtime import cpu_fp16_arithmetic
from invo_base.plumbing import json_text, write_atomic

NETWORKS = ("rednet26", "rednet38", "rednet50", "resnet50", "mobilenetv2", "rednet26-without-involution",
            "rednet50-without-involution")
SKELETON = "-without-involution"
# The heading's note where this CPU emulates FP16 (``benchmarks.runtime.FP16_ARITHMETIC``).
EMULATED_FP16_NOTE = (" FP16 is emulated on this CPU (no FP16 arithmetic: x86 without AVX512-FP16): XNNPACK converts "
                      "to float32 around every op, so the fp16 figures are FP16's outputs at worse than float32's "
                      "speed, not the FP16 speed of a phone with FP16 arithmetic (ARMv8.2+).")
# float32; fp16: the float16 file (invo-convert --quantize float16) run with XNNPACK forced to FP16 arithmetic
# (invo-bench --precision fp16, CompiledModel); dynamic: int8 weights, float activations (invo-convert --quantize
# dynamic, the converter's Optimize.DEFAULT alone); full int8; and int8 with each involution's aggregation in
# float32 (invo-convert --float-aggregation; only networks with involution layers).
# stock-float32: the same network through the stock converter alone (TFLiteConverter.from_keras_model on a
# batch-1 model, as a user's own pipeline converts it), to measure what invo-convert's operator order adds.
# gpu-float32, gpu-fp16: the GPU target's files (invo-convert --target gpu), timed on the CPU like the others
# and, with --gpu-timing, on the GPU.
DTYPES = ("float32", "fp16", "dynamic", "int8", "int8-float-agg", "stock-float32", "gpu-float32", "gpu-fp16")
QUANTIZE_OF = {"float32": "none", "fp16": "float16", "dynamic": "dynamic", "int8": "int8", "int8-float-agg": "int8",
               "gpu-float32": "none", "gpu-fp16": "float16"}
# What a dtype's figures compare with on ResNet-50 (which has no involution, so one file per precision).
RESNET_DTYPE = {"int8-float-agg": "int8", "stock-float32": "float32", "gpu-float32": "float32", "gpu-fp16": "fp16"}
# Only networks with involution layers have these files.
INVOLUTION_ONLY = ("int8-float-agg", "stock-float32", "gpu-float32", "gpu-fp16")
# The float files timed on the GPU with --gpu-timing.
GPU_TIMED = ("float32", "fp16", "gpu-float32", "gpu-fp16")
# Cache regimes: "warm" runs back to back, so a model stays in this server's large last-level cache; "evicted"
# writes EVICT_MB before every run (benchmarks.host.timing).
CACHES = ("warm", "evicted")
# Published ImageNet top-1 (%), not measured here: RedNets from the official repository's table
# (github.com/d-li14/involution, README), the Keras architectures from the Keras Applications table
# (keras.io/api/applications) for the weights Keras ships.
PUBLISHED_TOP1 = {
    "rednet26": (75.96, "d-li14/involution README"),
    "rednet38": (77.48, "d-li14/involution README"),
    "rednet50": (78.35, "d-li14/involution README"),
    "resnet50": (74.9, "keras.io/api/applications"),
    "mobilenetv2": (71.3, "keras.io/api/applications"),
}
# What the per-layer table times for each configuration: the layer, a same-shape depthwise conv, the
# layer given its kernel (no kernel generation), its MUL+ADD arithmetic alone, and that arithmetic with
# the K*K shifted windows it must copy, on channel planes, channels-last and groups-innermost planes (the
# fastest of them is the floor of a builtin-only shift formulation).
SLICE_FLOORS = ("slice floor, planes", "slice floor, channels-last", "slice floor, groups innermost")
# The precisions the per-layer table times (fp16: the float16 file with XNNPACK forced to FP16, as networks).
LAYER_DTYPES = ("float32", "fp16", "int8")
LAYER_KINDS = ("involution", "depthwise", "aggregation", "mul-add floor", *SLICE_FLOORS)
# Every involution configuration of RedNet at 224x224: (label, input size, channels, K, stride, where),
# where = (stage, role) says how many a RedNet has (see ``layer_counts``); stage 0 is the stem.
LAYER_CONFIGS = [
    ("stem, 112x112x32, K3", 112, 32, 3, 1, (0, "all")),
    ("stage 1, 56x56x64", 56, 64, 7, 1, (1, "all")),
    ("stage 2 first, 56->28, 128 ch, stride 2", 56, 128, 7, 2, (2, "first")),
    ("  same input at stride 1, 56x56x128", 56, 128, 7, 1, None),
    ("stage 2, 28x28x128", 28, 128, 7, 1, (2, "rest")),
    ("stage 3 first, 28->14, 256 ch, stride 2", 28, 256, 7, 2, (3, "first")),
    ("  same input at stride 1, 28x28x256", 28, 256, 7, 1, None),
    ("stage 3, 14x14x256", 14, 256, 7, 1, (3, "rest")),
    ("stage 4 first, 14->7, 512 ch, stride 2", 14, 512, 7, 2, (4, "first")),
    ("  same input at stride 1, 14x14x512", 14, 512, 7, 1, None),
    ("stage 4, 7x7x512 (RedNet-38/50)", 7, 512, 7, 1, (4, "rest")),
]


def layer_counts(depths):
    """{label: how many of that involution layer a RedNet of these stage depths has} (stage 1 keeps its size)."""
    counts = {}
    for label, *_, where in LAYER_CONFIGS:
        if where is None:
            continue
        stage, role = where
        counts[label] = (1 if stage == 0 else depths[0] if stage == 1 else 1 if role == "first"
                         else depths[stage - 1] - 1)
    return counts


def build_network(name, input_size=224, weights=None):
    """A Keras model by name: ours (``involution.models``) or a Keras application with weights=None."""
    import keras

    from involution.models import build_model

    shape = (input_size, input_size, 3)
    if name.endswith(SKELETON):
        # The floor under a RedNet: its skeleton with every involution removed (identity, or a 2x2
        # average pool where it strides), as in the issue that asked for this benchmark.
        from involution.models import REDNET_DEPTHS, rednet

        def no_involution(channels, kernel_size, stride, name, strategy):
            return keras.layers.AveragePooling2D(stride, name=name) if stride > 1 else keras.layers.Identity(name=name)

        base = name[: -len(SKELETON)]
        return rednet(REDNET_DEPTHS[base], shape, 1000, name=f"{base}_skeleton", involution=no_involution)
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=shape)
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(weights=None, input_shape=shape)
    if weights:
        return build_model(name, shape, weights=weights)
    return build_model(name, shape)


def _layer_model(h, c, k, stride, kind):
    import keras

    from involution.catalog import DEFAULT_GROUP_CHANNELS
    from involution.layer import ceil_div, planar_strips
    from involution.models import official_involution

    ho = ceil_div(h, stride)
    strips = planar_strips(ho, ho, c)  # the layer's row strips on planes (1 on the maps it keeps channels-last)
    if kind == "mul-add floor":  # the aggregation's K*K MULs and K*K-1 ADDs alone, at the output size
        return floor_model(ho, c, k, c // DEFAULT_GROUP_CHANNELS, strips)
    if kind in SLICE_FLOORS:  # the same with the K*K shifted windows copied out of the padded input
        return slice_floor_model(ho, c, k, c // DEFAULT_GROUP_CHANNELS, kind.split(", ")[1], strips)
    inp = keras.Input((h, h, c))
    if kind == "aggregation":  # the layer without its kernel generation: the kernel is an input
        layer = official_involution(c, k, stride, name="involution")
        layer.build(inp.shape)

        class Aggregation(keras.layers.Layer):
            """``Involution.aggregate`` alone: padding, layout transposes, shifted slices, MUL and ADD."""

            def call(self, x, kernel):
                return layer.aggregate(x, kernel)

        ho = ceil_div(h, stride)
        kern = keras.Input((ho, ho, k * k * layer.groups))
        return keras.Model([inp, kern], Aggregation()(inp, kern))
    if kind == "involution":
        layer = official_involution(c, k, stride, name="involution")
    else:
        layer = keras.layers.DepthwiseConv2D(k, strides=stride, padding="same")
    return random_weights(keras.Model(inp, layer(inp)))


def _stock_convert(model, path, gpu):
    """The stock converter's float32 file, audited as invo-convert audits its own (no verification against
    Keras: the file is the user's pipeline's, timed as it is)."""
    import keras
    import tensorflow as tf

    from benchmarks.gpu_check import check_gpu
    from benchmarks.xnnpack_check import xnnpack_coverage
    from convert.export import converter_quiet
    from invo_base.tflite_model import TFLiteModel

    x = keras.Input(model.inputs[0].shape[1:], batch_size=1)
    with converter_quiet():
        flat = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, model(x))).convert()
    write_atomic(path, flat)
    return {"audit": TFLiteModel(flat, path).summary(), "xnnpack": xnnpack_coverage(path),
            "verify": {"max_rel_error": None}, "gpu": check_gpu(path) if gpu else None}


def _convert(model, path, dtype, calib, gpu, verify_samples):
    """Saves the Keras model and runs the converter library on it, as invo-convert does."""
    from convert.api import convert_model

    if dtype == "stock-float32":
        return _stock_convert(model, path, gpu)
    keras_path = os.path.splitext(path)[0] + ".keras"
    if not os.path.exists(keras_path):
        model.save(keras_path)
    quantize = QUANTIZE_OF[dtype]
    return convert_model(keras_path, path, quantize=quantize, calib=calib if quantize == "int8" else None,
                         calib_samples=8, report=None, force=True, gpu=gpu, verify_samples=verify_samples,
                         check=False, float_aggregation=dtype == "int8-float-agg",
                         target="gpu" if dtype.startswith("gpu-") else "cpu")


def has_involution(name):
    return name.startswith("rednet") and not name.endswith(SKELETON)


def _fp16_forced(key):
    """benchmark options of a job: "fp16" jobs run with XNNPACK forced to FP16 (CompiledModel); a forced run
    that did not compute in FP16 is an error, not a figure."""
    return {"runtime": "litert-compiled", "precision": "fp16"} if key[-1] in ("fp16", "gpu-fp16") else {}


def _on_gpu(key):
    """benchmark options of a GPU-timed job: the LiteRT GPU accelerator, no CPU fallback, its outputs checked
    against the CPU's (the float16 files as a GPU runs them, FP16 allowed)."""
    return {"runtime": "litert-compiled", "use_gpu": True, "require_full_delegation": True}


def gpu_description():
    """The GPU the --gpu-timing figures came from: nvidia-smi's name and driver where it exists, else the
    Vulkan driver's manifest."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if found:
            return f"{found.splitlines()[0]} (nvidia-smi), LiteRT GPU accelerator (WebGPU on Vulkan)"
    return f"Vulkan driver {os.environ.get('VK_ICD_FILENAMES', 'found by the loader')}, LiteRT GPU accelerator"


def _time(jobs, schedule):
    """{(key, threads, cache): [per-round medians]} (``benchmarks.host.timing.interleaved``)."""
    return interleaved(jobs, schedule, options=_fp16_forced)


def _timing_label(t, cache):
    """The result key of one thread count and cache regime: ms_1t (warm), ms_1t_evicted."""
    return f"ms_{t}t" + ("" if cache == "warm" else f"_{cache}")


def litert_version():
    """The installed ai-edge-litert's version, as the run records it."""
    from importlib.metadata import version

    return version("ai-edge-litert")


def ops_per_involution(rows):
    """{"network dtype": [fewest, most]} operators per involution layer of each converted file, as its audit
    counted them (``convert.targets.layer_op_counts``)."""
    return {f"{r['network']} {r['dtype']}": [min(r["layer_ops"].values()), max(r["layer_ops"].values())]
            for r in rows if r.get("layer_ops")}


def run(networks=NETWORKS, dtypes=DTYPES, schedule=Schedule(threads=(1, 2), caches=CACHES), *, input_size=224,
        out="runs/network_bench", calib=None, weights=None, layers=True, gpu=True, verify_samples=4,
        gpu_timing=False):
    """Converts and times ``networks`` in ``dtypes`` by ``schedule`` (and, with ``layers``, ``layer_table``);
    writes network_bench.json/.md and latency_vs_top1.png into ``out``; returns (result, markdown).

    ``gpu_timing``: the float files (``GPU_TIMED``) are also timed on a real GPU, every output checked; an
    emulated GPU (SwiftShader) is an error, its timings not a GPU's.
    """
    if gpu_timing:
        from benchmarks.runtime import RuntimeUnavailable, gpu_is_emulated

        if gpu_is_emulated():
            raise RuntimeUnavailable("--gpu-timing: the Vulkan driver is an emulated GPU (SwiftShader), whose "
                                     "timings are not a GPU's; point VK_ICD_FILENAMES at a real GPU's driver")
    os.makedirs(out, exist_ok=True)
    weights = weights or {}
    threads, caches, rounds, num_runs = schedule.threads, schedule.caches, schedule.rounds, schedule.num_runs
    if calib is None and set(dtypes) & {"int8", "int8-float-agg"}:
        # Calibration for timing: standard-normal images, what a mean/std-normalised input looks like.
        calib = os.path.join(out, "calib.npz")
        rng = np.random.default_rng(0)
        np.savez(calib, x=rng.standard_normal((16, input_size, input_size, 3)).astype(np.float32))
    info = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d"),
            "runtime": f"ai-edge-litert {litert_version()}, XNNPACK (fp16: CompiledModel, FP16 forced)", "rounds": rounds,
            "num_runs": num_runs, "input_size": input_size, "caches": list(caches), "evict_mb": EVICT_MB}
    if "fp16" in dtypes:
        info["fp16_arithmetic"] = cpu_fp16_arithmetic()  # "emulated": the fp16 figures are not FP16 speed
    rows, jobs = [], []
    for name in networks:
        model = build_network(name, input_size, weights.get(name))
        for dtype in dtypes:
            if dtype in INVOLUTION_ONLY and not has_involution(name):
                continue
            path = os.path.join(out, f"{name}_{dtype}.tflite")
            print(f"converting {name} ({dtype})", flush=True)
            r = _convert(model, path, dtype, calib, gpu and name.startswith("rednet"), verify_samples)
            g = r.get("gpu") or {}
            rows.append({"network": name, "dtype": dtype, "file_bytes": r["audit"]["file_bytes"],
                         "ops": r["audit"]["ops"], "parameters": r["audit"]["parameters"],
                         "peak_activation_bytes": r["audit"]["peak_activation_bytes"],
                         "weights": weights.get(name) or "random",
                         "xnnpack": r["xnnpack"], "gpu_ok": g.get("ok") if g else None,
                         "gpu_fully_delegated": g.get("fully_delegated") if g else None,
                         "max_rel_error_vs_keras": r["verify"]["max_rel_error"],
                         "layer_ops": (r.get("target") or {}).get("layer_ops")})
            jobs.append(((name, dtype), path))
    print(f"timing {len(jobs)} files x {len(threads)} thread counts x {len(caches)} cache regimes, {rounds} "
          "interleaved rounds each", flush=True)
    times = _time(jobs, schedule)
    for row in rows:
        for t in threads:
            for cache in caches:
                label = _timing_label(t, cache)
                per_round = times[(row["network"], row["dtype"]), t, cache]
                row[label] = spread(per_round)
                row[label.replace("ms_", "rounds_")] = per_round  # per-round medians, in order
    if gpu_timing:
        gpu_jobs = [(key, path) for key, path in jobs if key[1] in GPU_TIMED]
        print(f"timing {len(gpu_jobs)} float files on the GPU, {rounds} interleaved rounds", flush=True)
        on_gpu = interleaved(gpu_jobs, dataclasses.replace(schedule, threads=(1,), caches=("warm",)), options=_on_gpu)
        for row in rows:
            per_round = on_gpu.get(((row["network"], row["dtype"]), 1, "warm"))
            if per_round:
                row["ms_gpu"], row["rounds_gpu"] = spread(per_round), per_round
        info["gpu"] = gpu_description()
    info["ops_per_involution"] = ops_per_involution(rows)
    layer_rows = layer_table(dtypes, dataclasses.replace(schedule, caches=("warm",)), out) if layers else []
    result = {"info": info, "networks": rows, "layers": layer_rows, "threads": list(threads), "caches": list(caches)}
    write_atomic(os.path.join(out, "network_bench.json"), json_text(result))
    md = markdown(result)
    write_atomic(os.path.join(out, "network_bench.md"), md)
    plot(result, os.path.join(out, "latency_vs_top1.png"))
    return result, md


def layer_table(dtypes, schedule, out):
    """Every RedNet involution configuration (``LAYER_CONFIGS``) as each of ``LAYER_KINDS``, in ``LAYER_DTYPES``,
    timed at every thread count: [{layer, kind, dtype, ms (first thread count), ms_by_threads, xnnpack_full}]."""
    from benchmarks.xnnpack_check import xnnpack_coverage

    layer_jobs = []
    for label, h, c, k, s, _ in LAYER_CONFIGS:
        for kind in LAYER_KINDS:
            model = _layer_model(h, c, k, s, kind)
            for dtype in (d for d in dtypes if d in LAYER_DTYPES):
                slug = kind.replace(", ", "_").replace(" ", "_")
                path = os.path.join(out, f"layer_{h}x{c}_k{k}_s{s}_{slug}_{dtype}.tflite")
                export_for_timing(model, path, dtype)
                layer_jobs.append(((label, kind, dtype), path))
    threads = schedule.threads
    print(f"timing {len(layer_jobs)} layer files x {len(threads)} thread counts", flush=True)
    times = _time(layer_jobs, schedule)
    return [{"layer": label, "kind": kind, "dtype": dtype,
             "ms": spread(times[(label, kind, dtype), threads[0], "warm"]),
             "ms_by_threads": {str(t): spread(times[(label, kind, dtype), t, "warm"]) for t in threads},
             "xnnpack_full": xnnpack_coverage(path)["fully_delegated"]}
            for (label, kind, dtype), path in layer_jobs]


def layer_thread_lines(result):
    """Each layer's speed-up from the first thread count to the others: the layer, its aggregation and its
    MUL+ADD floor.  A floor that does not speed up shows the runtime's per-op cost, not the layer's layout."""
    threads = result["threads"]
    rows = [r for r in result["layers"] if r.get("ms_by_threads")]
    if len(threads) < 2 or not rows:
        return []
    t1 = str(threads[0])
    kinds = ("involution", "aggregation", "mul-add floor")
    by = {(r["layer"], r["kind"], r["dtype"]): r["ms_by_threads"] for r in rows}
    out = [f"Speed-up of each layer from {t1} to more threads (medians; > 1 is faster). The MUL+ADD floor is "
           "the layer's K*K MULs and K*K-1 ADDs alone: where it does not speed up, no layout of those ops can.", "",
           "| layer | dtype | " + " | ".join(f"{kind}, {t} threads" for t in threads[1:] for kind in kinds) + " |",
           "|---|---|" + "---|" * (len(kinds) * (len(threads) - 1))]
    for label, *_ in LAYER_CONFIGS:
        for dtype in dict.fromkeys(r["dtype"] for r in rows):
            cells = []
            for t in threads[1:]:
                for kind in kinds:
                    ms = by.get((label, kind, dtype))
                    cells.append(f"{ms[t1]['median'] / ms[str(t)]['median']:.2f}x" if ms else "-")
            out.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    return out


def _timings(result):
    """[(threads, cache, result key)] of the run, in table order."""
    return [(t, c, _timing_label(t, c)) for c in result.get("caches", ["warm"]) for t in result["threads"]]


def markdown(result):
    info, rows = result["info"], result["networks"]
    timings = _timings(result)
    head = " | ".join(f"{t} thread{'s' * (t > 1)}, {c} ms" for t, c, _ in timings)
    gpu_timed = any("ms_gpu" in r for r in rows)
    lines = [f"Measured on {info['machine']}, {info['date']}; {info['runtime']}; {info['input_size']}x"
             f"{info['input_size']} input; median of {info['rounds']} interleaved rounds of {info['num_runs']} runs "
             "(min-max over rounds) in ms; each thread count and cache regime timed in a phase of its own. "
             "Caches: 'warm' runs back to back (this server's large L3 keeps a model between runs); 'evicted' "
             f"writes {info.get('evict_mb', EVICT_MB)} MB before every run, as on a phone whose few MB of cache "
             "keep no model between runs."
             + EMULATED_FP16_NOTE * (info.get("fp16_arithmetic") == "emulated"), "",
             f"| network | dtype | {head}{' | GPU ms' * gpu_timed} | file bytes | ops | peak activations MiB | XNNPACK "
             "| GPU path | published top-1 |",
             "|---|---|" + "---|" * (len(timings) + 6 + gpu_timed)]
    if gpu_timed:
        lines[0] += (f" GPU ms: {info.get('gpu', 'a GPU')}, 1 round per CPU round, every run's outputs checked "
                     "against the CPU's (the fp16 files computed as the GPU chooses, FP16 on most).")
    for r in rows:
        x = r["xnnpack"]
        xnn = "all ops" if x.get("fully_delegated") else f"{x.get('delegated_ops')}/{x.get('ops')} ({', '.join(x.get('outside', {}))})"
        gpu = "-" if r["gpu_ok"] is None else ("fully accelerated, ok" if r["gpu_ok"] else "FAILED")
        top1, src = PUBLISHED_TOP1.get(r["network"], (None, ""))
        lines.append(f"| {r['network']} | {r['dtype']} | " + " | ".join(fmt_spread(r[k]) for *_, k in timings)
                     + (f" | {fmt_spread(r['ms_gpu']) if 'ms_gpu' in r else '-'}" if gpu_timed else "")
                     + f" | {r['file_bytes']:,} | {r['ops']} | {r['peak_activation_bytes'] / 2**20:.1f} | {xnn} | {gpu} | "
                     + (f"{top1}% ({src})" if top1 else "-") + " |")
    if info.get("ops_per_involution"):
        lines += ["", "Operators per involution layer, fewest-most, as each file's audit counts them: " + "; ".join(
            f"{label}: {lo}-{hi}" for label, (lo, hi) in info["ops_per_involution"].items())]
    lines += [""] + ratio_lines(result)
    if result["layers"]:
        lines += ["", "Involution layers of RedNet at 224x224, 1 thread, ms (median, min-max over rounds). Where the "
                  "time goes: the aggregation is the layer given its kernel (no kernel generation); the MUL+ADD "
                  "floor is its K*K MULs and K*K-1 ADDs alone (no padding, transposes or slices); the slice floor "
                  "adds the K*K shifted windows that any builtin-only shift formulation copies (TFLite has no views), "
                  "in the fastest of the three layouts; both floors are computed in the layer's row strips where it has them:",
                  "", "| layer | dtype | involution | DepthwiseConv2D, same shape and stride | involution / depthwise "
                  "| aggregation | MUL+ADD floor | slice floor |", "|---|---|---|---|---|---|---|---|"]
        by = {(r["layer"], r["kind"], r["dtype"]): r for r in result["layers"]}
        for label, *_ in LAYER_CONFIGS:
            for dtype in dict.fromkeys(r["dtype"] for r in result["layers"]):
                inv, dw, agg, floor = (by[label, kind, dtype] for kind in LAYER_KINDS[:4])
                layout = slice_floor_layout(by, label, dtype)
                lines.append(f"| {label} | {dtype} | {fmt_spread(inv['ms'])} | {fmt_spread(dw['ms'])} | "
                             f"{inv['ms']['median'] / dw['ms']['median']:.2f}x | {fmt_spread(agg['ms'])} | {fmt_spread(floor['ms'])} "
                             f"| {fmt_spread(by[label, layout, dtype]['ms'])}, {layout.split(', ')[1]} |")
        lines += [""] + stride_lines(result) + [""] + floor_lines(result)
        thread_lines = layer_thread_lines(result)
        if thread_lines:
            lines += [""] + thread_lines
    return "\n".join(lines) + "\n"


def _ratio_of(row_a, key_a, row_b, key_b):
    """(ratio of the medians, [per-round ratios]) of row_a's timing key_a over row_b's key_b."""
    per_round = [x / y for x, y in zip(row_a.get(key_a.replace("ms_", "rounds_")) or [],
                                       row_b.get(key_b.replace("ms_", "rounds_")) or [])]
    return row_a[key_a]["median"] / row_b[key_b]["median"], per_round


def _ratio(result, a, b, key):
    """Median of a's per-round medians over b's, and the min-max of the per-round ratios: ' 0.61x (0.58-0.62)'."""
    rows = {(r["network"], r["dtype"]): r for r in result["networks"]}
    if a not in rows or b not in rows or key not in rows[a] or key not in rows[b]:
        return None
    ratio, per_round = _ratio_of(rows[a], key, rows[b], key)
    return f"{ratio:.2f}x" + (f" ({min(per_round):.2f}-{max(per_round):.2f})" if per_round else "")


def _emulated(result, dtype):
    """A ratio's mark where its FP16 figures are emulated FP16 (``EMULATED_FP16_NOTE``)."""
    emulated = dtype == "fp16" and result["info"].get("fp16_arithmetic") == "emulated"
    return " (emulated FP16: not FP16 speed)" if emulated else ""


def ratio_lines(result):
    """The issues' network ratios, from this run: against ResNet-50, per precision, per thread count, per cache."""
    out = ["Ratios (medians of this run; in brackets the ratio within each round, min-max):"]
    timings = _timings(result)
    if any("ms_gpu" in r for r in result["networks"]):
        timings = [("GPU", None, "ms_gpu")] + timings
    for t, cache, key in timings:
        if t == "GPU":
            out.append("- on the GPU:")
            for dtype in GPU_TIMED:
                for name in ("rednet26", "rednet38", "rednet50"):
                    r = _ratio(result, (name, dtype), ("resnet50", RESNET_DTYPE.get(dtype, dtype)), key)
                    if r:
                        out.append(f"  - {name} {dtype} / resnet50 {RESNET_DTYPE.get(dtype, dtype)}: {r}")
            continue
        out.append(f"- {t} thread{'s' * (t > 1)}, caches {cache}:")
        for dtype in DTYPES:
            base_dtype = RESNET_DTYPE.get(dtype, dtype)
            for name in ("rednet26", "rednet38", "rednet50", "mobilenetv2"):
                r = _ratio(result, (name, dtype), ("resnet50", base_dtype), key)
                if r:
                    vs = "" if base_dtype == dtype else f" (resnet50 {base_dtype})"
                    out.append(f"  - {name} / resnet50, {dtype}{vs}: {r}{_emulated(result, dtype)}")
        for name in ("rednet26", "rednet38", "rednet50"):
            r = _ratio(result, (name, "stock-float32"), (name, "float32"), key)
            if r:
                out.append(f"  - {name} stock converter's file / invo-convert's, float32: {r}")
        for name in ("rednet26", "rednet38", "rednet50", "resnet50", "mobilenetv2"):
            for dtype in ("fp16", "dynamic", "int8", "int8-float-agg"):
                r = _ratio(result, (name, "float32"), (name, dtype), key)
                if r:
                    out.append(f"  - {name} {dtype} speed-up over float32: {r}{_emulated(result, dtype)}")
    rows = {(x["network"], x["dtype"]): x for x in result["networks"]}
    t1 = result["threads"][0]
    for cache in result.get("caches", ["warm"]):
        for t in result["threads"][1:]:
            for (name, dtype), row in rows.items():
                if name in ("rednet26", "rednet50", "resnet50") and dtype in ("float32", "fp16", "int8"):
                    ratio, per = _ratio_of(row, _timing_label(t1, cache), row, _timing_label(t, cache))
                    out.append(f"- {name} {dtype}, caches {cache}: speed-up from {t1} to {t} threads "
                               f"{ratio:.2f}x ({min(per):.2f}-{max(per):.2f} per round){_emulated(result, dtype)}")
    for dtype in ("float32", "fp16", "int8"):
        for name in ("rednet26", "rednet50"):
            r = _ratio(result, (name + SKELETON, dtype), ("resnet50", dtype), _timing_label(result["threads"][0], "warm"))
            if r:
                out.append(f"- floor: {name} without its involutions / resnet50, {dtype}: {r}"
                           + _emulated(result, dtype))
    return out


def slice_floor_layout(by, label, dtype):
    """The slice-floor kind of the faster layout for one layer: the floor is the lower of the two."""
    return min(SLICE_FLOORS, key=lambda kind: by[label, kind, dtype]["ms"]["median"])


def floor_lines(result):
    """Each RedNet against the sum of its measured parts, and against its floor, in ms and as x ResNet-50, at
    every thread count of the run.

    Parts: the skeleton (every involution removed) plus each involution layer timed alone, times its count.
    Floor: the same with each aggregation replaced by its slice floor at that thread count, i.e. each layer's
    kernel generation (involution - aggregation) plus its K*K shifted windows, MULs and ADDs in the layout
    fastest there.  It assumes the network costs nothing beyond its parts, so no builtin-only shift formulation
    can make the network faster than this; past the first thread count, the network's measured time on the
    first over this floor bounds the speed-up any such formulation reaches without slowing that first count.
    """
    from involution.catalog import REDNET_DEPTHS

    threads = result["threads"]
    first = {(r["network"], r["dtype"]): r[_timing_label(threads[0], "warm")]["median"] for r in result["networks"]}
    out = []
    for t in threads:
        label_t = _timing_label(t, "warm")
        ms = {(r["network"], r["dtype"]): r[label_t]["median"] for r in result["networks"] if label_t in r}
        by = {(r["layer"], r["kind"], r["dtype"]): {"ms": _layer_ms(r, t, threads[0])} for r in result["layers"]}
        if any(v["ms"] is None for v in by.values()):  # layers not timed at this thread count
            continue
        lines = []
        for name, depths in REDNET_DEPTHS.items():
            for dtype in dict.fromkeys(r["dtype"] for r in result["layers"]):
                skeleton, whole, base = ms.get((name + SKELETON, dtype)), ms.get((name, dtype)), ms.get(("resnet50", dtype))
                if not (skeleton and whole and base):
                    continue
                counts = layer_counts(depths)
                ms_of = lambda label, kind: by[label, kind, dtype]["ms"]["median"]  # noqa: E731
                layers = sum(n * ms_of(label, "involution") for label, n in counts.items())
                # A layer already faster than its slice floor (small maps, within noise) counts as it is.
                cut = sum(n * max(0.0, ms_of(label, "aggregation") - ms_of(label, slice_floor_layout(by, label, dtype)))
                          for label, n in counts.items())
                floor = skeleton + layers - cut
                line = (f"- {name}, {dtype}: measured {whole:.1f} ms; parts {skeleton + layers:.1f} ms (skeleton "
                        f"{skeleton:.1f} + {sum(counts.values())} involution layers {layers:.1f}), so "
                        f"{whole - skeleton - layers:+.1f} ms beyond them; floor {floor:.1f} ms = "
                        f"{floor / base:.2f}x resnet50 (measured {whole / base:.2f}x)")
                if t != threads[0]:
                    line += (f"; measured on {threads[0]} thread{'s' * (threads[0] > 1)} / this floor: "
                             f"{first[name, dtype] / floor:.2f}x (measured speed-up {first[name, dtype] / whole:.2f}x)")
                lines.append(line)
        if lines:
            out += [""] * bool(out) + [
                f"Each RedNet against its parts and its floor ({t} thread{'s' * (t > 1)}, medians; parts = skeleton "
                "+ each involution layer alone x its count; floor = the same with every aggregation at its slice "
                "floor, in the layout fastest at this thread count):"] + lines
    return out


def _layer_ms(row, t, first):
    """A layer row's spread at ``t`` threads (``ms`` is the first thread count's; older rows have only that)."""
    by_threads = row.get("ms_by_threads")
    if by_threads:
        return by_threads.get(str(t))
    return row["ms"] if t == first else None


def stride_lines(result):
    by = {(r["layer"], r["kind"], r["dtype"]): r["ms"]["median"] for r in result["layers"]}
    out = ["Stride-2 involution / stride-1 involution on the same input:"]
    for i, (label, h, c, k, s, _) in enumerate(LAYER_CONFIGS):
        if s == 2:
            same = LAYER_CONFIGS[i + 1][0]
            for dtype in dict.fromkeys(r["dtype"] for r in result["layers"]):
                out.append(f"- {label.strip()}, {dtype}: {by[label, 'involution', dtype] / by[same, 'involution', dtype]:.2f}x")
    return out


def plot(result, path):
    """Latency (1 thread) against the published ImageNet top-1 of each architecture."""
    from involution.plots import pyplot

    plt = pyplot()

    t = result["threads"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for k, (dtype, marker) in enumerate((("float32", "o"), ("fp16", "D"), ("dynamic", "v"), ("int8", "s"),
                                         ("int8-float-agg", "^"))):
        pts = [(r[f"ms_{t}t"]["median"], PUBLISHED_TOP1[r["network"]][0], r["network"]) for r in result["networks"]
               if r["dtype"] == dtype and r["network"] in PUBLISHED_TOP1]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=dtype)
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3 - 9 * k), fontsize=7)  # no overlap
    ax.set_xscale("log")
    ax.set_xlabel(f"latency, ms, log scale ({t} thread, warm caches; ai-edge-litert, XNNPACK)")
    ax.set_ylabel("published ImageNet top-1, % (not measured here)")
    ax.set_title(f"CPU latency vs published accuracy ({result['info']['input_size']}px)", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, "top-1: d-li14/involution README (RedNet), keras.io/api/applications (ResNet50, MobileNetV2)",
             fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    import io

    buf = io.BytesIO()
    fig.savefig(buf, dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
