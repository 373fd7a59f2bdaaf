"""Saves a model of each user class named (.keras and .h5) with its expected outputs; run in a process of its
own, so that the test process, which converts them, never imports these classes.

    python save_user_models.py OUT CLASS [CLASS ...]
"""

import sys

import keras
import user_involutions

from tests.user_model_files import save_with_expected


def save(out, which):
    cls = getattr(user_involutions, which)
    keras.saving.register_keras_serializable(package="Custom")(cls)
    inp = keras.Input((12, 12, 8))
    x = cls(channel=8, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, name="inv_1")(inp)
    x = keras.layers.ReLU()(x)
    x = cls(channel=8, group_number=4, kernel_size=5, stride=2, reduction_ratio=4, name="inv_2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    save_with_expected(keras.Model(inp, keras.layers.Dense(4)(x)), out, which)


for name in sys.argv[2:]:
    save(sys.argv[1], name)
