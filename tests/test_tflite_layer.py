"""Real conversions of the layer: builtin ops only, rank <= 4, equal to Keras, and right on the GPU path."""

import keras
import numpy as np
import pytest
from conftest import randomize, require_gpu

from benchmarks.runtime import CompiledRunner, InterpreterRunner
from convert.export import to_tflite
from invo_base.tflite_model import TFLiteModel
from involution import Involution
from involution.reference import InvolutionReference


def layer_model(h, w, c, k, g, r, stride=1, strategy="shift", layout="interleaved", seed=0):
    inp = keras.Input((h, w, c))
    out = Involution(channel=c, group_number=g, kernel_size=k, stride=stride, reduction_ratio=r, strategy=strategy,
                     group_layout=layout)(inp)
    return randomize(keras.Model(inp, out), seed)


def convert(model, tmp_path, quantize="none", name="m", calib=16):
    rng = np.random.default_rng(1)
    shape = (1, *model.inputs[0].shape[1:])
    rep = [rng.random(shape, dtype=np.float32) for _ in range(calib)] if quantize == "int8" else None
    path = tmp_path / f"{name}_{quantize}.tflite"
    path.write_bytes(to_tflite(model, quantize, "int8", rep))
    return str(path)


def assert_deployable(path):
    info = TFLiteModel.from_file(path)
    assert info.builtin_only and not info.flex_ops and not info.custom_ops, info.op_histogram()
    assert info.max_rank <= 4, info.max_rank
    return info


CASES = [
    dict(h=9, w=7, c=8, k=3, g=2, r=2, stride=1),
    dict(h=8, w=8, c=8, k=5, g=4, r=2, stride=2),
    dict(h=11, w=11, c=6, k=7, g=3, r=2, stride=2, layout="contiguous"),
    dict(h=12, w=12, c=16, k=3, g=16, r=4, stride=1),
]


