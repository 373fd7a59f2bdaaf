"""Saves a model of each user class named (.keras and .h5) with its expected outputs; run in a process of its
own, so that the test process, which converts them, never imports these classes.

    python save_user_models.py OUT CLASS [CLASS ...]
"""

import sys

import keras
import numpy as np
import user_involutions


def save(out, which):
    cls = getattr(user_involutions, which)
    keras.saving.register_keras_serializable(package="Custom")(cls)
    rng = np.random.default_rng(0)
    inp = keras.Input((12, 12, 8))
    x = cls(channel=8, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, name="inv_1")(inp)
    x = keras.layers.ReLU()(x)
    x = cls(channel=8, group_number=4, kernel_size=5, stride=2, reduction_ratio=4, name="inv_2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4)(x))
    for w in model.weights:
        w.assign((rng.standard_normal(w.shape) * 0.3 + (1.0 if "variance" in w.path or "gamma" in w.path else 0.0)).astype(np.float32))
    model.save(f"{out}/{which}.keras")
    model.save(f"{out}/{which}.h5")
    x = rng.random((4, 12, 12, 8), dtype=np.float32)
    np.savez(f"{out}/{which}_expected.npz", x=x, y=model.predict(x, verbose=0))


for name in sys.argv[2:]:
    save(sys.argv[1], name)
