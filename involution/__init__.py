"""Involution for TFLite: a Keras 3 layer made only of TFLite builtin ops, models, training.

The layer classes are imported on first use, so that command lines can read the package's names
(``involution.catalog``) without importing Keras and TensorFlow.
"""

from involution.catalog import STRATEGIES
from involution.serializable import MODULES as _MODULES

_LAZY = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [*_LAZY, "STRATEGIES"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'involution' has no attribute {name!r}")
