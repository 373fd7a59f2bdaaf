"""``Subsample2D``: every s-th row and column (``x[:, ::s, ::s]``) by unit-stride ops only.

A ResNet's projection shortcut is a 1x1 convolution of stride 2.  The LiteRT GPU accelerator (ai-edge-litert
2.3) computes that convolution wrongly when its weights are int8 (full int8 and dynamic-range files): its output
is garbage while the model is reported fully accelerated (measured, each op alone against the CPU:
``benchmarks.gpu_check.wrong_ops_on_gpu``).  The same values as a stride-1 1x1 convolution of this layer's output
are computed right on every path, and the strided slice that would express it directly runs on TFLite's reference
kernels, outside XNNPACK, so the rows and columns are taken from a phase view instead, as ``Involution`` does.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="involution")
class Subsample2D(keras.layers.Layer):
    """Rows and columns 0, s, 2s, ... of an NHWC input: [B, H, W, C] -> [B, ceil(H/s), ceil(W/s), C]."""

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer; got {stride!r}")
        self.stride = stride

    def call(self, x):
        s = self.stride
        if s == 1:
            return x
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        ho, wo = -(-h // s), -(-w // s)
        if h % s or w % s:  # zeros after, never read: whole s x s phases
            x = ops.pad(x, ((0, 0), (0, ho * s - h), (0, wo * s - w), (0, 0)))
        # [B, Ho*s, Wo*s, C] is, in memory, [B*Ho, s (row phase), Wo, s (column phase) * C]: phase (0, 0) is a
        # unit-stride slice of that 4-D view.
        y = ops.reshape(x, (-1, s, wo, s * c))[:, :1, :, :c]  # [B*Ho, 1, Wo, C]
        return ops.reshape(y, (-1, ho, wo, c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.stride
        return (b, None if h is None else -(-h // s), None if w is None else -(-w // s), c)

    def get_config(self):
        return dict(super().get_config(), stride=self.stride)
