"""What invo-convert does to the converter's output before it writes it: ``compact``.

Passes over the object tree of ``invo_base.tflite_edit``: shared constants and quantization tables, no
intermediate tensor names, repaired zero-range int8 scales, inputs in signature order, operators in
depth-first order.  ``invo-convert FILE.tflite`` runs the same passes on a file another converter wrote
(``convert.retouch``).  No TensorFlow.
"""

import re

import numpy as np

from invo_base.tflite_edit import as_list, builtin_codes, pack, unpack, unsupported
from invo_base.schema import reader

BuiltinOperator, TensorType = reader().BuiltinOperator, reader().TensorType

# The converter widens a calibrated range of exactly zero (min = max = 0: a dead ReLU) to [-1e-6, 1e-6],
# which it stores as this scale with zero point 0.  A small but real range gets its own scale and is
# never touched.
ZERO_RANGE_SCALE = np.float32(2e-6) / np.float32(255)  # computed in float32, as the converter does


def share_constants(model):
    """Makes ops that read identical constants (type, shape, bytes, quantization) read one tensor.

    The converter gives each of the K*K strided slices of an involution layer its
    own begin/end/strides tensors; most are equal.  Unread tensors are dropped and
    the rest renumbered (operators, subgraph inputs/outputs, signatures).
    """
    for si, sg in enumerate(model.subgraphs):
        io = set(as_list(sg.inputs)) | set(as_list(sg.outputs))
        canon, remap = {}, {}
        for i, t in enumerate(sg.tensors):
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is None or not len(data) or i in io or t.isVariable:
                continue
            q = t.quantization
            qkey = None if q is None else tuple(
                np.asarray(v).tobytes() for v in (q.scale, q.zeroPoint, q.min, q.max) if v is not None
            ) + (q.quantizedDimension,)
            key = (t.type, tuple(as_list(t.shape)), np.asarray(data, np.uint8).tobytes(), qkey)
            remap[i] = canon.setdefault(key, i)
        if all(k == v for k, v in remap.items()):
            continue
        for op in sg.operators:
            op.inputs = [remap.get(i, i) for i in as_list(op.inputs)]
        used = io | {i for i, t in enumerate(sg.tensors) if t.isVariable}
        for op in sg.operators:
            used |= {i for i in as_list(op.inputs) + as_list(op.outputs) + as_list(op.intermediates) if i >= 0}
        new = {old: n for n, old in enumerate(sorted(used))}
        sg.tensors = [sg.tensors[i] for i in sorted(used)]
        for op in sg.operators:
            op.inputs = [new[i] if i >= 0 else i for i in as_list(op.inputs)]
            op.outputs = [new[i] for i in as_list(op.outputs)]
            if op.intermediates is not None:
                op.intermediates = [new[i] for i in as_list(op.intermediates)]
        sg.inputs = [new[i] for i in as_list(sg.inputs)]
        sg.outputs = [new[i] for i in as_list(sg.outputs)]
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == si:
                for ref in (sig.inputs or []) + (sig.outputs or []):
                    ref.tensorIndex = new[ref.tensorIndex]
    # Buffers no tensor reads any more are emptied; metadata (min_runtime_version, reduced_precision_support,
    # the user's own) is read by its index, not by a tensor, and keeps its bytes.
    read = {t.buffer for sg in model.subgraphs for t in sg.tensors} | {m.buffer for m in model.metadata or []}
    for b, buf in enumerate(model.buffers):
        if b not in read:
            buf.data = None


class _SharedTable:
    """A table packed once however many tensors point at it (FlatBuffers allows shared offsets)."""

    def __init__(self, table, cache, key):
        self.table, self.cache, self.key = table, cache, key

    def Pack(self, builder):  # noqa: N802 - the generated object API's name
        if self.key not in self.cache:
            self.cache[self.key] = self.table.Pack(builder)
        return self.cache[self.key]


