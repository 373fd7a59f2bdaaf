"""Measured GPU delegation: compile a model on the LiteRT GPU accelerator, run it, compare with CPU.

TF's Analyzer(gpu_compatibility=True) approved models that the GPU then refused
or computed wrongly; only running the GPU path and comparing outputs counts.
The check runs in a child process, so a crashing GPU driver cannot take the
caller down, and it falls back to SwiftShader's software Vulkan (results valid,
timings not) when no real adapter exists.

A real GPU computes in FP16 unless told otherwise (phones do; so did an H200
through Vulkan): its outputs then differ from the CPU's by FP16's rounding.  Such
a run is held to FP16's bound only once the same GPU, told to compute in float32,
agrees with the CPU to float32's: a difference the float32 run shares is wrong.

A quantized model's outputs are held to int8's drift, which can hide one op the GPU
computes wrongly (ai-edge-litert 2.3's GPU accelerator returns garbage for an int8
or dynamic-range 1x1 CONV_2D of stride 2, a ResNet's downsampling: RedNet-26's int8
logits came out 10% off, within that drift).  So each distinct op with int8 weights
is also cut out and checked alone (``wrong_ops_on_gpu``).

    python -m benchmarks.gpu_check MODEL.tflite [--inputs X.npz] [--tolerance 1e-3] [--int-steps N] [--fp32]
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.runtime import FP16_ALLOWED, FP32_AGREEMENT, SWIFTSHADER_ICD
from invo_base.plumbing import one_line

INT_TOLERANCE = 0.03  # of the output range, for integer (quantized) outputs
# One op with int8 weights alone, GPU (told to compute in float32) against CPU on random inputs: the largest
# difference allowed, of an int8 output's range or of a float output's largest value.  Measured on RedNet-26's
# int8 and dynamic-range files: right ops differ by at most 0.016 and 0.003, the wrong ones by 0.71-1.0.
SINGLE_OP_ALLOWED = 0.05


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


def compare_on_gpu(path, inputs=None, tolerance=1e-3, int_steps=0.0, fp16_allowed=True):
    """In this process: GPU-only compile, run, max error against the CPU accelerator.

    ``int_steps``: for quantized outputs, the least number of quantization steps allowed.  The GPU runs
    an int8 model in float, so it differs from XNNPACK's int8 by XNNPACK's own activation-quantization
    error; a caller that has measured that error against the float model passes it here.
    ``fp16_allowed``: the GPU may compute in FP16 (its default); False: it is told to compute in float32.
    """
    from benchmarks.runtime import CompiledRunner, RuntimeUnavailable, gpu_is_emulated, random_inputs

    result = {"available": False, "emulated": gpu_is_emulated(), "fully_delegated": False,
              "max_abs_error": None, "max_rel_error": None, "tolerance": tolerance, "ok": False}
    try:
        cpu = CompiledRunner(path, "cpu")
        arrays = inputs if inputs is not None else random_inputs(cpu.inputs)
        ref = cpu(*arrays)
        try:
            gpu = CompiledRunner(path, "gpu", gpu_fp32=not fp16_allowed)
        except RuntimeUnavailable as exc:
            gpu = None
            result["error"] = str(exc)
            mixed = compile_on_gpu(path, allow_cpu_fallback=True)  # a GPU exists but refuses part of the model?
            if mixed["available"]:
                result.update(available=True, fully_delegated=mixed["fully_delegated"],
                              error="the GPU accelerator did not take the whole model (CPU fallback needed)")
        if gpu is not None:
            result.update(available=True, fully_delegated=bool(gpu.fully_delegated))
            out = gpu(*arrays)
            gpu.close()
            rerun = functools.partial(gpu_in_float32, path, arrays) if fp16_allowed else None
            judged = judge_gpu(ref, out, cpu.model, tolerance, int_steps, rerun)
            within = judged.pop("within")
            ok = bool(within and result["fully_delegated"])
            if result["fully_delegated"] and _has_int8_weights(cpu.model):
                checked, wrong = wrong_ops_on_gpu(path, cpu.model)
                result.update(single_ops_checked=checked, wrong_ops=wrong)
                ok = ok and not wrong
            result.update(judged, ok=ok)
    except Exception as exc:  # noqa: BLE001 - reported, never raised, by design
        result["error"] = one_line(exc, 300)
    return result


def wrong_ops_on_gpu(path, model=None, allowed=SINGLE_OP_ALLOWED):
    """(signatures checked, [{op, name, input, output, error}]): each distinct op with int8 constant weights
    (type, input and output shapes and types) cut out alone, run on the CPU and on the GPU told to compute in
    float32 on random inputs, and those whose difference exceeds ``allowed`` (``SINGLE_OP_ALLOWED``) of the
    output's range (integer outputs) or largest value (float outputs).  ``model``: the file's ``TFLiteModel``,
    where the caller has parsed it already."""
    import tempfile

    from benchmarks.runtime import CompiledRunner, random_inputs

    def with_int8_weights(name, ins, outs, tensors):  # the op's type and its tensors' shapes and types
        if not any(i >= 0 and tensors[i].constant_size and tensors[i].dtype in ("INT8", "UINT8") for i in ins):
            return None
        return (name, tuple((tensors[i].shape, tensors[i].dtype) for i in ins if i >= 0),
                tuple((tensors[o].shape, tensors[o].dtype) for o in outs))

    wrong = []
    with tempfile.TemporaryDirectory() as tmp:
        cut = single_op_models(path, tmp, with_int8_weights, model)
        for (name, ins, outs), (k, single) in cut.items():
            entry = {"op": k, "name": name, "input": list(ins[0][0]), "output": list(outs[0][0])}
            try:
                cpu = CompiledRunner(single, "cpu")
                arrays = random_inputs(cpu.inputs)
                ref = run_once(cpu, arrays)[0].astype(np.float64)
                out = run_once(CompiledRunner(single, "gpu", gpu_fp32=True), arrays)[0].astype(np.float64)
            except Exception as exc:  # noqa: BLE001 - an op the GPU cannot run alone is not checked right
                wrong.append(dict(entry, error=float("inf"), message=one_line(exc, 200)))
                continue
            diff = np.abs(out - ref)
            diff[~np.isfinite(diff)] = np.inf
            size = float(ref.max() - ref.min()) if outs[0][1] in ("INT8", "UINT8") else float(np.abs(ref).max())
            error = float(diff.max()) / (size or 1.0)
            if not error <= allowed:
                wrong.append(dict(entry, error=error))
    return len(cut), wrong


def run_once(runner, arrays):
    """``runner``'s outputs on ``arrays``, the runner closed afterwards."""
    try:
        return runner(*arrays)
    finally:
        runner.close()


