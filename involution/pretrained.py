"""The official RedNet ImageNet checkpoints (d-li14/involution, mmclassification) in the Keras RedNet.

Key layout of a classifier checkpoint (``backbone.`` + ``head.``; a bare backbone has neither prefix
nor head)::

    backbone.stem.0.conv.weight, backbone.stem.0.bn.*          3x3/2 conv + BN (+ ReLU)
    backbone.stem.1.conv1.conv.weight, .conv1.bn.*, .conv2.conv.{weight,bias}   involution K=3
    backbone.stem.2.*                                          BN (+ ReLU)
    backbone.stem.4.conv.weight, backbone.stem.4.bn.*          3x3 conv + BN (+ ReLU)
    backbone.layer{S}.{B}.conv1.weight, .bn1.*, .conv2.* (involution K=7), .bn2.*, .conv3.weight, .bn3.*,
                        .downsample.0.weight, .downsample.1.*
    head.fc.weight, head.fc.bias

Official inputs are RGB, normalised with ``IMAGENET_MEAN``/``IMAGENET_STD`` on 0-255 pixels, 224x224
centre crops of the image resized to 256 on its short side.
"""

import re

import numpy as np

from involution.catalog import INPUT_RANGES, REDNET_DEPTHS
from involution.checkpoint import CheckpointError, load_state_dict

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_BN = ("weight", "bias", "running_mean", "running_var")


def input_normalization(input_range):
    """The layer that folds the ImageNet normalisation into a model for ``input_range="0-255"``."""
    if input_range in (None, "normalized"):
        return None
    if input_range != "0-255":
        raise ValueError(f"input_range must be one of {', '.join(INPUT_RANGES)}; got {input_range!r}")
    import keras

    return keras.layers.Normalization(mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD],
                                      name="imagenet_normalization")


def image_rule(input_range):
    """pixels in [0, 1] -> what a model with this ``input_range`` takes: normalised, or 0-255."""
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    if input_range in (None, "normalized"):
        return lambda x: (x * 255.0 - mean) / std
    return lambda x: x * 255.0


def describe_input(input_range, size):
    """What the exported model's input expects, in words, for the audit."""
    if input_range == "0-255":
        return f"RGB {size}x{size}, raw pixels 0-255 (the ImageNet normalisation is inside the model)"
    return (f"RGB {size}x{size}, normalised: (pixel - mean) / std on 0-255 pixels, mean {IMAGENET_MEAN}, "
            f"std {IMAGENET_STD}")


def _depths(keys):
    """Blocks per stage found in backbone keys ``layer{S}.{B}.``."""
    blocks = {}
    for k in keys:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            blocks[s] = max(blocks.get(s, 0), b + 1)
    return tuple(blocks.get(s, 0) for s in range(1, max(blocks, default=0) + 1))


def read_official(path, arch):
    """(backbone state without prefix, head state or {}) of an official checkpoint for ``arch``; checks depth."""
    state = load_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        other = [k for k in state if not k.startswith(("backbone.", "head."))]
        if other:
            raise CheckpointError(f"{path}: unexpected keys outside backbone./head.: {', '.join(other[:4])}")
    else:
        backbone, head = state, {}
    depths = _depths(backbone)
    if not depths:
        raise CheckpointError(f"{path}: no RedNet stage keys (layer1.0. ...): not an official RedNet checkpoint")
    if depths != REDNET_DEPTHS[arch]:
        known = [name for name, d in REDNET_DEPTHS.items() if d == depths]
        what = known[0] if known else "an unknown depth"
        raise CheckpointError(f"{path}: the checkpoint is {what} (blocks per stage {depths}); {arch} has "
                              f"{REDNET_DEPTHS[arch]}: pass --arch {known[0] if known else '...'}")
    return backbone, head


