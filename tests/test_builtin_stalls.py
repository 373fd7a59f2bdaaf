"""TFLite's builtin float DEPTHWISE_CONV_2D never returns on an output depth above 4832: the runtimes' behaviour,
pinned; the layer's one-hot gather kept within it whatever converts it; and every tool that would run such an
op on the builtin kernels (invo-bench --use_xnnpack false, both int8 calibrators) refusing it in one line."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_one_line_error, invoke_cli, legacy_python, randomize, run_cli

from benchmarks.cli import bench
from benchmarks.runtime import InterpreterRunner, RuntimeUnavailable
from benchmarks.xnnpack_check import xnnpack_coverage
from convert.cli import main as convert_cli
from convert.errors import ConversionError
from convert.export import to_tflite
from invo_base.tflite_model import BUILTIN_DEPTHWISE_MAX_DEPTH, TFLiteModel
from involution import Involution


def depthwise_file(path, channels, multiplier, quantize="none"):
    """A stock-converted DepthwiseConv2D (3x3) on a 6x6 map: output depth ``channels * multiplier``."""
    inp = keras.Input((6, 6, channels), batch_size=1)
    model = randomize(keras.Model(inp, keras.layers.DepthwiseConv2D(3, depth_multiplier=multiplier)(inp)))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    path.write_bytes(conv.convert())
    return str(path), model


# Runs the model once on the builtin kernels, bypassing InterpreterRunner's refusal; prints "returned".
RAW_INVOKE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
it = Interpreter(model_path=sys.argv[1], experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.ones(d["shape"], np.float32))
it.invoke()
print("returned")
"""


def builtin_returns(path, seconds):
    try:
        out = subprocess.run([sys.executable, "-c", RAW_INVOKE, path], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    assert out.returncode == 0, out.stderr
    return "returned" in out.stdout


@pytest.mark.parametrize("quantize", ["none", "float16"])
def test_the_builtin_kernel_stalls_just_past_4832_channels(tmp_path, quantize):
    """Measured, not assumed: 4832 output channels return at once, 4833 never (a float16 file's weights are
    dequantized to the same float kernel).  A runtime that fixes the kernel fails this test, and the refusals
    below should then be lifted."""
    at, _ = depthwise_file(tmp_path / "at.tflite", BUILTIN_DEPTHWISE_MAX_DEPTH, 1, quantize)
    past, _ = depthwise_file(tmp_path / "past.tflite", BUILTIN_DEPTHWISE_MAX_DEPTH + 1, 1, quantize)
    assert TFLiteModel.from_file(at).builtin_stalls() == []
    assert [s["depth"] for s in TFLiteModel.from_file(past).builtin_stalls()] == [BUILTIN_DEPTHWISE_MAX_DEPTH + 1]
    assert builtin_returns(at, 60)
    assert not builtin_returns(past, 8)


def test_invo_bench_refuses_the_builtin_kernels_on_it_and_runs_it_on_xnnpack(tmp_path):
    path, model = depthwise_file(tmp_path / "deep.tflite", 99, 49)  # 4851 channels
    with pytest.raises(RuntimeUnavailable, match="op 0 has 4851"):
        InterpreterRunner(path, use_xnnpack=False)
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 99)).astype(np.float32)
    np.testing.assert_allclose(InterpreterRunner(path)(x)[0], model.predict(x, verbose=0), atol=1e-4)
    proc = invoke_cli(bench, path, "--use_xnnpack", "false", "--num_runs", "2", "--min_secs", "0")
    assert_one_line_error(proc, "never returns", "4851", "XNNPACK")
    proc = invoke_cli(bench, path, "--num_runs", "2", "--min_secs", "0", "--quiet")
    assert proc.returncode == 0, proc.stderr


def test_the_legacy_board_refuses_it_too(tmp_path):
    """tflite-runtime 2.14 has the same kernel: no TensorFlow there, the file's reader says why in one line."""
    path, _ = depthwise_file(tmp_path / "deep.tflite", 99, 49)
    proc = run_cli("benchmarks.cli", path, "--use_xnnpack", "false", "--num_runs", "2", "--min_secs", "0",
                   python=legacy_python(), env={"PYTHONPATH": ""}, timeout=120)
    assert_one_line_error(proc, "never returns", "4851")


