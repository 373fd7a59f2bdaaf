"""Single-layer benchmark: each involution strategy vs a plain DepthwiseConv2D, float32 and int8.

    invo-report layers [--num_runs 100] [--out runs/layer_bench]

A host script (it builds and converts models, so it imports TensorFlow inside);
the timing itself is ``benchmarks.bench`` on ai-edge-litert, as on a device.
"""

import os
import warnings

import numpy as np

from benchmarks.bench import benchmark
from invo_base.plumbing import json_text, native_logs_silenced, one_line, write_atomic
from invo_base.tflite_model import TFLiteModel

LAYER_NAMES = {
    "shift": "involution, shift (default)",
    "depthwise": "involution, one-hot depthwise gather",
    "mul-add floor": "MUL+ADD floor (shift arithmetic only)",
    "batch-matmul": "BATCH_MATMUL contraction only",
    "depthwise-conv": "plain DepthwiseConv2D KxK",
}
NO_XNNPACK = ", TFLite kernels (no XNNPACK)"
# kind -> use_xnnpack settings timed: every layer on XNNPACK, ai-edge-litert's default; the plain
# depthwise conv also without it, because XNNPACK's 7x7 depthwise kernel is slower than TFLite's own here.
LAYERS = {"shift": (True,), "depthwise": (True,), "mul-add floor": (True,), "batch-matmul": (True,),
          "depthwise-conv": (True, False)}

CONFIGS = {
    "cifar (32x32x16, K3, G1, r2)": dict(h=32, c=16, k=3, g=1, r=2),
    "rednet stage 1 (56x56x64, K7, G4, r4)": dict(h=56, c=64, k=7, g=4, r=4),
}


def _model(kind, h, c, k, g, r):
    import keras

    from involution import Involution

    if kind == "mul-add floor":
        from involution.layer import planar_strips

        return floor_model(h, c, k, g, planar_strips(h, h, c))
    if kind == "batch-matmul":
        return _batch_matmul_model(h, c, k, g)
    inp = keras.Input((h, h, c))
    if kind == "depthwise-conv":
        layer = keras.layers.DepthwiseConv2D(k, padding="same")
    else:
        layer = Involution(channel=c, group_number=g, kernel_size=k, reduction_ratio=r, strategy=kind)
    return random_weights(keras.Model(inp, layer(inp)))


def export_for_timing(model, path, dtype):
    """Writes ``model`` to ``path`` as float32 ("float32"/"none"), as the float16 file ("fp16", with the
    reduced-precision metadata of ``invo-convert --quantize float16``; time it with FP16 forced) or full int8
    ("int8", calibrated on 8 standard-normal inputs: what a mean/std-normalised input looks like; latency does
    not depend on the data)."""
    from convert.export import to_tflite

    rep = None
    if dtype == "int8":
        rng = np.random.default_rng(1)
        rep = [[rng.standard_normal((1, *t.shape[1:])).astype(np.float32) for t in model.inputs] for _ in range(8)]
    quantize = {"int8": "int8", "fp16": "float16"}.get(dtype, "none")
    write_atomic(path, to_tflite(model, quantize, "int8", rep))


