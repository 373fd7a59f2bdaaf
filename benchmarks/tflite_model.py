"""Reads a .tflite flatbuffer with the standard library alone: ops, tensors, sizes.

A board has no TensorFlow and the interpreter cannot even open a Flex model,
so the op audit reads the file itself (schema: tensorflow/lite/schema/schema.fbs).
"""

import collections
import os
import struct

from benchmarks._schema import BUILTIN_OPS, TENSOR_TYPES

CUSTOM_OP = 32  # BuiltinOperator.CUSTOM


class ModelFormatError(ValueError):
    """The file is not a readable TFLite model."""


class _Table:
    """A flatbuffer table at ``pos`` in ``buf``."""

    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, vt)[0]
        self.vt = vt

    def _field(self, i):
        off = 4 + 2 * i
        if off >= self.vt_len:
            return 0
        return struct.unpack_from("<H", self.buf, self.vt + off)[0]

    def scalar(self, i, fmt, default=0):
        off = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _vector(self, i):
        off = self._field(i)
        if not off:
            return None, 0
        p = self.pos + off
        p += struct.unpack_from("<I", self.buf, p)[0]
        return p + 4, struct.unpack_from("<I", self.buf, p)[0]

    def vector(self, i, fmt):
        start, n = self._vector(i)
        if start is None:
            return []
        size = struct.calcsize("<" + fmt)
        if start + n * size > len(self.buf):
            raise ModelFormatError("vector runs past the end of the file")
        return list(struct.unpack_from(f"<{n}{fmt}", self.buf, start))

    def vector_len(self, i):
        return self._vector(i)[1]

    def tables(self, i):
        start, n = self._vector(i)
        if start is None:
            return []
        return [_Table(self.buf, start + 4 * k + struct.unpack_from("<I", self.buf, start + 4 * k)[0]) for k in range(n)]

    def string(self, i):
        start, n = self._vector(i)
        return None if start is None else bytes(self.buf[start : start + n]).decode("utf-8", "replace")


def _quantization(tensor):
    """(first scale, first zero point) of a tensor, or (0.0, 0) when it is not quantized."""
    off = tensor._field(4)
    if not off:
        return 0.0, 0
    p = tensor.pos + off
    q = _Table(tensor.buf, p + struct.unpack_from("<I", tensor.buf, p)[0])
    scales, zeros = q.vector(2, "f"), q.vector(3, "q")
    return (scales[0] if scales else 0.0), (zeros[0] if zeros else 0)


Tensor = collections.namedtuple("Tensor", "name shape dtype constant_size scale zero_point")


class TFLiteModel:
    """What a .tflite file holds, read without any runtime."""

    def __init__(self, data, path=None):
        self.path = path
        self.file_size = len(data)
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelFormatError(f"{path or 'buffer'}: not a TFLite model (no TFL3 identifier)")
        try:
            self._parse(memoryview(data))
        except (struct.error, IndexError) as exc:
            raise ModelFormatError(f"{path or 'buffer'}: corrupt or truncated TFLite model ({exc})") from None

    @classmethod
    def from_file(cls, path):
        if not os.path.isfile(path):
            raise ModelFormatError(f"{path}: no such model file")
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def _parse(self, buf):
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        codes = []
        for oc in root.tables(1):
            code = max(oc.scalar(0, "b"), oc.scalar(3, "i"))
            codes.append(oc.string(1) if code == CUSTOM_OP else BUILTIN_OPS.get(code, f"BUILTIN_{code}"))
        self.custom_codes = {c for c, oc in zip(codes, root.tables(1)) if max(oc.scalar(0, "b"), oc.scalar(3, "i")) == CUSTOM_OP}
        buffer_sizes = [b.vector_len(0) or b.scalar(2, "Q") for b in root.tables(4)]
        self.subgraphs = []
        for sg in root.tables(2):
            tensors = []
            for t in sg.tables(0):
                b = t.scalar(2, "I")
                scale, zero = _quantization(t)
                tensors.append(Tensor(t.string(3) or "", tuple(t.vector(0, "i")),
                                      TENSOR_TYPES.get(t.scalar(1, "b"), "UNKNOWN"),
                                      buffer_sizes[b] if 0 < b < len(buffer_sizes) else 0, scale, zero))
            operators = sg.tables(3)
            self.subgraphs.append({"tensors": tensors, "inputs": sg.vector(1, "i"), "outputs": sg.vector(2, "i"),
                                   "ops": [codes[op.scalar(0, "I")] for op in operators],
                                   "op_io": [(op.vector(1, "i"), op.vector(2, "i")) for op in operators]})
        if not self.subgraphs:
            raise ModelFormatError(f"{self.path or 'buffer'}: the model has no subgraph")

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
        }


def _io_dict(t):
    d = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if t.scale:
        d.update(scale=t.scale, zero_point=t.zero_point)
    return d
