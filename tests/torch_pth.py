"""A small writer of torch.save's zip format, for tests, following PyTorch's documented layout.

``<name>/data.pkl`` pickles the object with every tensor as ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, backward_hooks)`` and every storage as the persistent id
``("storage", torch.<Type>Storage, key, "cpu", numel)``; ``<name>/data/<key>`` holds the storage's raw
little-endian bytes; ``<name>/byteorder`` says ``little`` and ``<name>/version`` ``3``.  No torch is
needed: stand-in ``torch`` modules exist only while pickling, so the pickle names the same globals.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
          np.dtype(np.int64): "LongStorage", np.dtype(np.float64): "DoubleStorage"}


class Tensor:
    """A tensor view: ``storage`` (1-D array, or "bfloat16" uint16 words), element offset, size, stride."""

    def __init__(self, storage, offset, size, stride, storage_type=None):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.storage_type = storage_type or _TYPES[storage.dtype]

    @classmethod
    def of(cls, array):
        a = np.array(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        strides = tuple(s // a.itemsize for s in a.strides)
        return cls(a.ravel(), 0, a.shape, strides)


class _StorageRef:
    def __init__(self, tensor, key):
        self.tensor, self.key = tensor, key


@contextlib.contextmanager
def _stand_in_torch():
    if "torch" in sys.modules:  # the real one names the same globals
        yield sys.modules["torch"]
        return
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in set(_TYPES.values()) | {"BFloat16Storage"}:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # never called: only its name goes into the pickle
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]


def save(obj, path, name="archive"):
    """Writes ``obj`` (dicts, lists, plain values, numpy arrays or ``Tensor``s) as torch.save would."""
    storages = {}

    with _stand_in_torch() as torch:
        class _Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _StorageRef):
                    t = o.tensor
                    numel = len(t.storage)
                    return ("storage", getattr(torch, t.storage_type), o.key, "cpu", numel)
                return None

            def reducer_override(self, o):
                if isinstance(o, np.ndarray):
                    o = Tensor.of(o)
                if isinstance(o, Tensor):
                    key = storages.setdefault(id(o.storage), (str(len(storages)), o))[0]
                    return (torch._utils._rebuild_tensor_v2,
                            (_StorageRef(o, key), o.offset, o.size, o.stride, False, collections.OrderedDict()))
                return NotImplemented

        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", buf.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for key, t in storages.values():
            data = t.storage
            z.writestr(f"{name}/data/{key}", np.asarray(data).astype(data.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{name}/version", "3\n")
    return path
