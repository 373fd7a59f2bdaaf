"""Loads a .tflite model on whichever TFLite runtime the device has; no TensorFlow.

Runtimes, best first:
  * ``litert``: ai-edge-litert ``Interpreter`` (CPU, XNNPACK on or off, external delegates);
  * ``litert-compiled``: ai-edge-litert ``CompiledModel`` (CPU or the GPU accelerator);
  * ``tflite-runtime``: the legacy ``tflite_runtime.interpreter`` (2.14), external delegates.
"""

import collections
import gc
import importlib
import os

import numpy as np

from invo_base.plumbing import native_logs_silenced, one_line
from invo_base.tflite_model import TFLiteModel

RUNTIMES = ("litert", "litert-compiled", "tflite-runtime")
_MODULES = {"litert": "ai_edge_litert.interpreter", "litert-compiled": "ai_edge_litert.compiled_model",
            "tflite-runtime": "tflite_runtime.interpreter"}
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"


class RuntimeUnavailable(RuntimeError):
    """The requested runtime or accelerator cannot be used here."""


# tflite-runtime's last release, what boards without TensorFlow that never moved to ai-edge-litert run.  TF 2.21's
# converter writes files it loads, except a dynamic-range file with a Dense layer: FULLY_CONNECTED version 12
# (per-channel weights; min_runtime_version 2.17.0).  ``invo-convert --legacy-runtime`` keeps to what it loads.
TFLITE_RUNTIME_LAST = "2.14.0"


def version_tuple(text):
    """'2.17.0' -> (2, 17, 0), from each dot-separated part's leading digits ('2.14.0rc1' -> (2, 14, 0))."""
    out = []
    for part in str(text).split("."):
        digits = len(part) - len(part.lstrip("0123456789"))
        if not digits:
            break
        out.append(int(part[:digits]))
    return tuple(out)


def needs_newer_runtime(need, version=TFLITE_RUNTIME_LAST):
    """``need`` (a file's min_runtime_version, "2.17.0", or None) where it is newer than TFLite ``version``,
    else None."""
    return need if need and version_tuple(need) > version_tuple(version) else None


def _tflite_runtime_version(mod):
    return getattr(importlib.import_module(mod.__name__.split(".")[0]), "__version__", None)


# CPU precisions: "default" (float32 math, or FP16 where XNNPACK takes the file's reduced_precision_support
# hint: CPUs with native FP16 arithmetic such as ARMv8.2+; not AVX512-FP16 with ai-edge-litert 2.3, measured)
# and "fp16" (XNNPACK forced to compute float ops in FP16).
PRECISIONS = ("default", "fp16")
# XNNPACK delegate flags for forced FP16: TFLITE_XNNPACK_DELEGATE_FLAG_FORCE_FP16 (0x4), with QS8 (0x1) and
# QU8 (0x2) kept on, as in the delegate's defaults, so that int8 ops stay delegated.
XNNPACK_FORCE_FP16_FLAGS = 0x1 | 0x2 | 0x4
# How XNNPACK computes a forced FP16 run on a CPU (``cpu_fp16_arithmetic``): "native" where the CPU has FP16
# arithmetic (ARMv8.2+ phones: asimdhp; x86: AVX512-FP16); "emulated" on other x86 CPUs with AVX2: FP16 values,
# float32 arithmetic, converted around every op, slower than float32 (XNNPACK's xnn_is_f16_compatible_config; the
# runs: docs/networks.md); "none" (ARMv8.0, x86 without AVX2, Android on x86): XNNPACK refuses, and the run
# computes in float32.
FP16_ARITHMETIC = ("native", "emulated", "none", "unknown")
# Largest output difference, relative to the output's magnitude, that float32 kernels show against each other
# (summation order: XNNPACK, TFLite's reference kernels, a GPU told to compute in float32); FP16 arithmetic
# (11-bit significand) differs by far more.
FP32_AGREEMENT = 1e-4
# Largest difference of an FP16 run (XNNPACK's FP16 inference, a GPU computing in FP16) from float32, relative to
# the output's largest magnitude, that is FP16's rounding rather than wrong numbers (an overflow past 65504,
# rounding that has run away, a miscompiled op): correct FP16 runs measured up to 0.020 (docs/gpu_h200.md).  The
# float16 quality gate's bound (``convert.verification.MAX_REL_ERROR``) too.
FP16_ALLOWED = 0.05