def random_weights(model, seed=0):
    """Non-trivial weights (BatchNorm variances near 1): timing does not depend on them, the int8 scales do."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign((rng.standard_normal(w.shape) * 0.3 + ("variance" in w.path)).astype(np.float32))
    return model


def floor_model(h, c, k, g, strips=1):
    """Only the shift strategy's arithmetic: K*K MULs and K*K-1 ADDs of the exported layer's shapes.

    Its input holds the channel planes [1, C/G, G, H*W] and K*K kernel planes [1, 1, G, H*W]; there is no
    padding, no shifted slice, no transpose and no kernel generation, so its time is a floor for any
    formulation built from builtin MUL and ADD, and one-hot time / floor time caps the ratio they can reach.
    With ``strips`` > 1 (what the layer does on large maps) each horizontal strip of rows is its own input
    and output, so that the floor stays below the layer.
    """
    import keras

    from involution.layer import strip_bounds

    inputs, outputs = [], []
    for r0, r1 in strip_bounds(h, strips):
        z = keras.Input((c // g + k * k, g, (r1 - r0) * h))
        x = z[:, : c // g]  # [1, C/G, G, rows*W]
        out = None
        for n in range(k * k):
            term = x * z[:, c // g + n : c // g + n + 1]
            out = term if out is None else out + term
        inputs.append(z)
        outputs.append(out)
    return keras.Model(inputs[0], outputs[0]) if strips == 1 else keras.Model(inputs, outputs)


def slice_floor_model(h, c, k, g, layout="planes", strips=1):
    """The shift strategy's unavoidable work: K*K shifted windows, K*K MULs and K*K-1 ADDs at output size h x h.

    Every offset reads the input at a different shift, and TFLite has no views: a builtin-only
    formulation copies each shifted window (a unit-stride STRIDED_SLICE) before it multiplies it by its
    kernel slice and adds the product.  ``layout`` is the aggregation's: ``"planes"`` takes the padded
    channel planes [1, C, h+K-1, h+K-1] and kernel planes [1, K*K*G, h, h]; ``"channels-last"`` the padded
    input [1, h+K-1, h+K-1, C] and the kernel [1, h, h, K*K*G] (groups contiguous); ``"groups innermost"``
    the padded [C/G, h+K-1, h+K-1, G] planes as [1, C/G*(h+K-1), h+K-1, G] and the kernel [K*K, h, h, G] as
    [1, K*K*h, h, G].  No padding, layout transposes or kernel generation are timed.  ``strips`` > 1 (both
    planes layouts) computes the output rows in that many horizontal strips, as the layer does on large maps,
    and returns them unjoined.
    """
    import keras
    from keras import ops

    from involution.layer import strip_bounds

    hp = h + k - 1

    class SliceFloor(keras.layers.Layer):
        def call(self, z, kern):
            if layout == "planes":
                x = ops.reshape(z, (c // g, g, hp, hp))  # channel a*G + b, in group b
                kern = ops.reshape(kern, (k * k, g, h, h))
                window = lambda i, j, r0, r1: x[:, :, i + r0 : i + r1, j : j + h]  # noqa: E731  [C/G, G, rows, h]
                piece = lambda n, r0, r1: kern[n : n + 1, :, r0:r1]  # noqa: E731  [1, G, rows, h]
            elif layout == "groups innermost":
                x = ops.reshape(z, (c // g, hp, hp, g))
                kern = ops.reshape(kern, (k * k, h, h, g))
                window = lambda i, j, r0, r1: x[:, i + r0 : i + r1, j : j + h, :]  # noqa: E731  [C/G, rows, h, G]
                piece = lambda n, r0, r1: kern[n : n + 1, r0:r1]  # noqa: E731  [1, rows, h, G]
            else:
                kern = ops.reshape(kern, (1, h * h, k * k * g, 1))
                window = lambda i, j, r0, r1: ops.reshape(z[:, i : i + h, j : j + h, :], (1, h * h, g, c // g))  # noqa: E731
                piece = lambda n, r0, r1: kern[:, :, n * g : (n + 1) * g, :]  # noqa: E731  [1, hh, G, 1]
            outs = []
            for r0, r1 in strip_bounds(h, 1 if layout == "channels-last" else strips):
                out = None
                for i in range(k):
                    for j in range(k):
                        term = window(i, j, r0, r1) * piece(i * k + j, r0, r1)
                        out = term if out is None else out + term
                outs.append(out)
            if len(outs) > 1:
                return outs
            out_shape = {"planes": (1, c, h, h), "groups innermost": (1, c // g * h, h, g)}.get(layout, (1, h, h, c))
            return ops.reshape(outs[0], out_shape)

    shapes = {"planes": ((c, hp, hp), (k * k * g, h, h)),
              "groups innermost": ((c // g * hp, hp, g), (k * k * h, h, g))}.get(layout, ((hp, hp, c), (h, h, k * k * g)))
    z, kern = (keras.Input(shape, batch_size=1) for shape in shapes)
    return keras.Model([z, kern], SliceFloor()(z, kern))


def _batch_matmul_model(h, c, k, g):
    """The aggregation's contraction as one BATCH_MATMUL: per pixel and group, [1, K*K] @ [K*K, C/G].

    BATCH_MATMUL is the only builtin that multiplies two run-time tensors and sums in one op; this
    times it alone, its two operands given as inputs (no patch gather, no kernel generation).
    """
    import keras
    from keras import ops

    kern = keras.Input((h * h * g, 1, k * k))  # [1, HWG, 1, K*K]
    patches = keras.Input((h * h * g, k * k, c // g))  # [1, HWG, K*K, C/G]
    return keras.Model([kern, patches], ops.matmul(kern, patches))  # [1, HWG, 1, C/G]


def flex_facts(tmp):
    """What happens to the extract_patches formulation: it converts only with Flex, and runs nowhere here."""
    import keras
    import tensorflow as tf

    from involution.reference import InvolutionReference

    inp = keras.Input((56, 56, 64), batch_size=1)
    model = keras.Model(inp, InvolutionReference(64, 4, 7, 1, 4)(inp))
    from convert.export import converter_quiet

    facts = {}
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    try:
        with converter_quiet():  # the expected failure's C++ lines and Keras's export messages
            conv.convert()
        facts["builtins_only"] = "converted (unexpected)"
    except Exception as exc:  # noqa: BLE001 - recorded
        facts["builtins_only"] = one_line(exc, 160)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = os.path.join(tmp, "flex.tflite")
    with converter_quiet():
        flat = conv.convert()
    with open(path, "wb") as f:
        f.write(flat)
    info = TFLiteModel.from_file(path)
    facts["with_flex"] = {"ops": info.op_histogram(), "max_rank": info.max_rank}
    from ai_edge_litert.interpreter import Interpreter

    for name, make in (("tf.lite.Interpreter", tf.lite.Interpreter), ("ai_edge_litert Interpreter", Interpreter)):
        try:
            with warnings.catch_warnings(), native_logs_silenced():  # tf.lite.Interpreter is asked on purpose
                warnings.simplefilter("ignore")
                it = make(model_path=path)
                it.allocate_tensors()
            facts[name] = "ran (unexpected)"
        except Exception as exc:  # noqa: BLE001 - recorded
            facts[name] = one_line(exc, 120)
    return facts


def run(num_runs=100, out="runs/layer_bench", threads=(1, 2), configs=CONFIGS, flex=True):
    os.makedirs(out, exist_ok=True)
    rows = []
    for cname, cfg in configs.items():
        for kind, xnnpack_settings in LAYERS.items():
            model = _model(kind, **cfg)
            for quant in ("none", "int8"):
                path = os.path.join(out, f"{cfg['h']}x{cfg['c']}_k{cfg['k']}_{kind.replace(' ', '_')}_{quant}.tflite")
                export_for_timing(model, path, quant)
                info = TFLiteModel.from_file(path)
                for use_xnnpack in xnnpack_settings:
                    row = {"config": cname, "layer": LAYER_NAMES[kind] + ("" if use_xnnpack else NO_XNNPACK),
                           "dtype": "int8" if quant == "int8" else "float32", "file_bytes": info.file_size,
                           "ops": info.op_histogram(), "op_count": len(info.ops)}
                    for t in threads:
                        r = benchmark(path, runtime="litert", num_threads=t, warmup_runs=5, num_runs=num_runs, min_secs=0,
                                      use_xnnpack=use_xnnpack, progress=False)
                        row[f"median_ms_{t}t"] = r["median_ms"]
                    rows.append(row)
                    print(f"{cname:<40}{row['layer']:<60}{row['dtype']:<8}{row['file_bytes']:>9}"
                          + "".join(f"{row[f'median_ms_{t}t']:>9.3f}" for t in threads), flush=True)
    facts = flex_facts(out) if flex else {}
    write_atomic(os.path.join(out, "layer_bench.json"), json_text({"rows": rows, "extract_patches": facts}))
    write_atomic(os.path.join(out, "layer_bench.md"), markdown(rows, facts, threads))
    return rows, facts


def markdown(rows, facts, threads=(1, 2)):
    head = "| layer size | layer | dtype | file bytes | ops | " + " | ".join(f"median ms, {t} thread{'s' * (t > 1)}" for t in threads) + " |"
    lines = [head, "|" + "---|" * (5 + len(threads))]
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        lines.append(f"| {r['config']} | {r['layer']} | {r['dtype']} | {r['file_bytes']:,} | {r['op_count']} ({ops}) | "
                     + " | ".join(f"{r[f'median_ms_{t}t']:.3f}" for t in threads) + " |")
    lines += ratios(rows, threads[0])
    if facts:
        lines += ["", "extract_patches formulation (56x56x64, K7, G4):",
                  f"- builtins only: {facts['builtins_only']}",
                  f"- with Flex: {facts['with_flex']}"]
        lines += [f"- {k}: {v}" for k, v in facts.items() if "Interpreter" in k]
    return "\n".join(lines) + "\n"


def ratios(rows, t=1):
    """The issue's ratios, per layer size, from the rows of one run (``t`` threads)."""
    ms = {(r["config"], r["layer"], r["dtype"]): r[f"median_ms_{t}t"] for r in rows}
    size = {(r["config"], r["layer"], r["dtype"]): r["file_bytes"] for r in rows}
    shift, onehot, floor, bmm = (LAYER_NAMES[k] for k in ("shift", "depthwise", "mul-add floor", "batch-matmul"))
    lines = ["", f"Ratios, {t} thread{'s' * (t > 1)}, this run:"]
    for config in dict.fromkeys(r["config"] for r in rows):
        f = {(layer, dtype): v for (c, layer, dtype), v in ms.items() if c == config}
        lines += [f"- {config}: shift vs one-hot {f[onehot, 'float32'] / f[shift, 'float32']:.1f}x float32, "
                  f"{f[onehot, 'int8'] / f[shift, 'int8']:.1f}x int8; shift int8 vs float32 "
                  f"{f[shift, 'float32'] / f[shift, 'int8']:.2f}x; shift int8 file {size[config, shift, 'int8']:,} B; "
                  f"MUL+ADD floor int8 {f[floor, 'int8']:.3f} ms, so no formulation made of these MULs and ADDs can beat "
                  f"the one-hot gather by more than {f[onehot, 'int8'] / f[floor, 'int8']:.1f}x in int8 "
                  f"(shift is {f[shift, 'int8'] / f[floor, 'int8']:.2f}x the floor); the contraction as one "
                  f"BATCH_MATMUL takes {f[bmm, 'int8']:.3f} ms int8 by itself"]
    return lines
