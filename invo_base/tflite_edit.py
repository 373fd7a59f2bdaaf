"""The .tflite object tree (no TensorFlow): unpack, pack as the converter writes, cut one-op models.

The one place that unpacks a model into the schema's object API (``invo_base.schema.editor``) and packs it
back.  The passes that change what a model contains (``convert.compact``) belong to the converter;
``benchmarks.gpu_check`` cuts one-op models here to name what a GPU refuses.
"""

import numpy as np

from invo_base.schema import LazyEditor
from invo_base.tflite_model import builtin_of

schema = LazyEditor()


def unpack(flat):
    """The model as the schema's mutable object tree (``ModelT``)."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flat, 0))


def pack(model, size_hint=1024):
    """``ModelT`` -> .tflite bytes, every buffer's data 16-byte aligned as the converter writes it."""
    import flatbuffers

    buffers = model.buffers
    model.buffers = [_AlignedBuffer(b) for b in buffers or []]
    try:
        builder = flatbuffers.Builder(size_hint)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    finally:
        model.buffers = buffers
    return bytes(builder.Output())


class _AlignedBuffer:
    """Packs a ``BufferT`` with its data aligned to 16 bytes (schema.fbs: ``force_align: 16``).

    The generated object API aligns a byte vector to 1 byte; runtimes then copy or refuse to map
    misaligned weights.
    """

    ALIGN = 16

    def __init__(self, buffer):
        self.buffer = buffer

    def Pack(self, builder):  # noqa: N802 - the generated object API's name
        data = self.buffer.data
        vector = None
        if data is not None:
            payload = np.asarray(data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), self.ALIGN)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        schema.BufferAddOffset(builder, self.buffer.offset)
        schema.BufferAddSize(builder, self.buffer.size)
        return schema.BufferEnd(builder)


def unsupported(model):
    """Why an editing pass (``convert.compact``) must leave ``model`` as it is, or None.

    The editor understands one subgraph of builtin ops with dense tensors whose data sits inside the
    flatbuffer.  Control flow (several subgraphs), custom ops (their options are opaque bytes), sparse
    tensors and data stored outside the flatbuffer (models over 2 GB) are left untouched, never edited
    half-understood.
    """
    if len(model.subgraphs or []) != 1:
        return f"{len(model.subgraphs or [])} subgraphs (control flow or several signatures)"
    if schema.BuiltinOperator.CUSTOM in builtin_codes(model):
        return "custom ops, whose options it cannot read"
    if any(t.sparsity is not None for t in model.subgraphs[0].tensors):
        return "sparse tensors"
    if any(b.offset > 1 or b.size for b in model.buffers or []) or model.externalBuffers:
        return "tensor data stored outside the flatbuffer"
    return None


def as_list(v):
    """An index vector of the object API (None, list or numpy array) as a list of ints."""
    return [] if v is None else [int(i) for i in v]


def builtin_codes(model):
    """Each operator code's builtin operator (``invo_base.tflite_model.builtin_of``)."""
    return [builtin_of(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]


def single_op_model(model, index):
    """.tflite bytes of operator ``index`` of ``model``'s main subgraph alone.

    Its non-constant inputs become the model's inputs; its constants and options stay.
    """
    import copy

    sg = model.subgraphs[0]
    op = sg.operators[index]
    outs = [int(i) for i in op.outputs]
    buffers = [schema.BufferT()]
    tensors, remap, inputs = [], {}, []
    for i in dict.fromkeys([int(i) for i in op.inputs if i >= 0] + outs):
        t = copy.deepcopy(sg.tensors[i])
        data = model.buffers[t.buffer].data if t.buffer else None
        if data is not None and len(data) and i not in outs:
            b = schema.BufferT()
            b.data = data
            buffers.append(b)
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
            if i not in outs:
                inputs.append(len(tensors))
        t.name = f"t{len(tensors)}"
        remap[i] = len(tensors)
        tensors.append(t)
    one = copy.deepcopy(op)
    one.inputs = [remap[int(i)] if i >= 0 else -1 for i in op.inputs]
    one.outputs = [remap[i] for i in outs]
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = tensors, [one]
    graph.inputs, graph.outputs = inputs, [remap[i] for i in outs]
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [_tensor_map(tensors[i].name, i) for i in graph.inputs]
    sig.outputs = [_tensor_map(tensors[i].name, i) for i in graph.outputs]
    small = schema.ModelT()
    small.version, small.operatorCodes, small.subgraphs = model.version, model.operatorCodes, [graph]
    small.buffers, small.signatureDefs, small.description = buffers, [sig], "single op"
    return pack(small)


def _tensor_map(name, index):
    m = schema.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m
