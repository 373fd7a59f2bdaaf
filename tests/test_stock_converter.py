"""Every guarantee of the layer holds under the stock ``tf.lite.TFLiteConverter``, as a user's own pipeline runs it:
builtin ops only, at most 4-D, inside XNNPACK in one partition, no elementwise chain a GPU delegate could fuse
past WebGPU's 16 textures, and correct on the LiteRT GPU accelerator, for every involution configuration of
RedNet-26..152 and the seed model's, at batch 1 (float32, float16, dynamic-range and full int8) and with a dynamic
batch, from the Keras model (``from_keras_model``) and from its SavedModel (``model.export``, ``from_saved_model``)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import long_chain_model_file, randomize, require_gpu

from benchmarks.gpu_check import check_gpu
from benchmarks.xnnpack_check import xnnpack_coverage
from invo_base.tflite_model import GPU_TEXTURE_LIMIT, TFLiteModel
from involution import Involution
from involution.models import official_involution

# (input size, channels, K, stride) of every involution in RedNet-26..152 at 224x224 (the stem; stage 1; each
# stage's first, strided, layer; the rest of stages 2-4), the stem and stage 3's first at 300x300 (8 row strips;
# an odd size at stride 2), then an interleaved-group stride-2 layer and the seed model's 32x32x3, K3, one group.
REDNET_CONFIGS = [(112, 32, 3, 1), (56, 64, 7, 1), (56, 128, 7, 2), (28, 128, 7, 1), (28, 256, 7, 2),
                  (14, 256, 7, 1), (14, 512, 7, 2), (7, 512, 7, 1), (150, 32, 3, 1), (19, 256, 7, 2)]


def all_configs_model(batch_size, strategy="shift"):
    """One model, one input and one output per configuration: every path of the layer in a single conversion."""
    inputs, outputs = [], []
    for n, (h, c, k, s) in enumerate(REDNET_CONFIGS):
        x = keras.Input((h, h, c), batch_size=batch_size, name=f"in{n}")
        inputs.append(x)
        outputs.append(official_involution(c, k, s, name=f"inv{n}", strategy=strategy)(x))
    # The extract_patches formulation's interleaved groups, at stride 2 on groups-innermost planes (the RedNets'
    # strided layers above have contiguous groups).
    x = keras.Input((14, 14, 64), batch_size=batch_size, name="interleaved")
    inputs.append(x)
    outputs.append(Involution(channel=64, group_number=4, kernel_size=7, stride=2, strategy=strategy,
                              name="interleaved_inv")(x))
    x = keras.Input((32, 32, 3), batch_size=batch_size, name="seed")
    inputs.append(x)
    outputs.append(Involution(channel=3, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, strategy=strategy,
                              name="seed_inv")(x))
    return randomize(keras.Model(inputs, outputs), seed=3)


def stock_convert(model, precision, saved_model=None):
    """The stock converter's file: from the Keras model (``from_keras_model``), or from ``saved_model``, the same
    model written by ``model.export`` (Keras 3's documented way to TFLite: then ``from_saved_model``)."""
    if saved_model:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    else:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "dynamic":  # Optimize.DEFAULT alone: int8 weights, float activations
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        rng = np.random.default_rng(0)
        shapes = {t.name: (1, *t.shape[1:]) for t in model.inputs}
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        # Several inputs: by signature name (a list would be taken in the converter's own input order).
        conv.representative_dataset = lambda: ({n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
                                               for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


@pytest.fixture(scope="module")
def models():
    return {"batch 1": all_configs_model(1), "dynamic batch": all_configs_model(None)}


@pytest.fixture(scope="module")
def saved_models(models, tmp_path_factory):
    """batch -> the model written once by ``model.export``: each quantized conversion starts from it, as a
    pipeline that exports once and converts in several precisions does (from_keras_model writes the same
    SavedModel, traced again, for every conversion)."""
    out = {}

    def get(batch):
        if batch not in out:
            out[batch] = str(tmp_path_factory.mktemp("saved") / batch.replace(" ", "_"))
            models[batch].export(out[batch], verbose=False)
        return out[batch]
    return get


# float32 from the Keras model, checked against it; the quantized files from its SavedModel (model.export).
@pytest.mark.parametrize("batch,precision", [("batch 1", "float32"), ("batch 1", "float16"), ("batch 1", "dynamic"),
                                             ("batch 1", "int8"), ("dynamic batch", "float32")])
def test_stock_converter_export_is_deployable(models, saved_models, tmp_path, batch, precision):
    model = models[batch]
    path = tmp_path / f"stock_{precision}.tflite"
    path.write_bytes(stock_convert(model, precision, saved_models(batch) if precision != "float32" else None))
    info = TFLiteModel.from_file(str(path))
    assert info.builtin_only and info.max_rank <= 4, info.op_histogram()
    chain = info.fusable_chain()
    assert chain["within"] and chain["textures"] <= GPU_TEXTURE_LIMIT, chain
    xnn = xnnpack_coverage(str(path))
    assert xnn["fully_delegated"] and xnn["partitions"] == 1, xnn
    if precision == "int8":  # all int8 inside: one QUANTIZE per (float) input, one DEQUANTIZE per output
        hist = info.op_histogram()
        assert (hist["QUANTIZE"], hist["DEQUANTIZE"]) == (len(model.inputs), len(model.outputs)), hist
    if precision == "float32":  # the file computes what Keras does, on every configuration
        from ai_edge_litert.interpreter import Interpreter

        rng = np.random.default_rng(1)
        xs = [rng.standard_normal((1, *t.shape[1:])).astype(np.float32) for t in model.inputs]
        run = Interpreter(model_path=str(path)).get_signature_runner()
        got = run(**{t.name: x for t, x in zip(model.inputs, xs)})
        want = model(xs)
        assert len(got) == len(want)
        for n, w in enumerate(want):  # the signature names Keras's outputs output_0, output_1, ...
            w = np.asarray(w)
            np.testing.assert_allclose(got[f"output_{n}"], w, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(w).max()))
    require_gpu()
    g = check_gpu(str(path))
    # int8: the GPU accelerator computes it in float, from the file's dequantized weights
    assert g["available"] and g["fully_delegated"] and g["ok"], g


@pytest.mark.parametrize("batch,precision", [("batch 1", "float32"), ("batch 1", "float16")])
def test_stock_converter_gpu_form_is_a_few_ops_per_layer_and_right_on_the_gpu(tmp_path, batch, precision):
    """``Involution(strategy="separable")``, what ``invo-convert --target gpu`` builds, through the stock converter:
    every RedNet configuration within the GPU target's ops per layer, builtin-only, at most 4-D, one XNNPACK
    partition, equal to Keras, and right on the GPU accelerator (float16: by FP16's rule).  Any batch computes the
    same (tests/test_layer.py)."""
    from convert.targets import GPU_MAX_LAYER_OPS, layer_op_counts

    model = all_configs_model(1 if batch == "batch 1" else None, strategy="separable")
    path = tmp_path / f"separable_{precision}.tflite"
    path.write_bytes(stock_convert(model, precision))
    info = TFLiteModel.from_file(str(path))
    assert info.builtin_only and info.max_rank <= 4 and info.fusable_chain()["within"], info.op_histogram()
    names = [layer.name for layer in model.layers if isinstance(layer, Involution)]
    per_layer = layer_op_counts(info.main, names)  # the stock converter keeps the layers' names on its tensors
    assert len(per_layer) == len(REDNET_CONFIGS) + 2 and 5 <= min(per_layer.values()), per_layer
    assert max(per_layer.values()) <= GPU_MAX_LAYER_OPS, per_layer
    assert len(info.ops) <= GPU_MAX_LAYER_OPS * len(names), info.op_histogram()
    xnn = xnnpack_coverage(str(path))
    assert xnn["fully_delegated"] and xnn["partitions"] == 1, xnn
    from ai_edge_litert.interpreter import Interpreter

    xs = [np.random.default_rng(1).standard_normal((1, *t.shape[1:])).astype(np.float32) for t in model.inputs]
    got = Interpreter(model_path=str(path)).get_signature_runner()(**{t.name: x for t, x in zip(model.inputs, xs)})
    tol = 1e-4 if precision == "float32" else 2e-2  # float16 weights: the kernel generation's rounding
    for n, w in enumerate(model(xs)):
        w = np.asarray(w)
        np.testing.assert_allclose(got[f"output_{n}"], w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))
    require_gpu()
    g = check_gpu(str(path))
    assert g["available"] and g["fully_delegated"] and g["ok"], g


def test_the_audit_catches_a_chain_past_the_limit(tmp_path):
    """A model summing 60 products in one chain: the audit says the fused shader would read too many textures,
    and the GPU accelerator, which calls it fully accelerated, returns wrong numbers (SwiftShader's limit is 48)."""
    path = long_chain_model_file(tmp_path / "chain60.tflite")
    chain = TFLiteModel.from_file(str(path)).fusable_chain()
    assert not chain["within"] and chain["ops"] == 60 and chain["textures"] == 61, chain
    require_gpu()
    g = check_gpu(str(path))
    assert g["fully_delegated"] and not g["ok"] and g["max_abs_error"] > 1.0, g


def test_stock_int8_pipeline_calibrates_as_invo_convert_inside_exact_calibration(tmp_path):
    """A user's own TFLiteConverter (int8, a representative dataset) run inside ``exact_calibration()``: its file
    computes, bit for bit, what invo-convert's default (exact) calibration gives, and differs from TF's
    calibrator's, which the same pipeline uses outside it (and which ``--calibrator tf`` reproduces)."""
    import contextlib

    from benchmarks.runtime import InterpreterRunner
    from convert.calibration import exact_calibration
    from convert.export import to_tflite

    x = keras.Input((14, 14, 32), batch_size=1)
    y = official_involution(32, 7, 1, name="inv_k7")(x)
    y = Involution(channel=32, group_channels=16, kernel_size=3, stride=2, reduction_ratio=4)(keras.layers.ReLU()(y))
    model = randomize(keras.Model(x, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y))), seed=4)
    rng = np.random.default_rng(0)
    rep = [rng.standard_normal((1, 14, 14, 32)).astype(np.float32) for _ in range(8)]
    held = rng.standard_normal((8, 1, 14, 14, 32)).astype(np.float32)

    def outputs(flat, name):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(flat)
        runner = InterpreterRunner(str(path))
        return np.stack([runner(h)[0] for h in held])

    got = {}
    for calibrator in ("exact", "tf"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with exact_calibration() if calibrator == "exact" else contextlib.nullcontext():
            stock = outputs(conv.convert(), f"stock_{calibrator}")
        ours = outputs(to_tflite(model, "int8", "float32", rep, calibrator=calibrator), f"invo_{calibrator}")
        np.testing.assert_array_equal(stock, ours)
        got[calibrator] = stock
    assert not np.array_equal(got["exact"], got["tf"])


class _Unscoped(Involution):
    """The layer as it was before its name scopes: the same ops and weights, the names of ``call``'s halves
    left to Keras."""

    def call(self, x, training=None):
        return self.aggregate(x, self.generate_kernel(x, training=training))


@pytest.mark.parametrize("h,c,s", [(56, 64, 1), (28, 256, 2)])
def test_stock_converter_copies_each_window_just_before_its_product(tmp_path, h, c, s):
    """The layer's name scopes order the stock converter's operators: its file holds about as many activation
    bytes at once as invo-convert's depth-first export, where the same ops named otherwise hold every window
    at once (the converter lists, of two branches that meet, the one whose names sort first as a block)."""
    from convert.export import to_tflite
    from invo_base.plumbing import write_atomic

    x = keras.Input((h, h, c), batch_size=1)
    layer = official_involution(c, 7, s, name="inv")
    model = randomize(keras.Model(x, layer(x)), seed=0)
    unscoped = _Unscoped.from_config(layer.get_config())
    plain = keras.Model(x, unscoped(x))
    plain.set_weights(model.get_weights())

    def peak(flat):
        return TFLiteModel(flat).peak_activations()["bytes"]

    ours, scoped = peak(to_tflite(model)), peak(stock_convert(model, "float32"))
    unnamed = peak(stock_convert(plain, "float32"))
    assert scoped <= 1.5 * ours, (scoped, ours)
    assert unnamed >= 3 * ours, (unnamed, ours)  # if this fails, the converter orders otherwise now: revisit the scopes
    # Only the order differs: the same ops compute the same outputs.
    path = tmp_path / "stock.tflite"
    write_atomic(str(path), stock_convert(model, "float32"))
    xs = np.random.default_rng(0).standard_normal((1, h, h, c)).astype(np.float32)
    from benchmarks.runtime import InterpreterRunner

    np.testing.assert_allclose(InterpreterRunner(str(path))(xs)[0], np.asarray(plain(xs)), rtol=1e-4, atol=1e-4)