@pytest.mark.parametrize("calibrator", ["exact", "tf"])
def test_int8_calibration_refuses_it_instead_of_hanging(tmp_path, calibrator):
    _, model = depthwise_file(tmp_path / "deep.tflite", 99, 49)
    rep = [np.random.default_rng(1).random((1, 6, 6, 99), dtype=np.float32) for _ in range(2)]
    with pytest.raises(ConversionError, match="int8 calibration cannot run this model.*4851"):
        to_tflite(model, "int8", "int8", rep, calibrator=calibrator)


def test_the_quantization_debugger_refuses_it_instead_of_hanging(tmp_path):
    from quantize.debug import layer_errors

    _, model = depthwise_file(tmp_path / "deep.tflite", 99, 49)
    model.save(tmp_path / "deep.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).random((6, 6, 6, 99), dtype=np.float32))
    with pytest.raises(ConversionError, match="int8 calibration cannot run this model.*4851"):
        layer_errors(str(tmp_path / "deep.keras"), str(tmp_path / "calib.npz"), calib_samples=4, debug_samples=2)


def test_invo_convert_audit_names_it(tmp_path):
    _, model = depthwise_file(tmp_path / "deep.tflite", 99, 49)
    model.save(tmp_path / "deep.keras")
    proc = invoke_cli(convert_cli, tmp_path / "deep.keras", "-o", tmp_path / "out.tflite", "--no-gpu-check")
    assert proc.returncode == 0, proc.stderr
    assert "builtin kernels: 1 DEPTHWISE_CONV_2D op(s) deeper than 4832 channels (op 0: 4851)" in proc.stdout


WIDE = [dict(h=14, c=128, stride=1, groups=8, layout="interleaved"),      # 6272 channels in one gather
        dict(h=16, c=256, stride=2, groups=16, layout="contiguous"),      # 12544
        dict(h=8, c=160, stride=1, groups=160, layout="interleaved"),     # a kernel per channel: G over the cap
        dict(h=6, c=512, stride=1, groups=32, layout="interleaved")]      # 6 gathers, joined by 2 CONCATENATIONs


@pytest.mark.parametrize("converter", ["invo", "stock"])
@pytest.mark.parametrize("case", WIDE, ids=lambda c: f"{c['h']}x{c['c']}s{c['stride']}g{c['groups']}")
def test_the_wide_one_hot_gather_runs_on_the_builtin_kernels(tmp_path, case, converter):
    """strategy="depthwise" at RedNet widths: several gathers within the limit, equal to Keras on TFLite's builtin
    kernels (which refuse, never hang, should one pass it) with our converter and the stock one, and all of it
    inside XNNPACK (no TILE; no CONCATENATION of more than 4 inputs, which XNNPACK leaves out)."""
    inp = keras.Input((case["h"], case["h"], case["c"]), batch_size=1)
    layer = Involution(case["c"], group_number=case["groups"], kernel_size=7, stride=case["stride"],
                       strategy="depthwise", group_layout=case["layout"])
    model = randomize(keras.Model(inp, layer(inp)))
    flat = (to_tflite(model) if converter == "invo"
            else tf.lite.TFLiteConverter.from_keras_model(model).convert())
    path = tmp_path / "wide.tflite"
    path.write_bytes(flat)
    info = TFLiteModel(flat)
    assert info.builtin_stalls() == []
    assert info.op_histogram()["DEPTHWISE_CONV_2D"] >= 2
    assert xnnpack_coverage(str(path))["fully_delegated"], xnnpack_coverage(str(path))
    x = np.random.default_rng(2).standard_normal((1, case["h"], case["h"], case["c"])).astype(np.float32)
    want = model.predict(x, verbose=0)
    got = InterpreterRunner(str(path), use_xnnpack=False)(x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
