"""Shared fixtures: real models, real conversions, the real GPU path (SwiftShader on CPU-only hosts)."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json"
LEGACY_VENV = os.environ.get("INVO_LEGACY_VENV", os.path.join(ROOT, ".venv-legacy"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
if "VK_ICD_FILENAMES" not in os.environ and os.path.exists(SWIFTSHADER):
    os.environ["VK_ICD_FILENAMES"] = SWIFTSHADER


def gpu_available():
    return bool(os.environ.get("VK_ICD_FILENAMES")) and os.path.exists(os.environ["VK_ICD_FILENAMES"])


def require_gpu():
    """In CI the software Vulkan is installed by .ci/run, so a missing one is a failure there."""
    if gpu_available():
        return
    if os.environ.get("CI"):
        pytest.fail("no Vulkan ICD: .ci/run should have installed chromium's SwiftShader")
    pytest.skip("no Vulkan (install Debian's chromium for SwiftShader)")


def run_cli(*args, env=None, timeout=600, python=sys.executable):
    """Runs ``python -m MODULE args`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([python, "-m", *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=ROOT)


def assert_one_line_error(proc, *needles):
    """Non-zero exit, an 'Error:' line naming what is wrong, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("Error:")]
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


@pytest.fixture(scope="session")
def trained_seed(tmp_path_factory):
    """seed-involution and seed-conv trained briefly on the offline digits set, saved by invo-train."""
    from involution.train import train

    out = tmp_path_factory.mktemp("train") / "run"
    results = train("seed-involution", "digits", epochs=12, batch_size=64, seed=1, out=str(out), compare=True,
                    quiet=True)
    return out, results
