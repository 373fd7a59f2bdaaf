"""Saves every model the library builds, as a user saves it, with the outputs it gave before saving; run in a
process of its own, so that the processes that load and convert the files start with nothing imported.

    python -m tests.saved_models.save_library_models OUT

Writes OUT/NAME.keras for every ``build_model`` name (RedNets at 32x32), OUT/NAME.h5 and OUT/NAME_savedmodel/
(``model.export``) for a few, OUT/layers.keras and .h5 (a ``keras.Model`` made of every class the package
registers, called directly) and OUT/NAME_expected.npz (x: inputs, y: the in-memory model's outputs).
"""

import sys

import keras
import numpy as np

from involution.models import MODEL_NAMES, build_model
from involution.serializable import registered_classes

SIZE = 32
H5 = ("seed-involution", "rednet26", "layers")   # the legacy format, for a model of each kind of layer
SAVEDMODEL = ("seed-involution", "rednet-cifar")  # a SavedModel of InvolutionReference needs Flex


def layers_model():
    """Every registered class in one model, built from the layers as a user composes them."""
    classes = registered_classes()
    unknown = set(classes) - {"involution>Involution", "involution>Subsample2D", "involution>InvolutionReference"}
    assert not unknown, f"a newly registered class needs a place in this model: {sorted(unknown)}"
    inp = keras.Input((16, 16, 8))
    x = classes["involution>Involution"](channel=8, group_number=1, kernel_size=3, stride=1, reduction_ratio=2)(inp)
    x = classes["involution>Subsample2D"](2)(keras.layers.ReLU()(x))
    x = classes["involution>InvolutionReference"](channel=8, group_number=2, kernel_size=3, stride=1,
                                                   reduction_ratio=2)(x)
    x = classes["involution>Involution"](channel=8, group_channels=4, kernel_size=5, stride=2, reduction_ratio=4,
                                         group_layout="contiguous", padding="symmetric")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(5)(x), name="layers")


def randomized(model, seed):
    """Non-default BatchNorm statistics and scales, so that a load that drops them shows (below 1: RedNet-152
    overflows to NaN otherwise); every other weight keeps its initializer's random values."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if any(k in w.path for k in ("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.0, w.shape).astype(np.float32))
        elif any(k in w.path for k in ("moving_mean", "beta")):
            w.assign((rng.standard_normal(w.shape) * 0.1).astype(np.float32))
    return model


def main(out):
    models = {name: (lambda n=name: build_model(n, (SIZE, SIZE, 3))) for name in MODEL_NAMES}
    models["layers"] = layers_model
    for seed, (name, make) in enumerate(models.items()):
        keras.utils.set_random_seed(seed)  # the same weights every run: an unseeded draw once gave seed-involution
        model = randomized(make(), seed)  # outputs too flat to check anything
        model.save(f"{out}/{name}.keras")
        if name in H5:
            model.save(f"{out}/{name}.h5")
        if name in SAVEDMODEL:
            model.export(f"{out}/{name}_savedmodel", verbose=False)
        x = np.random.default_rng(100 + seed).random((2, *model.inputs[0].shape[1:]), dtype=np.float32)
        y = np.asarray(model(x, training=False))
        assert np.isfinite(y).all() and np.ptp(y) > 1e-4 * np.abs(y).max() > 0, f"{name}: degenerate outputs"
        np.savez(f"{out}/{name}_expected.npz", x=x, y=y)


if __name__ == "__main__":
    main(sys.argv[1])
