"""Official RedNet checkpoints: read without torch, loaded into the Keras RedNet, checked against an independent
numpy forward of the official architecture, and converted by invo-convert --arch."""

import json
import os
import re
import zipfile

import numpy as np
import pytest
import torch_pth
from conftest import assert_one_line_error, invoke_cli, require_gpu
from numpy_rednet import DEPTHS, forward, official_state
from PIL import Image

from benchmarks.host.cli import main as report_cli
from benchmarks.runtime import cpu_fp16_arithmetic
from convert.cli import main as convert_cli
from invo_base.tflite_model import TFLiteModel
from involution.checkpoint import CheckpointError, load_state_dict
from involution.models import build_model
from involution.pretrained import IMAGENET_MEAN, IMAGENET_STD, describe_input

SIZE = 64


def _numpy_logits(state, x_nhwc, name, head=True):
    s = {k[len("backbone."):]: v.astype(np.float64) for k, v in state.items() if k.startswith("backbone.")}
    if head:
        s["fc.weight"], s["fc.bias"] = state["head.fc.weight"].astype(np.float64), state["head.fc.bias"].astype(np.float64)
    return forward(s, x_nhwc.transpose(0, 3, 1, 2).astype(np.float64), DEPTHS[name], head=head)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name in ("rednet26", "rednet50"):
        state = official_state(DEPTHS[name], num_classes=10, seed=1)
        out[name] = (state, torch_pth.save({"state_dict": dict(state), "meta": {"epoch": 130, "CLASSES": list("abcdefghij")}},
                                           d / f"{name}.pth"))
    return d, out


