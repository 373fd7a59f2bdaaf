"""The ``tf.image.extract_patches`` formulation of involution, kept for compatibility.

This is what the involution-tf notebook and the keras.io "Involutional neural
networks" example compute.  It gathers patches into a 6-D tensor, so TFLite can
convert it only with Flex (``ExtractImagePatches`` is no builtin op) and no GPU
delegate takes it.  Use it to load and check old models; deploy ``Involution``.

The seed reshapes patches to ``(K*K, C//G, G)``, so channel ``c`` belongs to
group ``c % G`` ("interleaved"), and the kernel channel ``k*G + g`` holds offset
``k`` of group ``g``: exactly the layout of ``Involution`` with
``group_layout="interleaved"``, so weights copy over unchanged.
"""

import keras
import tensorflow as tf

from involution.layer import Involution, ceil_div, output_shape


class PatchInvolution(keras.layers.Layer):
    """Shared forward pass of the extract_patches formulations (kernel generator in ``kernel_gen``)."""

    formulation = "InvolutionReference"

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(**kwargs)
        if reduction_ratio > channel:
            raise ValueError(f"reduction_ratio ({reduction_ratio}) must be at most channel ({channel})")
        if channel % group_number:
            raise ValueError(f"channel ({channel}) must be divisible by group_number ({group_number})")
        self.channel = channel
        self.group_number = group_number
        self.kernel_size = kernel_size
        self.stride = stride
        self.reduction_ratio = reduction_ratio
        self.kernel_gen = keras.Sequential(
            [
                keras.layers.Conv2D(channel // reduction_ratio, 1),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Conv2D(kernel_size * kernel_size * group_number, 1),
            ]
        )
        self.pool = (
            keras.layers.AveragePooling2D(stride, stride, padding="same") if stride > 1 else None
        )

    def build(self, input_shape):
        shape = list(input_shape)
        if self.pool is not None:
            shape = list(self.pool.compute_output_shape(shape))
        self.kernel_gen.build(shape)

    def involve(self, x):
        """Returns (output [B, Ho, Wo, C], kernel [B, Ho, Wo, K*K, 1, G])."""
        k, g, s = self.kernel_size, self.group_number, self.stride
        c = x.shape[-1]
        ho, wo = ceil_div(x.shape[1], s), ceil_div(x.shape[2], s)
        kernel = self.kernel_gen(self.pool(x) if self.pool is not None else x)  # B, Ho, Wo, K*K*G
        kernel = tf.reshape(kernel, (-1, ho, wo, k * k, 1, g))
        patches = tf.image.extract_patches(
            x, sizes=[1, k, k, 1], strides=[1, s, s, 1], rates=[1, 1, 1, 1], padding="SAME"
        )  # B, Ho, Wo, K*K*C
        patches = tf.reshape(patches, (-1, ho, wo, k * k, c // g, g))
        out = tf.reduce_sum(kernel * patches, axis=3)  # B, Ho, Wo, C//G, G
        return tf.reshape(out, (-1, ho, wo, c)), kernel

    def compute_output_shape(self, input_shape):
        return output_shape(input_shape, self.stride)

    def get_config(self):
        config = super().get_config()
        config.update(
            channel=self.channel,
            group_number=self.group_number,
            kernel_size=self.kernel_size,
            stride=self.stride,
            reduction_ratio=self.reduction_ratio,
        )
        return config


@keras.saving.register_keras_serializable(package="involution")
class InvolutionReference(PatchInvolution):
    """The seed notebook's layer, ``Involution(channel, group_number, kernel_size, stride, reduction_ratio)``."""

    def call(self, x):
        return self.involve(x)[0]


class NotebookInvolution(InvolutionReference):
    """Stand-in for the involution-tf notebook's ``Involution`` when loading its saved models."""

    formulation = "Involution (involution-tf notebook or keras.io)"


class KerasIoInvolution(PatchInvolution):
    """Stand-in for the keras.io example's ``Involution``, which returns ``(output, kernel)``."""

    formulation = "Involution (keras.io, returns its kernel)"

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, name=None, **kwargs):
        super().__init__(channel, group_number, kernel_size, stride, reduction_ratio, name=name, **kwargs)

    def call(self, x):
        return self.involve(x)

    def compute_output_shape(self, input_shape):
        out = super().compute_output_shape(input_shape)
        k, g = self.kernel_size, self.group_number
        return out, (out[0], out[1], out[2], k * k, 1, g)


# A .keras file keys each layer's weights by its class name: the stand-ins must be called Involution.
for _cls in (NotebookInvolution, KerasIoInvolution):
    _cls.__name__ = _cls.__qualname__ = "Involution"


def kernel_generator_parts(layer):
    """(reduce conv, BatchNorm, span conv) of any involution layer."""
    if isinstance(layer, Involution):
        return layer.reduce, layer.bn, layer.span
    gen = layer.kernel_gen.layers
    return gen[0], gen[1], gen[3]


def copy_kernel_generator(src, dst):
    """Copies the kernel-generator weights; both layers must be built."""
    for a, b in zip(kernel_generator_parts(src), kernel_generator_parts(dst)):
        b.set_weights(a.get_weights())


def builtin_from_reference(layer, input_shape, strategy="shift", name=None, cls=Involution):
    """An ``Involution`` (or subclass ``cls``) computing what ``layer`` (an extract_patches formulation) computes.

    Built for ``input_shape`` with ``layer``'s weights copied, so it is ready to use.
    """
    inv = cls(
        channel=layer.channel,
        group_number=layer.group_number,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        reduction_ratio=layer.reduction_ratio,
        strategy=strategy,
        group_layout="interleaved",
        padding="same",
        bn_epsilon=layer.kernel_gen.layers[1].epsilon,
        name=name or layer.name,
    )
    inv.build(tuple(input_shape))
    copy_kernel_generator(layer, inv)
    return inv