def gpu_in_float32(path, arrays):
    """The GPU accelerator's outputs on ``arrays`` with the GPU told to compute in float32 (``enforce_f32``)."""
    from benchmarks.runtime import CompiledRunner

    return run_once(CompiledRunner(path, "gpu", gpu_fp32=True), arrays)


def judge_gpu(ref, out, model, tolerance=1e-3, int_steps=0.0, fp32_outputs=None):
    """A GPU run's ``out`` against the CPU's ``ref``, as ``judge_outputs``, plus ``precision``: "fp16" when its
    right float outputs differ from the CPU's by more than float32 kernels do (``FP32_AGREEMENT``), else "fp32".

    ``fp32_outputs``: for a GPU that may compute in FP16, a callable giving the same GPU's outputs in float32.
    A difference past float32's allowance is then FP16's rounding, held to ``FP16_ALLOWED``, only when the
    float32 run agrees with the CPU (``fp32_rerun_error`` says by how much); otherwise the GPU computes the
    model wrongly whatever its precision.
    """
    judged = judge_outputs(ref, out, model, tolerance, int_steps)
    if judged["within"] or fp32_outputs is None:
        return dict(judged, precision=_measured_precision(ref, judged))
    strict = judge_outputs(ref, fp32_outputs(), model, tolerance, int_steps)
    judged["fp32_rerun_error"] = strict["max_abs_error"]
    if strict["within"]:  # the same difference, held to FP16's allowance
        tol, rule = allowance_and_rule(ref, model, tolerance, int_steps, fp16=True)
        judged.update(allowed_abs_error=tol, allowance_rule=rule, within=bool(judged["max_abs_error"] <= tol), fp16_allowance=True)
    return dict(judged, precision=_measured_precision(ref, judged))


def _measured_precision(ref, judged):
    """"fp32" or "fp16" as a float run's difference from the CPU shows it; None for integer outputs, and for
    wrong numbers, which say nothing of the arithmetic."""
    if ref[0].dtype.kind != "f" or not judged["within"]:
        return None
    return "fp16" if judged["max_rel_error"] > FP32_AGREEMENT else "fp32"


