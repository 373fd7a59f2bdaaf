"""A .tflite as C source for microcontroller firmware, the way TFLite Micro's examples embed a model: the bytes as a
16-byte-aligned array with its length, and the list of ops the model needs, so that the firmware's
``MicroMutableOpResolver`` registers only those (each registered kernel costs flash)."""

import os
import re

from invo_base.plumbing import write_atomic
from invo_base.tflite_model import TFLiteModel

# TFLM reads a model's flatbuffer in place; its tables need the array aligned (TFLM's examples use 16).
ALIGNMENT = 16
# MicroMutableOpResolver's method for an op where it is not the op's name in CamelCase.
RESOLVER_METHODS = {"BATCH_MATMUL": "AddBatchMatMul", "LOG_SOFTMAX": "AddLogSoftmax"}


def c_identifier(name):
    """A C identifier from a file name: 'seed-involution_int8.tflite' -> 'seed_involution_int8'."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(name))[0])
    return stem if stem and not stem[0].isdigit() else f"model_{stem}"


def resolver_method(op):
    """The ``MicroMutableOpResolver`` method registering ``op``: CONV_2D -> AddConv2D, STRIDED_SLICE ->
    AddStridedSlice."""
    if op in RESOLVER_METHODS:
        return RESOLVER_METHODS[op]
    return "Add" + "".join(part.upper() if part[0].isdigit() else part.capitalize() for part in op.split("_"))


def c_source(data, name):
    """(header, source) text of the model bytes ``data`` as ``alignas(16) const unsigned char name[]``."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    header = (f"// The model as C data (invo-convert --c-array). {len(data)} bytes.\n#pragma once\n\n"
              f"extern const unsigned char {name}[];\nextern const unsigned int {name}_len;\n")
    source = (f'#include "{name}.h"\n\n'
              f"// TFLite Micro reads the flatbuffer in place: keep it {ALIGNMENT}-byte aligned.\n"
              f"alignas({ALIGNMENT}) const unsigned char {name}[] = {{\n    " + ",\n    ".join(rows)
              + f"\n}};\nconst unsigned int {name}_len = {len(data)};\n")
    return header, source


def ops_header(ops, name):
    """A header registering exactly ``ops`` (the model's distinct op names) in a ``MicroMutableOpResolver``."""
    calls = "\n".join(f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;" for op in ops)
    return (f"// The ops {name} needs, for a resolver that registers only those (invo-convert --c-array).\n"
            '#pragma once\n#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
            f"constexpr int k{_camel(name)}OpCount = {len(ops)};\n\n"
            f"inline TfLiteStatus Register{_camel(name)}Ops(\n"
            f"    tflite::MicroMutableOpResolver<k{_camel(name)}OpCount>& resolver) {{\n{calls}\n"
            "  return kTfLiteOk;\n}\n")


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_") if part)


def write_c_array(tflite_path, directory=None):
    """Writes NAME.h, NAME.cc and NAME_ops.h beside ``tflite_path`` (or in ``directory``); returns their paths.
    Custom and Flex ops have no TFLM kernel to register: they are refused."""
    with open(tflite_path, "rb") as f:
        data = f.read()
    model = TFLiteModel(data, tflite_path)
    if model.custom_codes:
        raise ValueError(f"{tflite_path}: custom or Flex ops ({', '.join(sorted(model.custom_codes))}) have no "
                         "TFLite Micro kernel; no C array written")
    name = c_identifier(tflite_path)
    directory = directory or os.path.dirname(os.path.abspath(tflite_path))
    header, source = c_source(data, name)
    paths = [os.path.join(directory, f"{name}{suffix}") for suffix in (".h", ".cc", "_ops.h")]
    for path, text in zip(paths, (header, source, ops_header(sorted(set(model.ops)), name))):
        write_atomic(path, text)
    return paths
