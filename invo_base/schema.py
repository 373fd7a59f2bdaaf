"""The .tflite flatbuffer schema's Python binding, taken from what is installed (nothing copied here).

flatc's Python output for LiteRT's ``schema.fbs`` ships in two packages a device installs anyway:

* ai-edge-litert (``ai_edge_litert.schema_py_generated``): the reader and the object API (``ModelT``, ...) that
  editing needs; on the host and on boards running the maintained runtime;
* ``tflite`` on PyPI: the reader alone, which a legacy board installs beside tflite-runtime 2.14 (whose wheel
  has no binding).

Reading (``invo_base.tflite_model``) takes either; editing (``invo_base.tflite_edit``) needs the object API.
"""


class SchemaUnavailable(ImportError):
    """No installed package carries the binding this use needs; one line saying what to install."""


def editor():
    """The binding with the object API (``ModelT``, ``BufferT``, ``BufferStart``, ...): ai-edge-litert's."""
    try:
        import ai_edge_litert.schema_py_generated as schema_py_generated
    except ImportError:
        raise SchemaUnavailable("editing a .tflite needs the schema's object API: pip install ai-edge-litert") from None
    return schema_py_generated


def reader():
    """The binding's reader classes (``Model``, ``BuiltinOperator``, ``TensorType``, ...): ai-edge-litert's, else
    the ``tflite`` package's."""
    try:
        return editor()
    except SchemaUnavailable:
        pass
    try:
        import tflite
    except ImportError:
        raise SchemaUnavailable("reading a .tflite needs the schema's binding: pip install ai-edge-litert (or, "
                                "beside tflite-runtime, tflite)") from None
    return tflite


class LazyEditor:
    """``editor()``'s binding, looked up on first use: a module that edits imports everywhere (a legacy board
    lists its commands too) and fails only when it edits."""

    def __getattr__(self, name):
        return getattr(editor(), name)
