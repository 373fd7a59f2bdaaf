"""The flatbuffer editor (``compact``) on stock TFLiteConverter outputs: it keeps everything it does not mean to
change (metadata bytes, signatures, description, buffers, tensor and operator properties), its output computes
bit-identical results, and a model it does not understand is returned untouched with a note."""

import collections
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import randomize

from benchmarks.runtime import InterpreterRunner, random_inputs
from convert import compat
from convert.compact import _zero_range, compact
from invo_base import tflite_edit
from invo_base.schema import editor
from invo_base.tflite_model import TFLiteModel
from involution import Involution

schema = editor()


def involution_model(two_inputs=False):
    a = keras.Input((12, 12, 8), batch_size=1, name="a")
    inputs, x = [a], a
    if two_inputs:
        b = keras.Input((12, 12, 8), batch_size=1, name="b")
        inputs, x = [a, b], keras.layers.Add()([a, b])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = Involution(channel=8, group_number=2, kernel_size=3, reduction_ratio=2)(x)
    return randomize(keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)))


def stock(model, precision, io="float32"):
    """What a user's own pipeline writes: ``TFLiteConverter.from_keras_model(model).convert()``."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        conv.target_spec.supported_types = [tf.float16]
        compat.allow_fp16_accumulation(conv)
    if precision == "int8":
        rng = np.random.default_rng(0)
        shapes = [(1, *t.shape[1:]) for t in model.inputs]
        conv.representative_dataset = lambda: ([rng.random(s, dtype=np.float32) for s in shapes] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = {"int8": tf.int8, "float32": tf.float32}[io]
    return conv.convert()


def _arr(v):
    return None if v is None else np.asarray(v).tolist()


def tensor_fact(model, sg, i, repaired=()):
    """Everything about tensor ``i`` that compaction must keep (names only at the model's ends)."""
    if i < 0:
        return None
    t = sg.tensors[i]
    data = model.buffers[t.buffer].data if t.buffer else None
    q = t.quantization
    quant = None if q is None else (_arr(q.scale) if i not in repaired else "repaired", _arr(q.zeroPoint),
                                    _arr(q.min), _arr(q.max), q.quantizedDimension, q.detailsType)
    shape_sig = _arr(t.shapeSignature) if t.shapeSignature is not None else _arr(t.shape)
    io = i in set(_arr(sg.inputs)) | set(_arr(sg.outputs))
    return (t.type, _arr(t.shape), shape_sig, None if data is None or not len(data) else bytes(np.asarray(data, np.uint8)),
            quant, t.isVariable, t.hasRank, t.sparsity is not None, t.name if io else None)


def _options(op):
    o = op.builtinOptions
    return None if o is None else repr(sorted((k, _arr(v) if isinstance(v, (list, np.ndarray)) else v)
                                              for k, v in vars(o).items()))


def facts(flat):
    """The file as a multiset of facts that do not depend on tensor numbering or operator order."""
    m = tflite_edit.unpack(flat)
    sg = m.subgraphs[0]
    repaired = set()
    for op in sg.operators:  # the one intended change of a value: the converter's zero-range scales
        for o in _arr(op.outputs):
            if _zero_range(sg.tensors[o].quantization):  # noqa: SLF001 - the fingerprint under test
                repaired.add(o)
    codes = tflite_edit.builtin_codes(m)
    ops = collections.Counter(
        repr((codes[op.opcodeIndex], op.builtinOptionsType, _options(op), op.customOptions,
              [tensor_fact(m, sg, i, repaired) for i in _arr(op.inputs)],
              [tensor_fact(m, sg, i, repaired) for i in _arr(op.outputs)]))
        for op in sg.operators)
    sigs = [(s.signatureKey, s.subgraphIndex,
             [(r.name, tensor_fact(m, m.subgraphs[s.subgraphIndex], r.tensorIndex)) for r in s.inputs or []],
             [(r.name, tensor_fact(m, m.subgraphs[s.subgraphIndex], r.tensorIndex)) for r in s.outputs or []])
            for s in m.signatureDefs or []]
    return {
        "version": m.version, "description": m.description,
        "metadata": [(e.name, bytes(np.asarray(m.buffers[e.buffer].data, np.uint8))) for e in m.metadata or []],
        "signatures": sigs, "ops": ops,
        "inputs": sorted(map(repr, (tensor_fact(m, sg, i) for i in _arr(sg.inputs)))),
        "outputs": sorted(map(repr, (tensor_fact(m, sg, i) for i in _arr(sg.outputs)))),
    }


def buffer_alignments(flat):
    """The file offset of every non-empty buffer's data, modulo 16."""
    root = schema.Model.GetRootAsModel(flat, 0)
    out = []
    for b in range(root.BuffersLength()):
        buf = root.Buffers(b)
        if buf.DataLength():
            out.append(buf._tab.Vector(buf._tab.Offset(4)) % 16)  # noqa: SLF001
    return out


def assert_kept(before, after):
    a, b = facts(before), facts(after)
    for key in a:
        assert a[key] == b[key], key
    assert set(buffer_alignments(after)) <= {0}
    first, second = runner(before), runner(after)
    inputs = random_inputs(first.inputs)
    for r1, r2 in zip(first(*inputs), second(*inputs)):
        assert r1.dtype == r2.dtype and np.array_equal(r1, r2)  # bit-identical, not close


def runner(flat):
    """The model on ai-edge-litert's interpreter with XNNPACK, from a file as a user has it."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
        f.write(flat)
    return InterpreterRunner(f.name)


@pytest.fixture(scope="module")
def models():
    return {"one": involution_model(), "two": involution_model(two_inputs=True)}


@pytest.mark.parametrize("which,precision,io", [
    ("one", "float32", "float32"), ("one", "float16", "float32"), ("one", "dynamic", "float32"),
    ("one", "int8", "int8"), ("one", "int8", "float32"), ("two", "float32", "float32"), ("two", "int8", "int8"),
])
def test_compaction_keeps_what_it_does_not_mean_to_change(models, which, precision, io):
    before = stock(models[which], precision, io)
    notes = []
    after = compact(before, notes)
    assert not notes and after != before  # it did edit (names, shared constants, order) ...
    assert_kept(before, after)  # ... and kept the rest
    meta = TFLiteModel(after).metadata
    assert meta == TFLiteModel(before).metadata and meta["min_runtime_version"].startswith(b"1.")
    if precision == "float16":  # XNNPACK reads this entry to run the model in FP16
        assert meta["reduced_precision_support"] == b"fp16accfp16"


def _add_metadata(flat, name, data):
    """A user's own metadata entry (as TFLite Support's writer adds labels and normalisation)."""
    m = tflite_edit.unpack(flat)
    buf = schema.BufferT()
    buf.data = np.frombuffer(data, np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(m.buffers) - 1
    m.metadata = (m.metadata or []) + [entry]
    m.description = "user description"
    return tflite_edit.pack(m, len(flat))


def test_a_users_own_metadata_keeps_its_bytes(models):
    payload = bytes(range(256)) * 3 + b"labels: cat, dog"
    before = _add_metadata(stock(models["one"], "float32"), "TFLITE_METADATA", payload)
    after = compact(before)
    assert TFLiteModel(after).metadata["TFLITE_METADATA"] == payload
    assert_kept(before, after)


def test_several_signatures_are_left_untouched_and_said():
    class TwoSignatures(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def double(self, x):
            return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def square(self, x):
            return {"y": x * x}

    mod = TwoSignatures()
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [mod.double.get_concrete_function(), mod.square.get_concrete_function()], mod)
    before = conv.convert()
    assert len(tflite_edit.unpack(before).subgraphs) == 2
    notes = []
    assert compact(before, notes) == before
    assert len(notes) == 1 and "2 subgraphs" in notes[0]


def test_custom_ops_are_left_untouched_and_said():
    x = keras.Input((8, 8, 3), batch_size=1)
    y = keras.layers.Lambda(lambda t: tf.image.extract_patches(t, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME"))(x)
    conv = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, y))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    before = conv.convert()
    assert TFLiteModel(before).flex_ops
    notes = []
    assert compact(before, notes) == before
    assert "custom ops" in notes[0]


def test_sparse_tensors_are_left_untouched_and_said():
    x = keras.Input((64,), batch_size=1)
    dense = keras.layers.Dense(64)
    model = keras.Model(x, dense(x))
    w = np.zeros((64, 64), np.float32)
    w[::8, ::8] = 1.0  # 98% zeros: the converter stores it sparse
    dense.set_weights([w, np.zeros(64, np.float32)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    before = conv.convert()
    assert any(t.sparsity is not None for t in tflite_edit.unpack(before).subgraphs[0].tensors)
    notes = []
    assert compact(before, notes) == before
    assert "sparse" in notes[0]


def test_invo_convert_reorders_a_stock_converter_file(tmp_path):
    """A user's own stock-converter .tflite, given to invo-convert: depth-first order (few tensors alive),
    metadata kept, outputs bit-identical (checked by the tool itself), nothing else asked of the user."""
    from conftest import invoke_cli

    from convert.cli import main as convert_cli
    from test_tflite_layer import _peak_alive

    x = keras.Input((20, 20, 32), batch_size=1)
    model = randomize(keras.Model(x, Involution(channel=32, group_channels=16, kernel_size=7)(x)), 2)
    stock_file = tmp_path / "mine.tflite"
    stock_file.write_bytes(stock(model, "float32"))
    proc = invoke_cli(convert_cli, str(stock_file), "--no-gpu-check", "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "mine.invo.tflite"
    assert "outputs bit-identical" in proc.stdout and "metadata: min_runtime_version" in proc.stdout
    before, after = stock_file.read_bytes(), out.read_bytes()
    assert _peak_alive(before) > 49 and _peak_alive(after) <= 8
    assert_kept(before, after)
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["identical_outputs"] is True
    # What the order bought, in the report and on the terminal: fewer activation bytes alive at once.
    peak = TFLiteModel(before).peak_activations()["bytes"]
    assert r["input_peak_activation_bytes"] == peak > r["audit"]["peak_activation_bytes"], r
    assert f"alive at once in the listed order ({peak / 2**20:.2f} MiB before)" in proc.stdout
    # What needs the Keras model is refused, and nothing is written.
    proc = invoke_cli(convert_cli, str(stock_file), "--quantize", "int8", "-o", str(tmp_path / "q.tflite"))
    assert proc.returncode == 1 and "already a .tflite file" in proc.stderr and not (tmp_path / "q.tflite").exists()
