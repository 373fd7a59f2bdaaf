"""A user's model with its own layer classes, saved as the user saves it (.keras and .h5) with the outputs it must
give; called by the scripts in tests/user_layers and tests/legacy_layers, each run in a process of its own so
that the converting test process never imports those classes."""

import numpy as np


def save_with_expected(model, out, name, seed=0, samples=4):
    """Random weights (BatchNorm variances and scales near 1), then OUT/NAME.keras, OUT/NAME.h5 and
    OUT/NAME_expected.npz (x: ``samples`` random inputs, y: the model's outputs on them)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign((rng.standard_normal(w.shape) * 0.3 + (1.0 if "variance" in w.path or "gamma" in w.path else 0.0)).astype(np.float32))
    model.save(f"{out}/{name}.keras")
    model.save(f"{out}/{name}.h5")
    x = rng.random((samples, *model.inputs[0].shape[1:]), dtype=np.float32)
    np.savez(f"{out}/{name}_expected.npz", x=x, y=model.predict(x, verbose=0))
