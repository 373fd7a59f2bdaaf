"""Model builders: the seed notebook's CIFAR-10 pair and RedNet (Li et al., 2021)."""

import dataclasses

import keras
from keras import layers

from involution.catalog import DEFAULT_GROUP_CHANNELS, MODEL_NAMES, REDNET_DEPTHS  # noqa: F401 - MODEL_NAMES re-exported
from involution.layer import Involution
from involution.subsample import Subsample2D

_DEFAULT_INPUT = {name: (224, 224, 3) for name in REDNET_DEPTHS}


def seed_conv(input_shape=(32, 32, 3), num_classes=10):
    """The TensorFlow CNN tutorial's classifier (319,178 parameters at 32x32x3, 10 classes)."""
    inp = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inp, layers.Dense(num_classes)(x), name="seed_conv")


def seed_involution(input_shape=(32, 32, 3), num_classes=10, strategy="shift"):
    """The notebook's involution classifier (13,080 parameters, 6 non-trainable, at 32x32x3)."""
    inp = keras.Input(input_shape)
    c = input_shape[-1]
    x = inp
    for i in range(3):
        x = Involution(channel=c, group_number=1, kernel_size=3, stride=1, reduction_ratio=2,
                       strategy=strategy, name=f"inv_{i + 1}")(x)
        x = layers.ReLU()(x)
        if i < 2:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inp, layers.Dense(num_classes)(x), name="seed_involution")


def official_involution(channels, kernel_size, stride, name, strategy="shift"):
    """The involution of the official RedNets (d-li14/involution): contiguous groups of 16 channels,
    PyTorch's symmetric padding, reduction 4, no bias before BatchNorm, eps 1e-5."""
    return Involution(channel=channels, group_channels=DEFAULT_GROUP_CHANNELS, kernel_size=kernel_size, stride=stride,
                      reduction_ratio=4, strategy=strategy, group_layout="contiguous",
                      padding="symmetric", bn_epsilon=1e-5, reduce_bias=False, name=name)


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-5, name=name)


def _bottleneck(x, mid, stride, name, strategy, involution=official_involution):
    """conv1x1 -> involution(mid, K=7, stride) -> conv1x1 (x4), with a projection shortcut when needed."""
    out_ch = mid * 4
    shortcut = x
    if stride != 1 or x.shape[-1] != out_ch:
        # The stride as its own subsampling, then a stride-1 1x1 conv: the same values, which the LiteRT GPU
        # accelerator computes right in int8 (see involution.subsample).
        if stride != 1:
            shortcut = Subsample2D(stride, name=f"{name}_down_subsample")(shortcut)
        shortcut = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_down_conv")(shortcut)
        shortcut = _bn(f"{name}_down_bn")(shortcut)
    y = layers.Conv2D(mid, 1, use_bias=False, name=f"{name}_conv1")(x)
    y = layers.ReLU()(_bn(f"{name}_bn1")(y))
    y = involution(mid, 7, stride, f"{name}_inv", strategy)(y)
    y = layers.ReLU()(_bn(f"{name}_bn2")(y))
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_conv3")(y)
    y = _bn(f"{name}_bn3")(y)
    return layers.ReLU()(layers.Add()([y, shortcut]))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A RedNet's shape beyond its stage depths: the official ImageNet one by default."""

    base: int = 64                       # stage 1's bottleneck width (stem: half of it)
    stem_stride: int = 2
    stage_strides: tuple = (1, 2, 2, 2)
    maxpool: bool = True                 # the stem's 3x3/2 max-pool


# Small inputs (CIFAR): a stride-1 stem, no max-pool, three stages.
CIFAR_GEOMETRY = Geometry(base=32, stem_stride=1, stage_strides=(1, 2, 2), maxpool=False)


