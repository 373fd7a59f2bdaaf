"""Weights of the official PyTorch involution (d-li14/involution) from plain numpy arrays.

The official module is ``conv1`` (1x1, C -> C/r, no bias) + BatchNorm + ReLU,
``conv2`` (1x1, C/r -> G*K*K, bias), ``AvgPool2d(stride)`` before them, groups
in contiguous channel blocks, and the kernel laid out group-major
(``g*K*K + k``).  No torch is needed: pass ``state_dict`` values as arrays.
"""

import numpy as np

from involution.layer import Involution

_KEYS = (
    "conv1.conv.weight",
    "conv1.bn.weight",
    "conv1.bn.bias",
    "conv1.bn.running_mean",
    "conv1.bn.running_var",
    "conv2.conv.weight",
    "conv2.conv.bias",
)


def _strip(state):
    """Maps keys like ``layer1.0.conv2.conv1.conv.weight`` to ``conv1.conv.weight``."""
    out = {}
    for key, value in state.items():
        for name in _KEYS:
            if key == name or key.endswith("." + name):
                out[name] = np.asarray(value, dtype=np.float32)
    missing = [k for k in _KEYS if k not in out]
    if missing:
        raise ValueError(f"state is missing {', '.join(missing)} (official involution keys: {', '.join(_KEYS)})")
    return out


def from_torch_state(state, kernel_size, stride=1, strategy="shift", name=None, input_shape=None):
    """Builds an ``Involution`` that gives the official module's outputs for ``state``.

    ``input_shape`` is the NHWC input shape, default ``(None, None, None, C)``.
    """
    w = _strip(state)
    mid, c = w["conv1.conv.weight"].shape[:2]
    span_out = w["conv2.conv.weight"].shape[0]
    kk = kernel_size * kernel_size
    if span_out % kk:
        raise ValueError(f"conv2 has {span_out} outputs, not a multiple of kernel_size**2 = {kk}")
    groups = span_out // kk
    if c // mid * mid != c:
        raise ValueError(f"conv1 maps {c} -> {mid} channels: {c} must be a multiple of {mid}")
    layer = Involution(
        channel=c,
        group_number=groups,
        kernel_size=kernel_size,
        stride=stride,
        reduction_ratio=c // mid,
        strategy=strategy,
        group_layout="contiguous",
        padding="symmetric",
        bn_epsilon=1e-5,
        reduce_bias=False,
        name=name,
    )
    layer.build(tuple(input_shape or (None, None, None, c)))
    set_torch_weights(layer, w)
    return layer


def set_torch_weights(layer, state):
    """Loads official weights into a built ``Involution`` (contiguous groups, symmetric padding)."""
    w = _strip(state)
    if layer.group_layout != "contiguous" or (layer.stride > 1 and layer.padding != "symmetric"):
        raise ValueError("official weights need group_layout='contiguous' and padding='symmetric'")
    k, g = layer.kernel_size, layer.groups
    kk = k * k
    reduce_w = w["conv1.conv.weight"][:, :, 0, 0].T[None, None]  # [1, 1, C, C/r]
    layer.reduce.set_weights([reduce_w] + ([np.zeros(reduce_w.shape[-1], np.float32)] if layer.reduce_bias else []))
    layer.bn.set_weights(
        [w["conv1.bn.weight"], w["conv1.bn.bias"], w["conv1.bn.running_mean"], w["conv1.bn.running_var"]]
    )
    # torch output channel g*K*K + k  ->  ours k*G + g
    order = np.array([gi * kk + ki for ki in range(kk) for gi in range(g)])
    span_w = w["conv2.conv.weight"][:, :, 0, 0][order].T[None, None]  # [1, 1, C/r, K*K*G]
    layer.span.set_weights([span_w, w["conv2.conv.bias"][order]])
