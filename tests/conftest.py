"""Shared fixtures: real models, real conversions, the real GPU path (SwiftShader on CPU-only hosts)."""

import fcntl
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.runtime import SWIFTSHADER_ICD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)  # the venv's console scripts, as a user's shell finds them
LEGACY_VENV = os.environ.get("INVO_LEGACY_VENV", os.path.join(ROOT, ".venv-legacy"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
if "VK_ICD_FILENAMES" not in os.environ and os.path.exists(SWIFTSHADER_ICD):
    os.environ["VK_ICD_FILENAMES"] = SWIFTSHADER_ICD


def gpu_available():
    return bool(os.environ.get("VK_ICD_FILENAMES")) and os.path.exists(os.environ["VK_ICD_FILENAMES"])


def require_gpu():
    """The GPU path is part of the product: scripts/setup.sh installs chromium's SwiftShader, so a missing
    Vulkan driver fails a GPU test.  INVO_SKIP_GPU=1 skips them instead, on a machine known to lack one."""
    if gpu_available():
        return
    if os.environ.get("INVO_SKIP_GPU") == "1":
        pytest.skip("INVO_SKIP_GPU=1: GPU-path tests skipped")
    pytest.fail("no Vulkan driver for the GPU path: run scripts/setup.sh (chromium's SwiftShader), or set "
                "INVO_SKIP_GPU=1 to skip the GPU-path tests knowingly")


def legacy_python():
    """The legacy board's interpreter (tflite-runtime 2.14, numpy<2, no TensorFlow): scripts/setup.sh builds it,
    so a missing one fails every legacy test alike; INVO_SKIP_LEGACY=1 skips them instead, knowingly."""
    python = os.path.join(LEGACY_VENV, "bin", "python")
    if os.path.exists(python):
        return python
    if os.environ.get("INVO_SKIP_LEGACY") == "1":
        pytest.skip("INVO_SKIP_LEGACY=1: legacy-board tests skipped")
    pytest.fail("the legacy venv is missing: run scripts/setup.sh, or set INVO_SKIP_LEGACY=1 to skip knowingly")


def assert_gpu_ok(result):
    """A converted model ran fully on the GPU accelerator with outputs matching the CPU (fails without a GPU path)."""
    require_gpu()
    g = result.get("gpu")
    assert g is not None, "convert_model ran no GPU check (gpu=False, or the model failed before it)"
    assert g["available"] and g["fully_delegated"] and g["ok"], g


def run_cli(*args, env=None, timeout=600, python=sys.executable):
    """Runs ``python -m MODULE args`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([python, "-m", *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=ROOT)


def user_env(**extra):
    """A user's environment for a command run as they run it: no PYTHONPATH into the repository or the tests
    (the package is installed in the venv), TensorFlow's C++ log lines off."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra)
    return env


def write_cifar(root, n=6):
    """A tiny cifar-10-batches-py in the original pickle format: n random images per batch file."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def invoke_cli(main, *args):
    """Runs a click command in this process, as ``run_cli`` runs it in a new one, for checks that do not need a
    fresh interpreter (no seconds of TensorFlow import per case): a CompletedProcess with the exit code, stdout
    and stderr.  An exception the command let escape, which a user would see as a traceback, is raised."""
    from click.testing import CliRunner

    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(proc, *needles):
    """Non-zero exit, an 'Error:' line naming what is wrong, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def randomize(model, seed=0):
    """Non-trivial weights (and BN statistics) so that equivalence tests can fail."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            w.assign((rng.standard_normal(shape) * 0.4).astype(np.float32))
    return model


def long_chain_model_file(path, terms=60):
    """A .tflite summing ``terms`` products of shifted windows in one chain of ADDs (stock converter): a GPU
    delegate fuses it into one shader reading ``terms`` + 1 textures, past SwiftShader's 48; the accelerator
    then calls the model fully accelerated and returns wrong numbers.  A model the GPU computes wrongly."""
    import keras
    import tensorflow as tf

    x = keras.Input((16, 16, 8), batch_size=1)
    xp = keras.ops.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    rng = np.random.default_rng(0)
    out = None
    for n in range(terms):
        i, j = divmod(n, 8)
        term = xp[:, i : i + 16, j : j + 16, :] * rng.uniform(0.5, 1.5, (1, 1, 1, 8)).astype(np.float32)
        out = term if out is None else out + term
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, out)).convert())
    return path


def made_once(request, tmp_path_factory, name, make):
    """The directory ``make(path)`` fills, made once per test session and shared by every pytest-xdist worker:
    the first to ask makes it (under a lock) in the session's shared directory, and ``make`` must leave ``path``
    complete or absent (write elsewhere, then rename).  Tests only read these files."""
    shared = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker: its parent is the session's, shared
        shared = shared.parent
    out = shared / name / "done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            out.parent.mkdir(exist_ok=True)
            make(out)
    return out


@pytest.fixture(scope="session")
def trained_seed(request, tmp_path_factory):
    """seed-involution and seed-conv trained briefly on the offline digits set, saved by invo-train (which renames
    its finished directory into place)."""
    from involution.train import train

    out = made_once(request, tmp_path_factory, "trained_seed", lambda out: train(
        "seed-involution", "digits", epochs=12, batch_size=64, seed=1, out=str(out), compare=True, quiet=True))
    return out, json.loads((out / "results.json").read_text())["models"]


@pytest.fixture(scope="session")
def seed_files(request, tmp_path_factory, trained_seed):
    """The trained seed models converted once per session, for every test that times or reads such a file:
    inv_f32, inv_fp16, inv_int8 and conv_int8 (50 calibration samples), conv_f32."""
    from convert.api import convert_model

    train_dir, _ = trained_seed
    inv, conv = (str(train_dir / m / "model.keras") for m in ("seed-involution", "seed-conv"))

    def make(out):
        tmp = out.with_name("partial")
        tmp.mkdir(exist_ok=True)
        for src, name, fields in ((inv, "inv_f32", {}), (inv, "inv_fp16", {"quantize": "float16"}),
                                  (inv, "inv_int8", {"quantize": "int8", "calib": "digits", "calib_samples": 50}),
                                  (conv, "conv_f32", {}),
                                  (conv, "conv_int8", {"quantize": "int8", "calib": "digits", "calib_samples": 50})):
            convert_model(src, str(tmp / f"{name}.tflite"), gpu=False, force=True, **fields)
        tmp.rename(out)
    return made_once(request, tmp_path_factory, "seed_files", make)


@pytest.fixture(scope="session")
def saved(request, tmp_path_factory):
    """The files of tests/saved_models/save_library_models.py (every model the library builds, saved at 32x32,
    with the outputs it gave), written once by a process of their own."""
    def make(out):
        tmp = out.with_name("partial")
        shutil.rmtree(tmp, ignore_errors=True)  # what a failed attempt left
        tmp.mkdir()
        proc = subprocess.run([sys.executable, "-m", "tests.saved_models.save_library_models", str(tmp)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=user_env(PYTHONPATH=ROOT))
        assert proc.returncode == 0, proc.stderr[-3000:]
        tmp.rename(out)
    return made_once(request, tmp_path_factory, "library_models", make)


def expected(saved, file):
    """(inputs, outputs) the saved model ``file`` gave before it was saved."""
    name = file.rsplit(".", 1)[0].removesuffix("_savedmodel")
    data = np.load(saved / f"{name}_expected.npz")
    return data["x"], data["y"]


def assert_close(got, want, tol):
    """Within ``tol`` of the largest output (outputs of freshly initialised models can be small)."""
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()))


def assert_gives_saved_outputs(saved, file, tflite_path, tol=1e-4):
    """The .tflite at ``tflite_path`` gives, sample by sample, the outputs the saved model ``file`` gave before it
    was saved."""
    from ai_edge_litert.interpreter import Interpreter

    x, want = expected(saved, file)
    interp = Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    for sample, w in zip(x, want):
        interp.set_tensor(inp["index"], sample[None])
        interp.invoke()
        assert_close(interp.get_tensor(outp["index"])[0], w, tol)
