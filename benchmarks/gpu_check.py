"""Measured GPU delegation: compile a model on the LiteRT GPU accelerator, run it, compare with CPU.

TF's Analyzer(gpu_compatibility=True) approved models that the GPU then refused
or computed wrongly; only running the GPU path and comparing outputs counts.
The check runs in a child process, so a crashing GPU driver cannot take the
caller down, and it falls back to SwiftShader's software Vulkan (results valid,
timings not) when no real adapter exists.

    python -m benchmarks.gpu_check MODEL.tflite [--inputs X.npz] [--tolerance 1e-3]
"""

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.runtime import SWIFTSHADER_ICD

INT_TOLERANCE = 0.03  # of the output range, for integer (quantized) outputs


def compare_on_gpu(path, inputs=None, tolerance=1e-3):
    """In this process: GPU-only compile, run, max error against the CPU accelerator."""
    from benchmarks.runtime import CompiledRunner, RuntimeUnavailable, gpu_is_emulated, random_inputs

    result = {"available": False, "emulated": gpu_is_emulated(), "fully_accelerated": False,
              "max_abs_error": None, "max_rel_error": None, "tolerance": tolerance, "ok": False}
    try:
        cpu = CompiledRunner(path, "cpu")
        arrays = inputs if inputs is not None else random_inputs(cpu.inputs)
        ref = cpu(*arrays)
        try:
            gpu = CompiledRunner(path, "gpu")
        except RuntimeUnavailable as exc:
            gpu = None
            result["error"] = str(exc)
            try:  # a GPU exists but refuses part of the model?
                mixed = CompiledRunner(path, "gpu", allow_cpu_fallback=True)
                result.update(available=True, fully_accelerated=bool(mixed.fully_delegated))
                result["error"] = "the GPU accelerator did not take the whole model (CPU fallback needed)"
            except RuntimeUnavailable:
                pass
        if gpu is not None:
            result.update(available=True, fully_accelerated=bool(gpu.fully_delegated))
            out = gpu(*arrays)
            abs_err = max(float(np.max(np.abs(o.astype(np.float64) - r.astype(np.float64)))) for o, r in zip(out, ref))
            scale = max(float(np.max(np.abs(r.astype(np.float64)))) for r in ref) or 1.0
            if ref[0].dtype.kind in "iu":
                # Quantized outputs: the GPU computes in float while XNNPACK requantizes after every op,
                # so the two drift apart with depth; allow 3% of the output's range (at least 2 steps).
                span = max(float(r.max()) - float(r.min()) for r in ref)
                tol = max(2.0, INT_TOLERANCE * span)
            else:
                tol = tolerance * max(1.0, scale)
            result["allowed_abs_error"] = tol
            result.update(max_abs_error=abs_err, max_rel_error=abs_err / scale, ok=bool(abs_err <= tol and result["fully_accelerated"]))
    except Exception as exc:  # noqa: BLE001 - reported, never raised, by design
        result["error"] = " ".join(str(exc).split())[:300]
    return result


def check_gpu(path, inputs=None, tolerance=1e-3, timeout=300):
    """Runs ``compare_on_gpu`` in a child process; retries on SwiftShader when no adapter exists."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", os.path.abspath(path), "--tolerance", str(tolerance)]
        if inputs is not None:
            np.savez(os.path.join(tmp, "inputs.npz"), *inputs)
            cmd += ["--inputs", os.path.join(tmp, "inputs.npz")]
        envs = [dict(os.environ)]
        if "VK_ICD_FILENAMES" not in os.environ and os.path.exists(SWIFTSHADER_ICD):
            envs.append(dict(os.environ, VK_ICD_FILENAMES=SWIFTSHADER_ICD))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        result = None
        for env in envs:
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
            env.setdefault("XDG_RUNTIME_DIR", tmp)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
                lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
                result = json.loads(lines[-1]) if lines else {
                    "available": False, "ok": False, "error": f"GPU check crashed (exit {proc.returncode})"}
            except subprocess.TimeoutExpired:
                result = {"available": False, "ok": False, "error": f"GPU check timed out after {timeout} s"}
            if result.get("available"):
                break
        if not result.get("available"):
            result.setdefault("error", "no GPU or Vulkan adapter found")
        return result


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--inputs")
    p.add_argument("--tolerance", type=float, default=1e-3)
    a = p.parse_args(argv)
    inputs = None
    if a.inputs:
        data = np.load(a.inputs)
        inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
    print(json.dumps(compare_on_gpu(a.model, inputs, a.tolerance)))


if __name__ == "__main__":
    main()
