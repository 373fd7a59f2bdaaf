"""invo-convert --target gpu, as a user runs it: the file a GPU runs in a few dispatches, within the target's
operator bounds, equal to the saved model, and right on the GPU accelerator; the audit says so, and warns when a
file meant for the GPU is not built for it."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BIN, ROOT, assert_gives_saved_outputs, assert_one_line_error, invoke_cli, randomize, require_gpu, user_env

from convert.api import convert_model
from convert.cli import main as convert_cli
from convert.errors import ConversionError
from convert.targets import GPU_MAX_LAYER_OPS
from invo_base.tflite_model import TFLiteModel
from involution import Involution

# RedNet-26's GPU file has at most this many operators (the CPU target's: about 2,050): the issue's target.
REDNET26_GPU_MAX_OPS = 200


def _convert(saved, tmp_path, file, *flags):
    """The installed invo-convert on a saved model in a fresh process: (stdout, report)."""
    out, report = tmp_path / "m.tflite", tmp_path / "m.json"
    proc = subprocess.run([os.path.join(BIN, "invo-convert"), str(saved / file), "-o", str(out), "--report",
                           str(report), *flags], capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                          env=user_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(report.read_text())


def test_rednet26_gpu_file_is_within_the_op_bounds_and_right_on_the_gpu(saved, tmp_path):
    """The separable form's operator count does not depend on the input size (no strips, one pool op), so the
    32x32 model has the 224x224 one's count."""
    require_gpu()
    stdout, r = _convert(saved, tmp_path, "rednet26.keras", "--target", "gpu")
    a, t = r["audit"], r["target"]
    assert r["strategy"] == "separable" and t["target"] == "gpu" and not t["warnings"], t
    assert a["ops"] <= REDNET26_GPU_MAX_OPS and a["builtin_only"] and a["max_tensor_rank"] <= 4, a["op_histogram"]
    assert len(t["layer_ops"]) == 9 and max(t["layer_ops"].values()) <= GPU_MAX_LAYER_OPS, t["layer_ops"]
    assert a["gpu_fusion"]["within"] and r["xnnpack"]["fully_delegated"], (a["gpu_fusion"], r["xnnpack"])
    assert r["gpu"]["fully_delegated"] and r["gpu"]["ok"], r["gpu"]
    assert "target: gpu (involution form 'separable'); involution layers " in stdout
    assert f"(bound {GPU_MAX_LAYER_OPS})\n    {a['ops']} ops: about" in stdout
    assert_gives_saved_outputs(saved, "rednet26.keras", tmp_path / "m.tflite")


def test_float16_gpu_file_passes_the_gpu_check_by_fp16s_rule(saved, tmp_path):
    require_gpu()
    _, r = _convert(saved, tmp_path, "seed-involution.keras", "--target", "gpu", "--quantize", "float16")
    assert r["gpu"]["ok"] and r["gpu"]["fully_delegated"] and r["target"]["layer_ops"], r["gpu"]
    meta = TFLiteModel.from_file(str(tmp_path / "m.tflite")).metadata
    assert meta["reduced_precision_support"].rstrip(b"\0") == b"fp16accfp16"


def test_the_audit_warns_when_a_gpu_file_keeps_the_cpu_form(saved, tmp_path):
    stdout, r = _convert(saved, tmp_path, "seed-involution.keras", "--target", "gpu", "--aggregation", "shift",
                         "--no-gpu-check")
    over = {name: n for name, n in r["target"]["layer_ops"].items() if n > GPU_MAX_LAYER_OPS}
    assert len(over) == 3 and len(r["target"]["warnings"]) == 1, r["target"]
    assert f"warning: 3 involution layer(s) have more than {GPU_MAX_LAYER_OPS} ops" in stdout, stdout


