"""invo-convert: real conversions, the extract_patches rewrite, verification, the op audit and bad input."""

import gc
import os
import re
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, assert_gpu_ok, assert_one_line_error, randomize, require_gpu, run_cli

from benchmarks.runtime import InterpreterRunner, cpu_fp16_arithmetic
from convert.api import convert_model
from convert.cli import main as convert_cli
from involution.reference import InvolutionReference

LEGACY = os.path.join(ROOT, "tests", "legacy_layers")


def _leftovers(directory):
    return [p for p in os.listdir(directory) if p.startswith(".invo-")]


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic"])
def test_seed_conv_float_modes(trained_seed, tmp_path, quantize, capfd):
    out, _ = trained_seed
    r = convert_model(str(out / "seed-conv" / "model.keras"), str(tmp_path / "c.tflite"), quantize=quantize,
                      calib="digits", gpu=True)
    gc.collect()
    # Every runtime the checks loaded was freed where its teardown lines are hidden (the FP16 check's was not).
    assert "DestroyAccelerator" not in capfd.readouterr().err
    assert r["audit"]["builtin_only"] and r["audit"]["inputs"][0]["dtype"] == "FLOAT32"
    tol = {"none": 1e-5, "float16": 1e-2, "dynamic": 5e-2}[quantize]
    assert r["verify"]["max_rel_error"] <= tol, r["verify"]
    assert r["xnnpack"]["fully_delegated"], r["xnnpack"]
    assert_gpu_ok(r)
    meta = r["audit"]["metadata"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["min_runtime_version"])  # the converter's entries survive the editor
    if quantize == "float16":
        # Phones run the file in FP16 (XNNPACK reads this entry), and the gate checked FP16 arithmetic's outputs.
        assert meta["reduced_precision_support"] == "fp16accfp16"
        how = cpu_fp16_arithmetic()  # XNNPACK computes FP16 natively, emulates it (x86 with AVX2) or cannot
        assert r["verify"]["arithmetic"] == ("float32" if how == "none" else "fp16"), r["verify"]
        assert r["verify"].get("fp16_arithmetic") == (None if how == "none" else how), r["verify"]
    else:
        assert "reduced_precision_support" not in meta and "arithmetic" not in r["verify"]


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_reference_models_are_rewritten_to_builtin_ops(tmp_path, fmt):
    inp = keras.Input((12, 12, 8))
    x = InvolutionReference(channel=8, group_number=4, kernel_size=3, stride=1, reduction_ratio=2)(inp)
    x = InvolutionReference(channel=8, group_number=2, kernel_size=5, stride=2, reduction_ratio=4)(keras.layers.ReLU()(x))
    model = randomize(keras.Model(inp, x))
    path = tmp_path / f"ref.{fmt}"
    model.save(path)
    r = convert_model(str(path), str(tmp_path / "ref.tflite"), gpu=True)
    assert len(r["rewritten"]) == 2 and all("InvolutionReference" in s for s in r["rewritten"])
    assert r["rewrite_max_abs_error"] < 1e-4
    assert r["audit"]["builtin_only"] and r["audit"]["max_tensor_rank"] <= 4
    xs = np.random.default_rng(0).standard_normal((1, 12, 12, 8)).astype(np.float32)
    np.testing.assert_allclose(InterpreterRunner(str(tmp_path / "ref.tflite"))(xs)[0], model.predict(xs, verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert_gpu_ok(r)


@pytest.fixture(scope="module")
def kerasio_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("kerasio")
    proc = run_cli("save_models", str(out), env={"PYTHONPATH": LEGACY})
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_io_models_load_without_their_code(kerasio_models, tmp_path, fmt):
    """The keras.io layer returns (output, kernel) and is not importable here: the converter supplies it."""
    assert "keras_io_involution" not in sys.modules
    target = tmp_path / "k.tflite"
    r = convert_model(str(kerasio_models / f"kerasio.{fmt}"), str(target), gpu=True)
    assert_gpu_ok(r)
    assert len(r["rewritten"]) == 2 and all("keras.io" in s for s in r["rewritten"])
    assert r["audit"]["builtin_only"] and r["audit"]["max_tensor_rank"] <= 4
    expected = np.load(kerasio_models / "kerasio_expected.npz")
    got = np.concatenate([InterpreterRunner(str(target))(x[None])[0] for x in expected["x"]])
    np.testing.assert_allclose(got, expected["y"], rtol=1e-4, atol=1e-4)


def test_gpu_audit_is_measured_on_the_accelerator(trained_seed, tmp_path):
    require_gpu()
    out, _ = trained_seed
    r = convert_model(str(out / "seed-involution" / "model.keras"), str(tmp_path / "g.tflite"))
    g = r["gpu"]
    assert g["available"] and g["fully_delegated"] and g["ok"] and g["max_abs_error"] < 1e-3
    assert g["emulated"] == ("swiftshader" in os.environ.get("VK_ICD_FILENAMES", ""))


# --- bad input: one clear line, non-zero exit, no traceback, no partial output -------------------------


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, trained_seed):
    d = tmp_path_factory.mktemp("bad")
    out, _ = trained_seed
    h5 = (out / "seed-involution" / "model.h5").read_bytes()
    (d / "trunc.h5").write_bytes(h5[: len(h5) // 2])
    (d / "notes.h5").write_text("this is not a model\n")
    (d / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)

    @keras.saving.register_keras_serializable(package="mystery")
    class Mystery(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inp = keras.Input((8, 8, 3))
    keras.Model(inp, Mystery()(inp)).save(d / "mystery.keras")
    keras.saving.get_custom_objects().pop("mystery>Mystery", None)
    rng = np.random.default_rng(0)
    np.savez(d / "wrong_shape.npz", x=rng.random((8, 32, 32, 5), dtype=np.float32))
    np.savez(d / "wrong_dtype.npz", x=np.array([["a"] * 4] * 4))
    np.savez(d / "nan.npz", x=np.full((8, 32, 32, 3), np.nan, np.float32))
    np.savez(d / "empty.npz", x=np.zeros((0, 32, 32, 3), np.float32))
    (d / "exists.tflite").write_bytes(b"keep me")
    return d, out / "seed-involution" / "model.h5"


@pytest.mark.parametrize("args,needle", [
    (["{d}/missing.h5"], "no such file"),
    (["{d}/model.tflite"], "corrupt or truncated TFLite model"),  # a .tflite is reordered: this one is no model
    (["{d}/notes.h5"], "not a Keras model"),
    (["{d}/trunc.h5"], "corrupt or truncated"),
    (["{d}/mystery.keras"], "Mystery"),
    (["{m}", "--quantize", "int8"], "calibration data"),
    (["{m}", "--calibrator", "tf"], "--calibrator applies to --quantize int8 only"),
    (["{m}", "--quantize", "int8", "--calib", "{d}/wrong_shape.npz"], "5"),
    (["{m}", "--quantize", "int8", "--calib", "{d}/wrong_dtype.npz"], "must be numbers"),
    (["{m}", "--quantize", "int8", "--calib", "{d}/nan.npz"], "NaN"),
    (["{m}", "--quantize", "int8", "--calib", "{d}/empty.npz"], "no samples"),
    (["{m}", "-o", "{d}/exists.tflite"], "--force"),
    (["{m}", "-o", "/proc/1/x.tflite"], "not writable"),
    (["{m}", "-o", "{d}/no/such/dir/x.tflite"], "does not exist"),
])
def test_bad_input(bad_inputs, args, needle):
    d, m = bad_inputs
    args = [a.format(d=d, m=m) for a in args]
    if "-o" not in args:
        args += ["-o", str(d / "out.tflite")]
    before = set(os.listdir(d))
    result = CliRunner().invoke(convert_cli, args + ["--quiet", "--no-gpu-check"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), result.output
    assert "Traceback" not in result.output
    assert set(os.listdir(d)) == before and not _leftovers(d)
    assert (d / "exists.tflite").read_bytes() == b"keep me"


def test_unknown_layer_message_says_how_to_register(bad_inputs):
    d, _ = bad_inputs
    proc = run_cli("convert.cli", str(d / "mystery.keras"), "-o", str(d / "m.tflite"))
    line = assert_one_line_error(proc, "Mystery")
    assert "register_keras_serializable" in line and "--custom-module" in line


def test_uint8_io_and_npz_calibration(trained_seed, tmp_path):
    out, _ = trained_seed
    from involution.data import load_digits, split_indices

    d = load_digits()
    np.savez(tmp_path / "calib.npz", x=(d.x_val * 255).astype(np.uint8), y=d.y_val)
    r = convert_model(str(out / "seed-involution" / "model.keras"), str(tmp_path / "u8.tflite"), quantize="int8",
                      io="uint8", calib=str(tmp_path / "calib.npz"), gpu=True)
    assert_gpu_ok(r)
    assert r["audit"]["inputs"][0]["dtype"] == "UINT8" and r["audit"]["outputs"][0]["dtype"] == "UINT8"
    assert r["verify"]["samples"] == len(split_indices(len(d.x_val))[1]) and r["verify"]["top1_agreement"] >= 0.9


def _two_input_involution_model():
    """Two named inputs (calibration feeds the signature by name), an involution layer, BatchNorm statistics."""
    from involution import Involution

    a, b = keras.Input((10, 10, 8)), keras.Input((10, 10, 8))
    x = Involution(channel=8, group_number=2, kernel_size=3, reduction_ratio=2)(keras.layers.Add()([a, b]))
    return randomize(keras.Model([a, b], keras.layers.BatchNormalization()(x)))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_lean_savedmodel_converts_byte_for_byte_like_keras_export_archive(tmp_path, quantize):
    """The export saves a bare module of the model's variables (faster); the converter's file is the one that
    Keras's ExportArchive would have given, to the byte, in float32 and in int8 calibrated by input name."""
    import tensorflow as tf

    from convert import export

    model = _two_input_involution_model()
    rng = np.random.default_rng(0)
    rep = [[rng.standard_normal((1, 10, 10, 8)).astype(np.float32) for _ in range(2)] for _ in range(4)]
    files = []
    for save in (export._save_lean, export._save_archive):
        directory = str(tmp_path / save.__name__)
        save(model, directory)
        conv = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=["serve"])
        if quantize == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = export.representative_dataset(rep)
        files.append(conv.convert())
    assert files[0] == files[1]


def test_a_model_with_a_lookup_table_still_exports(tmp_path):
    """A resource other than variables (a lookup table) needs Keras's ExportArchive, which tracks it: the export
    falls back to it, and the table reaches the file (as Flex ops, with --allow-flex)."""
    from convert.export import to_tflite
    from invo_base.tflite_model import TFLiteModel

    inp = keras.Input((4,), dtype="int64")
    x = keras.layers.IntegerLookup(vocabulary=[1, 2, 3], output_mode="one_hot")(inp)
    path = tmp_path / "lookup.tflite"
    path.write_bytes(to_tflite(keras.Model(inp, keras.layers.Dense(2)(x)), allow_flex=True))
    assert any("HashTable" in op for op in TFLiteModel.from_file(str(path)).flex_ops)


def test_verification_reference_is_predicts_output_for_every_sample():
    """verify's Keras side: a few samples run eagerly, more through predict (which traces the model first); both
    give every sample's first output in order, as predict does, across partial batches."""
    from convert.verification import EAGER_MAX_SAMPLES, keras_outputs
    from involution import Involution

    inp = keras.Input((9, 9, 8))
    y = Involution(channel=8, group_number=2, kernel_size=3, reduction_ratio=2)(inp)
    logits = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(y))
    model = randomize(keras.Model(inp, [logits, keras.layers.ReLU()(logits)]))
    x = np.random.default_rng(3).standard_normal((EAGER_MAX_SAMPLES + 7, 9, 9, 8)).astype(np.float32)
    for n in (1, 33, EAGER_MAX_SAMPLES, EAGER_MAX_SAMPLES + 7):  # eager in 1 and 2 batches, then predict
        want = model.predict(x[:n], verbose=0, batch_size=32)[0]
        got = keras_outputs(model, x[:n])
        assert got.shape == (n, 5) and np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
