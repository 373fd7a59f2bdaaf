"""int8 quality tools (``invo-quantize``): per-layer quantization error, selective quantization (published
through ``convert.publish`` like every written model), and float-vs-int8 accuracy on held-out data.
"""
