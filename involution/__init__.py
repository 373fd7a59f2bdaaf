"""Involution for TFLite: a Keras 3 layer made only of TFLite builtin ops, models, training.

``Involution`` is imported on first use, so that command lines can read the package's names
(``involution.catalog``) without importing Keras and TensorFlow.
"""

from involution.catalog import STRATEGIES

__all__ = ["Involution", "STRATEGIES"]


def __getattr__(name):
    if name == "Involution":
        from involution.layer import Involution

        return Involution
    raise AttributeError(f"module 'involution' has no attribute {name!r}")
