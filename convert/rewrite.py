"""Swaps every extract_patches involution for the builtin-op ``Involution``, weights included."""

import keras
from keras import ops

from involution.layer import Involution
from involution.reference import KerasIoInvolution, PatchInvolution, builtin_from_reference, copy_kernel_generator


class _BuiltinWithKernel(Involution):
    """Stands in for the keras.io layer, which also returns its kernel ([B, Ho, Wo, K*K*G] here, 4-D)."""

    def call(self, x, training=None):
        return super().call(x, training=training), self.generate_kernel(x, training=training)

    def compute_output_shape(self, input_shape):
        out = super().compute_output_shape(input_shape)
        return out, out[:3] + (self.kernel_size**2 * self.groups,)


def rewrite_model(model, strategy="shift"):
    """(new model, [descriptions of rewritten layers]); ``model`` itself is left as it is.

    Reference layers become ``Involution(strategy=...)``; builtin layers of another
    strategy are rebuilt with ``strategy``.  Other layers keep their weights.
    """
    rewritten, replaced = [], set()

    def clone(layer):
        if isinstance(layer, PatchInvolution):
            cls = _BuiltinWithKernel if isinstance(layer, KerasIoInvolution) else Involution
            new = builtin_from_reference(layer, tuple(layer.input.shape), strategy, cls=cls)
            rewritten.append(f"{layer.name}: {layer.formulation} (extract_patches, Flex) -> Involution({strategy})")
            replaced.add(layer.name)
            return new
        if isinstance(layer, Involution) and layer.strategy != strategy:
            cfg = dict(layer.get_config(), strategy=strategy)
            new = type(layer).from_config(cfg)
            new.build(tuple(layer.input.shape))
            copy_kernel_generator(layer, new)
            rewritten.append(f"{layer.name}: Involution({layer.strategy}) -> Involution({strategy})")
            replaced.add(layer.name)
            return new
        return layer.__class__.from_config(layer.get_config())

    if not any(isinstance(layer, PatchInvolution) or (isinstance(layer, Involution) and layer.strategy != strategy)
               for layer in model.layers):
        return model, []
    new_model = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, new_model.layers):
        if old.name not in replaced and old.weights:
            new.set_weights(old.get_weights())
    return new_model, rewritten


def max_difference(a, b, x):
    """(largest absolute difference, largest magnitude) of two models' first outputs on ``x``."""
    ya, yb = a(x, training=False), b(x, training=False)
    ya = ya[0] if isinstance(ya, (list, tuple)) else ya
    yb = yb[0] if isinstance(yb, (list, tuple)) else yb
    return float(ops.max(ops.abs(ya - yb))), float(ops.max(ops.abs(ya)))