@pytest.mark.parametrize("strategy", ["shift", "depthwise", "separable"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(str(c[k]) for k in ("h", "c", "k", "g", "stride")))
def test_float32_equals_keras(tmp_path, case, strategy):
    model = layer_model(**case, strategy=strategy)
    path = convert(model, tmp_path)
    info = assert_deployable(path)
    if strategy == "shift":  # no one-hot gather; a stride's average pool is one depthwise conv at stride 2 or
        # where the stride divides the size
        s = case["stride"]
        pooled = s == 2 or (s > 1 and case["h"] % s == 0 and case["w"] % s == 0)
        assert info.op_histogram().get("DEPTHWISE_CONV_2D", 0) == int(pooled)
    x = np.random.default_rng(2).standard_normal((1, case["h"], case["w"], case["c"])).astype(np.float32)
    got = InterpreterRunner(path)(x)[0]
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("strategy", ["shift", "depthwise", "separable"])
def test_int8_with_int8_io_within_stated_error(tmp_path, strategy):
    """Full int8 (int8 in and out): dequantized, within 1% (mean) and 5% (max) of Keras's output range."""
    model = layer_model(16, 16, 8, 3, 2, 2, strategy=strategy)
    path = convert(model, tmp_path, "int8", calib=32)
    info = assert_deployable(path)
    assert info.io("inputs")[0].dtype == "INT8" and info.io("outputs")[0].dtype == "INT8"
    runner = InterpreterRunner(path)
    i, o = runner.inputs[0], info.io("outputs")[0]
    x = np.random.default_rng(3).random((1, 16, 16, 8), dtype=np.float32)
    q = np.clip(np.round(x / i["scale"] + i["zero_point"]), -128, 127).astype(np.int8)
    got = (runner(q)[0].astype(np.float32) - o.zero_point) * o.scale
    want = model.predict(x, verbose=0)
    span = want.max() - want.min()
    assert np.abs(got - want).mean() <= 0.01 * span and np.abs(got - want).max() <= 0.05 * span


def test_extract_patches_reference_needs_flex(tmp_path):
    """Why this project exists: the reference formulation is 6-D and converts only with Flex."""
    import tensorflow as tf

    inp = keras.Input((8, 8, 8), batch_size=1)
    model = keras.Model(inp, InvolutionReference(8, 2, 3, 1, 2)(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    info = TFLiteModel(conv.convert())
    assert info.flex_ops == ["FlexExtractImagePatches"] and info.max_rank == 6


@pytest.mark.parametrize("k", [3, 7])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_gpu_accelerator_runs_rednet_stage1_layer_correctly(tmp_path, k, quantize):
    """56x56x64, G=4: a shifted-slice prototype was 'fully accelerated' yet wrong here at K=7."""
    require_gpu()
    model = layer_model(56, 56, 64, k, 4, 4, seed=k)
    path = convert(model, tmp_path, quantize, calib=8)
    assert_deployable(path)
    cpu = CompiledRunner(path, "cpu")
    gpu = CompiledRunner(path, "gpu")
    assert gpu.fully_delegated, "the GPU accelerator alone must take the whole model"
    rng = np.random.default_rng(k)
    if quantize == "none":
        x = rng.standard_normal((1, 56, 56, 64)).astype(np.float32)
        want, got = cpu(x)[0], gpu(x)[0]
        np.testing.assert_allclose(got, want, atol=1e-3 * max(1.0, np.abs(want).max()))
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-3 * max(1.0, np.abs(want).max()))
    else:
        # The GPU accumulates the K*K products in float; XNNPACK requantizes after every ADD.
        i, o = cpu.inputs[0], TFLiteModel.from_file(path).io("outputs")[0]
        xf = rng.random((1, 56, 56, 64), dtype=np.float32)
        x = np.clip(np.round(xf / i["scale"] + i["zero_point"]), -128, 127).astype(np.int8)
        want, got = cpu(x)[0].astype(int), gpu(x)[0].astype(int)
        # Rounding apart, they agree: at K=7, 66 of 200,704 outputs differed by 1-3 steps with the layer's two
        # row strips and 51 by 1-2 steps in one strip; a wrong gather moves thousands by many steps.
        diff = np.abs(got - want)
        assert diff.max() <= 3, f"GPU and CPU int8 outputs differ by {diff.max()} quantization steps"
        assert (diff > 1).mean() <= 1e-3, f"{(diff > 1).mean():.2%} of outputs differ by more than 1 step"
        ref = model.predict(xf, verbose=0)
        span = ref.max() - ref.min()
        for out in (want, got):  # int8 error budget of a K=7 layer (49 requantized ADDs)
            err = np.abs((out - o.zero_point) * o.scale - ref)
            assert err.mean() <= 0.01 * span and err.max() <= 0.10 * span


def _peak_alive(flat):
    """Most tensors alive at once when the main subgraph's operators run in their listed order."""
    return TFLiteModel(flat).peak_activations()["tensors"]


@pytest.mark.parametrize("keeps_input,peak_tensors", [(True, 3), (False, 2)])
def test_peak_activations_counts_what_is_alive_in_listed_order(keeps_input, peak_tensors):
    """x*2 then +x keeps the input, the product and the sum alive at the ADD; x*2 then +1 frees the input after
    the MUL: 3 and 2 tensors of 8*8*4 floats at the peak."""
    import tensorflow as tf

    x = keras.Input((8, 8, 4), batch_size=1)
    y = keras.ops.multiply(x, 2.0)
    model = keras.Model(x, y + x if keeps_input else y + 1.0)
    info = TFLiteModel(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert info.ops == ["MUL", "ADD"], info.ops
    assert info.peak_activations() == {"bytes": peak_tensors * 8 * 8 * 4 * 4, "op": 1 if keeps_input else 0,
                                       "tensors": peak_tensors}


def test_export_runs_each_offset_as_window_mul_add(tmp_path):
    """The converter lists the K*K kernel pieces first and several products before their ADDs (over K*K tensors
    alive; the windows themselves, given the layer's name scopes, each just before its product); the exported
    order keeps a few alive, and computes exactly the same output."""
    from convert.export import run_converter, tflite_converter

    inp = keras.Input((20, 20, 32))
    model = randomize(keras.Model(inp, Involution(channel=32, group_channels=16, kernel_size=7, group_layout="contiguous")(inp)), 2)
    with tflite_converter(model, "none", "int8", None, False, False) as conv:
        raw = run_converter(conv)
    (tmp_path / "raw.tflite").write_bytes(raw)
    exported = to_tflite(model)
    (tmp_path / "exported.tflite").write_bytes(exported)
    assert _peak_alive(raw) > 49, _peak_alive(raw)  # what the fix is for: if the converter changes, revisit it
    # A window, its kernel piece, their product, the running chain, and the tree's partial sums (sum_taps: at
    # most log2(7) = 3 for K = 7's seven chains) are alive at once.
    assert _peak_alive(exported) <= 8, _peak_alive(exported)
    x = np.random.default_rng(0).standard_normal((1, 20, 20, 32)).astype(np.float32)
    got, want = (InterpreterRunner(str(tmp_path / f"{n}.tflite"))(x)[0] for n in ("exported", "raw"))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-4, atol=1e-4 * np.abs(want).max())