def judge_outputs(ref, out, model, tolerance=1e-3, int_steps=0.0, fp16=False):
    """An accelerator's outputs ``out`` against the CPU's ``ref`` for the same inputs: {worst, max_abs_error,
    max_rel_error, allowed_abs_error, unit, within}.  ``model``: the file's ``TFLiteModel`` (its weights' types
    set the allowance); ``tolerance`` and ``int_steps`` as in ``compare_on_gpu``.  ``fp16``: ``out`` was computed
    in FP16, whose rounding (``FP16_ALLOWED`` of the output scale, or of an int8 output's range on top of the
    int8 drift) is allowed besides."""
    worst = largest_difference(ref, out)
    abs_err = worst["abs_error"]
    scale = max(float(np.max(np.abs(r.astype(np.float64)))) for r in ref) or 1.0
    tol, rule = allowance_and_rule(ref, model, tolerance, int_steps, fp16)
    return {"worst": worst, "max_abs_error": abs_err, "max_rel_error": abs_err / scale, "allowed_abs_error": tol,
            "allowance_rule": rule,
            "unit": "quantization steps" if ref[0].dtype.kind in "iu" else "absolute", "within": bool(abs_err <= tol)}


def allowance_and_rule(ref, model, tolerance=1e-3, int_steps=0.0, fp16=False):
    """(the largest difference from the CPU's outputs ``ref`` that ``judge_outputs`` allows, the rule that set
    it, in a few words), for ``judge_outputs``'s arguments: the same check allows different figures for one file
    in invo-bench (no float model: a share of this input's output range) and invo-convert (the gate's bound)."""
    scale = max(float(np.max(np.abs(r.astype(np.float64)))) for r in ref) or 1.0
    span = max(float(r.max()) - float(r.min()) for r in ref)
    if ref[0].dtype.kind in "iu":
        # Quantized outputs: the GPU computes in float while XNNPACK requantizes after every op,
        # so the two drift apart with depth; allow 3% of the output's range (at least 2 steps).
        share = INT_TOLERANCE + (FP16_ALLOWED if fp16 else 0.0)
        candidates = [(2.0, "at least 2 steps"), (share * span, f"{share:.0%} of the output range"),
                      (int_steps, "the gate's int8 bound")]
        return max(candidates, key=lambda c: c[0])
    if _has_int8_weights(model):
        # Dynamic-range models: the CPU's hybrid kernels quantize activations at run time,
        # the GPU computes in float; they differ by the CPU's quantization error.
        rel = FP16_ALLOWED if fp16 else tolerance
        return max((rel * max(1.0, scale), f"{rel:g} of the output's scale"),
                   (INT_TOLERANCE * span, f"{INT_TOLERANCE:.0%} of the output's range"), key=lambda c: c[0])
    rel = max(tolerance, FP16_ALLOWED) if fp16 else tolerance
    return rel * max(1.0, scale), f"{rel:g} of the output's scale"


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


def unit_suffix(result):
    """" quantization steps" for a check judged in steps (int8 outputs), else "": to follow each figure."""
    return " quantization steps" if result.get("unit") == "quantization steps" else ""


def allowed_text(result):
    """"allowed N UNIT: RULE[, for FP16 ...]": a GPU check's allowance and what set it, for its line."""
    return f"allowed {result.get('allowed_abs_error', 0):.3g}{unit_suffix(result)}{gpu_precision_note(result)}"


def gpu_precision_note(result):
    """What the allowance of a GPU check's result rests on, to follow its "allowed N"."""
    unit = unit_suffix(result)
    rule = f": {result['allowance_rule']}" if result.get("allowance_rule") else ""
    if result.get("fp16_allowance"):
        return f"{rule}, for FP16; in float32 the GPU differs by {result.get('fp32_rerun_error', 0):.3g}{unit}"
    return rule + ("; the GPU computed in FP16" if result.get("precision") == "fp16" else "")


