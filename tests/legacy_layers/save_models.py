"""Saves models built with the keras.io layer; run in its own process so the converter never sees the class."""

import sys

import keras
from keras_io_involution import Involution

from tests.user_model_files import save_with_expected

inp = keras.Input((16, 16, 6))
x, _ = Involution(channel=6, group_number=3, kernel_size=3, stride=1, reduction_ratio=2, name="inv_1")(inp)
x = keras.layers.ReLU()(x)
x, _ = Involution(channel=6, group_number=2, kernel_size=5, stride=2, reduction_ratio=3, name="inv_2")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
save_with_expected(keras.Model(inp, keras.layers.Dense(4)(x)), sys.argv[1], "kerasio")
