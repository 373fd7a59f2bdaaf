"""int8 post-training quantization: per-layer error report, selective quantization, float vs int8 accuracy."""

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error, invoke_cli

from convert.api import convert_model
from convert.cli import main as convert_cli
from invo_base.tflite_model import TFLiteModel
from quantize.cli import main as quantize_cli
from quantize.debug import layer_errors, selective_quantize
from quantize.evaluate import compare_accuracy


def test_layer_errors_worst_first(trained_seed):
    out, _ = trained_seed
    rows = layer_errors(str(out / "seed-involution" / "model.h5"), "digits", calib_samples=32, debug_samples=8)
    # One row per quantized tensor: the 3 involution layers' K*K = 9 products each among them.
    assert sum(r["op"] == "MUL" for r in rows) == 3 * 9 and len({r["tensor"] for r in rows}) == len(rows)
    scores = [r["rmse_over_scale"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    ops = {r["op"] for r in rows}
    assert {"MUL", "ADD", "CONV_2D"} <= ops, ops
    # What each op does to int8 values: ops that move them (slices, reshapes, transposes, pooling's max) copy
    # them exactly; ops that compute (MUL, ADD, convolutions) requantize, their error the rounding's (about 0.29
    # of a step for uniform rounding; measured 0.14-0.44 here).
    moved = [r["rmse_over_scale"] for r in rows if r["op"] in ("STRIDED_SLICE", "RESHAPE", "TRANSPOSE", "MAX_POOL_2D")]
    computed = [r["rmse_over_scale"] for r in rows if r["op"] in ("MUL", "ADD", "CONV_2D", "FULLY_CONNECTED")]
    assert len(moved) > 50 and max(moved) < 0.01, moved
    assert 0.05 < min(computed) and max(computed) < 1.0, computed


def test_selective_quantization_keeps_named_ops_in_float(trained_seed, tmp_path):
    out, _ = trained_seed
    model = str(out / "seed-involution" / "model.h5")
    target = tmp_path / "sel.tflite"
    v = selective_quantize(model, str(target), "digits", keep_ops=["MUL"], calib_samples=32)
    info = TFLiteModel.from_file(str(target))
    assert set(info.op_output_types("MUL")) == {"FLOAT32"}
    assert set(info.op_output_types("CONV_2D")) == {"INT8"}
    assert v["top1_agreement"] > 0.9


def test_selective_quantization_gives_the_io_type_asked(trained_seed, tmp_path):
    """TF's debugger leaves float32 ends whatever the converter was asked; --io must hold."""
    out, _ = trained_seed
    target = tmp_path / "sel.tflite"
    selective_quantize(str(out / "seed-involution" / "model.h5"), str(target), "digits", keep_ops=["MUL"],
                       io="uint8", calib_samples=32)
    info = TFLiteModel.from_file(str(target))
    assert [t.dtype for t in info.io("inputs") + info.io("outputs")] == ["UINT8", "UINT8"]
    assert set(info.op_output_types("MUL")) == {"FLOAT32"}
    proc = invoke_cli(quantize_cli, "selective", str(out / "seed-involution" / "model.h5"), "-o",
                   str(tmp_path / "other.tflite"), "--calib", "digits", "--calib-samples", "16", "--keep-node", "no/such")
    assert_one_line_error(proc, "no op output named 'no/such'")
    assert not (tmp_path / "other.tflite").exists()


def test_float_aggregation_keeps_each_involution_aggregation_in_float(trained_seed, tmp_path):
    """int8 except the involutions' window copies, MULs and ADDs: inside XNNPACK, on the GPU path, and
    closer to Keras than full int8 on the same calibration data."""
    out, _ = trained_seed
    model = str(out / "seed-involution" / "model.keras")
    full = convert_model(model, str(tmp_path / "full.tflite"), quantize="int8", calib="digits", calib_samples=64,
                         gpu=False)
    mixed = convert_model(model, str(tmp_path / "mixed.tflite"), quantize="int8", calib="digits", calib_samples=64,
                          float_aggregation=True)
    info, full_info = TFLiteModel.from_file(str(tmp_path / "mixed.tflite")), TFLiteModel.from_file(str(tmp_path / "full.tflite"))
    assert [t.dtype for t in info.io("inputs") + info.io("outputs")] == ["INT8", "INT8"]
    for op in ("MUL", "ADD", "STRIDED_SLICE"):  # the seed model's only MULs and ADDs are its aggregations'
        assert set(info.op_output_types(op)) == {"FLOAT32"}, op
        assert set(full_info.op_output_types(op)) == {"INT8"}, op
    assert set(info.op_output_types("CONV_2D")) == {"INT8"}
    assert info.op_histogram()["DEQUANTIZE"] == 2 * 3 and info.op_histogram()["QUANTIZE"] == 3  # 3 layers: x, kernel; out
    assert mixed["xnnpack"]["fully_delegated"] and mixed["xnnpack"]["partitions"] == 1
    assert mixed["gpu"]["ok"] and mixed["gpu"]["fully_delegated"], mixed["gpu"]
    assert mixed["quality_gate"]["passed"]
    assert mixed["verify"]["mean_abs_error"] < full["verify"]["mean_abs_error"]


def test_float_aggregation_needs_int8_and_involution_layers(trained_seed, tmp_path):
    out, _ = trained_seed
    proc = invoke_cli(convert_cli, out / "seed-involution" / "model.keras", "-o", tmp_path / "f.tflite",
                      "--float-aggregation")
    assert_one_line_error(proc, "--float-aggregation applies to --quantize int8 only")
    proc = invoke_cli(convert_cli, out / "seed-conv" / "model.keras", "-o", tmp_path / "c.tflite",
                      "--quantize", "int8", "--calib", "digits", "--float-aggregation")
    assert_one_line_error(proc, "needs Involution layers")
    assert not os.listdir(tmp_path)


def test_selective_quantization_that_misses_the_gate_fails(trained_seed, tmp_path):
    """Calibrated on samples 100x smaller than the held-out ones, int8 saturates: exit 1, no output file."""
    from involution.data import split_indices

    out, _ = trained_seed
    rng = np.random.default_rng(0)
    x = rng.random((60, 32, 32, 3), dtype=np.float32)
    train, _ = split_indices(len(x))
    x[train] *= 0.01
    np.savez(tmp_path / "skewed.npz", x=x, y=np.arange(60) % 10)
    target = tmp_path / "sel.tflite"
    proc = invoke_cli(quantize_cli, "selective", str(out / "seed-involution" / "model.h5"), "-o", str(target),
                   "--calib", str(tmp_path / "skewed.npz"), "--keep-op", "MUL")
    assert_one_line_error(proc, "fails the int8 check", "sel.FAILED.tflite")
    assert not target.exists() and (tmp_path / "sel.FAILED.tflite").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".invo-")]


