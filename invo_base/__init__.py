"""The base every package stands on, device side and host side alike: numpy, click and flatbuffers only.

- ``plumbing``: one-line CLI errors, atomic writes, quiet native logs.
- ``tflite_schema``: the one binding of the .tflite flatbuffer schema (flatc's Python output for LiteRT's
  ``schema.fbs``, copied unmodified from ai-edge-litert 2.3's ``schema_py_generated.py``, Apache-2.0), so that
  reading and editing agree on one schema and a board needs no TensorFlow and no ai-edge-litert to read a file.
- ``tflite_model``: reads a .tflite file's facts (ops, tensors, quantization, metadata, GPU fusion chains).
- ``tflite_edit``: unpacks a .tflite file into the schema's object tree and packs it back, as the converter
  writes it; the passes that change a model (``convert.compact``) live with the converter.

Nothing here imports TensorFlow, Keras or any other package of the project (tests/test_architecture.py).
"""
