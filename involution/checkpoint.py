"""Reads PyTorch checkpoints into numpy arrays without torch: ``.pth``/``.pt``, ``.safetensors``, ``.npz``.

A ``.pth`` written by ``torch.save`` (the zip format, PyTorch >= 1.6) is a zip with
``<name>/data.pkl`` (a pickle whose tensors refer to storages by key),
``<name>/data/<key>`` (each storage's raw little-endian bytes) and ``<name>/byteorder``.
The pickle is read by a restricted unpickler: it rebuilds tensors (``_rebuild_tensor_v2``
over float32/float16/bfloat16/integer storages, any strides and offset), ordered dicts and
plain Python values, and refuses every other global, so a malicious file runs nothing.
"""

import io
import os
import pickle
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint; the message is one line for the user."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
    "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for ``torch.<X>Storage`` in the pickle: only its name (the dtype) is used."""

    def __init__(self, name):
        self.name = name


class _Storage:
    def __init__(self, array):
        self.array = array


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """numpy view of ``size`` elements at ``offset`` with element ``stride``s, copied out of the storage."""
    base = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if size and any(s == 0 for s in size):
        return np.zeros(size, base.dtype)
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride))
    if int(offset) < 0 or last >= len(base):
        raise CheckpointError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(base[int(offset):], shape=size,
                                           strides=tuple(s * base.itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *args):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, archive, prefix):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.cache = archive, prefix, {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refused to load {module}.{name}: a checkpoint holds tensors and plain values only")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"unexpected persistent reference {str(pid)[:60]}")
        kind, key = pid[1].name, str(pid[2])
        if key not in self.cache:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"storage {key} is missing from the archive") from None
            dtype = _STORAGE_DTYPES[kind]
            if dtype == "bfloat16":  # the upper 16 bits of a float32
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
            self.cache[key] = _Storage(array)
        return self.cache[key]


def _read_pth(path):
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            raise CheckpointError(f"{path}: a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch")
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (no zip archive)")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: not a torch.save archive (no single data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        try:
            return _RestrictedUnpickler(archive.read(pkl[0]), archive, prefix).load()
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a damaged pickle, reported in one line
            raise CheckpointError(f"{path}: unreadable checkpoint pickle ({type(exc).__name__}: {exc})") from None


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc})") from None


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None


def load_state_dict(path):
    """{key: float32/int array} of a checkpoint file; unwraps ``{"state_dict": ..., "meta": ...}``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pth", ".pt", ".bin", ".ckpt"):
        obj = _read_pth(path)
    elif ext == ".safetensors":
        obj = _read_safetensors(path)
    elif ext == ".npz":
        obj = _read_npz(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type {ext or '(none)'}; use .pth/.pt, .safetensors or .npz")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: holds no state dict (a dict of named tensors)")
    state = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return state