def test_evaluate_float_against_int8(trained_seed, tmp_path):
    out, _ = trained_seed
    model = str(out / "seed-involution" / "model.keras")
    convert_model(model, str(tmp_path / "q.tflite"), quantize="int8", calib="digits", gpu=False)
    r = compare_accuracy(model, str(tmp_path / "q.tflite"), "digits", samples=300)
    # Keras's top-1 is the model's own on the first 300 held-out samples, computed here independently.
    from convert.verification import held_out

    x, y = held_out("digits", keras.saving.load_model(model).input_shape[1:])
    want = float(np.mean(np.argmax(keras.saving.load_model(model).predict(x[:300], verbose=0), -1) == y[:300]))
    assert r["samples"] == 300 and r["top1_keras"] == pytest.approx(want)
    assert abs(r["top1_drop_points"]) <= 3 and r["top1_agreement"] > 0.9
    result = CliRunner().invoke(quantize_cli, ["evaluate", model, str(tmp_path / "q.tflite"), "--data", "digits",
                                               "--samples", "100", "--json", str(tmp_path / "acc.json")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "acc.json").read_text())
    assert written["samples"] == 100
    # Readable lines, not raw JSON, each figure the JSON holds.
    assert "held-out samples: 100" in result.output and "{" not in result.output
    assert f"top-1 agreement:      {written['top1_agreement']:.4f}" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 100 + len(str(tmp_path))
    # The two models swapped: named at once, before TensorFlow's work.
    result = CliRunner().invoke(quantize_cli, ["evaluate", str(tmp_path / "q.tflite"), model, "--data", "digits"])
    assert result.exit_code == 1 and "swapped" in result.output and "Keras model comes first" in result.output


def test_debug_cli_prints_a_table_and_writes_json(trained_seed, tmp_path):
    out, _ = trained_seed
    result = CliRunner().invoke(quantize_cli, ["debug", str(out / "seed-involution" / "model.h5"), "--calib", "digits",
                                               "--calib-samples", "16", "--debug-samples", "4", "--top", "5",
                                               "--json", str(tmp_path / "rows.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert "rmse/scale" in result.output and len(rows) > 50
    assert max(len(line) for line in result.output.splitlines()) <= 100  # long tensor names cut to their end
    assert any(len(r["tensor"]) > 47 for r in rows)  # ... which the JSON keeps whole


def test_selective_needs_something_to_keep(trained_seed, tmp_path):
    out, _ = trained_seed
    result = CliRunner().invoke(quantize_cli, ["selective", str(out / "seed-involution" / "model.h5"), "-o",
                                               str(tmp_path / "s.tflite"), "--calib", "digits"])
    assert result.exit_code == 1 and "--keep-node or --keep-op" in result.output
    assert not (tmp_path / "s.tflite").exists()
