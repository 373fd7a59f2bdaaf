"""Involution for TFLite: a Keras 3 layer made only of TFLite builtin ops, models, training."""

from involution.layer import Involution, STRATEGIES

__all__ = ["Involution", "STRATEGIES"]
