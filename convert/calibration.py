"""Exact calibration: each tensor's range as the float model computes it, for TF's post-training quantizer.

TF's calibrator (``tensorflow.lite.python.optimize.calibrator``) runs the float model on its logging
interpreter and records the range of every op's inputs after the op has run.  Where the runtime computed the op
in place, writing its output over an input whose last reader it was, that input's range takes in the output's
values (a window's recorded range is exactly that of the MUL which read it).  In a two-layer involution model
106 of 264 activation tensors were recorded more than 1% wider than any value they held (a MUL's -48.1..35.7
against the -33.5..28.2 it held).  It also takes about 2.8 s per 224x224 sample of a RedNet-26, so that 200
samples take 9 minutes.

``exact_calibration()`` replaces it, while it is active, with one run of LiteRT's builtin kernels per sample,
every tensor kept (``experimental_preserve_all_tensors``), reading each variable float tensor's min and max:
the same statistic, of the tensor itself.  Models this cannot read exactly (several subgraphs, custom or Flex
ops, fused ops with intermediate tensors) or whose tensors would take more than ``EXACT_MAX_BYTES`` keep TF's
calibrator.
"""

import numpy as np

from invo_base.schema import LazyEditor

schema = LazyEditor()

# Every tensor of one inference is kept in memory (RedNet-26 at 224x224: 0.54 GB of variable float32 tensors);
# models whose variable tensors hold more than this keep TF's calibrator, which reuses its buffers.
EXACT_MAX_BYTES = 4 << 30


def variable_float_tensors(model):
    """Indices of the main subgraph's float32 tensors that hold no constant data: those a calibrator measures."""
    sg = model.subgraphs[0]

    def constant(t):
        b = model.buffers[t.buffer] if 0 <= t.buffer < len(model.buffers) else None
        return b is not None and b.data is not None and len(b.data) > 0

    return [i for i, t in enumerate(sg.tensors) if t.type == schema.TensorType.FLOAT32 and not constant(t)]


def readable(model, max_bytes=EXACT_MAX_BYTES):
    """Whether ``exact_ranges`` reads this model as TF's calibrator would: one subgraph, builtin ops only (LiteRT
    here runs no Flex or custom op), none with intermediate tensors, and its variable float tensors within
    ``max_bytes``."""
    from invo_base.tflite_edit import builtin_codes

    sg = model.subgraphs[0]
    held = sum(4 * int(np.prod(sg.tensors[i].shape if sg.tensors[i].shape is not None else [], dtype=np.int64))
               for i in variable_float_tensors(model))
    custom = schema.BuiltinOperator.CUSTOM in builtin_codes(model)
    return len(model.subgraphs) == 1 and not custom and held <= max_bytes and not any(
        op.intermediates is not None and len(op.intermediates) for op in sg.operators)


def exact_ranges(model_content, samples, wanted):
    """{tensor index: (min, max)} of the tensors ``wanted`` (``variable_float_tensors``) over ``samples``.

    ``samples`` yields what the converter's representative dataset yields: a list of input arrays in the model's
    input order, or a dict of them by signature input name.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=model_content, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inputs = [d["index"] for d in it.get_input_details()]
    dtypes = {d["index"]: d["dtype"] for d in it.get_input_details()}
    by_name = None  # a dict sample's inputs, by the one signature's names (as the converter's calibrator feeds it)
    lo = np.full(len(wanted), np.inf, np.float32)
    hi = np.full(len(wanted), -np.inf, np.float32)
    for sample in samples:
        if isinstance(sample, dict):
            if by_name is None:
                (key,) = it.get_signature_list()
                by_name = it.get_signature_runner(key).get_input_details()
            feeds = [(by_name[name]["index"], value) for name, value in sample.items()]
        else:
            feeds = list(zip(inputs, sample))
        for index, value in feeds:
            it.set_tensor(index, np.asarray(value, dtypes[index]))
        it.invoke()
        for n, i in enumerate(wanted):
            a = it.get_tensor(i)
            if a.size:
                lo[n] = min(lo[n], a.min())
                hi[n] = max(hi[n], a.max())
    return {i: (float(lo[n]), float(hi[n])) for n, i in enumerate(wanted) if lo[n] <= hi[n]}


def with_ranges(model, ranges, size_hint=1024):
    """.tflite bytes of ``model`` (``ModelT``, changed in place) with ``ranges`` written as its tensors'
    calibration statistics (quantization min and max)."""
    from invo_base.tflite_edit import pack

    tensors = model.subgraphs[0].tensors
    for i, (lo, hi) in ranges.items():
        q = tensors[i].quantization or schema.QuantizationParametersT()
        q.min, q.max = [lo], [hi]
        tensors[i].quantization = q
    return pack(model, size_hint=size_hint)


def refuse_builtin_stalls(model_content, samples=None):
    """Raises ``ConversionError`` where the float model has an op TFLite's builtin kernels never finish
    (``TFLiteModel.builtin_stalls``): both calibrators run it on them, and would never return.  Else None, which
    leaves the model to TF's calibrator (a ``compat.calibration_replaced`` hook)."""
    from convert.errors import ConversionError
    from invo_base.tflite_model import TFLiteModel

    stall = TFLiteModel(model_content).builtin_stall_message()
    if stall:
        raise ConversionError(f"int8 calibration cannot run this model: it runs the float model on TFLite's builtin "
                              f"kernels, and {stall}")
    return None


def calibrate(model_content, samples, max_bytes=EXACT_MAX_BYTES):
    """What TF's ``Calibrator.calibrate`` returns (the float model carrying each tensor's range), exactly; None for
    a model this cannot read (``readable``)."""
    from invo_base.tflite_edit import unpack

    refuse_builtin_stalls(model_content)
    model = unpack(model_content)  # read once: the model can be tens of MB
    if not readable(model, max_bytes):
        return None
    ranges = exact_ranges(model_content, samples, variable_float_tensors(model))
    return with_ranges(model, ranges, size_hint=len(model_content))


def exact_calibration():
    """A context in which the converter calibrates with ``calibrate`` (see the module docstring) where it can."""
    from convert import compat

    return compat.calibration_replaced(calibrate)


def tf_calibration():
    """A context in which the converter keeps TF's calibrator, refusing only what it would never finish
    (``refuse_builtin_stalls``)."""
    from convert import compat

    return compat.calibration_replaced(refuse_builtin_stalls)
