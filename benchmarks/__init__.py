"""The device side: run and time .tflite models with numpy and a TFLite runtime only (``invo-bench``).

It stands on ``invo_base`` alone: nothing here imports TensorFlow, ``involution``, ``convert`` or ``quantize``
(tests/test_architecture.py walks the imports); the host-side benchmark programs live in ``benchmarks.host``.
"""
