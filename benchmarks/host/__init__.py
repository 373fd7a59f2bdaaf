"""Host-side benchmark programs (``invo-report``): they build and convert models, so they need TensorFlow.

They time the .tflite files with the device-side ``benchmarks.bench``, as a board would; nothing in the
device side imports them.
"""