def share_quantization(model):
    """Slices, reshapes and transposes keep their input's scale: many tensors carry equal tables."""
    cache = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            q = t.quantization
            if q is None or isinstance(q, _SharedTable):
                continue
            key = tuple(None if v is None else np.asarray(v).tobytes()
                        for v in (q.scale, q.zeroPoint, q.min, q.max)) + (q.quantizedDimension, q.detailsType)
            if q.details is None:
                t.quantization = _SharedTable(q, cache, key)


def drop_static_signatures(model):
    """An absent shape_signature means 'equal to shape' (schema.fbs): store it only for dynamic shapes."""
    for sg in model.subgraphs:
        for t in sg.tensors:
            sig = t.shapeSignature
            if sig is not None and t.shape is not None and list(sig) == list(t.shape) and min(sig, default=0) >= 0:
                t.shapeSignature = None


def _zero_range(q):
    """True for the converter's quantization of a calibrated range of exactly zero."""
    return (q is not None and q.scale is not None and len(q.scale) == 1 and q.zeroPoint is not None
            and len(q.zeroPoint) == 1 and int(q.zeroPoint[0]) == 0
            and abs(float(q.scale[0]) / float(ZERO_RANGE_SCALE) - 1) < 1e-6)


def repair_zero_ranges(model):
    """Gives each int8 activation whose calibrated range was exactly zero a scale XNNPACK accepts.

    Such a tensor holds only zeros, so any scale is exact; what matters is the scale ratios of the
    ops around it, which XNNPACK bounds.  Walking the ops in order, a MUL's product gets the scale of
    the largest product its inputs can make (128 * s_a * s_b); any other op's output the largest
    scale of its activation inputs (a sum of zeros is as fine as its inputs); an op without such
    inputs 2^-8.  A window that reads only padding (2x2 maps with K=7) is such a product.
    """
    codes = builtin_codes(model)
    for sg in model.subgraphs:

        def constant(t):
            return bool(t.buffer) and model.buffers[t.buffer].data is not None

        def activation_scale(i):
            t = sg.tensors[i]
            q = t.quantization
            if constant(t) or q is None or q.scale is None or len(q.scale) != 1:
                return None
            return float(q.scale[0])

        for op in sg.operators:
            for o in (int(i) for i in op.outputs):
                t = sg.tensors[o]
                if constant(t) or t.type != TensorType.INT8 or not _zero_range(t.quantization):
                    continue
                scales = [s for s in (activation_scale(int(i)) for i in op.inputs if i >= 0) if s is not None]
                if codes[op.opcodeIndex] == BuiltinOperator.MUL and len(scales) == 2:
                    scale = 128.0 * scales[0] * scales[1]
                else:
                    scale = max(scales, default=2.0**-8)
                t.quantization.scale = np.array([scale], np.float32)


def drop_tensor_names(model):
    """Names only for the model's inputs and outputs: the converter's TF graph paths are dead weight."""
    for sg in model.subgraphs:
        keep = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = None


