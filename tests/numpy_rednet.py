"""The official RedNet (d-li14/involution, mmcls) as plain numpy, NCHW like PyTorch, and weights in its key layout.

Written from the official module definitions, not from the Keras builder: conv, BatchNorm, ReLU, pooling
and involution are array code here, so that a Keras model loaded from these weights is checked against an
independent forward.
"""

import collections

import numpy as np

DEPTHS = {"rednet26": (1, 2, 4, 1), "rednet38": (2, 3, 5, 2), "rednet50": (3, 4, 6, 3)}
EPS = 1e-5


def conv2d(x, w, stride=1, padding=0, bias=None):
    """x [N, C, H, W], w [O, C, kh, kw]; zero padding on every side, like torch.nn.Conv2d."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if bias is None else out + bias[None, :, None, None]


def batchnorm(x, s, p):
    g, b, m, v = (s[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + EPS) * g[None, :, None, None] + b[None, :, None, None]


def relu(x):
    return np.maximum(x, 0.0)


def maxpool_3x3_s2_p1(x):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return np.max([xp[:, :, i : i + 2 * (ho - 1) + 1 : 2, j : j + 2 * (wo - 1) + 1 : 2]
                   for i in range(3) for j in range(3)], axis=0)


def avgpool(x, s):
    n, c, h, w = x.shape
    return x[:, :, : h // s * s, : w // s * s].reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))


def involution(x, s, p, k, stride, group_channels=16):
    """The official module: kernel from avgpool -> conv1 (+BN, ReLU) -> conv2; unfold with (K-1)//2 padding."""
    n, c, h, w = x.shape
    g = c // group_channels
    y = avgpool(x, stride) if stride > 1 else x
    y = relu(batchnorm(conv2d(y, s[f"{p}.conv1.conv.weight"]), s, f"{p}.conv1.bn"))
    weight = conv2d(y, s[f"{p}.conv2.conv.weight"], bias=s[f"{p}.conv2.conv.bias"])  # [N, G*K*K, Ho, Wo]
    ho, wo = weight.shape[2:]
    weight = weight.reshape(n, g, 1, k * k, ho, wo)
    pad = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    patches = np.stack([xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
                        for i in range(k) for j in range(k)], axis=2)  # [N, C, K*K, Ho, Wo]
    patches = patches.reshape(n, g, group_channels, k * k, ho, wo)
    return (weight * patches).sum(axis=3).reshape(n, c, ho, wo)


def forward(s, x, depths, head=True):
    """Logits (or pooled features without ``head``) of the official RedNet; ``s`` has no ``backbone.`` prefix."""
    x = relu(batchnorm(conv2d(x, s["stem.0.conv.weight"], stride=2, padding=1), s, "stem.0.bn"))
    x = relu(batchnorm(involution(x, s, "stem.1", 3, 1), s, "stem.2"))
    x = relu(batchnorm(conv2d(x, s["stem.4.conv.weight"], padding=1), s, "stem.4.bn"))
    x = maxpool_3x3_s2_p1(x)
    for si, depth in enumerate(depths):
        for b in range(depth):
            p = f"layer{si + 1}.{b}"
            stride = 2 if si > 0 and b == 0 else 1
            identity = x
            y = relu(batchnorm(conv2d(x, s[f"{p}.conv1.weight"]), s, f"{p}.bn1"))
            y = relu(batchnorm(involution(y, s, f"{p}.conv2", 7, stride), s, f"{p}.bn2"))
            y = batchnorm(conv2d(y, s[f"{p}.conv3.weight"]), s, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in s:
                identity = batchnorm(conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride), s, f"{p}.downsample.1")
            x = relu(y + identity)
    feat = x.mean(axis=(2, 3))
    return feat @ s["fc.weight"].T + s["fc.bias"] if head else feat


def official_state(depths, num_classes=10, seed=0, base=64):
    """Random weights in the official key layout (``backbone.``/``head.``), He-initialised convs and
    BatchNorm statistics of the kind training leaves (means near 0, variances near 1, small last-BN gammas)."""
    rng = np.random.default_rng(seed)
    s = collections.OrderedDict()

    def conv(key, o, i, k=1):
        s[key] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)

    def bn(key, c, gamma=1.0):
        s[f"{key}.weight"] = (rng.uniform(0.7, 1.3, c) * gamma).astype(np.float32)
        s[f"{key}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        s[f"{key}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        s[f"{key}.running_var"] = rng.uniform(0.6, 1.6, c).astype(np.float32)
        s[f"{key}.num_batches_tracked"] = np.array(1000, np.int64)

    def inv(key, c, k):
        conv(f"{key}.conv1.conv.weight", c // 4, c)
        bn(f"{key}.conv1.bn", c // 4)
        conv(f"{key}.conv2.conv.weight", k * k * (c // 16), c // 4)
        s[f"{key}.conv2.conv.weight"] *= 0.2  # kernels of moderate size, as trained ones are
        s[f"{key}.conv2.conv.bias"] = rng.normal(0, 0.05, k * k * (c // 16)).astype(np.float32)

    half = base // 2
    conv("stem.0.conv.weight", half, 3, 3)
    bn("stem.0.bn", half)
    inv("stem.1", half, 3)
    bn("stem.2", half)
    conv("stem.4.conv.weight", base, half, 3)
    bn("stem.4.bn", base)
    cin = base
    for si, depth in enumerate(depths):
        mid = base * 2**si
        for b in range(depth):
            p = f"layer{si + 1}.{b}"
            conv(f"{p}.conv1.weight", mid, cin)
            bn(f"{p}.bn1", mid)
            inv(f"{p}.conv2", mid, 7)
            bn(f"{p}.bn2", mid)
            conv(f"{p}.conv3.weight", mid * 4, mid)
            bn(f"{p}.bn3", mid * 4, gamma=0.2)
            if b == 0:
                conv(f"{p}.downsample.0.weight", mid * 4, cin)
                bn(f"{p}.downsample.1", mid * 4)
            cin = mid * 4
    out = collections.OrderedDict((f"backbone.{k}", v) for k, v in s.items())
    out["head.fc.weight"] = (rng.standard_normal((num_classes, cin)) * 0.05).astype(np.float32)
    out["head.fc.bias"] = rng.normal(0, 0.01, num_classes).astype(np.float32)
    return out
