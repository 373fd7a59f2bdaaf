"""The single-layer benchmark script, run for real on a small layer size."""

import json

import numpy as np

from benchmarks.host import layer_bench
from benchmarks.tflite_model import TFLiteModel


def test_floor_model_is_the_shift_arithmetic():
    h, c, k, g = 4, 6, 3, 2
    z = np.random.default_rng(0).standard_normal((1, c // g + k * k, g, h * h)).astype(np.float32)
    out = np.asarray(layer_bench.floor_model(h, c, k, g)(z))
    x, kern = z[:, : c // g], z[:, c // g :]
    np.testing.assert_allclose(out, sum(x * kern[:, n : n + 1] for n in range(k * k)), rtol=1e-5, atol=1e-5)


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
    # The ratios are the rows' own medians: shift vs one-hot gather, in float32.
    ms = {(r["layer"], r["dtype"]): r["median_ms_1t"] for r in rows}
    names = layer_bench.LAYER_NAMES
    expected = ms[names["depthwise"], "float32"] / ms[names["shift"], "float32"]
    assert f"shift vs one-hot {expected:.1f}x float32" in text, text
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

