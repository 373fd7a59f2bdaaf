"""Involution layers written the ways users write them: the converter has none of this code.

Each computes the extract_patches formulation (TF SAME windows, channel c in group c % G, kernel channel
k*G + g) but names and nests its kernel generator differently, so a ``.keras`` file keys its weights
by paths the converter's stand-in does not have.
"""

import keras
import tensorflow as tf


def _aggregate(x, kernel, k, s, g, c):
    ho, wo = -(-x.shape[1] // s), -(-x.shape[2] // s)
    kernel = tf.reshape(kernel, (-1, ho, wo, k * k, 1, g))
    patches = tf.image.extract_patches(x, sizes=[1, k, k, 1], strides=[1, s, s, 1], rates=[1, 1, 1, 1],
                                       padding="SAME")
    patches = tf.reshape(patches, (-1, ho, wo, k * k, c // g, g))
    return tf.reshape(tf.reduce_sum(kernel * patches, axis=3), (-1, ho, wo, c))


class SequentialGenerator(keras.layers.Layer):
    """The kernel generator is one keras.Sequential, made in __init__, under the attribute ``weight_net``."""

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(**kwargs)
        self.channel, self.group_number, self.kernel_size = channel, group_number, kernel_size
        self.stride, self.reduction_ratio = stride, reduction_ratio
        self.weight_net = keras.Sequential([
            keras.layers.AveragePooling2D(stride, stride, padding="same") if stride > 1 else keras.layers.Identity(),
            keras.layers.Conv2D(channel // reduction_ratio, 1, name="squeeze"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Activation("relu"),
            keras.layers.Conv2D(kernel_size * kernel_size * group_number, 1, name="expand"),
        ])

    def call(self, x):
        return _aggregate(x, self.weight_net(x), self.kernel_size, self.stride, self.group_number, self.channel)

    def get_config(self):
        return dict(super().get_config(), channel=self.channel, group_number=self.group_number,
                    kernel_size=self.kernel_size, stride=self.stride, reduction_ratio=self.reduction_ratio)


class RenamedAttributes(keras.layers.Layer):
    """Sub-layers made in build under other names, the span conv before the reduce conv."""

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(**kwargs)
        self.channel, self.group_number, self.kernel_size = channel, group_number, kernel_size
        self.stride, self.reduction_ratio = stride, reduction_ratio

    def build(self, input_shape):
        k, g, c, r = self.kernel_size, self.group_number, self.channel, self.reduction_ratio
        self.to_kernel = keras.layers.Conv2D(k * k * g, 1)
        self.bottleneck = keras.layers.Conv2D(c // r, 1)
        self.batch_norm = keras.layers.BatchNormalization()
        self.downsample = keras.layers.AveragePooling2D(self.stride, self.stride, padding="same")
        s = self.stride
        pooled = (input_shape[0], -(-input_shape[1] // s), -(-input_shape[2] // s), c)
        self.bottleneck.build(pooled)
        self.batch_norm.build(pooled[:3] + (c // r,))
        self.to_kernel.build(pooled[:3] + (c // r,))

    def call(self, x):
        y = self.downsample(x) if self.stride > 1 else x
        kernel = self.to_kernel(tf.nn.relu(self.batch_norm(self.bottleneck(y))))
        return _aggregate(x, kernel, self.kernel_size, self.stride, self.group_number, self.channel)

    def get_config(self):
        return dict(super().get_config(), channel=self.channel, group_number=self.group_number,
                    kernel_size=self.kernel_size, stride=self.stride, reduction_ratio=self.reduction_ratio)


class NotebookStyle(keras.layers.Layer):
    """As the involution-tf notebook writes it: ``kernel_gen`` Sequential and ``stride_layer``, made in build."""

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(**kwargs)
        self.channel, self.group_number, self.kernel_size = channel, group_number, kernel_size
        self.stride, self.reduction_ratio = stride, reduction_ratio

    def build(self, input_shape):
        self.stride_layer = (keras.layers.AveragePooling2D(self.stride, self.stride, padding="same")
                             if self.stride > 1 else tf.identity)
        self.kernel_gen = keras.Sequential([
            keras.layers.Conv2D(self.channel // self.reduction_ratio, 1),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(self.kernel_size * self.kernel_size * self.group_number, 1),
        ])

    def call(self, x):
        kernel = self.kernel_gen(self.stride_layer(x))
        return _aggregate(x, kernel, self.kernel_size, self.stride, self.group_number, self.channel)

    def get_config(self):
        return dict(super().get_config(), channel=self.channel, group_number=self.group_number,
                    kernel_size=self.kernel_size, stride=self.stride, reduction_ratio=self.reduction_ratio)


class ExtraConv(SequentialGenerator):
    """A kernel generator with one more conv than involution has: no role for it, so --custom-module is needed."""

    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, **kwargs):
        super().__init__(channel, group_number, kernel_size, stride, reduction_ratio, **kwargs)
        self.weight_net.add(keras.layers.Conv2D(channel // reduction_ratio, 1))
        self.weight_net.add(keras.layers.Conv2D(kernel_size * kernel_size * group_number, 1))


# Users name their class Involution; registering it is what lets Keras save it.
for cls in (SequentialGenerator, RenamedAttributes, NotebookStyle, ExtraConv):
    cls.__name__ = cls.__qualname__ = "Involution"