def _x(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("name", ["rednet26", "rednet50"])
def test_keras_rednet_gives_the_official_outputs(checkpoints, name):
    """Official geometry (PyTorch padding, no reduce bias, BN eps 1e-5) against plain numpy code."""
    _, ck = checkpoints
    state, path = ck[name]
    model = build_model(name, (SIZE, SIZE, 3), weights=str(path))
    want = _numpy_logits(state, _x(), name)
    got = np.asarray(model(_x(), training=False))  # eager: tracing predict() costs more than the call
    assert np.abs(want).max() > 1.0  # the weights make a network whose outputs differ per input
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_pth_safetensors_and_npz_load_identical_models(checkpoints, tmp_path):
    from safetensors.numpy import save_file

    _, ck = checkpoints
    state, pth = ck["rednet26"]
    save_file(dict(state), str(tmp_path / "r.safetensors"))
    np.savez(tmp_path / "r.npz", **state)
    ref = build_model("rednet26", (SIZE, SIZE, 3), weights=str(pth))
    for f in ("r.safetensors", "r.npz"):
        other = build_model("rednet26", (SIZE, SIZE, 3), weights=str(tmp_path / f))
        for a, b in zip(ref.weights, other.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bare_backbone_loads_without_classifier(checkpoints, tmp_path):
    _, ck = checkpoints
    state, _ = ck["rednet26"]
    bare = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    path = torch_pth.save(bare, tmp_path / "backbone.pth")
    model = build_model("rednet26", (SIZE, SIZE, 3), weights=str(path))
    assert model.output.shape[-1] == 2048
    want = _numpy_logits(state, _x(), "rednet26", head=False)
    np.testing.assert_allclose(np.asarray(model(_x(), training=False)), want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_pth_reader_rebuilds_strides_offsets_and_half_precisions(tmp_path):
    storage = np.arange(24, dtype=np.float32)
    base = torch_pth.Tensor(storage, 0, (4, 6), (6, 1))
    transposed = torch_pth.Tensor(storage, 0, (6, 4), (1, 6))  # a .t() view of the same storage
    offset = torch_pth.Tensor(storage, 7, (2, 3), (6, 2))  # rows from element 7, every other column
    half = np.linspace(-2, 2, 10).astype(np.float16)
    words = (np.linspace(-3, 3, 8).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    bf16 = torch_pth.Tensor(words, 0, (8,), (1,), storage_type="BFloat16Storage")
    path = torch_pth.save({"a": base, "t": transposed, "o": offset, "h": half, "b": bf16,
                           "n": np.array(5, np.int64)}, tmp_path / "views.pth")
    s = load_state_dict(str(path))
    full = storage.reshape(4, 6)
    np.testing.assert_array_equal(s["a"], full)
    np.testing.assert_array_equal(s["t"], full.T)
    np.testing.assert_array_equal(s["o"], storage[7:].reshape(-1)[: 6 * 2].reshape(2, 6)[:, ::2])
    assert s["h"].dtype == np.float16 and np.array_equal(s["h"], half)
    np.testing.assert_array_equal(s["b"], (words.astype(np.uint32) << 16).view(np.float32))
    assert int(s["n"]) == 5


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        z.writestr("archive/byteorder", "little")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_state_dict(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("case,needle", [
    ("depth", "the checkpoint is rednet50"),
    ("missing", "1 key(s) missing: layer3.2.conv2.conv1.conv.weight"),
    ("unexpected", "blocks per stage (1, 2, 4, 1, 1)"),
    ("shape", "layer2.0.conv3.weight has shape (512, 64, 1, 1), the model needs (512, 128, 1, 1)"),
    ("text", "not a pytorch checkpoint"),
    ("suffix", "unknown checkpoint type"),
])
def test_wrong_checkpoints_get_one_clear_error(checkpoints, tmp_path, case, needle):
    _, ck = checkpoints
    state = dict(ck["rednet26"][0])
    path = tmp_path / "bad.pth"
    if case == "depth":
        path = ck["rednet50"][1]
    elif case == "missing":
        del state["backbone.layer3.2.conv2.conv1.conv.weight"]
        torch_pth.save(state, path)
    elif case == "unexpected":
        state["backbone.layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
        torch_pth.save(state, path)
    elif case == "shape":
        state["backbone.layer2.0.conv3.weight"] = np.zeros((512, 64, 1, 1), np.float32)
        torch_pth.save(state, path)
    elif case == "text":
        path.write_text("not a checkpoint")
    else:
        path = tmp_path / "weights.h5"
        path.write_text("x")
    proc = invoke_cli(convert_cli, path, "--arch", "rednet26", "--input-size", SIZE, "-o", tmp_path / "out.tflite",
                      "--no-gpu-check")
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out.tflite").exists()


def test_raw_pixel_input_folds_the_imagenet_normalisation(checkpoints):
    """input_range="0-255" puts (pixel - mean) / std inside the model, and the audit says which input it takes."""
    _, ck = checkpoints
    path = str(ck["rednet26"][1])
    normalised = build_model("rednet26", (SIZE, SIZE, 3), weights=path)
    raw = build_model("rednet26", (SIZE, SIZE, 3), weights=path, input_range="0-255")
    pixels = np.random.default_rng(3).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    want = np.asarray(normalised((pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD), training=False))
    np.testing.assert_allclose(np.asarray(raw(pixels, training=False)), want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert "normalised" in describe_input(None, SIZE) and "raw pixels 0-255" in describe_input("0-255", SIZE)


def test_invo_convert_checkpoint_to_verified_float32_and_int8(checkpoints, tmp_path):
    """The README's two commands for a user with rednet26.pth, at 64x64, taking raw pixels: the float32 file
    equals the official forward of the normalised pixels, int8 reports its top-1 agreement, the GPU path runs,
    and both files are one XNNPACK partition.  At 64x64 stage 4's maps are 2x2, so K=7 windows that read only
    padding meet the int8 zero-range repair; RedNet-38 and -50 add no layer shape (test_stock_converter checks
    every configuration's layer on its own)."""
    from benchmarks.runtime import InterpreterRunner

    require_gpu()
    _, ck = checkpoints
    state, pth = ck["rednet26"]
    f32 = tmp_path / "rednet26.tflite"
    proc = invoke_cli(convert_cli, pth, "--arch", "rednet26", "--input-size", SIZE, "-o", f32,
                      "--input-range", "0-255", "--report", str(tmp_path / "f32.json"),
                      "--no-gpu-check")  # the int8 file's GPU check is below
    assert proc.returncode == 0 and "raw pixels 0-255" in proc.stdout, proc.stderr
    r = json.loads((tmp_path / "f32.json").read_text())
    assert r["xnnpack"]["fully_delegated"] and "raw pixels 0-255" in r["input_expects"] and "gpu" not in r
    pixels = np.random.default_rng(5).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    want = _numpy_logits(state, (pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD), "rednet26")
    np.testing.assert_allclose(InterpreterRunner(str(f32))(pixels)[0], want, rtol=0, atol=1e-4 * np.abs(want).max())
    # The same checkpoint for the GPU: the official outputs too, in a few ops per layer, right on the GPU path.
    gpu = tmp_path / "rednet26_gpu.tflite"
    proc = invoke_cli(convert_cli, pth, "--arch", "rednet26", "--input-size", SIZE, "-o", gpu, "--target", "gpu",
                      "--input-range", "0-255", "--report", str(tmp_path / "gpu.json"))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert r["gpu"]["ok"] and max(r["target"]["layer_ops"].values()) <= 20, (r["gpu"], r["target"])
    np.testing.assert_allclose(InterpreterRunner(str(gpu))(pixels)[0], want, rtol=0, atol=1e-4 * np.abs(want).max())

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):  # gradients, not noise: natural-looking images for calibration
            img = np.clip(np.linspace(0, 255, 96)[None, :, None] * rng.uniform(0.3, 1, 3) + rng.normal(0, 20, (80, 96, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    i8 = tmp_path / "rednet26_int8.tflite"
    proc = invoke_cli(convert_cli, pth, "--arch", "rednet26", "--input-size", SIZE, "-o", i8,
                      "--quantize", "int8", "--calib", str(tmp_path / "imgs"), "--input-range", "0-255",
                      "--report", str(tmp_path / "i8.json"))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "i8.json").read_text())
    # The gate held the int8 model to its default top-1 agreement with Keras on every held-out image.
    assert r["quality_gate"]["passed"] and r["verify"]["top1_agreement"] >= 0.97 and r["verify"]["samples"] >= 4
    assert r["xnnpack"]["fully_delegated"] and r["gpu"]["fully_delegated"] and r["gpu"]["ok"], r["gpu"]


@pytest.mark.parametrize("name,paper", [("rednet101", 25.65e6), ("rednet152", 33.99e6)])
def test_deeper_rednets_have_the_papers_parameter_counts(name, paper):
    model = build_model(name, (SIZE, SIZE, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert abs(trainable - paper) / paper < 0.01, trainable


def test_network_bench_takes_a_checkpoint(checkpoints, tmp_path):
    """invo-report networks --weights rednet26=FILE builds the network from the checkpoint; its FP16, GPU-target
    and stock converter's files are timed beside its float32, and the skeleton, which has no involution, gets
    neither of the last two (int8 with float aggregation: tests/test_quantize.py).  The evicted cache regime is
    the warm one's code with a buffer written before each run (tests/test_bench.py)."""
    _, ck = checkpoints
    out = tmp_path / "nb"
    proc = invoke_cli(report_cli, "networks", "--networks", "rednet26,rednet26-without-involution", "--weights",
                      f"rednet26={ck['rednet26'][1]}", "--input-size", str(SIZE),
                      "--dtypes", "float32,fp16,stock-float32,gpu-float32", "--threads", "1", "--caches", "warm",
                      "--rounds", "1", "--num-runs", "2", "--no-layers", "--no-gpu-check", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "network_bench.json").read_text())["networks"]
    # The skeleton has no involution: no stock-float32 model, which measures the layer's name scopes (dynamic
    # range: every involution configuration in tests/test_stock_converter.py), and no GPU-target file.
    assert [(r["network"], r["dtype"]) for r in rows] == [
        ("rednet26", "float32"), ("rednet26", "fp16"), ("rednet26", "stock-float32"), ("rednet26", "gpu-float32"),
        ("rednet26-without-involution", "float32"), ("rednet26-without-involution", "fp16")]
    assert rows[0]["weights"] == str(ck["rednet26"][1]) and all(r["xnnpack"]["fully_delegated"] for r in rows)
    by = {r["dtype"]: r for r in rows if r["network"] == "rednet26"}
    assert rows[0]["max_rel_error_vs_keras"] < 1e-4 and by["stock-float32"]["ops"] == by["float32"]["ops"]
    # The layer's name scopes: the stock file keeps about as much alive at once as invo-convert's depth-first one.
    assert by["float32"]["peak_activation_bytes"] <= by["stock-float32"]["peak_activation_bytes"] \
        <= 1.5 * by["float32"]["peak_activation_bytes"], by
    # The GPU target's file: its involutions in a few ops each, far fewer in all.
    assert max(by["gpu-float32"]["layer_ops"].values()) <= 20 and by["gpu-float32"]["ops"] < by["float32"]["ops"] / 5
    for r in rows:  # one round: each figure is that round's median
        assert [r["ms_1t"]["median"]] == r["rounds_1t"]
    md = (out / "network_bench.md").read_text()
    ms = rows[0]["ms_1t"]
    assert f"| rednet26 | float32 | {ms['median']:.2f} ({ms['min']:.2f}-{ms['max']:.2f}) |" in md
    assert f"| {rows[0]['ops']} | {rows[0]['peak_activation_bytes'] / 2**20:.1f} | all ops |" in md
    for line in ("  - rednet26 fp16 speed-up over float32: ",
                 "  - rednet26 stock converter's file / invo-convert's, float32: "):
        assert md.count(line) == 1, line  # once per cache regime, each with its figure
        assert all(0.1 < float(v) < 10 for v in re.findall(re.escape(line) + r"([0-9.]+)x", md)), md
    assert "- 1 thread, caches warm:" in md and "Operators per involution layer, fewest-most, as each file's audit counts them: rednet26 float32: " in md
    assert "  - rednet26 gpu-float32 / resnet50 float32" not in md  # no ResNet-50 in this run: no ratio to it
    # Where this CPU only emulates FP16 (x86 without AVX512-FP16), the heading and every FP16 ratio say that its
    # figures are not FP16 speed.
    emulated = cpu_fp16_arithmetic() == "emulated"
    assert ("FP16 is emulated on this CPU" in md) is emulated, md[:600]
    fp16_lines = [line for line in md.splitlines() if "fp16 speed-up over float32" in line]
    assert len(fp16_lines) == 1 and all(line.endswith("(emulated FP16: not FP16 speed)") is emulated
                                        for line in fp16_lines), fp16_lines
    meta = TFLiteModel.from_file(str(out / "rednet26_fp16.tflite")).metadata  # the float16 file phones run in FP16
    assert meta["reduced_precision_support"].rstrip(b"\0") == b"fp16accfp16"
    with Image.open(out / "latency_vs_top1.png") as img:
        img.verify()
