"""Reads a .tflite flatbuffer with the schema's generated reader (``invo_base.schema``): ops, tensors,
sizes, metadata, GPU fusion chains.

A board has no TensorFlow and the interpreter cannot even open a Flex model, so the op audit reads the file
itself; the reader is pure Python on ``flatbuffers`` and runs wherever numpy does (tflite-runtime boards too,
with the ``tflite`` package's binding).
"""

import collections
import os
import struct

import numpy as np

from invo_base.schema import reader

schema = reader()

CUSTOM_OP = schema.BuiltinOperator.CUSTOM
BUILTIN_OPS = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TENSOR_TYPES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def builtin_of(builtin_code, deprecated_code):
    """An operator code's builtin operator.  The schema widened the code from int8 to int32 and kept the old
    field: files store small codes in both, older files only in the deprecated one, so the larger is the op."""
    return max(builtin_code, deprecated_code)


class ModelFormatError(ValueError):
    """The file is not a readable TFLite model."""


def _ints(array_or_zero):
    """The generated ``...AsNumpy()`` accessors return 0 for an absent vector."""
    return [] if isinstance(array_or_zero, int) else [int(v) for v in array_or_zero]


def _quantization(tensor):
    """(first scale, first zero point) of a tensor, or (0.0, 0) when it is not quantized."""
    q = tensor.Quantization()
    if q is None or not q.ScaleLength():
        return 0.0, 0
    return float(q.Scale(0)), (int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0)


# Ops a GPU delegate links into its producer's shader (the LiteRT/TFLite GPU delegate's "linkable" ops).
ELEMENTWISE_OPS = frozenset("""ABS ADD CAST COS DEQUANTIZE DIV ELU EXP FLOOR FLOOR_DIV FLOOR_MOD GELU GREATER
    GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGISTIC MAXIMUM MINIMUM MUL NEG POW PRELU QUANTIZE
    RELU RELU6 RELU_0_TO_1 RELU_N1_TO_1 RSQRT SIN SQRT SQUARE SQUARED_DIFFERENCE SUB TANH""".split())
# Sampled textures one shader stage may read: WebGPU's default limit (SwiftShader allows 48).  A fused shader
# past the device's limit fails validation, and the LiteRT runtime then returns garbage while reporting the
# model fully accelerated; the audit holds every model to the conservative default.
GPU_TEXTURE_LIMIT = 16

# TFLite's builtin float DEPTHWISE_CONV_2D kernel (optimized_ops, what a runtime runs without XNNPACK and what
# int8 calibration runs) accumulates output pixels in a buffer of this many floats and never returns when one
# pixel's output depth (input channels x depth multiplier) is larger: measured, ai-edge-litert 2.3 and
# tflite-runtime 2.14, 4832 returns at once and 4833 runs on past any timeout.  XNNPACK and the GPU run it.
BUILTIN_DEPTHWISE_MAX_DEPTH = 4832

Tensor = collections.namedtuple("Tensor", "name shape dtype constant_size scale zero_point")


