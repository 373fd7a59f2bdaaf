"""Keras model -> verified .tflite (``invo-convert``): load, rewrite to builtin ops, convert, compact, audit,
check against Keras and on the GPU path, then publish; ``convert.api.convert_model`` is the entry point.

Private Keras and TensorFlow internals are reached through ``convert.compat`` only.
"""