@pytest.mark.parametrize("flags,needle", [
    (["--target", "gpu", "--quantize", "dynamic"], "cannot be dynamic-range quantized"),
    (["--target", "phone"], "--target"),
])
def test_gpu_target_option_errors(saved, tmp_path, flags, needle):
    proc = invoke_cli(convert_cli, saved / "seed-involution.keras", "-o", tmp_path / "m.tflite", *flags)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "m.tflite").exists()


def test_a_tflite_input_takes_no_target(tmp_path, seed_files):
    proc = invoke_cli(convert_cli, seed_files / "inv_f32.tflite", "-o", tmp_path / "m.tflite", "--target", "gpu")
    assert_one_line_error(proc, "--target")


def test_int8_of_a_gather_deeper_than_the_builtin_kernel_is_refused_before_calibrating(tmp_path):
    """128 channels x 49 taps = 6,272 > 4,832: calibration's builtin kernel would never finish it, and the
    calibration hook that refuses such ops (``convert.calibration.refuse_builtin_stalls``) refuses it."""
    x = keras.Input((8, 8, 128))
    path = tmp_path / "wide.keras"
    randomize(keras.Model(x, Involution(channel=128, group_channels=16, kernel_size=7, name="wide")(x))).save(path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 8, 8, 128)).astype(np.float32))
    with pytest.raises(ConversionError, match="int8 calibration cannot run this model: .* above 4832, and op "
                                              r"\d+ has 6272"):
        convert_model(str(path), str(tmp_path / "w.tflite"), target="gpu", quantize="int8",
                      calib=str(tmp_path / "calib.npz"), gpu=False)
    assert not (tmp_path / "w.tflite").exists()


def test_gpu_timing_refuses_an_emulated_gpu(tmp_path):
    """invo-report networks --gpu-timing times files on a real GPU only: SwiftShader's timings are not a GPU's."""
    from benchmarks.host.cli import main as report_cli
    from benchmarks.runtime import SWIFTSHADER_ICD

    require_gpu()
    if os.environ.get("VK_ICD_FILENAMES") != SWIFTSHADER_ICD:
        pytest.skip("a real Vulkan driver is configured: --gpu-timing would time it")
    proc = invoke_cli(report_cli, "networks", "--networks", "resnet50", "--dtypes", "float32", "--gpu-timing",
                      "--no-layers", "--out", tmp_path / "nb")
    assert_one_line_error(proc, "--gpu-timing", "SwiftShader")
    assert not (tmp_path / "nb" / "network_bench.json").exists()


def test_the_gpu_record_times_every_file_in_every_setting(seed_files, tmp_path):
    """scripts/gpu_loan.sh's timing run, on SwiftShader here (its timings are labelled as not GPU speed): each
    file on the GPU with FP16 allowed and in float32 and on every CPU core, outputs checked, ratios to ResNet-50."""
    require_gpu()
    import shutil

    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(seed_files / "conv_f32.tflite", folder / "resnet50_f32.tflite")  # stands in for the baseline
    shutil.copy(seed_files / "inv_f32.tflite", folder / "rednet26-gpu_f32.tflite")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_record", str(folder), str(tmp_path / "out"),
                           "--rounds", "1", "--num_runs", "2"], capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path), env=user_env(PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "gpu_record.json").read_text())
    files = record["files"]
    assert set(files) == {"resnet50_f32.tflite", "rednet26-gpu_f32.tflite"}
    for by_setting in files.values():
        assert set(by_setting) == {"gpu", "gpu-fp32", "cpu-all-cores"}
        assert by_setting["gpu"]["check"]["ok"] and by_setting["gpu-fp32"]["check"]["ok"]
        assert by_setting["cpu-all-cores"]["check"] is None and by_setting["gpu"]["accelerator"].startswith("GPU")
    md = (tmp_path / "out" / "gpu_record.md").read_text()
    assert "SwiftShader: emulated, its timings are not GPU speed" in md
    assert "| resnet50_f32.tflite |" in md and md.count("1.00x (1.00-1.00)") == 3
