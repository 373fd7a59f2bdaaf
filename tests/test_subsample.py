"""Subsample2D (a ResNet shortcut's stride) and why RedNet's shortcuts use it: the LiteRT GPU accelerator computes
an int8 1x1 convolution of stride 2 wrongly, the GPU check finds it op by op, and the subsampled form is right."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize, require_gpu

from benchmarks.gpu_check import check_gpu, describe_failure
from benchmarks.xnnpack_check import xnnpack_coverage
from involution.models import build_model
from involution.subsample import Subsample2D


@pytest.mark.parametrize("h,w,s", [(8, 6, 2), (7, 5, 2), (9, 9, 3), (4, 4, 1)])
def test_subsample_is_every_sth_row_and_column_at_any_batch(h, w, s):
    x = np.random.default_rng(h * w).standard_normal((3, h, w, 5)).astype(np.float32)
    layer = Subsample2D(s)
    np.testing.assert_array_equal(np.asarray(layer(x)), x[:, ::s, ::s])
    assert layer.compute_output_shape((None, h, w, 5)) == (None, -(-h // s), -(-w // s), 5)
    assert Subsample2D.from_config(layer.get_config()).stride == s
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        Subsample2D(0)


def test_rednet_shortcut_is_the_strided_conv_it_replaces():
    """The projection shortcut (subsample, then a stride-1 1x1 conv) computes the official stride-2 1x1 conv."""
    model = randomize(build_model("rednet-cifar", (32, 32, 3)), seed=1)
    sub, conv = model.get_layer("s2b1_down_subsample"), model.get_layer("s2b1_down_conv")
    assert conv.strides == (1, 1)
    x = np.random.default_rng(0).standard_normal((2, *sub.input.shape[1:])).astype(np.float32)
    strided = keras.layers.Conv2D(conv.filters, 1, strides=2, use_bias=False)
    strided.build(x.shape)
    strided.set_weights(conv.get_weights())
    np.testing.assert_allclose(np.asarray(conv(sub(x))), np.asarray(strided(x)), rtol=1e-6, atol=1e-6)


def _int8(model, shape):
    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.standard_normal((1, *shape)).astype(np.float32)] for _ in range(4))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def test_gpu_check_names_the_int8_strided_conv_it_computes_wrongly(tmp_path):
    """Measured on ai-edge-litert 2.3: an int8 1x1 CONV_2D of stride 2 comes back from the GPU accelerator as
    garbage, fully accelerated.  Inside a network int8's drift can hide it; the check runs each op with int8
    weights alone and names it.  The subsampled form of the same conv is right on the GPU and inside XNNPACK."""
    require_gpu()
    shape = (28, 28, 64)
    inp = keras.Input(shape, batch_size=1)
    strided = keras.Model(inp, keras.layers.Conv2D(128, 1, strides=2)(inp))
    inp = keras.Input(shape, batch_size=1)
    subsampled = keras.Model(inp, keras.layers.Conv2D(128, 1)(Subsample2D(2)(inp)))
    bad, good = tmp_path / "strided.tflite", tmp_path / "subsampled.tflite"
    bad.write_bytes(_int8(strided, shape))
    good.write_bytes(_int8(subsampled, shape))
    g = check_gpu(str(bad))
    assert g["fully_delegated"] and not g["ok"] and [o["name"] for o in g["wrong_ops"]] == ["CONV_2D"], g
    assert g["wrong_ops"][0]["error"] > 0.2  # 0.35-1.0 measured: far past a right op's 0.016
    assert "computes 1 op(s) wrongly, each checked alone" in describe_failure(str(bad), g)
    g = check_gpu(str(good))
    assert g["ok"] and g["single_ops_checked"] == 1 and not g["wrong_ops"], g
    assert xnnpack_coverage(str(good))["fully_delegated"]
