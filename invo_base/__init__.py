"""The base every package stands on, device side and host side alike: numpy, click, flatbuffers, and the .tflite
schema binding of whichever runtime package is installed.

- ``plumbing``: one-line CLI errors, atomic writes, quiet native logs.
- ``schema``: the .tflite flatbuffer schema's binding, found installed (ai-edge-litert's, with the object API
  editing needs; or the ``tflite`` package's reader beside tflite-runtime), never copied here.
- ``tflite_model``: reads a .tflite file's facts (ops, tensors, quantization, metadata, GPU fusion chains).
- ``tflite_edit``: unpacks a .tflite file into the schema's object tree and packs it back, as the converter
  writes it; the passes that change a model (``convert.compact``) live with the converter.
- ``c_array``: a .tflite as C source for microcontroller firmware, and the op list its resolver registers.

Nothing here imports TensorFlow, Keras or any other package of the project (tests/test_architecture.py).
"""