def _torch_prefix(layer_name):
    """Official key prefix of a Keras RedNet layer name, or None for layers without weights."""
    stem = {"stem_conv1": "stem.0.conv", "stem_bn1": "stem.0.bn", "stem_inv": "stem.1", "stem_bn2": "stem.2",
            "stem_conv2": "stem.4.conv", "stem_bn3": "stem.4.bn"}
    if layer_name in stem:
        return stem[layer_name]
    m = re.fullmatch(r"s(\d+)b(\d+)_(conv1|bn1|inv|bn2|conv3|bn3|down_conv|down_bn)", layer_name)
    if not m:
        return None
    part = {"inv": "conv2", "down_conv": "downsample.0", "down_bn": "downsample.1"}.get(m.group(3), m.group(3))
    return f"layer{m.group(1)}.{int(m.group(2)) - 1}.{part}"


def _expected(model):
    """{official key: (layer, role, torch shape)} for every weight of the Keras RedNet's backbone."""
    from involution.layer import Involution

    out = {}
    for layer in model.layers:
        prefix = _torch_prefix(layer.name)
        if prefix is None:
            continue
        if isinstance(layer, Involution):
            c, mid = layer.channel, layer.channel // layer.reduction_ratio
            span = layer.kernel_size**2 * layer.groups
            out[f"{prefix}.conv1.conv.weight"] = (layer, "inv", (mid, c, 1, 1))
            for p in _BN:
                out[f"{prefix}.conv1.bn.{p}"] = (layer, "inv", (mid,))
            out[f"{prefix}.conv2.conv.weight"] = (layer, "inv", (span, mid, 1, 1))
            out[f"{prefix}.conv2.conv.bias"] = (layer, "inv", (span,))
        elif "bn" in layer.name:
            for p in _BN:
                out[f"{prefix}.{p}"] = (layer, "bn", tuple(layer.gamma.shape))
        else:
            kh, kw, i, o = layer.kernel.shape
            out[f"{prefix}.weight"] = (layer, "conv", (o, i, kh, kw))
    return out


def _list(keys, n=4):
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_official(model, backbone, head, source="checkpoint"):
    """Sets the Keras RedNet's weights from official ``backbone`` (and ``head``) arrays, checking every key."""
    from involution.torch_weights import set_torch_weights

    expected = _expected(model)
    given = {k: v for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    if missing:
        raise CheckpointError(f"{source}: {len(missing)} key(s) missing: {_list(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} unexpected key(s): {_list(unexpected)}")
    for key, (_, _, shape) in expected.items():
        if tuple(given[key].shape) != shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(given[key].shape)}, the model needs {shape}")
    done = set()
    for key, (layer, role, _) in expected.items():
        if layer.name in done:
            continue
        done.add(layer.name)
        prefix = _torch_prefix(layer.name)
        if role == "inv":
            set_torch_weights(layer, {k[len(prefix) + 1:]: given[k] for k in expected if k.startswith(prefix + ".")})
        elif role == "bn":
            layer.set_weights([np.asarray(given[f"{prefix}.{p}"], np.float32) for p in _BN])
        else:
            layer.set_weights([np.asarray(given[key], np.float32).transpose(2, 3, 1, 0)])
    if head:
        w, b = head.get("fc.weight"), head.get("fc.bias")
        if w is None or b is None or set(head) - {"fc.weight", "fc.bias"}:
            raise CheckpointError(f"{source}: the head must be head.fc.weight and head.fc.bias; found {_list(head)}")
        fc = model.get_layer("fc")
        if tuple(w.shape) != (fc.kernel.shape[1], fc.kernel.shape[0]) or tuple(b.shape) != (fc.kernel.shape[1],):
            raise CheckpointError(f"{source}: head.fc.weight has shape {tuple(w.shape)}, the model needs "
                                  f"{(fc.kernel.shape[1], fc.kernel.shape[0])}")
        fc.set_weights([np.asarray(w, np.float32).T, np.asarray(b, np.float32)])
    return model