class TFLiteModel:
    """What a .tflite file holds, read without any runtime."""

    def __init__(self, data, path=None):
        self.path = path
        self.file_size = len(data)
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelFormatError(f"{path or 'buffer'}: not a TFLite model (no TFL3 identifier)")
        try:
            self._parse(bytes(data))
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, struct.error) as exc:
            raise ModelFormatError(f"{path or 'buffer'}: corrupt or truncated TFLite model ({exc})") from None

    @classmethod
    def from_file(cls, path):
        if not os.path.isfile(path):
            raise ModelFormatError(f"{path}: no such model file")
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def _parse(self, buf):
        root = schema.Model.GetRootAsModel(buf, 0)
        codes, self.custom_codes = [], set()
        for i in range(root.OperatorCodesLength()):
            oc = root.OperatorCodes(i)
            code = builtin_of(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == CUSTOM_OP:
                name = (oc.CustomCode() or b"").decode("utf-8", "replace")
                self.custom_codes.add(name)
            else:
                name = BUILTIN_OPS.get(code, f"BUILTIN_{code}")
            codes.append(name)
        buffers = [root.Buffers(b) for b in range(root.BuffersLength())]
        buffer_sizes = [b.DataLength() or b.Size() for b in buffers]
        self.subgraphs = []
        for s in range(root.SubgraphsLength()):
            sg = root.Subgraphs(s)
            tensors = []
            for i in range(sg.TensorsLength()):
                t = sg.Tensors(i)
                b = t.Buffer()
                scale, zero = _quantization(t)
                tensors.append(Tensor((t.Name() or b"").decode("utf-8", "replace"), tuple(_ints(t.ShapeAsNumpy())),
                                      TENSOR_TYPES.get(t.Type(), "UNKNOWN"),
                                      buffer_sizes[b] if 0 < b < len(buffer_sizes) else 0, scale, zero))
            operators = [sg.Operators(o) for o in range(sg.OperatorsLength())]
            self.subgraphs.append({"tensors": tensors, "inputs": _ints(sg.InputsAsNumpy()),
                                   "outputs": _ints(sg.OutputsAsNumpy()),
                                   "ops": [codes[op.OpcodeIndex()] for op in operators],
                                   "op_io": [(_ints(op.InputsAsNumpy()), _ints(op.OutputsAsNumpy())) for op in operators]})
        # {name: bytes} of the model's metadata entries (min_runtime_version, reduced_precision_support, ...).
        self.metadata = {}
        for m in range(root.MetadataLength()):
            entry = root.Metadata(m)
            b = entry.Buffer()
            data = buffers[b].DataAsNumpy() if 0 <= b < len(buffers) else 0
            self.metadata[(entry.Name() or b"").decode("utf-8", "replace")] = b"" if isinstance(data, int) else data.tobytes()
        if not self.subgraphs:
            raise ModelFormatError(f"{self.path or 'buffer'}: the model has no subgraph")
        # {tensor index: signature name} of the main subgraph's inputs and outputs ("input_0", ...).
        self.signature_names = {}
        for d in range(root.SignatureDefsLength()):
            sig = root.SignatureDefs(d)
            if sig.SubgraphIndex() == 0:
                for ref in [sig.Inputs(i) for i in range(sig.InputsLength())] + \
                           [sig.Outputs(i) for i in range(sig.OutputsLength())]:
                    self.signature_names[ref.TensorIndex()] = (ref.Name() or b"").decode("utf-8", "replace")

    @property
    def main(self):
        return self.subgraphs[0]

    @property
    def ops(self):
        return [op for sg in self.subgraphs for op in sg["ops"]]

    def op_output_types(self, op_name):
        """The dtype of every output of every ``op_name`` op in the main subgraph."""
        sg = self.main
        return [sg["tensors"][o].dtype for op, (_, outs) in zip(sg["ops"], sg["op_io"]) if op == op_name for o in outs]

    def op_histogram(self):
        return dict(collections.Counter(self.ops).most_common())

    @property
    def flex_ops(self):
        return sorted({op for op in self.ops if op in self.custom_codes and op.startswith("Flex")})

    @property
    def custom_ops(self):
        return sorted({op for op in self.ops if op in self.custom_codes and not op.startswith("Flex")})

    @property
    def builtin_only(self):
        return not self.custom_codes

    @property
    def min_runtime_version(self):
        """The oldest TFLite runtime that loads the file, as the converter recorded it ("2.17.0"), or None."""
        text = self.metadata.get("min_runtime_version", b"").split(b"\0")[0].decode("ascii", "replace")
        return text or None

    @property
    def max_rank(self):
        return max((len(t.shape) for sg in self.subgraphs for t in sg["tensors"]), default=0)

    def io(self, which="inputs"):
        sg = self.main
        return [sg["tensors"][i] for i in sg[which]]

    def parameters(self):
        """Elements of constant float/int8 tensors (weights), not counting int32 shape constants."""
        size = {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1, "UINT8": 1, "INT16": 2}
        return sum(t.constant_size // size[t.dtype] for sg in self.subgraphs for t in sg["tensors"]
                   if t.constant_size and t.dtype in size)

    def multiply_adds(self):
        """The main subgraph's arithmetic, counted from tensor shapes: a convolution's or a fully connected
        layer's multiply-adds, and one per output value of an elementwise op (per input value of a reduction
        or a pool).  One-hot gathers count as the multiply-adds a device performs for them."""
        sg, total = self.main, 0
        tensors = sg["tensors"]

        def elements(t):
            return int(np.prod(tensors[t].shape)) if t >= 0 and tensors[t].shape else 0

        for op, (ins, outs) in zip(sg["ops"], sg["op_io"]):
            if not outs:
                continue
            if op == "CONV_2D":  # weight [Cout, kh, kw, Cin]
                w = tensors[ins[1]].shape
                total += elements(outs[0]) * int(np.prod(w[1:]))
            elif op == "DEPTHWISE_CONV_2D":  # weight [1, kh, kw, Cout]
                w = tensors[ins[1]].shape
                total += elements(outs[0]) * w[1] * w[2]
            elif op == "FULLY_CONNECTED":  # weight [out, in]
                total += elements(outs[0]) * tensors[ins[1]].shape[-1]
            elif op in ("SUM", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
                total += elements(ins[0])
            elif op in ("ADD", "MUL", "SUB", "DIV", "RELU", "LOGISTIC", "HARD_SWISH"):
                total += elements(outs[0])
        return total

    def fusable_chain(self):
        """The longest chain of elementwise ops a GPU delegate could fuse into one shader, and what it reads.

        A delegate links an elementwise op into the shader of the op producing one of its inputs when that
        input has no other consumer, and the linked op's other inputs become extra textures of the shader.
        Which links it makes depends on operator order and input position; this counts every link it could
        make, so the bound holds however the model was converted.  Returns {"ops", "textures", "limit",
        "within"}: ``ops`` elementwise ops in the chain, ``textures`` the tensors its shader would read
        (scalar constants are folded into the code and not counted).
        """
        sg = self.main
        tensors = sg["tensors"]
        consumers = collections.Counter(t for ins, _ in sg["op_io"] for t in set(ins) if t >= 0)
        producer = {t: n for n, (_, outs) in enumerate(sg["op_io"]) for t in outs}

        def texture(t):  # constant scalars and integer parameters (slice bounds, shapes) are no textures
            c = tensors[t]
            return not (c.constant_size and (c.dtype in ("INT32", "INT64") or int(np.prod(c.shape or (1,))) <= 1))

        def reads(ins, skip=None):
            return sum(1 for t in set(ins) if t >= 0 and t != skip and texture(t))

        best = {}  # op index -> (elementwise ops in its chain, textures of the shader ending at it)
        top = (0, 0)
        for n, (op, (ins, _)) in enumerate(zip(sg["ops"], sg["op_io"])):
            if op not in ELEMENTWISE_OPS:
                best[n] = (0, reads(ins))
                continue
            chain = (1, reads(ins))
            for t in set(ins):
                p = producer.get(t)
                if p is not None and consumers[t] == 1:
                    ops_, tex = best[p]
                    chain = max(chain, (ops_ + 1, tex + reads(ins, skip=t)), key=lambda c: (c[1], c[0]))
            best[n] = chain
            top = max(top, chain, key=lambda c: (c[1], c[0]))
        return {"ops": top[0], "textures": top[1], "limit": GPU_TEXTURE_LIMIT, "within": top[1] <= GPU_TEXTURE_LIMIT}

    def builtin_stalls(self):
        """The ops TFLite's builtin kernels never finish: [{"op": index, "depth"}] for every float
        DEPTHWISE_CONV_2D whose output depth passes ``BUILTIN_DEPTHWISE_MAX_DEPTH`` (any subgraph's index
        counts from the main subgraph's first op)."""
        found, first = [], 0
        for sg in self.subgraphs:
            for n, (op, (ins, outs)) in enumerate(zip(sg["ops"], sg["op_io"])):
                if op != "DEPTHWISE_CONV_2D" or not ins or not outs or ins[0] < 0:
                    continue
                x, y = sg["tensors"][ins[0]], sg["tensors"][outs[0]]
                depth = y.shape[-1] if y.shape else 0
                if x.dtype == "FLOAT32" and depth > BUILTIN_DEPTHWISE_MAX_DEPTH:
                    found.append({"op": first + n, "depth": int(depth)})
            first += len(sg["ops"])
        return found

    def builtin_stall_message(self):
        """One line on ``builtin_stalls``, or None: what never returns on TFLite's builtin kernels, and why."""
        stalls = self.builtin_stalls()
        if not stalls:
            return None
        s = stalls[0]
        more = f" and {len(stalls) - 1} more" if len(stalls) > 1 else ""
        return (f"TFLite's builtin DEPTHWISE_CONV_2D kernel never returns on an output depth (input channels x "
                f"depth multiplier) above {BUILTIN_DEPTHWISE_MAX_DEPTH}, and op {s['op']} has {s['depth']}{more}")

    def peak_activations(self):
        """The most activation bytes alive at once when the main subgraph's operators run in their listed order
        (runtimes run them so): {"bytes", "op", "tensors"}: the op at which the peak is reached, and the most
        tensors alive at once (at any op).

        A tensor is alive from the op that makes it (a model input: from the start) to its last reader (an
        output: to the end); weights are not counted.  On a phone's few MB of cache this, not the file's size,
        says whether a layer's intermediates stay cached: the stock converter had listed an involution's K*K
        windows all first, 7x the peak of the same layer run depth-first (``involution.layer.KERNEL_SCOPE``)."""
        sg = self.main
        itemsize = {"FLOAT32": 4, "INT32": 4, "FLOAT16": 2, "INT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1,
                    "INT64": 8, "FLOAT64": 8}
        tensors = sg["tensors"]

        def size(t):  # an unknown (dynamic) dimension counts as 1: batch 1
            return int(np.prod([max(d, 1) for d in tensors[t].shape])) * itemsize.get(tensors[t].dtype, 4)

        last = {t: n for n, (ins, _) in enumerate(sg["op_io"]) for t in ins if t >= 0}
        keep = set(sg["outputs"])
        alive = {t for t in sg["inputs"] if t >= 0}
        peak = {"bytes": sum(size(t) for t in alive), "op": None, "tensors": len(alive)}
        for n, (_, outs) in enumerate(sg["op_io"]):
            alive |= {t for t in outs if t >= 0 and not tensors[t].constant_size}
            now = sum(size(t) for t in alive)
            if now > peak["bytes"]:
                peak.update(bytes=now, op=n)
            peak["tensors"] = max(peak["tensors"], len(alive))
            alive = {t for t in alive if t in keep or last.get(t, -1) > n}
        return peak

    def summary(self):
        return {
            "file_bytes": self.file_size,
            "ops": len(self.ops),
            "op_histogram": self.op_histogram(),
            "flex_ops": self.flex_ops,
            "custom_ops": self.custom_ops,
            "builtin_only": self.builtin_only,
            "max_tensor_rank": self.max_rank,
            "parameters": self.parameters(),
            "inputs": [_io_dict(t) for t in self.io("inputs")],
            "outputs": [_io_dict(t) for t in self.io("outputs")],
            "metadata": {name: describe_metadata(data) for name, data in self.metadata.items()},
            "gpu_fusion": self.fusable_chain(),
            "builtin_stalls": self.builtin_stalls(),
            "peak_activation_bytes": self.peak_activations()["bytes"],
            "multiply_adds": self.multiply_adds(),
        }


def describe_metadata(data):
    """A metadata entry for a report: short printable text as text (``fp16accfp16``), otherwise its size."""
    text = data.rstrip(b"\0")
    if len(text) <= 64 and text and all(32 <= c < 127 for c in text):
        return text.decode("ascii")
    return f"{len(data)} bytes"


def _io_dict(t):
    d = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if t.scale:
        d.update(scale=t.scale, zero_point=t.zero_point)
    return d
