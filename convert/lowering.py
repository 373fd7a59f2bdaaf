"""``tf.image.extract_patches`` lowered to TFLite builtin ops, for users' own involution classes.

A class passed with ``--custom-module`` keeps its own code, so its ``tf.image.extract_patches`` would need
Flex.  While the model is traced for export, the function is replaced by the same gather made of builtins:
pad (TensorFlow's SAME windows), one slice per window offset, and a concatenation in extract_patches'
channel order (offset row, offset column, input channel).  Values are identical; what the class does with
the patches afterwards (often a 6-D reshape) stays as it is, and the audit reports the tensor rank.
"""

from convert import compat


def extract_patches_builtin(images, sizes, strides, rates, padding, name=None):
    """What ``tf.image.extract_patches`` returns, for unit rates, from PAD, STRIDED_SLICE and CONCATENATION."""
    import tensorflow as tf

    from involution.layer import ceil_div, window_padding

    _, kh, kw, _ = sizes
    _, sh, sw, _ = strides
    h, w = images.shape[1], images.shape[2]
    if str(padding).upper() == "SAME":
        ho, wo = ceil_div(h, sh), ceil_div(w, sw)
        ph, pw = window_padding(h, kh, sh, "same"), window_padding(w, kw, sw, "same")
        images = tf.pad(images, [[0, 0], list(ph), list(pw), [0, 0]])
    else:
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    # Offset (i, j) reads rows i, i + sh, ..., i + (ho - 1) * sh: the end bound is the last one plus 1.
    pieces = [images[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
              for i in range(kh) for j in range(kw)]
    return tf.concat(pieces, axis=-1, name=name)


def builtin_extract_patches():
    """Within the block, ``tf.image.extract_patches`` (unit rates, known spatial size) is the builtin version."""

    def extract_patches(original, images, sizes, strides, rates, padding, name=None):
        if list(rates) != [1, 1, 1, 1] or images.shape[1] is None or images.shape[2] is None:
            return original(images, sizes, strides, rates, padding, name=name)
        return extract_patches_builtin(images, sizes, strides, rates, padding, name=name)

    return compat.replaced_extract_patches(extract_patches)