def cpu_fp16_arithmetic(cpuinfo=None, machine=None):
    """How XNNPACK runs FP16 on this CPU: "native", "emulated", "none" or "unknown" (see ``FP16_ARITHMETIC``).

    Read from the CPU's feature flags (``cpuinfo``: the text of /proc/cpuinfo; macOS: sysctl), not measured:
    whether an FP16 run happened is measured from its outputs (``benchmarks.bench.float16_measured``).
    """
    import platform

    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return _sysctl_fp16()
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return "unknown"
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        if "avx512_fp16" in flags:
            return "native"
        android = "ANDROID_ROOT" in os.environ  # XNNPACK keeps FP16 off on mobile x86
        return "emulated" if "avx2" in flags and not android else "none"
    return "native" if "asimdhp" in flags else "none"  # ARM: FP16 vector arithmetic (ARMv8.2-A FP16)


def how_fp16_ran():
    """How this CPU computed an FP16 run that did happen: "native", "emulated" or "unknown" (flags that say it
    cannot: unknown)."""
    how = cpu_fp16_arithmetic()
    return "unknown" if how == "none" else how


def _sysctl_fp16():
    """macOS on Apple silicon (no /proc/cpuinfo): hw.optional.arm.FEAT_FP16; elsewhere "unknown"."""
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_FP16"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return {"1": "native", "0": "none"}.get(out, "unknown")


def check_precision(precision, runtime):
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp16" and runtime == "litert-compiled" and "litert-compiled" not in available_runtimes():
        raise RuntimeUnavailable(
            "--precision fp16 forces XNNPACK's FP16 inference through ai-edge-litert's CompiledModel, which is not "
            "installed here (pip install ai-edge-litert); tflite-runtime 2.14 has no such option")
    if precision == "fp16" and runtime != "litert-compiled":
        raise RuntimeUnavailable(
            f"--precision fp16 forces XNNPACK's FP16 inference through ai-edge-litert's CompiledModel "
            f"(--runtime litert-compiled); {runtime} cannot force it (tflite-runtime 2.14 has no such option). "
            "A float16 file from invo-convert carries reduced_precision_support, XNNPACK's hint to run it in FP16 "
            "on CPUs with native FP16 arithmetic (ARMv8.2+ phones)")


def import_runtime(runtime):
    try:
        with native_logs_silenced():  # LiteRT registers its accelerators, loudly, on import
            return importlib.import_module(_MODULES[runtime])
    except Exception as exc:  # ImportError, or numpy ABI errors of old wheels
        raise RuntimeUnavailable(f"runtime {runtime} is not usable here ({type(exc).__name__}: {exc})") from None


def available_runtimes():
    out = []
    for name in RUNTIMES:
        try:
            import_runtime(name)
            out.append(name)
        except RuntimeUnavailable:
            pass
    return out


def pick_runtime(use_gpu=False, delegate=None):
    """The runtime to use when the user did not choose one."""
    have = available_runtimes()
    if use_gpu and "litert-compiled" in have:
        return "litert-compiled"
    if delegate or not use_gpu:
        for name in ("litert", "tflite-runtime"):
            if name in have:
                return name
    if have:
        return have[0]
    raise RuntimeUnavailable("no TFLite runtime found: pip install ai-edge-litert (or tflite-runtime with numpy<2)")


def gpu_is_emulated():
    """True when Vulkan is pointed at a software driver (SwiftShader or lavapipe)."""
    icd = os.environ.get("VK_ICD_FILENAMES", "") + os.environ.get("VK_DRIVER_FILES", "")
    return any(s in icd.lower() for s in ("swiftshader", "lvp", "lavapipe"))


def _check_supported(model):
    if model.flex_ops:
        raise RuntimeUnavailable(
            f"{model.path}: needs Flex (TF Select) op(s) {', '.join(model.flex_ops)}, which no runtime here "
            "can run; re-export with invo-convert, which swaps extract_patches involution for builtin ops"
        )


def _check_delegate_library(path):
    """Opens the library first: the runtimes' load_delegate leaves a noisy half-made object on failure."""
    import ctypes

    try:
        lib = ctypes.CDLL(os.path.abspath(path))
    except OSError as exc:
        raise RuntimeUnavailable(f"{path}: the delegate library does not load ({exc})") from None
    if not hasattr(lib, "tflite_plugin_create_delegate"):
        raise RuntimeUnavailable(f"{path}: the delegate library does not load (no tflite_plugin_create_delegate: "
                                 "not a TFLite external delegate)")