def describe_failure(path, result):
    """One line saying why ``check_gpu``'s result is not ok, with the largest difference and its unit."""
    if not result.get("available"):
        return f"{path}: no GPU check possible: {result.get('error', 'no GPU or Vulkan adapter found')}"
    if not result.get("fully_delegated"):
        off = result.get("ops_on_cpu")
        return (f"{path}: the GPU accelerator does not take the whole model"
                + (f" (ops it refuses, each compiled alone: {', '.join(off)})" if off else ""))
    w = result.get("worst") or {}
    if result.get("wrong_ops"):
        ops = "; ".join(f"op {o['op']} {o['name']} {tuple(o['input'])} -> {tuple(o['output'])}, "
                        + (f"failed alone ({o['message']})" if "message" in o else f"off by {o['error']:.0%}")
                        for o in result["wrong_ops"][:3])
        more = f" and {len(result['wrong_ops']) - 3} more" if len(result["wrong_ops"]) > 3 else ""
        return (f"{path}: the GPU computes {len(result['wrong_ops'])} op(s) wrongly, each checked alone against the "
                f"CPU (allowed {SINGLE_OP_ALLOWED:.0%}): {ops}{more}; the whole model's largest difference was "
                f"{w.get('abs_error', float('nan')):.4g}{unit_suffix(result)}")
    if result.get("max_abs_error") is None:
        return f"{path}: the GPU check failed: {result.get('error', 'unknown error')}"
    unit = unit_suffix(result)
    why = ""
    if result.get("fp16_allowance"):
        why = " for FP16 (in float32 the GPU agrees with the CPU: FP16 overflowed or its rounding ran away)"
    elif result.get("fp32_rerun_error") is not None:
        why = f"; told to compute in float32 it is wrong too ({result['fp32_rerun_error']:.4g}{unit})"
    return (f"{path}: the GPU output is wrong: largest difference {w.get('abs_error', float('nan')):.4g}{unit} at output "
            f"{w.get('output')} index {tuple(w.get('index', ()))} (CPU {w.get('cpu', float('nan')):.4g}, GPU "
            f"{w.get('gpu', float('nan')):.4g}); allowed {result.get('allowed_abs_error', 0):.3g}{unit}{why}")


def single_op_models(path, directory, key=None, model=None):
    """{key: (op index, path)} of one-op models cut from ``path`` into ``directory``: the first op of each key.

    ``key(name, ins, outs, tensors)`` gives an op's key, None to leave it out; by default its type, with control
    flow (WHILE, IF) left out, since it cannot stand alone.  ``model``: the file's ``TFLiteModel``, where the
    caller has parsed it already.  Needs ai-edge-litert's schema module (no TensorFlow).
    """
    from invo_base import tflite_edit
    from invo_base.tflite_model import TFLiteModel

    key = key or (lambda name, ins, outs, tensors: None if name in ("WHILE", "IF") else name)
    with open(path, "rb") as f:
        data = f.read()
    sg = (model or TFLiteModel(data, path)).main
    first = {}
    for index, (name, (ins, outs)) in enumerate(zip(sg["ops"], sg["op_io"])):
        k = key(name, ins, outs, sg["tensors"])
        if k is not None:
            first.setdefault(k, index)
    tree, out = tflite_edit.unpack(data), {}
    for k, index in first.items():
        target = os.path.join(directory, f"op{index}_{sg['ops'][index]}.tflite")
        with open(target, "wb") as f:
            f.write(tflite_edit.single_op_model(tree, index))
        out[k] = (index, target)
    return out


def ops_kept_off_gpu(path, timeout=120):
    """Op types the GPU accelerator refuses or crashes on, each compiled alone in its own process."""
    import tempfile

    refused = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (_, single) in single_op_models(path, tmp).items():
            r = compile_in_child(single, timeout)
            if not (r.get("available") and r.get("fully_delegated")):
                refused.append(name + (" (crashed the accelerator)" if r.get("crashed") else ""))
    return refused


def compile_in_child(path, timeout=300):
    """{available, fully_delegated, crashed?, swiftshader_fallback?} of compiling ``path`` on the GPU alone in a
    child process, which a driver that kills its process on an op it cannot run leaves this one standing."""
    return _run_child([os.path.abspath(path), "--compile-only"], None, timeout)


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
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
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


def check_gpu(path, inputs=None, tolerance=1e-3, timeout=300, int_steps=0.0, fp16_allowed=True):
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
        args = [os.path.abspath(path), "--tolerance", str(tolerance), "--int-steps", str(int_steps)]
        result = _run_child(args + ([] if fp16_allowed else ["--fp32"]), npz, timeout)
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
    p.add_argument("--fp32", action="store_true", help="Tell the GPU to compute in float32 (no FP16).")
    p.add_argument("--compile-only", action="store_true", help="Only compile on the GPU alone.")
    a = p.parse_args(argv)
    if a.compile_only:
        print(json.dumps(compile_on_gpu(a.model)))
        return
    inputs = None
    if a.inputs:
        data = np.load(a.inputs)
        inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
    print(json.dumps(compare_on_gpu(a.model, inputs, a.tolerance, a.int_steps, fp16_allowed=not a.fp32)))


if __name__ == "__main__":
    main()