def rednet(depths, input_shape=(224, 224, 3), num_classes=1000, geometry=Geometry(), *, name="rednet",
           strategy="shift", include_top=True, preprocessing=None, involution=official_involution):
    """RedNet with the official network's geometry: the deep stem and ResNet bottlenecks whose 3x3 conv
    is a 7x7 involution (``geometry``: the widths, strides and max-pool; the official ones by default).

    Padding is PyTorch's wherever the official model pads: one pixel on every side before the stride-2
    stem conv and the 3x3/2 max-pool (zeros are exact for the max-pool: it follows a ReLU), symmetric
    windows in the stride-2 involutions.  ``include_top=False`` ends at the global average pool (a bare
    backbone); ``preprocessing`` is a layer applied to the input first (e.g. ImageNet normalisation);
    ``involution(channels, kernel_size, stride, name, strategy)`` makes each involution layer (benchmarks
    swap it out to measure the network without it).
    """
    inp = keras.Input(input_shape)
    base, g = geometry.base, geometry
    half = base // 2
    x = preprocessing(inp) if preprocessing is not None else inp
    x = layers.ZeroPadding2D(1, name="stem_pad1")(x)
    x = layers.Conv2D(half, 3, strides=g.stem_stride, use_bias=False, name="stem_conv1")(x)
    x = layers.ReLU()(_bn("stem_bn1")(x))
    x = involution(half, 3, 1, "stem_inv", strategy)(x)
    x = layers.ReLU()(_bn("stem_bn2")(x))
    x = layers.Conv2D(base, 3, padding="same", use_bias=False, name="stem_conv2")(x)
    x = layers.ReLU()(_bn("stem_bn3")(x))
    if g.maxpool:
        x = layers.ZeroPadding2D(1, name="pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for s, (depth, stride) in enumerate(zip(depths, g.stage_strides)):
        mid = base * 2**s
        for b in range(depth):
            x = _bottleneck(x, mid, stride if b == 0 else 1, f"s{s + 1}b{b + 1}", strategy, involution)
    x = layers.GlobalAveragePooling2D()(x)
    if include_top:
        x = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inp, x, name=name)


def build_model(name, input_shape=None, num_classes=None, strategy="shift", weights=None, input_range=None):
    """Builds a model by name: one of ``MODEL_NAMES``.

    ``strategy`` picks the involution aggregation (``"shift"`` or ``"depthwise"``).  ``weights`` (RedNets
    only) is an official checkpoint (``.pth``/``.pt``, ``.safetensors`` or ``.npz``; see
    ``involution.pretrained``), as in ``keras.applications``: the classifier's size comes from it, and a
    bare backbone builds without one.  ``input_range="0-255"`` folds the official ImageNet normalisation
    into the model, so that it takes raw RGB pixels; the default takes normalised input.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if (weights is not None or input_range is not None) and name not in REDNET_DEPTHS:
        raise ValueError(f"weights= and input_range= are for the ImageNet RedNets ({', '.join(REDNET_DEPTHS)}), not {name}")
    input_shape = tuple(input_shape or _DEFAULT_INPUT.get(name, (32, 32, 3)))
    if name == "seed-conv":
        return seed_conv(input_shape, num_classes or 10)
    if name == "seed-involution":
        return seed_involution(input_shape, num_classes or 10, strategy)
    if name == "rednet-cifar":
        # Small-input RedNet: stride-1 stem, no max-pool, three stages of one bottleneck each.
        return rednet((1, 1, 1), input_shape, num_classes or 10, CIFAR_GEOMETRY, name="rednet_cifar",
                      strategy=strategy)
    from involution import pretrained

    preprocessing = pretrained.input_normalization(input_range)
    if weights is None:
        return rednet(REDNET_DEPTHS[name], input_shape, num_classes or 1000, name=name, strategy=strategy,
                      preprocessing=preprocessing)
    state, head = pretrained.read_official(weights, name)
    classes = head["fc.weight"].shape[0] if head else None
    if num_classes is not None and classes is not None and num_classes != classes:
        raise ValueError(f"{weights}: its classifier has {classes} classes, not num_classes={num_classes}")
    model = rednet(REDNET_DEPTHS[name], input_shape, classes or 1000, name=name, strategy=strategy,
                   include_top=bool(head), preprocessing=preprocessing)
    pretrained.load_official(model, state, head, source=weights)
    return model