def to_input_dtype(real, detail):
    """Float data as a model input expects it: quantized with the input's scale for integer inputs."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(real, dtype)
    if dtype == np.bool_:
        return np.asarray(real) > 0.5
    scale, zero = detail.get("scale"), detail.get("zero_point", 0)
    if not scale:
        raise ValueError(f"input {detail.get('name')!r} is {dtype.name} without a quantization scale: float data "
                         f"cannot be mapped onto it; pass {dtype.name} arrays (--input FILE.npy)")
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(real) / scale + zero), info.min, info.max).astype(dtype)


def random_inputs(details, seed=0):
    """Data matching each input's dtype and quantization: U[0, 1) floats, quantized for quantized integer
    inputs; 0s and 1s for integer inputs without a scale (indices, masks), which have no real values."""
    rng = np.random.default_rng(seed)
    out = []
    for d in details:
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu" and not d.get("scale"):
            out.append(rng.integers(0, 2, d["shape"]).astype(dtype))
        else:
            out.append(to_input_dtype(rng.random(d["shape"], dtype=np.float32), d))
    return out


# --- the execution plan a runtime made: which ops its delegate took ---------------------------------------


def _partitions(ops):
    """[(delegate node, set of original node indices it runs)] from ``_get_ops_details()``."""
    producer = {}
    for op in ops:
        if op["op_name"] != "DELEGATE":
            for t in op["outputs"]:
                producer[int(t)] = op["index"]
    out = []
    for d in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in d["inputs"]}
        members, stack = set(), [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            node = producer.get(t)
            if t in boundary or node is None or node in members:
                continue
            members.add(node)
            stack.extend(int(i) for i in ops[node]["inputs"] if i >= 0)
        out.append((d["index"], members))
    return out


def plan_coverage(interp):
    """{ops, delegated_ops, partitions, outside: {op: count}} of a loaded interpreter's execution plan."""
    ops = interp._get_ops_details()  # noqa: SLF001 - the runtime's only view of its execution plan
    parts = _partitions(ops)
    inside = set().union(*(m for _, m in parts)) if parts else set()
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    outside = collections.Counter(op["op_name"] for op in original if op["index"] not in inside)
    return {"ops": len(original), "delegated_ops": len(inside), "partitions": len(parts),
            "outside": dict(outside.most_common())}


class Runner:
    """One loaded model: ``inputs`` and ``output_details`` ([{name, shape, dtype, scale, zero_point}], in the
    order ``set_inputs`` takes and ``outputs`` returns), ``set_inputs``, ``run`` (synchronous, outputs ready),
    ``outputs``, ``fully_delegated`` (measured, not assumed) and ``close`` (frees the runtime's resources now)."""

    runtime = accelerator = None
    _fully_delegated = True

    @property
    def fully_delegated(self):
        """Whether the accelerator took every op (subclasses read it from the runtime)."""
        return self._fully_delegated

    def close(self):
        """Frees what the runtime holds; a no-op where garbage collection is enough."""

    def __init__(self, path):
        self.path = path
        self.model = TFLiteModel.from_file(path)
        _check_supported(self.model)

    def check_inputs(self, arrays):
        if len(arrays) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} input(s), got {len(arrays)}")
        out = []
        for a, d in zip(arrays, self.inputs):
            a = np.asarray(a)
            if tuple(a.shape) != tuple(d["shape"]):
                raise ValueError(f"input {d['name']!r} must have shape {tuple(d['shape'])}, got {a.shape}")
            if a.dtype != np.dtype(d["dtype"]):
                raise ValueError(f"input {d['name']!r} must be {np.dtype(d['dtype']).name}, got {a.dtype.name}")
            out.append(np.ascontiguousarray(a))
        return out

    def __call__(self, *arrays):
        self.set_inputs(self.check_inputs(arrays))
        self.run()
        return self.outputs()


