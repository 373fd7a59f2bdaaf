"""Saves models built with the keras.io layer; run in its own process so the converter never sees the class."""

import sys

import keras
import numpy as np
from keras_io_involution import Involution

out = sys.argv[1]
rng = np.random.default_rng(0)
inp = keras.Input((16, 16, 6))
x, _ = Involution(channel=6, group_number=3, kernel_size=3, stride=1, reduction_ratio=2, name="inv_1")(inp)
x = keras.layers.ReLU()(x)
x, _ = Involution(channel=6, group_number=2, kernel_size=5, stride=2, reduction_ratio=3, name="inv_2")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inp, keras.layers.Dense(4)(x))
for w in model.weights:
    w.assign((rng.standard_normal(w.shape) * 0.3 + (1.0 if "variance" in w.path or "gamma" in w.path else 0.0)).astype(np.float32))
model.save(f"{out}/kerasio.keras")
model.save(f"{out}/kerasio.h5")
x = rng.random((4, 16, 16, 6), dtype=np.float32)
np.savez(f"{out}/kerasio_expected.npz", x=x, y=model.predict(x, verbose=0))
