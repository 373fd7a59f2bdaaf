"""One test per private Keras / TensorFlow internal that ``convert.compat`` relies on, against the installed
versions: an upgrade that moves or changes one fails here, by name."""

import json
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from convert import compat
from invo_base.tflite_model import TFLiteModel
from involution import Involution


def _small_model():
    inp = keras.Input((8, 8, 4), batch_size=1)
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Conv2D(4, 1)(inp)))


def _converter(model):
    return tf.lite.TFLiteConverter.from_keras_model(model)


def test_fp16_accumulation_writes_the_reduced_precision_metadata():
    conv = _converter(_small_model())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    plain = TFLiteModel(conv.convert())
    compat.allow_fp16_accumulation(conv)
    marked = TFLiteModel(conv.convert())
    assert plain.metadata.get("reduced_precision_support", b"").rstrip(b"\0") != b"fp16accfp16"
    assert marked.metadata["reduced_precision_support"].rstrip(b"\0") == b"fp16accfp16"


def test_per_tensor_dense_makes_a_dynamic_range_file_older_runtimes_load():
    """Dynamic range writes a Dense layer per channel (FULLY_CONNECTED v12, min_runtime_version 2.17.0);
    per tensor it is an op version TF 2.3 loads, its weights still int8 (tests/test_bench.py runs it on
    tflite-runtime 2.14)."""
    inp = keras.Input((64,), batch_size=1)
    model = keras.Model(inp, keras.layers.Dense(100)(inp))
    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    default = TFLiteModel(conv.convert())
    compat.per_tensor_dense(conv)
    legacy = TFLiteModel(conv.convert())
    assert default.min_runtime_version == "2.17.0" and legacy.min_runtime_version == "2.3.0"
    for m in (default, legacy):  # both dynamic range: the Dense weights int8, its output float
        assert [t.dtype for t in m.main["tensors"] if t.constant_size and len(t.shape) == 2] == ["INT8"]
        assert m.op_output_types("FULLY_CONNECTED") == ["FLOAT32"]


def test_calibrate_only_then_quantize_with_a_denylist():
    """The calibrated model stays float; quantizing it with one op type denylisted leaves that op float with
    int8 ends everywhere else, as selective quantization needs."""
    model = _small_model()
    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.standard_normal((1, 8, 8, 4)).astype(np.float32)] for _ in range(4))
    calibrated = compat.calibrated_only(conv).convert()
    assert set(TFLiteModel(calibrated).op_output_types("CONV_2D")) == {"FLOAT32"}
    out = TFLiteModel(compat.quantize_calibrated(conv, calibrated, tf.int8, denylisted_ops=["FULLY_CONNECTED"]))
    assert set(out.op_output_types("CONV_2D")) == {"INT8"}
    assert set(out.op_output_types("FULLY_CONNECTED")) == {"FLOAT32"}
    assert [t["dtype"] for t in out.summary()["inputs"]] == ["INT8"]


def test_flex_ops_are_named_in_the_converter_error():
    inp = keras.Input((8, 8, 3), batch_size=1)
    patches = keras.layers.Lambda(lambda x: tf.image.extract_patches(x, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME"))(inp)
    with pytest.raises(Exception) as err:
        _converter(keras.Model(inp, patches)).convert()
    assert compat.flex_ops_named(str(err.value)) == ["ExtractImagePatches"]
    assert compat.flex_ops_named("Could not translate MLIR to FlatBuffer: unrelated") == []


def test_all_layers_reaches_nested_involutions():
    inner_in = keras.Input((8, 8, 16))
    inner = keras.Model(inner_in, Involution(16, kernel_size=3, name="deep")(inner_in), name="block")
    inp = keras.Input((8, 8, 16))
    model = keras.Model(inp, Involution(16, kernel_size=3, name="top")(inner(inp)))
    names = {layer.name for layer in compat.all_layers(model) if isinstance(layer, Involution)}
    assert names == {"deep", "top"} and "deep" not in {layer.name for layer in model.layers}


def test_model_from_h5_config_builds_the_saved_architecture(tmp_path):
    model = _small_model()
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    rebuilt = compat.model_from_h5_config(config, custom_objects={})
    assert [type(layer).__name__ for layer in rebuilt.layers] == [type(layer).__name__ for layer in model.layers]
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]


def test_weights_path_name_is_where_keras_saves_a_layer(tmp_path):
    model = _small_model()
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        z.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        saved = set(f["layers"])
    assert {compat.weights_path_name(layer) for layer in model.layers if layer.weights} <= saved


def test_keras_loading_errors_are_recognised(tmp_path):
    """Each message ``convert.load`` reads, provoked for real: an unregistered class, weights that do not fit,
    a damaged file."""

    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x

    inp = keras.Input((4,))
    path = tmp_path / "u.keras"
    keras.Model(inp, Unregistered()(inp)).save(path)
    with pytest.raises(Exception) as err:
        keras.saving.load_model(path)
    assert compat.unknown_class(err.value) and "Unregistered" in compat.unknown_class(err.value)

    with pytest.raises(Exception) as err:
        _load_mismatched(tmp_path)
    assert compat.weights_did_not_fit(err.value)

    h5 = tmp_path / "m.h5"
    _small_model().save(h5)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(h5.read_bytes()[:300])
    with pytest.raises(Exception) as err:
        keras.saving.load_model(broken)
    assert compat.file_is_corrupt(err.value)  # h5py: "Unable to synchronously open file (truncated file ...)"
    assert compat.unknown_class(ValueError("something else")) is None and not compat.weights_did_not_fit(ValueError("x"))


def _load_mismatched(tmp_path):
    """Saved weights of a Dense(5) loaded into a Dense(6) of the same name: Keras's mismatch error."""
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="d")]).save_weights(tmp_path / "w.weights.h5")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="d")]).load_weights(tmp_path / "w.weights.h5")


def test_replaced_extract_patches_is_used_inside_and_restored_after():
    original = tf.image.extract_patches
    calls = []

    def replacement(orig, images, *args, **kwargs):
        calls.append(orig)
        return orig(images, *args, **kwargs)

    x = tf.zeros((1, 4, 4, 1))
    with compat.replaced_extract_patches(replacement):
        tf.image.extract_patches(x, [1, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    with pytest.raises(RuntimeError), compat.replaced_extract_patches(replacement):
        raise RuntimeError("restored on error too")
    assert calls == [original] and tf.image.extract_patches is original


def test_calibration_replaced_sees_the_float_model_and_every_sample():
    """The converter hands the replacement its float model and the representative samples; what it returns is
    what gets quantized, and None leaves the model to TF's calibrator."""
    from invo_base.tflite_edit import unpack

    model = _small_model()
    samples = [np.full((1, 8, 8, 4), v, np.float32) for v in (-1.0, 2.0, 3.0)]
    seen = []

    def calibrate(flat, batches):
        seen.append((unpack(flat).subgraphs[0].tensors[0].type, [float(b[0].max()) for b in batches]))
        return None

    def converted():
        conv = _converter(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s] for s in samples)
        return conv.convert()

    with compat.calibration_replaced(calibrate):
        a = converted()
    assert seen == [(0, [-1.0, 2.0, 3.0])]  # a float32 model, every sample in order
    assert a == converted()  # None: TF's own calibration, byte for byte; and the converter is restored after
    assert len(seen) == 1
