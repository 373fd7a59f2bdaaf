"""Users' own extract_patches involution classes convert without their code, whatever they name and nest.

Each class in tests/user_layers is saved in a process of its own (.keras and .h5), so the converter never
sees it; the converter matches each involution layer's saved arrays by role and shape."""

import os
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_cli

from benchmarks.runtime import InterpreterRunner
from convert.api import convert_model

USER = os.path.join(ROOT, "tests", "user_layers")
CLASSES = ["NotebookStyle", "SequentialGenerator", "RenamedAttributes"]


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("user")
    proc = run_cli("save_user_models", str(out), *CLASSES, "ExtraConv", env={"PYTHONPATH": USER})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("which", CLASSES)
def test_user_classes_convert_by_structure(user_models, tmp_path, which, fmt):
    """Stride 1 with one group and stride 2 with four, in one model: outputs equal the user's own model's."""
    assert "user_involutions" not in sys.modules
    target = tmp_path / f"{which}.tflite"
    r = convert_model(str(user_models / f"{which}.{fmt}"), str(target), gpu=False)
    assert len(r["rewritten"]) == 2 and r["audit"]["builtin_only"] and r["audit"]["max_tensor_rank"] <= 4
    assert r["xnnpack"]["fully_delegated"]
    expected = np.load(user_models / f"{which}_expected.npz")
    got = np.concatenate([InterpreterRunner(str(target))(x[None])[0] for x in expected["x"]])
    np.testing.assert_allclose(got, expected["y"], rtol=0, atol=1e-5 * np.abs(expected["y"]).max())


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_unmatchable_layer_names_itself_and_the_way_out(user_models, tmp_path, fmt):
    proc = run_cli("convert.cli", str(user_models / f"ExtraConv.{fmt}"), "-o", str(tmp_path / "x.tflite"),
                   "--no-gpu-check")
    assert_one_line_error(proc, "layer inv_1", "--custom-module")
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_custom_module_lowers_extract_patches_to_builtins(user_models, tmp_path, fmt):
    """With the user's class given, its own tf.image.extract_patches is lowered at export: builtin ops only,
    the same outputs, and the audit says that the class's 6-D reshape remains (the GPU takes 4-D at most)."""
    target = tmp_path / "extra.tflite"
    proc = run_cli("convert.cli", str(user_models / f"ExtraConv.{fmt}"), "-o", str(target), "--no-gpu-check",
                   "--custom-module", os.path.join(USER, "extra_conv_module.py"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "builtin ops only" in proc.stdout and "rank 6 remains" in proc.stdout
    expected = np.load(user_models / "ExtraConv_expected.npz")
    got = np.concatenate([InterpreterRunner(str(target))(x[None])[0] for x in expected["x"]])
    np.testing.assert_allclose(got, expected["y"], rtol=0, atol=1e-5 * np.abs(expected["y"]).max())


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
def test_builtin_extract_patches_equals_tensorflows(padding, stride):
    """The lowering of a user's extract_patches gives TensorFlow's values for both paddings and strides."""
    import tensorflow as tf

    from convert.lowering import extract_patches_builtin

    x = tf.constant(np.random.default_rng(stride).standard_normal((2, 9, 8, 3)).astype(np.float32))
    args = ([1, 3, 3, 1], [1, stride, stride, 1], [1, 1, 1, 1], padding)
    np.testing.assert_array_equal(extract_patches_builtin(x, *args).numpy(), tf.image.extract_patches(x, *args).numpy())
