"""Independent numpy implementations of involution, written from the formulas, not from the layer.

``involution_seed``: the extract_patches formulation (TF SAME windows, group ``c % G``,
kernel channel ``k*G + g``).  ``involution_official``: the PyTorch module
(``padding=K//2``, group ``c // (C/G)``, kernel channel ``g*K*K + k``, BN eps 1e-5).
"""

import numpy as np


def _kernel_gen(x, stride, w1, b1, gamma, beta, mean, var, eps, w2, b2):
    if stride > 1:  # average pool, SAME (partial windows average their valid pixels)
        n, h, w, c = x.shape
        ho, wo = -(-h // stride), -(-w // stride)
        ph = max((ho - 1) * stride + stride - h, 0) // 2
        pw = max((wo - 1) * stride + stride - w, 0) // 2
        pooled = np.zeros((n, ho, wo, c))
        for i in range(ho):
            for j in range(wo):
                r0, c0 = i * stride - ph, j * stride - pw
                win = x[:, max(r0, 0) : r0 + stride, max(c0, 0) : c0 + stride]
                pooled[:, i, j] = win.mean(axis=(1, 2))
        x = pooled
    y = x @ w1 + b1
    y = (y - mean) / np.sqrt(var + eps) * gamma + beta
    return np.maximum(y, 0) @ w2 + b2


def _aggregate(x, kernel_at, k, stride, pad_top, pad_left, group_of):
    n, h, w, c = x.shape
    ho, wo = -(-h // stride), -(-w // stride)
    out = np.zeros((n, ho, wo, c))
    for oi in range(ho):
        for oj in range(wo):
            for i in range(k):
                for j in range(k):
                    r, q = oi * stride + i - pad_top, oj * stride + j - pad_left
                    if 0 <= r < h and 0 <= q < w:
                        for ch in range(c):
                            out[:, oi, oj, ch] += kernel_at[:, oi, oj, i * k + j, group_of(ch)] * x[:, r, q, ch]
    return out


def involution_seed(x, k, stride, groups, w1, b1, gamma, beta, mean, var, w2, b2, eps=1e-3):
    """w1 [C, C/r], w2 [C/r, K*K*G] (channel k*G + g)."""
    return involution_nhwc(x, k, stride, groups, w1, b1, gamma, beta, mean, var, w2, b2, eps)


def involution_nhwc(x, k, stride, groups, w1, b1, gamma, beta, mean, var, w2, b2, eps=1e-3, padding="same",
                    layout="interleaved"):
    """Any padding and group layout, Keras weight layout: kernel channel k*G + g.

    ``padding``: "same" (TF: the window's excess split, the smaller half before) or "symmetric"
    (PyTorch: K//2 before).  ``layout``: "interleaved" (group c % G) or "contiguous" (group c // (C/G)).
    """
    n, h, w, c = x.shape
    kern = _kernel_gen(x, stride, w1, b1, gamma, beta, mean, var, eps, w2, b2)
    kern = kern.reshape(*kern.shape[:3], k * k, groups)
    ho, wo = -(-h // stride), -(-w // stride)
    if padding == "same":
        pt = max((ho - 1) * stride + k - h, 0) // 2
        pl = max((wo - 1) * stride + k - w, 0) // 2
    else:
        pt = pl = k // 2
    group_of = (lambda ch: ch % groups) if layout == "interleaved" else (lambda ch: ch // (c // groups))
    return _aggregate(x, kern, k, stride, pt, pl, group_of)


def involution_official(x, k, stride, groups, conv1_w, bn_w, bn_b, bn_mean, bn_var, conv2_w, conv2_b):
    """PyTorch layout: conv1_w [C/r, C, 1, 1], conv2_w [G*K*K, C/r, 1, 1]; x is NHWC here."""
    c = x.shape[-1]
    kern = _kernel_gen(x, stride, conv1_w[:, :, 0, 0].T, 0.0, bn_w, bn_b, bn_mean, bn_var, 1e-5,
                       conv2_w[:, :, 0, 0].T, conv2_b)
    kern = kern.reshape(*kern.shape[:3], groups, k * k).transpose(0, 1, 2, 4, 3)
    return _aggregate(x, kern, k, stride, k // 2, k // 2, lambda ch: ch // (c // groups))