class InterpreterRunner(Runner):
    def __init__(self, path, runtime="litert", num_threads=1, use_xnnpack=True, delegate=None):
        super().__init__(path)
        mod = import_runtime(runtime)
        kwargs = {"model_path": path, "num_threads": num_threads}
        stall = None if use_xnnpack or delegate else self.model.builtin_stall_message()
        if stall:  # refused here: invoke() would never return
            raise RuntimeUnavailable(f"{path}: {stall}; run it with XNNPACK or on a GPU")
        if not use_xnnpack:
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if delegate:
            if not os.path.isfile(delegate):
                raise RuntimeUnavailable(f"{delegate}: no such delegate library")
            _check_delegate_library(delegate)
            try:
                kwargs["experimental_delegates"] = [mod.load_delegate(delegate)]
            except Exception as exc:
                raise RuntimeUnavailable(f"{delegate}: the delegate library does not load ({exc})") from None
        try:
            with native_logs_silenced():
                self.interp = mod.Interpreter(**kwargs)
                self.interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            version = _tflite_runtime_version(mod) if runtime == "tflite-runtime" else None
            need = needs_newer_runtime(self.model.min_runtime_version, version) if version else None
            if need:  # the usual cause: say what loads it
                raise RuntimeUnavailable(
                    f"{path}: tflite-runtime {version} cannot load the model, which needs TFLite {need} or newer "
                    "(its min_runtime_version): run it on ai-edge-litert (pip install ai-edge-litert), or convert "
                    f"it for older runtimes (invo-convert --legacy-runtime) ({one_line(exc, 160)})") from None
            raise RuntimeUnavailable(f"{path}: {runtime} cannot load the model ({exc})") from None
        self.runtime = runtime
        self.accelerator = "delegate" if delegate else ("CPU (XNNPACK)" if use_xnnpack else "CPU (builtin kernels)")
        self._delegated = bool(delegate or use_xnnpack)
        self.inputs = [self._details(d) for d in self.interp.get_input_details()]
        self._outs = self.interp.get_output_details()
        self.output_details = [self._details(d) for d in self._outs]

    @property
    def fully_delegated(self):
        """Whether XNNPACK (or --delegate) took every op, read from the runtime's own plan, not assumed.

        tflite-runtime 2.14's XNNPACK, for one, takes no int8 op at all.  Read on demand: not in init time.
        """
        if not self._delegated:
            return True
        return not plan_coverage(self.interp)["outside"]

    def _details(self, d):
        scale, zero = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "index": d["index"], "scale": scale, "zero_point": zero,
                "signature_name": self.model.signature_names.get(int(d["index"]))}

    def set_inputs(self, arrays):
        for a, d in zip(arrays, self.inputs):
            self.interp.set_tensor(d["index"], a)

    def run(self):
        self.interp.invoke()

    def outputs(self):
        return [self.interp.get_tensor(d["index"]).copy() for d in self._outs]