def _natural(name):
    """Sort key in which input_2 comes before input_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name or "")]


def io_in_signature_order(model):
    """Orders each signed subgraph's inputs and outputs by their signature names, naturally sorted.

    The converter lists a subgraph's inputs in no particular order (a Keras model's input_0 and
    input_1 came out as [input_1, input_0]), and runtimes number inputs by that list; after this,
    position i is the signature's i-th name (``input_i`` for ``convert.export``'s models), so ``arr_i``
    of an .npz and the i-th Keras input mean the same tensor.
    """
    for sig in model.signatureDefs or []:
        sg = model.subgraphs[sig.subgraphIndex]
        for side in ("inputs", "outputs"):
            refs = sorted(getattr(sig, side) or [], key=lambda r: _natural(r.name.decode() if isinstance(r.name, bytes) else r.name))
            tensors = [r.tensorIndex for r in refs]
            if sorted(tensors) == sorted(int(i) for i in getattr(sg, side)):  # the same tensors, reordered only
                setattr(sig, side, refs)
                setattr(sg, side, tensors)


def schedule_depth_first(model):
    """Reorders each subgraph's operators so that every value is consumed soon after it is made.

    Runtimes execute operators in list order and plan memory from it.  The converter listed an
    involution layer's K*K shifted windows all first and its K*K products before their ADDs, so
    about 2*K*K full-size tensors were alive at once: they fell out of the cache, and in a whole network
    the layer's slices and MULs ran 2x slower than when it was timed alone.  The layer's name scopes now
    make the converter list each window just before its product (``involution.layer.KERNEL_SCOPE``), but
    still the K*K kernel pieces first, and another layer, or the layer of an older version, may be listed
    anyhow.  A depth-first walk from the outputs (each op after the producers of its inputs, taken in input
    order) turns that into window, MUL, ADD per offset with a few tensors alive.  Any topological order
    computes the same values; subgraphs with stateful or control-flow ops, or ops without outputs, keep their
    order.
    """
    b = BuiltinOperator
    keep = {b.VAR_HANDLE, b.ASSIGN_VARIABLE, b.READ_VARIABLE, b.CALL_ONCE, b.WHILE, b.IF, b.CALL, b.CUSTOM}
    codes = builtin_codes(model)
    for sg in model.subgraphs:
        ops = sg.operators or []
        if any(codes[o.opcodeIndex] in keep or not as_list(o.outputs) for o in ops):
            continue
        producer = {t: n for n, op in enumerate(ops) for t in as_list(op.outputs)}
        order, done, open_ = [], set(), set()
        # From the outputs, in order; then whatever no output needs, in its old order.
        for root in [producer.get(t) for t in as_list(sg.outputs)] + list(range(len(ops))):
            if root is None or root in done:
                continue
            stack = [(root, iter(as_list(ops[root].inputs)))]
            open_.add(root)
            while stack:  # iterative post-order: an involution's chain of ADDs is thousands of ops deep
                n, pending = stack[-1]
                for t in pending:
                    m = producer.get(t)
                    if m is not None and m not in done and m not in open_:
                        stack.append((m, iter(as_list(ops[m].inputs))))
                        open_.add(m)
                        break
                else:
                    stack.pop()
                    open_.discard(n)
                    done.add(n)
                    order.append(n)
        sg.operators = [ops[n] for n in order]


def compact(flat, notes=None):
    """Shares equal constants and quantization tables, drops intermediate tensor names and static shape
    signatures, repairs degenerate int8 activation scales, numbers inputs in signature order, and
    orders operators depth-first (``schedule_depth_first``).

    The converter names every tensor after its TF graph path and gives every small
    op its own constants; with the ~100 small ops of an involution layer that
    metadata outweighs the int8 weights.

    An activation that was all zeros during calibration (a dead ReLU) gets the
    converter's zero-range scale (``ZERO_RANGE_SCALE``, zero point 0); XNNPACK then
    refuses the MUL/ADD that read it (their scale ratios leave its supported range)
    and the whole model fails to load.  Such a tensor holds only its zero point, so
    any scale represents it exactly (``repair_zero_ranges`` picks one XNNPACK accepts).
    Only that exact fingerprint is repaired: a tensor with a small non-zero range keeps
    its scale.

    Everything else is kept: metadata with its bytes, signature defs, description, version, buffers'
    data and every tensor and operator property.  A model the editor does not understand
    (``unsupported``) is returned as given, and the reason appended to ``notes`` when a list is passed.
    """
    model = unpack(flat)
    reason = unsupported(model)
    if reason:
        if notes is not None:
            notes.append(f"not compacted or reordered: the model has {reason}; written as the converter made it")
        return bytes(flat)
    io_in_signature_order(model)
    schedule_depth_first(model)
    share_constants(model)
    drop_tensor_names(model)
    repair_zero_ranges(model)
    drop_static_signatures(model)
    share_quantization(model)
    return pack(model, len(flat))
