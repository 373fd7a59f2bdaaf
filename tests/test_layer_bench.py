"""The single-layer benchmark script, run for real on a small layer size."""

import json
import re

import numpy as np
import pytest

from benchmarks.host import layer_bench
from benchmarks.runtime import RuntimeUnavailable, cpu_fp16_arithmetic
from invo_base.tflite_model import TFLiteModel


def test_floor_model_is_the_shift_arithmetic():
    h, c, k, g = 4, 6, 3, 2
    z = np.random.default_rng(0).standard_normal((1, c // g + k * k, g, h * h)).astype(np.float32)
    out = np.asarray(layer_bench.floor_model(h, c, k, g)(z))
    x, kern = z[:, : c // g], z[:, c // g :]
    want = sum(x * kern[:, n : n + 1] for n in range(k * k))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # In row strips (rows 0-1 and 2-3 of the 4x4 map), each strip its own input and output.
    strips = layer_bench.floor_model(h, c, k, g, strips=2)([z[..., :8], z[..., 8:]])
    np.testing.assert_allclose(np.concatenate([np.asarray(s) for s in strips], axis=-1), want, rtol=1e-5, atol=1e-5)


def test_layer_bench_runs_every_layer_and_reports_the_ratios(tmp_path):
    cfg = {"tiny (8x8x8, K3, G2, r2)": dict(h=8, c=8, k=3, g=2, r=2)}
    rows, _ = layer_bench.run(num_runs=3, out=str(tmp_path), threads=(1,), configs=cfg, flex=False)

    names = {(r["layer"], r["dtype"]) for r in rows}
    layers = list(layer_bench.LAYER_NAMES.values()) + [layer_bench.LAYER_NAMES["depthwise-conv"] + layer_bench.NO_XNNPACK]
    assert names == {(layer, dtype) for layer in layers for dtype in ("float32", "int8")}
    files = {p.name: p.stat().st_size for p in tmp_path.glob("*.tflite")}
    assert sorted({r["file_bytes"] for r in rows}) == sorted(set(files.values()))  # each row's size is its file's
    by = {(r["layer"], r["dtype"]): r for r in rows}
    floor = by[layer_bench.LAYER_NAMES["mul-add floor"], "int8"]["ops"]
    assert floor.get("MUL") == 9 and floor.get("ADD") == 8 and "STRIDED_SLICE" in floor
    shift = by[layer_bench.LAYER_NAMES["shift"], "int8"]["ops"]
    assert shift.get("MUL") == 9 and "DEPTHWISE_CONV_2D" not in shift

    for path in tmp_path.glob("*.tflite"):
        info = TFLiteModel.from_file(str(path))
        assert info.max_rank <= 4 and info.builtin_only, path.name
    saved = json.loads((tmp_path / "layer_bench.json").read_text())
    assert len(saved["rows"]) == len(rows)
    text = (tmp_path / "layer_bench.md").read_text()
    assert "Ratios, 1 thread, this run:" in text and "x int8" in text and "floor" in text
    # The ratios are the rows' own medians. Which layer wins is a speed claim: it belongs to the recorded runs
    # (docs/layer_bench.md), not to a unit test timing 10-microsecond layers on a shared machine.
    shift_ms = {d: by[layer_bench.LAYER_NAMES["shift"], d]["median_ms_1t"] for d in ("float32", "int8")}
    onehot_ms = {d: by[layer_bench.LAYER_NAMES["depthwise"], d]["median_ms_1t"] for d in ("float32", "int8")}
    f32, i8 = map(float, re.search(r"shift vs one-hot ([0-9.]+)x float32, ([0-9.]+)x int8", text).groups())
    assert f32 == round(onehot_ms["float32"] / shift_ms["float32"], 1), text
    assert i8 == round(onehot_ms["int8"] / shift_ms["int8"], 1), text
    for r in rows:
        assert f"| {r['median_ms_1t']:.3f} |" in text


def test_network_bench_times_the_layer_its_aggregation_and_its_floor(tmp_path):
    """The per-layer table's 'aggregation' is the exported layer given its kernel: same output, fewer ops."""
    from benchmarks.host import network_bench as nb
    from benchmarks.runtime import load
    from convert.export import to_tflite

    h, c, k, s = 14, 32, 3, 2
    full = nb._layer_model(h, c, k, s, "involution")
    agg = nb._layer_model(h, c, k, s, "aggregation")
    x = np.random.default_rng(0).standard_normal((1, h, h, c)).astype(np.float32)
    kernel = np.asarray(full.layers[1].generate_kernel(x))
    want = np.asarray(full(x))
    (tmp_path / "agg.tflite").write_bytes(to_tflite(agg))
    runner = load(str(tmp_path / "agg.tflite"), "litert")
    got = runner(x, kernel)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    full_ops = TFLiteModel(to_tflite(full)).op_histogram()
    agg_ops = TFLiteModel(to_tflite(agg)).op_histogram()
    assert "CONV_2D" in full_ops and "CONV_2D" not in agg_ops  # no kernel generation
    assert agg_ops["MUL"] == full_ops["MUL"] == k * k and agg_ops["STRIDED_SLICE"] == full_ops["STRIDED_SLICE"]



def test_slice_floor_model_is_the_shift_arithmetic_on_shifted_windows():
    h, c, k, g = 4, 6, 3, 2
    hp = h + k - 1
    rng = np.random.default_rng(0)
    xp = rng.standard_normal((hp, hp, c)).astype(np.float32)  # the padded input, channels-last
    kern = rng.standard_normal((h, h, k * k, g)).astype(np.float32)  # position-major kernel
    # Groups contiguous on both layouts' own channel order: channels-last a*(C/G) + t in group a, planes a*G + b in b.
    last = sum(xp[i : i + h, j : j + h].reshape(h, h, g, c // g) * kern[:, :, i * k + j, :, None]
               for i in range(k) for j in range(k)).reshape(h, h, c)
    got = np.asarray(layer_bench.slice_floor_model(h, c, k, g, "channels-last")([xp[None], kern.reshape(1, h, h, -1)]))
    np.testing.assert_allclose(got[0], last, rtol=1e-5, atol=1e-5)
    planes_x, planes_k = xp.transpose(2, 0, 1), kern.transpose(2, 3, 0, 1)  # [C, Hp, Wp], [K*K, G, h, h]
    planes = sum(planes_x.reshape(c // g, g, hp, hp)[:, :, i : i + h, j : j + h] * planes_k[i * k + j]
                 for i in range(k) for j in range(k)).reshape(c, h, h)
    got = np.asarray(layer_bench.slice_floor_model(h, c, k, g, "planes")([planes_x[None], planes_k.reshape(1, -1, h, h)]))
    np.testing.assert_allclose(got[0], planes, rtol=1e-5, atol=1e-5)
    # Groups innermost: [C/G, Hp, Wp, G] planes, channel a*G + b in group b as on channel planes.
    gi_x, gi_k = planes_x.reshape(c // g, g, hp, hp).transpose(0, 2, 3, 1), planes_k.transpose(0, 2, 3, 1)
    got = np.asarray(layer_bench.slice_floor_model(h, c, k, g, "groups innermost", strips=2)(
        [gi_x.reshape(1, -1, hp, g), gi_k.reshape(1, -1, h, g)]))
    joined = np.concatenate([np.asarray(x).reshape(c // g, -1, h, g) for x in got], axis=1)
    np.testing.assert_allclose(joined.transpose(0, 3, 1, 2).reshape(c, h, h), planes, rtol=1e-5, atol=1e-5)
    # In row strips, as the layer computes large maps: the strips, joined, are the same rows.
    strips = layer_bench.slice_floor_model(h, c, k, g, "planes", strips=3)([planes_x[None], planes_k.reshape(1, -1, h, h)])
    assert len(strips) == 3
    joined = np.concatenate([np.asarray(x) for x in strips], axis=2).reshape(c, h, h)
    np.testing.assert_allclose(joined, planes, rtol=1e-5, atol=1e-5)


def test_fp16_layer_files_carry_the_metadata_and_run_in_fp16(tmp_path):
    """The per-layer table's fp16 file is the float16 file invo-convert writes (reduced_precision_support), and
    XNNPACK forced to FP16 computes it in FP16, checked against float32 reference kernels as networks are."""
    from benchmarks.bench import benchmark
    from benchmarks.host import network_bench as nb

    path = str(tmp_path / "agg_fp16.tflite")
    layer_bench.export_for_timing(nb._layer_model(14, 32, 3, 1, "aggregation"), path, "fp16")
    assert TFLiteModel.from_file(path).metadata["reduced_precision_support"] == b"fp16accfp16"
    forced = dict(runtime="litert-compiled", precision="fp16", num_runs=2, warmup_runs=1, min_secs=0, progress=False)
    if cpu_fp16_arithmetic() == "none":  # XNNPACK cannot: refused, not timed as float32
        with pytest.raises(RuntimeUnavailable, match="FP16 inference did not run"):
            benchmark(path, **forced)
        return
    r = benchmark(path, **forced)
    assert r["fp16_ran"] is True and r["fp16_arithmetic"] == cpu_fp16_arithmetic(), r


def test_layer_counts_match_the_involution_layers_of_each_rednet():
    """Every involution layer of a built RedNet is one of the benchmarked configurations, as often as counted."""
    from collections import Counter

    from benchmarks.host import network_bench as nb
    from involution.catalog import REDNET_DEPTHS
    from involution.layer import Involution
    from involution.models import build_model

    configs = {(h, c, k, s): label for label, h, c, k, s, where in nb.LAYER_CONFIGS if where is not None}
    for name in ("rednet26", "rednet50"):
        model = build_model(name, (224, 224, 3))
        found = Counter(configs[layer.input.shape[1], layer.channel, layer.kernel_size, layer.stride]
                        for layer in model.layers if isinstance(layer, Involution))
        assert found == Counter(nb.layer_counts(REDNET_DEPTHS[name])) - Counter(), name


def test_floor_lines_add_up_the_parts_of_a_rednet_at_each_thread_count():
    """The network floor is the skeleton plus each layer's count x (involution - aggregation + slice floor), from
    each thread count's own times, with the slice floor of the layout fastest there; past the first count the
    line also gives the first count's measured time over that floor."""
    from benchmarks.host import network_bench as nb
    from involution.catalog import REDNET_DEPTHS

    rng = np.random.default_rng(3)
    stat = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    layers = []
    for label, *_ in nb.LAYER_CONFIGS:
        for kind in nb.LAYER_KINDS:
            by_threads = {t: stat(float(rng.uniform(0.5, 5))) for t in ("1", "2")}
            layers.append({"layer": label, "kind": kind, "dtype": "float32", "ms": by_threads["1"],
                           "ms_by_threads": by_threads})
    ms = {"rednet50": (90.0, 70.0), "rednet50-without-involution": (35.0, 20.0), "resnet50": (60.0, 33.0)}
    result = {"threads": [1, 2], "layers": layers,
              "networks": [{"network": n, "dtype": "float32", "ms_1t": stat(a), "ms_2t": stat(b)}
                           for n, (a, b) in ms.items()]}
    lines = nb.floor_lines(result)
    for i, t in enumerate(("1", "2")):
        by = {(r["layer"], r["kind"]): r["ms_by_threads"][t]["median"] for r in layers}
        parts = floor = ms["rednet50-without-involution"][i]
        for label, n in nb.layer_counts(REDNET_DEPTHS["rednet50"]).items():
            parts += n * by[label, "involution"]
            best = min(by[label, "aggregation"], *(by[label, kind] for kind in nb.SLICE_FLOORS))
            floor += n * (by[label, "involution"] - by[label, "aggregation"] + best)
        head = lines.index(next(x for x in lines if x.startswith(f"Each RedNet against its parts and its floor ({t} thread")))
        (line,) = [x for x in lines[head:] if x.startswith("- rednet50")][:1]
        whole, base = ms["rednet50"][i], ms["resnet50"][i]
        assert f"parts {parts:.1f} ms" in line and f"{whole - parts:+.1f} ms beyond them" in line, line
        assert f"floor {floor:.1f} ms = {floor / base:.2f}x resnet50 (measured {whole / base:.2f}x)" in line, line
        if t == "2":
            assert f"measured on 1 thread / this floor: {90 / floor:.2f}x (measured speed-up {90 / 70:.2f}x)" in line
        else:
            assert "this floor" not in line
    # A result from before per-thread layer times (one count, ``ms`` only) still gives its 1-thread floor.
    old = {"threads": [1], "layers": [{k: v for k, v in r.items() if k != "ms_by_threads"} for r in layers],
           "networks": [{k: v for k, v in r.items() if k != "ms_2t"} for r in result["networks"]]}
    assert [x for x in nb.floor_lines(old) if x.startswith("- rednet50")] == \
        [x.split("; measured on")[0] for x in lines if x.startswith("- rednet50")][:1]


def test_flex_facts_are_recorded_quietly(tmp_path, capfd):
    """What happens to the extract_patches formulation: refused without Flex, 6-D with it, run nowhere here;
    the expected failure's C++ lines and Keras's 'Saved artifact' blocks stay off the terminal."""
    facts = layer_bench.flex_facts(str(tmp_path))
    out, err = capfd.readouterr()
    assert "FlexExtractImagePatches" in facts["with_flex"]["ops"] and facts["with_flex"]["max_rank"] == 6
    assert "ExtractImagePatches" in facts["builtins_only"]
    assert "ran (unexpected)" not in (facts["tf.lite.Interpreter"], facts["ai_edge_litert Interpreter"])
    for noise in ("Saved artifact", "neither a custom op nor a flex op", "INFO: Created TensorFlow Lite"):
        assert noise not in out and noise not in err, (noise, out[-500:], err[-500:])


def test_layer_thread_lines_give_each_layers_speed_up_per_thread_count():
    """Speed-up = the first thread count's median over each other's, for the layer, its aggregation and its
    MUL+ADD floor; a one-thread run has no such table."""
    from benchmarks.host import network_bench as nb

    rng = np.random.default_rng(5)
    stat = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    layers = [{"layer": label, "kind": kind, "dtype": "float32",
               "ms_by_threads": {"1": stat(float(rng.uniform(1, 5))), "2": stat(float(rng.uniform(1, 5)))}}
              for label, *_ in nb.LAYER_CONFIGS for kind in nb.LAYER_KINDS]
    lines = nb.layer_thread_lines({"threads": [1, 2], "layers": layers})
    by = {(r["layer"], r["kind"]): r["ms_by_threads"] for r in layers}
    label = nb.LAYER_CONFIGS[1][0]
    (row,) = [line for line in lines if line.startswith(f"| {label} | float32 |")]
    want = [by[label, kind]["1"]["median"] / by[label, kind]["2"]["median"]
            for kind in ("involution", "aggregation", "mul-add floor")]
    assert row == f"| {label} | float32 | " + " | ".join(f"{w:.2f}x" for w in want) + " |"
    assert nb.layer_thread_lines({"threads": [1], "layers": layers}) == []
