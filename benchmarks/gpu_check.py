"""Measured GPU delegation: compile a model on the LiteRT GPU accelerator, run it, compare with CPU.

TF's Analyzer(gpu_compatibility=True) approved models that the GPU then refused
or computed wrongly; only running the GPU path and comparing outputs counts.
The check runs in a child process, so a crashing GPU driver cannot take the
caller down, and it falls back to SwiftShader's software Vulkan (results valid,
timings not) when no real adapter exists.

    python -m benchmarks.gpu_check MODEL.tflite [--inputs X.npz] [--tolerance 1e-3] [--int-steps N]
"""

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.runtime import SWIFTSHADER_ICD
from invo_base.plumbing import one_line

INT_TOLERANCE = 0.03  # of the output range, for integer (quantized) outputs


def _has_int8_weights(model):
    return any(t.constant_size and t.dtype in ("INT8", "UINT8") for t in model.main["tensors"])


def compile_on_gpu(path, allow_cpu_fallback=False):
    """In this process: {available, fully_delegated} of a GPU compile."""
    from benchmarks.runtime import CompiledRunner, RuntimeUnavailable

    try:
        runner = CompiledRunner(path, "gpu", allow_cpu_fallback=allow_cpu_fallback)
        return {"available": True, "fully_delegated": bool(runner.fully_delegated)}
    except RuntimeUnavailable as exc:
        return {"available": False, "fully_delegated": False, "error": str(exc)}