class CompiledRunner(Runner):
    """ai-edge-litert CompiledModel; ``run`` reads the outputs back so that GPU work has finished."""

    def __init__(self, path, accelerator="cpu", num_threads=1, allow_cpu_fallback=False, precision="default",
                 gpu_fp32=False):
        """``gpu_fp32``: the GPU computes in float32 (LiteRT's ``enforce_f32``); by default it may use FP16, as
        phones' GPUs do (TFLite benchmark_model's ``--gpu_precision_loss_allowed``, true by default)."""
        super().__init__(path)
        cm = import_runtime("litert-compiled")
        check_precision(precision, "litert-compiled")
        accel = cm.HardwareAccelerator.GPU if accelerator == "gpu" else cm.HardwareAccelerator.CPU
        if accelerator == "gpu" and allow_cpu_fallback:
            accel = cm.HardwareAccelerator.GPU | cm.HardwareAccelerator.CPU
        cpu = cm.CpuOptions(num_threads=num_threads)
        if precision == "fp16":
            cpu = cm.CpuOptions(num_threads=num_threads, xnnpack_flags=XNNPACK_FORCE_FP16_FLAGS)
        self.precision = precision
        gpu = cm.GpuOptions(enforce_f32=True) if gpu_fp32 and accelerator == "gpu" else None
        options = cm.Options(hardware_accelerators=accel, cpu_options=cpu, gpu_options=gpu)
        failure = None
        with native_logs_silenced():
            try:
                self.cm = cm.CompiledModel.from_file(path, options=options)
            except RuntimeError as exc:
                failure = one_line(exc, 200)
            gc.collect()  # a failed load frees its environment here, where its logs are hidden
        if failure is not None:
            if accelerator == "gpu":
                raise RuntimeUnavailable(
                    f"{path}: no GPU could be created or it refused the model (no Vulkan/WebGPU adapter, or ops "
                    f"it cannot run); try --gpu_fallback, or on a CPU-only host VK_ICD_FILENAMES={SWIFTSHADER_ICD}"
                )
            raise RuntimeUnavailable(f"{path}: the CPU accelerator failed ({failure})")
        self.runtime = "litert-compiled"
        self._fully_delegated = bool(self.cm.is_fully_accelerated())
        self.accelerator = "CPU" if accelerator == "cpu" else ("GPU (emulated)" if gpu_is_emulated() else "GPU")
        signatures = self.cm.get_signature_list()
        sig = next(iter(signatures))
        names = signatures[sig]
        out_det = self.cm.get_output_tensor_details(sig)
        self.inputs = self._details(names["inputs"], self.cm.get_input_tensor_details(sig), "inputs")
        self.output_details = self._details(names["outputs"], out_det, "outputs")
        self._outs = [(int(np.prod(out_det[n]["shape"])), np.dtype(out_det[n]["dtype"]), tuple(out_det[n]["shape"]))
                      for n in names["outputs"]]
        self._last = None
        with native_logs_silenced():  # the first buffer access sets up an environment, with log lines
            self._ib = self.cm.create_input_buffers(0)
            self._ob = self.cm.create_output_buffers(0)
            self.set_inputs([np.zeros(d["shape"], d["dtype"]) for d in self.inputs])

    def standing_in_for_a_gpu(self):
        """This CPU runner, marked as the fallback for a GPU that could not be created: no op went to the
        accelerator asked for.  Returns the runner."""
        self.accelerator, self._fully_delegated = "CPU (no GPU: fallback)", False
        return self

    def _details(self, names, compiled, side):
        """[{name, shape, dtype, scale, zero_point}] of the signature's ``side`` ("inputs" or "outputs").

        Quantization is not in the compiled model's details; it comes from the file: by signature name (the
        compiled model's names when the file has a signature), by tensor name, else by position.
        """
        listed = self.model.io(side)
        by_name = {t.name: t for t in listed}
        by_name.update({name: self.model.main["tensors"][i] for i, name in self.model.signature_names.items()})
        out = []
        for i, name in enumerate(names):
            d = compiled[name]
            t = by_name.get(name) or (listed[i] if i < len(listed) else None)
            out.append({"name": name, "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                        "scale": t.scale if t else 0.0, "zero_point": t.zero_point if t else 0})
        return out

    def set_inputs(self, arrays):
        for buf, a in zip(self._ib, arrays):
            buf.write(a)

    def run(self):
        self.cm.run_by_index(0, self._ib, self._ob)
        self._last = [buf.read(n, dt).reshape(shape) for buf, (n, dt, shape) in zip(self._ob, self._outs)]

    def outputs(self):
        return [o.copy() for o in self._last]

    def close(self):
        """Frees the compiled model now, with the runtime's teardown messages hidden."""
        with native_logs_silenced():
            self._ib = self._ob = self.cm = None
            gc.collect()


def load(path, runtime=None, *, use_gpu=False, num_threads=1, use_xnnpack=True, delegate=None, gpu_fallback=False,
         precision="default", gpu_precision_loss_allowed=True):
    """A ``Runner`` for ``path`` on ``runtime`` (chosen automatically when None; ``litert-compiled`` for
    ``precision="fp16"``).  ``gpu_precision_loss_allowed=False``: the LiteRT GPU computes in float32."""
    runtime = runtime or ("litert-compiled" if precision == "fp16" else pick_runtime(use_gpu, delegate))
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    check_precision(precision, runtime)
    if precision == "fp16" and use_gpu:
        raise RuntimeUnavailable("--precision fp16 is a CPU (XNNPACK) precision; the GPU accelerator picks its own")
    if runtime == "litert-compiled":
        try:
            return CompiledRunner(path, "gpu" if use_gpu else "cpu", num_threads, gpu_fallback, precision,
                                  gpu_fp32=not gpu_precision_loss_allowed)
        except RuntimeUnavailable:
            if not (use_gpu and gpu_fallback):
                raise
        return CompiledRunner(path, "cpu", num_threads).standing_in_for_a_gpu()  # the fallback that was asked for
    if use_gpu and not delegate:
        raise RuntimeUnavailable(f"--use_gpu on {runtime} needs --delegate PATH to the device's GPU delegate library")
    if use_gpu and not gpu_precision_loss_allowed:
        raise RuntimeUnavailable("--gpu_precision_loss_allowed false sets the LiteRT GPU accelerator's float32 mode "
                                 f"(--runtime litert-compiled --use_gpu); {runtime} has no such option")
    return InterpreterRunner(path, runtime, num_threads, use_xnnpack, delegate)