def compare_on_gpu(path, inputs=None, tolerance=1e-3, int_steps=0.0):
    """In this process: GPU-only compile, run, max error against the CPU accelerator.

    ``int_steps``: for quantized outputs, the least number of quantization steps allowed.  The GPU runs
    an int8 model in float, so it differs from XNNPACK's int8 by XNNPACK's own activation-quantization
    error; a caller that has measured that error against the float model passes it here.
    """
    from benchmarks.runtime import CompiledRunner, RuntimeUnavailable, gpu_is_emulated, random_inputs

    result = {"available": False, "emulated": gpu_is_emulated(), "fully_delegated": False,
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
            mixed = compile_on_gpu(path, allow_cpu_fallback=True)  # a GPU exists but refuses part of the model?
            if mixed["available"]:
                result.update(available=True, fully_delegated=mixed["fully_delegated"],
                              error="the GPU accelerator did not take the whole model (CPU fallback needed)")
        if gpu is not None:
            result.update(available=True, fully_delegated=bool(gpu.fully_delegated))
            judged = judge_outputs(ref, gpu(*arrays), cpu.model, tolerance, int_steps)
            within = judged.pop("within")
            result.update(judged, ok=bool(within and result["fully_delegated"]))
    except Exception as exc:  # noqa: BLE001 - reported, never raised, by design
        result["error"] = one_line(exc, 300)
    return result


def judge_outputs(ref, out, model, tolerance=1e-3, int_steps=0.0):
    """An accelerator's outputs ``out`` against the CPU's ``ref`` for the same inputs: {worst, max_abs_error,
    max_rel_error, allowed_abs_error, unit, within}.  ``model``: the file's ``TFLiteModel`` (its weights' types
    set the allowance); ``tolerance`` and ``int_steps`` as in ``compare_on_gpu``."""
    worst = largest_difference(ref, out)
    abs_err = worst["abs_error"]
    scale = max(float(np.max(np.abs(r.astype(np.float64)))) for r in ref) or 1.0
    span = max(float(r.max()) - float(r.min()) for r in ref)
    if ref[0].dtype.kind in "iu":
        # Quantized outputs: the GPU computes in float while XNNPACK requantizes after every op,
        # so the two drift apart with depth; allow 3% of the output's range (at least 2 steps).
        tol = max(2.0, INT_TOLERANCE * span, int_steps)
    elif _has_int8_weights(model):
        # Dynamic-range models: the CPU's hybrid kernels quantize activations at run time,
        # the GPU computes in float; they differ by the CPU's quantization error.
        tol = max(tolerance * max(1.0, scale), INT_TOLERANCE * span)
    else:
        tol = tolerance * max(1.0, scale)
    return {"worst": worst, "max_abs_error": abs_err, "max_rel_error": abs_err / scale, "allowed_abs_error": tol,
            "unit": "quantization steps" if ref[0].dtype.kind in "iu" else "absolute", "within": bool(abs_err <= tol)}


def largest_difference(ref, out):
    """{output, index, cpu, gpu, abs_error} of the largest |gpu - cpu| over all outputs; a non-finite GPU value
    where the CPU's is finite counts as an infinite error (NaN must never compare as small)."""
    worst = None
    for k, (r, o) in enumerate(zip(ref, out)):
        if not r.size:
            continue
        r64, o64 = r.astype(np.float64), o.astype(np.float64)
        diff = np.abs(o64 - r64)
        diff[~np.isfinite(o64) & np.isfinite(r64)] = np.inf
        diff[np.isnan(diff)] = 0.0  # both non-finite alike: the CPU's own overflow, not the GPU's error
        i = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if worst is None or diff[i] > worst["abs_error"]:
            worst = {"output": k, "index": [int(v) for v in i], "cpu": float(r64[i]), "gpu": float(o64[i]),
                     "abs_error": float(diff[i])}
    return worst or {"abs_error": 0.0}


def describe_failure(path, result):
    """One line saying why ``check_gpu``'s result is not ok, with the largest difference and its unit."""
    if not result.get("available"):
        return f"{path}: no GPU check possible: {result.get('error', 'no GPU or Vulkan adapter found')}"
    if not result.get("fully_delegated"):
        off = result.get("ops_on_cpu")
        return (f"{path}: the GPU accelerator does not take the whole model"
                + (f" (ops it refuses, each compiled alone: {', '.join(off)})" if off else ""))
    w = result.get("worst") or {}
    if result.get("max_abs_error") is None:
        return f"{path}: the GPU check failed: {result.get('error', 'unknown error')}"
    unit = " quantization steps" if result.get("unit") == "quantization steps" else ""
    return (f"{path}: the GPU output is wrong: largest difference {w.get('abs_error', float('nan')):.4g}{unit} at output "
            f"{w.get('output')} index {tuple(w.get('index', ()))} (CPU {w.get('cpu', float('nan')):.4g}, GPU "
            f"{w.get('gpu', float('nan')):.4g}); allowed {result.get('allowed_abs_error', 0):.3g}{unit}")


def single_op_models(path, directory):
    """{op name: path} of one-op models cut from ``path``, the first instance of each op type.

    Control flow (WHILE, IF) is skipped: it cannot stand alone.  Needs ai-edge-litert's schema
    module (no TensorFlow).
    """
    from invo_base import tflite_edit
    from invo_base.tflite_model import TFLiteModel

    with open(path, "rb") as f:
        data = f.read()
    names = TFLiteModel(data, path).main["ops"]
    model = tflite_edit.unpack(data)
    out = {}
    for index, name in enumerate(names):
        if name in out or name in ("WHILE", "IF"):
            continue
        target = os.path.join(directory, f"op{index}_{name}.tflite")
        with open(target, "wb") as f:
            f.write(tflite_edit.single_op_model(model, index))
        out[name] = target
    return out


def ops_kept_off_gpu(path, timeout=120):
    """Op types the GPU accelerator refuses or crashes on, each compiled alone in its own process."""
    import tempfile

    refused = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, single in single_op_models(path, tmp).items():
            r = _run_child([single, "--compile-only"], None, timeout)
            if not (r.get("available") and r.get("fully_delegated")):
                refused.append(name + (" (crashed the accelerator)" if r.get("crashed") else ""))
    return refused


def _run_child(args, inputs_npz, timeout):
    """Runs this module in a child process, retrying on SwiftShader when no adapter exists."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", *args]
        if inputs_npz is not None:
            cmd += ["--inputs", inputs_npz]
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
                if lines:
                    result = json.loads(lines[-1])
                else:
                    result = {"available": True, "crashed": True, "ok": False, "fully_delegated": False,
                              "error": f"the GPU accelerator crashed the process (exit {proc.returncode})"}
            except subprocess.TimeoutExpired:
                result = {"available": False, "ok": False, "error": f"GPU check timed out after {timeout} s"}
            if result.get("available"):
                if env is not envs[0]:  # no Vulkan driver was configured: this ran on SwiftShader
                    result["swiftshader_fallback"] = True
                break
        return result


def check_gpu(path, inputs=None, tolerance=1e-3, timeout=300, int_steps=0.0):
    """Runs ``compare_on_gpu`` in a child process; retries on SwiftShader when no adapter exists.

    When the GPU does not take the whole model, each op type is compiled alone to name the
    ops that stay on the CPU (``ops_on_cpu``).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        npz = None
        if inputs is not None:
            npz = os.path.join(tmp, "inputs.npz")
            np.savez(npz, *inputs)
        result = _run_child([os.path.abspath(path), "--tolerance", str(tolerance), "--int-steps", str(int_steps)],
                            npz, timeout)
    if result.get("available") and not result.get("fully_delegated"):
        try:
            result["ops_on_cpu"] = ops_kept_off_gpu(path)
        except Exception as exc:  # noqa: BLE001 - the probe is extra information, never a failure
            result["ops_on_cpu_error"] = one_line(exc, 200)
    if not result.get("available"):
        result.setdefault("error", "no GPU or Vulkan adapter found")
    return result


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--inputs")
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--int-steps", type=float, default=0.0)
    p.add_argument("--compile-only", action="store_true", help="Only compile on the GPU alone.")
    a = p.parse_args(argv)
    if a.compile_only:
        print(json.dumps(compile_on_gpu(a.model)))
        return
    inputs = None
    if a.inputs:
        data = np.load(a.inputs)
        inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
    print(json.dumps(compare_on_gpu(a.model, inputs, a.tolerance, a.int_steps)))


if __name__ == "__main__":
    main()
