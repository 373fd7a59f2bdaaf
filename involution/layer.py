"""The involution layer, built only from TFLite builtin ops with tensors of rank <= 4.

Involution (Li et al., CVPR 2021) generates a KxK kernel at every pixel from
the input itself and shares it across the channels of a group:

    out[h, w, c] = sum_{i,j} kernel[h, w, group(c), i, j] * x[h*s + i - p, w*s + j - p, c]

Kernel generation is the paper's: average-pool by the stride, 1x1 conv C -> C/r,
BatchNorm, ReLU, 1x1 conv -> G*K*K.  The generated kernel is laid out
position-major (channel ``k * G + g`` holds position ``k = i * K + j`` of group
``g``), which is the layout of the ``tf.image.extract_patches`` reference, so
its weights copy over unchanged.

Two aggregation strategies, both builtin-only and at most 4-D:

* ``"shift"`` (default, measured fastest): pad once, then for each of the K*K
  offsets a strided slice of the input times the matching kernel slice,
  accumulated with ADD.  Exactly H*W*C*K*K multiply-adds, no large constants.
  At batch 1 (export) it works on planes so the kernel broadcasts over an
  outer axis: [C/G, H, W, G] with 4+ groups (``_aggregate_group_minor``), channel
  planes otherwise (``_aggregate_planar``).
* ``"depthwise"``: a one-hot DEPTHWISE_CONV_2D (depth multiplier K*K) gathers
  every patch, then one MUL and one SUM.  Few ops, but K*K times the useful
  work and C*K^4 one-hot constants; kept for comparison and for backends that
  prefer few large ops.  Wide layers gather in several such ops (channels x K*K
  at most ``BUILTIN_DEPTHWISE_MAX_DEPTH`` each), which TFLite's builtin kernel needs.
* ``"separable"`` (the GPU target): the same gather in two one-hot DEPTHWISE_CONV_2D ops, K rows then
  K columns (depth multiplier K each), then one MUL and one SUM: about ten ops per layer whatever K is,
  for devices where every op costs a dispatch (docs/gpu_cost_model.md).  K*(K+1)*C one-hot weights, and
  (K+1)/K times the gather's copies in place of the one-hot form's K*K.
"""

import keras
import numpy as np
from keras import ops

from involution.catalog import DEFAULT_GROUP_CHANNELS, STRATEGIES
from invo_base.tflite_model import BUILTIN_DEPTHWISE_MAX_DEPTH

GROUP_LAYOUTS = ("interleaved", "contiguous")
# How a batch-1 input is aggregated (``Involution(batch_one_layout=...)``); any other batch, or an unknown one,
# is aggregated channels-last.  "auto" picks by the thresholds below, each measured with XNNPACK on exported
# layers (the runs: docs/layer.md, docs/performance.md).
BATCH_ONE_LAYOUTS = ("auto", "planes", "groups-innermost", "channels-last")
# Output maps of at most this many pixels, with at least this many channels, are fastest channels-last: on small
# maps a plane's rows are a few floats, and its slices copy thousands of them.
CHANNELS_LAST_MAX_PIXELS = 196
CHANNELS_LAST_MIN_CHANNELS = 16
# On planes the output is computed in horizontal strips of at most this many values (28x28x128), so that each
# strip's windows, MULs and ADDs stay in a core's L2 cache.
PLANAR_STRIP_VALUES = 28 * 28 * 128
# With at least this many groups, [C/G, H, W, G] planes (groups innermost, ``_aggregate_group_minor``) beat
# channel planes and channels-last; with 2 groups they do not.
GROUP_MINOR_MIN_GROUPS = 4
# The K*K products are summed in chains of at most this many, joined pairwise (``sum_taps``): a GPU delegate
# fuses an elementwise chain into one shader, and past the device's texture limit (WebGPU's default 16) the
# runtime returns garbage while reporting the model fully accelerated.  Chains of 7 bound a K=7 layer's longest
# elementwise path to 10 ops (11 textures).
SUM_CHAIN_TAPS = 7
PADDINGS = ("same", "symmetric")
# XNNPACK takes a CONCATENATION of at most this many inputs (5 split the graph onto TFLite's own kernels);
# strips are joined in a tree of such (``concatenate_within_xnnpack``).
XNNPACK_MAX_CONCAT = 4
# TF's converter makes every weight of at least this many values int8 under dynamic-range quantization, and
# XNNPACK refuses the hybrid DEPTHWISE_CONV_2D that makes; the stride's average pool keeps each of its weights
# below it (``_pool_as_depthwise``).
DYNAMIC_RANGE_MIN_WEIGHTS = 1024
# The name scopes of the two halves of ``call``; the first must sort before the second: TF's converter lists the
# branch whose ops' names sort first as a block, so the kernel pieces come first and each window is copied just
# before its product, not all K*K input-sized windows at once (docs/convert.md, "Whatever converts it").
KERNEL_SCOPE, WINDOW_SCOPE = "kernel", "windows"


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def ceil_div(a, b):
    """ceil(a / b) for positive integers: the output size of a stride-b window over a SAME-padded axis."""
    return -(-a // b)


def planar_strips(ho, wo, c, strip_values=None):
    """How many horizontal strips a batch-1 output of Ho x Wo x C is computed in on planes, each of at most
    ``strip_values`` values (default ``PLANAR_STRIP_VALUES``)."""
    return min(ho, ceil_div(ho * wo * c, strip_values or PLANAR_STRIP_VALUES))


def strip_bounds(rows, strips):
    """[(first, end), ...]: ``rows`` split into ``strips`` consecutive runs as even as they go."""
    bounds = [rows * t // strips for t in range(strips + 1)]
    return list(zip(bounds, bounds[1:]))


def depthwise_chunks(c, g, taps, limit=BUILTIN_DEPTHWISE_MAX_DEPTH):
    """[(c0, c1), ...]: C channels in G groups (channel c in group c % G) cut into runs of at most
    ``limit // taps`` channels for the one-hot gather, each either whole periods of G channels (the kernel
    broadcasts over them) or part of one period (a slice of the kernel)."""
    cap = max(1, limit // taps)
    if c <= cap:
        return [(0, c)]
    if g <= cap:
        m = cap // g * g
        return [(c0, min(c0 + m, c)) for c0 in range(0, c, m)]
    return [(p + a, p + min(a + cap, g)) for p in range(0, c, g) for a in range(0, g, cap)]


def concatenate_within_xnnpack(parts, axis):
    """``parts`` joined along ``axis`` by CONCATENATION ops of at most ``XNNPACK_MAX_CONCAT`` inputs each (a tree)."""
    while len(parts) > XNNPACK_MAX_CONCAT:
        parts = [ops.concatenate(parts[i : i + XNNPACK_MAX_CONCAT], axis=axis) if len(parts) - i > 1 else parts[i]
                 for i in range(0, len(parts), XNNPACK_MAX_CONCAT)]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


def sum_taps(terms, chain=None):
    """The sum of ``terms`` (an iterable of tensors, consumed in order): runs of ``chain`` terms added in a
    chain, the runs joined pairwise like a binary counter (a balanced tree built as the terms come).

    Built lazily, so each term is added soon after it is made (few tensors alive, depth-first); the longest
    path of ADDs is ``chain - 1`` plus the tree's depth, ``ceil(log2(runs))``.
    """
    chain = chain or SUM_CHAIN_TAPS
    stack = []  # (level, partial sum of 2**level runs), levels strictly decreasing towards the top

    def push(partial, level=0):
        while stack and stack[-1][0] == level:
            partial = stack.pop()[1] + partial
            level += 1
        stack.append((level, partial))

    run, count = None, 0
    for term in terms:
        run = term if run is None else run + term
        count += 1
        if count == chain:
            push(run)
            run, count = None, 0
    if run is not None:
        push(run)
    if not stack:
        raise ValueError("sum_taps needs at least one term")
    out = stack.pop()[1]
    while stack:
        out = stack.pop()[1] + out
    return out


def window_padding(size, kernel_size, stride, padding):
    """(before, after) zero padding of one spatial axis; output size is ceil(size / stride).

    ``"same"`` is TensorFlow's SAME (what ``extract_patches`` does); ``"symmetric"``
    is PyTorch's ``padding=K//2`` used by the official implementation.  They agree
    for stride 1 and odd K.
    """
    out = ceil_div(size, stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    before = total // 2 if padding == "same" else kernel_size // 2
    return before, max(total - before, 0)


def output_shape(input_shape, stride):
    """NHWC output shape: spatial sizes ceil(size / stride), channels unchanged."""
    b, h, w, c = input_shape
    return (b, None if h is None else ceil_div(h, stride), None if w is None else ceil_div(w, stride), c)


@keras.saving.register_keras_serializable(package="involution")
class Involution(keras.layers.Layer):
    """Involution layer that converts to TFLite builtin ops only.

    Args:
        channel: input (= output) channels; ``None`` takes them from the input.
        group_number: number of kernel groups G (the seed notebook's argument).
        kernel_size: K, odd.
        stride: 1 or 2 (any positive integer works).
        reduction_ratio: r of the C -> C/r bottleneck of kernel generation.
        group_channels: channels per group, the official form (G = C / group_channels);
            used when ``group_number`` is None.  Default ``DEFAULT_GROUP_CHANNELS`` (16), as in the paper.
        strategy: ``"shift"`` or ``"depthwise"`` aggregation (see module docstring).
        group_layout: ``"interleaved"``: channel c belongs to group ``c % G`` (the
            extract_patches formulation); ``"contiguous"``: group ``c // (C/G)`` (the
            official PyTorch code).
        padding: ``"same"`` (TensorFlow) or ``"symmetric"`` (PyTorch) window placement
            for strides > 1.
        bn_epsilon: BatchNorm epsilon (Keras 1e-3; PyTorch weights want 1e-5).
        reduce_bias: whether the C -> C/r conv has a bias (the extract_patches versions do; the
            official PyTorch one, followed by BatchNorm, does not).
        batch_one_layout: how a static batch of 1 (the exported graph) is aggregated with ``"shift"``:
            ``"auto"`` (default) by the measured thresholds (``GROUP_MINOR_MIN_GROUPS``,
            ``CHANNELS_LAST_MAX_PIXELS``), or forced: ``"planes"`` (channel planes, any stride),
            ``"groups-innermost"`` ([C/G, H, W, G] planes, any stride), ``"channels-last"``.
            Any other batch is aggregated channels-last.  Every choice computes the same values.
        strip_values: on planes, the output is computed in horizontal strips of at most this many values
            (default ``PLANAR_STRIP_VALUES``); a larger value means fewer, larger ops.
    """

    def __init__(
        self,
        channel=None,
        group_number=None,
        kernel_size=7,
        stride=1,
        reduction_ratio=4,
        group_channels=None,
        strategy="shift",
        group_layout="interleaved",
        padding="same",
        bn_epsilon=1e-3,
        reduce_bias=True,
        batch_one_layout="auto",
        strip_values=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer (1, 3, 5, 7, ...); got {kernel_size!r}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer (1 or 2); got {stride!r}")
        if not isinstance(reduction_ratio, int) or reduction_ratio < 1:
            raise ValueError(f"reduction_ratio must be a positive integer; got {reduction_ratio!r}")
        if group_number is not None and (not isinstance(group_number, int) or group_number < 1):
            raise ValueError(f"group_number must be a positive integer dividing channel; got {group_number!r}")
        if group_channels is not None and (not isinstance(group_channels, int) or group_channels < 1):
            raise ValueError(f"group_channels must be a positive integer dividing channel; got {group_channels!r}")
        if isinstance(bn_epsilon, bool) or not isinstance(bn_epsilon, (int, float)) or not bn_epsilon > 0:
            raise ValueError(f"bn_epsilon must be a positive number (Keras 1e-3, PyTorch 1e-5); got {bn_epsilon!r}")
        _check_choice("strategy", strategy, STRATEGIES)
        _check_choice("group_layout", group_layout, GROUP_LAYOUTS)
        _check_choice("padding", padding, PADDINGS)
        _check_choice("batch_one_layout", batch_one_layout, BATCH_ONE_LAYOUTS)
        if strip_values is not None and (isinstance(strip_values, bool) or not isinstance(strip_values, int)
                                         or strip_values < 1):
            raise ValueError(f"strip_values must be a positive integer or None; got {strip_values!r}")
        self._channel_arg = channel  # the config keeps what was asked; build resolves None
        self.channel = channel
        self.group_number = group_number
        self.kernel_size = kernel_size
        self.stride = stride
        self.reduction_ratio = reduction_ratio
        self.group_channels = group_channels
        self.strategy = strategy
        self.group_layout = group_layout
        self.padding = padding
        self.bn_epsilon = bn_epsilon
        self.reduce_bias = bool(reduce_bias)
        self.batch_one_layout = batch_one_layout
        self.strip_values = strip_values
        if channel is not None:
            self._validate_channels(channel)

    def _validate_channels(self, channel):
        if not isinstance(channel, int) or channel < 1:
            raise ValueError(f"channel must be a positive integer; got {channel!r}")
        if self.group_number is not None:
            if channel % self.group_number:
                raise ValueError(
                    f"channel ({channel}) must be divisible by group_number ({self.group_number}); "
                    f"allowed group_number values: {[g for g in range(1, channel + 1) if channel % g == 0]}"
                )
        else:
            gc = self._group_channels
            if channel % gc:
                raise ValueError(
                    f"channel ({channel}) must be divisible by group_channels ({gc}); "
                    f"allowed group_channels values: {[g for g in range(1, channel + 1) if channel % g == 0]}"
                )
        if self.reduction_ratio > channel:
            raise ValueError(
                f"reduction_ratio ({self.reduction_ratio}) must be at most channel ({channel}): "
                f"allowed values are 1..{channel}"
            )

    @property
    def _group_channels(self):
        return self.group_channels or DEFAULT_GROUP_CHANNELS

    @property
    def groups(self):
        """G: ``group_number``, or the channels over ``group_channels``."""
        if self.group_number is not None:
            return self.group_number
        return self.channel // self._group_channels

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Involution expects a 4-D NHWC input; got shape {tuple(input_shape)}")
        c = input_shape[-1]
        if self.channel is None:
            self.channel = int(c)
            self._validate_channels(self.channel)
        elif c is not None and c != self.channel:
            raise ValueError(f"channel={self.channel} but the input has {c} channels")
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self.channel})  # NHWC with these channels
        k, g = self.kernel_size, self.groups
        self.pool = keras.layers.AveragePooling2D(self.stride, self.stride, padding="same", name="pool") if self.stride > 1 else None
        self.reduce = keras.layers.Conv2D(self.channel // self.reduction_ratio, 1, use_bias=self.reduce_bias, name="reduce")
        self.bn = keras.layers.BatchNormalization(epsilon=self.bn_epsilon, name="bn")
        self.span = keras.layers.Conv2D(k * k * g, 1, name="span")
        shape = list(input_shape)
        if self.pool is not None:
            self.pool.build(shape)
            shape = list(self.pool.compute_output_shape(shape))
        self.reduce.build(shape)
        shape[-1] = self.channel // self.reduction_ratio
        self.bn.build(shape)
        self.span.build(shape)
        if self.strategy == "separable":
            # Rows: channel c*K + i copies input channel c from row offset i; then columns: channel
            # (c*K + i)*K + j = c*K*K + n copies it from column offset j, n = i*K + j.
            self._onehot_rows = np.tile(np.eye(k, dtype=np.float32)[:, None, None, :], (1, 1, self.channel, 1))
            self._onehot_cols = np.tile(np.eye(k, dtype=np.float32)[None, :, None, :], (1, 1, self.channel * k, 1))
        if self.strategy == "depthwise":
            # One-hot gather: output channel c*K*K + k copies input channel c at offset k (the same for every c).
            onehot = np.zeros((k, k, self.channel, k * k), np.float32)
            for i in range(k):
                for j in range(k):
                    onehot[i, j, :, i * k + j] = 1.0
            self._onehot = onehot

    def generate_kernel(self, x, training=None, group_major=False):
        """Per-pixel kernels [B, Ho, Wo, K*K*G], channel k*G + g (``group_major``: g*K*K + k, the order the
        separable gather wants, by permuting the span conv's weights, which the converter folds)."""
        y = x
        if self.pool is not None:  # the GPU form keeps the pool one op (XNNPACK's int8 is not its concern)
            y = self.pool(x) if self.strategy == "separable" else self._pool_as_depthwise(x)
        y = self.reduce(y)
        y = ops.relu(self.bn(y, training=training))
        if not group_major:
            return self.span(y)
        taps, g = self.kernel_size**2, self.groups
        order = [n * g + gi for gi in range(g) for n in range(taps)]  # new channel g*K*K + n <- old n*G + g
        return ops.conv(y, ops.take(self.span.kernel, order, axis=3)) + ops.take(self.span.bias, order)

    def _pool_as_depthwise(self, x):
        """The stride x stride average pool (SAME: ceil(H/s) x ceil(W/s), each window averaged over the pixels
        it covers) as DEPTHWISE_CONV_2D ops, every weight float under dynamic range.

        XNNPACK refuses int8 AVERAGE_POOL_2D and leaves it, splitting the graph, to TFLite's reference kernels;
        a depthwise conv of weight 1/s^2 computes the same average and stays inside.  Where its weights would
        be dynamic-range quantized (``DYNAMIC_RANGE_MIN_WEIGHTS``) it is two depthwise convs of fewer weights,
        or, at an unknown batch size, two MEANs (no weights).
        At stride 2 an odd size is padded with one zero row or column after (where SAME pads), and the last
        row's or column's windows, which cover half as many pixels, get their value added once more (a corner:
        twice).  Repeating the last row with a CONCATENATION instead made TF's int8 quantizer leave the
        layer's windows, MULs and padding in float32 between 99 QUANTIZE/DEQUANTIZE pairs (75x75x128).
        Larger strides on sizes they do not divide, and unknown sizes, keep the pool.
        """
        s, (h, w, c) = self.stride, x.shape[1:]
        if h is None or w is None or (s > 2 and (h % s or w % s)):
            return self.pool(x)
        if h % s or w % s:  # s == 2, an odd size: a zero after, then the edge windows' averages doubled
            ph, pw = h % s, w % s
            y = self._pool_as_depthwise(ops.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))))  # edge windows: sum / 4
            ho, wo = y.shape[1], y.shape[2]
            if ph:  # the last row's windows cover one row: add their value once more, [B, Ho, Wo, C]
                y = y + ops.pad(y[:, ho - 1 : ho], ((0, 0), (ho - 1, 0), (0, 0), (0, 0)))
            if pw:
                y = y + ops.pad(y[:, :, wo - 1 : wo], ((0, 0), (0, 0), (wo - 1, 0), (0, 0)))
            return y
        if s * s * c < DYNAMIC_RANGE_MIN_WEIGHTS:
            return ops.depthwise_conv(x, ops.full((s, s, c, 1), 1.0 / (s * s)), strides=s, padding="valid")
        # Too many weights to stay float under dynamic-range quantization: rows, then columns.  A reshape puts
        # the s rows (then columns) of each window n values apart along the width; an s-tap window dilated by n
        # over channel blocks of c0 < DYNAMIC_RANGE_MIN_WEIGHTS / s sums them at stride 1.  (An (s, 1) window at
        # strides (s, 1) is the same TFLite op, but TF's CPU kernel refuses unequal strides where oneDNN is off,
        # as it is on CPUs without AVX-512.)  The converter fuses TF's dilated conv (SPACE_TO_BATCH_ND around a
        # DEPTHWISE_CONV_2D) into one op only at a known batch size; at an unknown one, which XNNPACK would
        # leave split around those two ops, each pass is a MEAN over the window's axis instead: no weights, the
        # same averages (int8: 0.15-0.3 ms slower per layer at RedNet's sizes, float32 0.01 ms).
        if x.shape[0] is None:
            y = ops.mean(ops.reshape(x, (-1, h // s, s, w * c)), axis=2, keepdims=True)  # [B, H/s, 1, W * C]
            y = ops.mean(ops.reshape(y, (-1, h // s * (w // s), s, c)), axis=2, keepdims=True)  # [B, H/s * W/s, 1, C]
            return ops.reshape(y, (-1, h // s, w // s, c))
        c0 = max(d for d in range(1, c + 1) if c % d == 0 and s * d < DYNAMIC_RANGE_MIN_WEIGHTS)
        nb = c // c0  # channel blocks
        half = ops.full((1, s, c0, 1), 1.0 / s)
        y = ops.reshape(x, (-1, h // s, s * w * nb, c0))  # [B, H/s, s * W * nb, c0]: row t at t*W*nb
        y = ops.depthwise_conv(y, half, padding="valid", dilation_rate=(1, w * nb))  # [B, H/s, W * nb, c0]
        y = ops.reshape(y, (-1, h // s * (w // s), s * nb, c0))  # [B, H/s * W/s, s * nb, c0]: column t at t*nb
        y = ops.depthwise_conv(y, half, padding="valid", dilation_rate=(1, nb))  # [B, H/s * W/s, nb, c0]
        return ops.reshape(y, (-1, h // s, w // s, c))

    def call(self, x, training=None):
        # The scope names order the stock converter's operators (see ``KERNEL_SCOPE``).
        separable = self.strategy == "separable"
        with keras.name_scope(KERNEL_SCOPE):
            kernel = self.generate_kernel(x, training=training, group_major=separable)
        with keras.name_scope(WINDOW_SCOPE):
            if separable:
                return self._aggregate_separable(x, kernel, x.shape[1], x.shape[2], x.shape[3], self.groups)
            return self.aggregate(x, kernel)

    def aggregate(self, x, kernel):
        """The output from the input [B, H, W, C] and a generated kernel [B, Ho, Wo, K*K*G] (channel k*G + g).

        ``call`` is ``generate_kernel`` then this; apart, they let a benchmark time the two halves.
        """
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        g = self.groups
        if self.strategy == "separable":  # wants the kernel group-major: [.., K*K, G] -> [.., G, K*K]
            ho, wo, taps = kernel.shape[1], kernel.shape[2], self.kernel_size**2
            kernel = ops.reshape(ops.transpose(ops.reshape(kernel, (-1, ho * wo, taps, g)), (0, 1, 3, 2)),
                                 (-1, ho, wo, g * taps))
            return self._aggregate_separable(x, kernel, h, w, c, g)
        layout = self.batch_one_path(x.shape) if self.strategy == "shift" else "channels-last"
        if layout == "groups-innermost":
            return self._aggregate_group_minor(x, kernel, h, w, c, g)
        if layout == "planes":
            return self._aggregate_planar(x, kernel, h, w, c, g)
        # With G = 1 (one group of all channels) or G = C (a group per channel) the two group layouts
        # assign every channel the same group, so only 1 < G < C needs the channels permuted.
        if self.strategy == "shift":
            # Computed with contiguous groups: the kernel then broadcasts over the innermost axis.
            permute = self.group_layout == "interleaved" and 1 < g < c
            if permute:  # channel t*G + g -> g*(C/G) + t: interleaved to contiguous
                x = self._swap_channel_blocks(x, c // g, g)
            out = self._aggregate_shift(x, kernel, h, w, c, g)
            # (C/G, G) then (G, C/G): the second swap undoes the first.
            return self._swap_channel_blocks(out, g, c // g) if permute else out
        # The one-hot gather computes interleaved groups.
        permute = self.group_layout == "contiguous" and 1 < g < c
        if permute:  # channel g*(C/G) + t -> t*G + g: contiguous to interleaved
            x = self._swap_channel_blocks(x, g, c // g)
        out = self._aggregate_depthwise(x, kernel, h, w, c, g)
        return self._swap_channel_blocks(out, c // g, g) if permute else out  # back: undoes (G, C/G)

    def batch_one_path(self, input_shape):
        """The aggregation layout ``"shift"`` uses for an input of this shape: at a static batch of 1 the
        ``batch_one_layout`` choice (``"auto"`` resolved by the measured thresholds), else channels-last."""
        b, h, w, c = input_shape
        if b != 1:
            return "channels-last"
        layout = self.batch_one_layout
        if layout == "auto":
            small = (ceil_div(h, self.stride) * ceil_div(w, self.stride) <= CHANNELS_LAST_MAX_PIXELS
                     and c >= CHANNELS_LAST_MIN_CHANNELS)
            layout = ("groups-innermost" if self.groups >= GROUP_MINOR_MIN_GROUPS
                      else "channels-last" if small else "planes")
        return layout

    def _strips(self, ho, wo, c):
        return planar_strips(ho, wo, c, self.strip_values or PLANAR_STRIP_VALUES)

    def _aggregate_planar(self, x, kernel, h, w, c, g):
        """Batch 1 (export): shift-and-multiply on channel planes, every slice with unit strides.

        In NHWC the per-pixel kernel would broadcast over the innermost axis, which
        XNNPACK runs as thousands of short rows; on planes it broadcasts over an
        outer axis and every MUL is a few long contiguous rows (int8 ~1.3x faster).

        For stride s > 1 one transpose also splits the padded input into its s x s
        phases (rows and columns by their index mod s), so offset (i, j) reads
        phase (i % s, j % s) at a unit-stride window starting at (i // s, j // s).
        XNNPACK takes STRIDED_SLICE only with unit strides: a strided slice would
        run on TFLite's reference kernels and split the graph around it.

        Large outputs are computed in horizontal strips (``PLANAR_STRIP_VALUES``), concatenated at the end.
        """
        k, s = self.kernel_size, self.stride
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        xp = self._padded(x, h, w, multiple=s)
        hq, wq = xp.shape[1] // s, xp.shape[2] // s
        # [1, Hq*s, Wq*s, C] is, in memory, [Hq, s(row phase), Wq, s(column phase) * C]; one transpose
        # makes it [s(column phase) * C, s(row phase), Hq, Wq]: channel planes grouped by phase.
        planes = ops.transpose(ops.reshape(xp, (hq, s, wq, s * c)), (3, 1, 0, 2))
        kern = ops.transpose(kernel, (0, 3, 1, 2))  # [1, K*K*G, Ho, Wo], plane n*G + g
        if self.group_layout == "contiguous":
            a, b = g, c // g  # channel a*(C/G) + b, group a
            kern = ops.reshape(kern, (k * k * g, 1, ho, wo))
            piece = lambda n, r0, r1: kern[n * g : (n + 1) * g, :, r0:r1]  # [G, 1, rows, Wo]  # noqa: E731
        else:
            a, b = c // g, g  # channel a*G + b, group b
            kern = ops.reshape(kern, (k * k, g, ho, wo))
            piece = lambda n, r0, r1: kern[n : n + 1, :, r0:r1]  # [1, G, rows, Wo]  # noqa: E731
        planes = ops.reshape(planes, (s * a, b, s * hq, wq))  # [column phase * A + a, b, row phase * Hq + hq, wq]
        def term(i, j, r0, r1):  # [A, B, rows, Wo]
            row = (i % s) * hq + i // s + r0  # first row of the window in phase i % s
            col_phase, col = j % s, j // s
            patch = planes[col_phase * a : (col_phase + 1) * a, :, row : row + r1 - r0, col : col + wo]
            return patch * piece(i * k + j, r0, r1)

        outs = [sum_taps(term(i, j, r0, r1) for i in range(k) for j in range(k))
                for r0, r1 in strip_bounds(ho, self._strips(ho, wo, c))]  # output rows r0 <= r < r1
        out = concatenate_within_xnnpack(outs, axis=2)
        return ops.transpose(ops.reshape(out, (1, c, ho, wo)), (0, 2, 3, 1))

    def _aggregate_group_minor(self, x, kernel, h, w, c, g):
        """Batch 1, G >= ``GROUP_MINOR_MIN_GROUPS``: shift-and-multiply on [C/G, H, W, G] planes.

        With the group index innermost, one group's kernel value sits beside the same pixel's other groups,
        so the kernel piece [1, rows, Wo, G] broadcasts over the outer C/G axis (every MUL a few long rows),
        and a window copies rows of Wo*G values, G times longer than a channel plane's rows of Wo.
        Large outputs are computed in horizontal strips (``PLANAR_STRIP_VALUES``), as on channel planes.
        """
        k, s = self.kernel_size, self.stride
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        window = self._group_minor_windows(x, h, w, c, g)
        kern = ops.transpose(ops.reshape(kernel, (ho, wo, k * k, g)), (2, 0, 1, 3))  # [K*K, Ho, Wo, G]
        def term(i, j, r0, r1):  # [T, rows, Wo, G]
            n = i * k + j
            return window(i, j, r0, r1) * kern[n : n + 1, r0:r1]

        outs = [sum_taps(term(i, j, r0, r1) for i in range(k) for j in range(k))
                for r0, r1 in strip_bounds(ho, self._strips(ho, wo, c))]  # output rows r0 <= r < r1
        out = concatenate_within_xnnpack(outs, axis=1)
        # Back to channel g*T + t ([Ho, Wo, G, T]) or t*G + g ([Ho, Wo, T, G]).
        out = ops.transpose(out, (1, 2, 3, 0) if self.group_layout == "contiguous" else (1, 2, 0, 3))
        return ops.reshape(out, (1, ho, wo, c))

    def _group_minor_windows(self, x, h, w, c, g):
        """(i, j, r0, r1) -> the [T, r1 - r0, Wo, G] window of offset (i, j) for output rows r0 <= r < r1.

        At stride s > 1, two transposes split the padded input into its s x s phases as well (rows and columns
        by their index mod s, as in ``_aggregate_planar``), so that offset (i, j) reads phase (i % s, j % s) at
        a unit-stride window starting at (i // s, j // s); every tensor stays 4-D.
        """
        t, s = c // g, self.stride
        wo = ceil_div(w, s)
        xp = self._padded(x, h, w, multiple=s)
        hq, wq = xp.shape[1] // s, xp.shape[2] // s
        contiguous = self.group_layout == "contiguous"  # channel g*T + t, else t*G + g
        if s == 1:
            if contiguous:
                planes = ops.transpose(ops.reshape(xp, (hq, wq, g, t)), (3, 0, 1, 2))
            else:
                planes = ops.transpose(ops.reshape(xp, (hq, wq, t, g)), (2, 0, 1, 3))
            return lambda i, j, r0, r1: planes[:, i + r0 : i + r1, j : j + wo, :]
        if contiguous:
            # [Hq, s(row phase), Wq * s(column phase) * G, T] -> [T, row phase, Hq, Wq * column phase * G]
            # -> [T * row phase * Hq, column phase, Wq, G], read as [T, row phase * Hq, column phase * Wq, G].
            y = ops.transpose(ops.reshape(xp, (hq, s, wq * s * g, t)), (3, 1, 0, 2))
            planes = ops.reshape(ops.transpose(ops.reshape(y, (t * s * hq, wq, s, g)), (0, 2, 1, 3)),
                                 (t, s * hq, s * wq, g))
            def window(i, j, r0, r1):
                row, col = (i % s) * hq + i // s, (j % s) * wq + j // s
                return planes[:, row + r0 : row + r1, col : col + wo, :]
            return window
        # [row phase, Hq, Wq, column phase * T * G] -> [row phase, column phase * T, Hq * Wq, G], read as
        # [phase * T, Hq, Wq, G].
        y = self._row_phases(xp, c)
        planes = ops.reshape(ops.transpose(ops.reshape(y, (s, hq * wq, s * t, g)), (0, 2, 1, 3)),
                             (s * s * t, hq, wq, g))
        def window(i, j, r0, r1):
            p = (i % s) * s + j % s
            return planes[p * t : (p + 1) * t, i // s + r0 : i // s + r1, j // s : j // s + wo, :]
        return window

    @staticmethod
    def _swap_channel_blocks(x, a, b):
        """Channel ``i*b + j`` moves to ``j*a + i``: the channel axis read as an [a, b] matrix, transposed.

        ``_swap_channel_blocks(_swap_channel_blocks(x, a, b), b, a)`` is ``x``.  The reshape folds the
        batch into H so that the tensors stay 4-D (the mobile GPU takes at most 4-D).
        """
        # [B, H, W, a*b] viewed as [B*H, W, a, b] -> transpose last two -> [B, H, W, b*a]
        h, w = x.shape[1], x.shape[2]
        y = ops.reshape(x, (-1, w, a, b))
        y = ops.transpose(y, (0, 1, 3, 2))
        return ops.reshape(y, (-1, h, w, a * b))

    def _padded(self, x, h, w, multiple=1):
        """Zero-pads for the window; with ``multiple``, extra zeros after (never read) round H and W up to it."""
        k, s = self.kernel_size, self.stride
        ph = window_padding(h, k, s, self.padding)
        pw = window_padding(w, k, s, self.padding)
        ph = (ph[0], ph[1] + (-(h + sum(ph))) % multiple)
        pw = (pw[0], pw[1] + (-(w + sum(pw))) % multiple)
        if ph == (0, 0) and pw == (0, 0):
            return x
        return ops.pad(x, ((0, 0), ph, pw, (0, 0)))

    def _aggregate_shift(self, x, kernel, h, w, c, g):
        """Sum over the K*K offsets of shifted input times kernel slice, channels-last (groups contiguous).

        Any batch (training), and batch 1 on small maps (see ``CHANNELS_LAST_MAX_PIXELS``).  At batch 1
        with stride s > 1 the padded input is first split into its s x s phases, as in
        ``_aggregate_planar``, so that every slice has unit strides and stays inside XNNPACK.
        """
        k, s = self.kernel_size, self.stride
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        window = self._phase_windows(x, h, w, c) if s > 1 else self._strided_windows(x, h, w)
        grouped = 1 < g < c
        if grouped:
            kernel = ops.reshape(kernel, (-1, ho * wo, k * k * g, 1))  # [B, HoWo, K*K*G, 1]

        def term(i, j):
            n = i * k + j
            patch = window(i, j)  # [B, Ho, Wo, C]
            if grouped:
                patch = ops.reshape(patch, (-1, ho * wo, g, c // g))
                piece = kernel[:, :, n * g : (n + 1) * g, :]  # [B, HoWo, G, 1]
            else:
                piece = kernel[:, :, :, n * g : (n + 1) * g]  # [B, Ho, Wo, G], G in {1, C}
            return patch * piece

        out = sum_taps(term(i, j) for i in range(k) for j in range(k))
        return ops.reshape(out, (-1, ho, wo, c)) if grouped else out

    def _strided_windows(self, x, h, w):
        """(i, j) -> the input under offset (i, j) of every window, [B, Ho, Wo, C], by strided slices."""
        s = self.stride
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        xp = self._padded(x, h, w)
        # Output row r reads padded row i + r*s; the last is i + (ho-1)*s, so the end bound is that plus 1:
        # exactly ho rows, and never past the padded input.
        return lambda i, j: xp[:, i : i + (ho - 1) * s + 1 : s, j : j + (wo - 1) * s + 1 : s, :]

    def _phase_windows(self, x, h, w, c):
        """The same by unit-stride slices: offset (i, j) reads phase (i % s, j % s) from (i // s, j // s).

        XNNPACK takes STRIDED_SLICE only with unit strides.  At batch 1 one transpose groups the phases; at any
        other batch (or an unknown one: a model converted with a dynamic batch) each row offset's phase rows
        are cut once from a 4-D view and its K windows sliced from them.
        """
        s = self.stride
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        xp = self._padded(x, h, w, multiple=s)
        hq, wq = xp.shape[1] // s, xp.shape[2] // s
        if x.shape[0] == 1:
            phases = self._row_phases(xp, c)
            return lambda i, j: phases[i % s : i % s + 1, i // s : i // s + ho, j // s : j // s + wo,
                                       (j % s) * c : (j % s + 1) * c]
        # [B, Hq*s, Wq*s, C] is [B, Hq, s(row phase), Wq * s(column phase) * C].
        rows_view = ops.reshape(xp, (-1, hq, s, wq * s * c))
        rows = {}

        def window(i, j):
            if i not in rows:  # rows i // s ... of phase i % s: [B, Ho, Wq, s * C]
                rows[i] = ops.reshape(rows_view[:, i // s : i // s + ho, i % s : i % s + 1, :], (-1, ho, wq, s * c))
            return rows[i][:, :, j // s : j // s + wo, (j % s) * c : (j % s + 1) * c]

        return window

    def _row_phases(self, xp, c):
        """A padded batch-1 input [1, Hq*s, Wq*s, C] as [s(row phase), Hq, Wq, s(column phase) * C].

        In memory it is [Hq, s(row phase), Wq, s(column phase) * C]; one transpose puts the row phase outermost
        and leaves the column phase beside the channels.
        """
        s = self.stride
        hq, wq = xp.shape[1] // s, xp.shape[2] // s
        return ops.transpose(ops.reshape(xp, (hq, s, wq, s * c)), (1, 0, 2, 3))

    def _aggregate_depthwise(self, x, kernel, h, w, c, g):
        """The one-hot gather, in as few DEPTHWISE_CONV_2D ops as keep each one's output depth (channels x K*K)
        within ``BUILTIN_DEPTHWISE_MAX_DEPTH``: TFLite's builtin kernel never returns on a deeper one."""
        k, s = self.kernel_size, self.stride
        taps = k * k  # window positions
        ho, wo = ceil_div(h, s), ceil_div(w, s)
        xp = self._padded(x, h, w)
        kern = ops.reshape(kernel, (-1, ho * wo, taps, g))
        kern = ops.transpose(kern, (0, 1, 3, 2))  # [B, HoWo, G, K*K]
        periods = ops.reshape(kern, (-1, ho * wo, 1, g * taps))  # broadcast over whole periods of G channels

        outs = []
        for c0, c1 in depthwise_chunks(c, g, taps):
            m = c1 - c0
            part = xp if (c0, c1) == (0, c) else xp[..., c0:c1]
            onehot = ops.convert_to_tensor(self._onehot[:, :, :m])
            patches = ops.depthwise_conv(part, onehot, strides=s, padding="valid")  # [B, Ho, Wo, m*K*K]
            if m >= g:  # whole periods (channel t*G + g): [B, HoWo, m/G, G*K*K] times the kernel, broadcast
                prod = ops.reshape(ops.reshape(patches, (-1, ho * wo, m // g, g * taps)) * periods,
                                   (-1, ho * wo, m, taps))
            else:  # part of one period (depthwise_chunks): the kernel's slice of those groups
                prod = ops.reshape(patches, (-1, ho * wo, m, taps)) * kern[:, :, c0 % g : c0 % g + m, :]
            outs.append(ops.sum(prod, axis=3))  # [B, HoWo, m]
        out = concatenate_within_xnnpack(outs, axis=2)
        return ops.reshape(out, (-1, ho, wo, c))

    def _aggregate_separable(self, x, kernel, h, w, c, g):
        """The one-hot gather in two DEPTHWISE_CONV_2D ops (rows, then columns) and one MUL and one SUM, from a
        group-major kernel [B, Ho, Wo, G*K*K] (channel g*K*K + n): the GPU target's few dispatches.

        At stride s > 1 the rows are gathered at stride 1 and the columns at stride s, which subsamples both
        (an (s, 1) stride is one TFLite op, but TF's CPU kernel refuses unequal strides without oneDNN).
        """
        k, s = self.kernel_size, self.stride
        ho, wo, taps, t = ceil_div(h, s), ceil_div(w, s), k * k, c // g
        if s == 1:  # both paddings put (K-1)/2 zeros before an odd K: SAME, no PAD op
            rows = ops.depthwise_conv(x, self._onehot_rows, padding="same")
            patches = ops.depthwise_conv(rows, self._onehot_cols, padding="same")
        else:
            rows = ops.depthwise_conv(self._padded(x, h, w), self._onehot_rows, padding="valid")
            patches = ops.depthwise_conv(rows, self._onehot_cols, strides=s, padding="valid")
        # [B, Ho, Wo, C*K*K], channel c*K*K + n with c = t*G + g (interleaved) or g*T + t (contiguous)
        if self.group_layout == "contiguous":
            shape, kshape = (-1, g, t, taps), (-1, g, 1, taps)
        else:
            shape, kshape = (-1, t, g, taps), (-1, 1, g, taps)
        out = ops.sum(ops.reshape(patches, shape) * ops.reshape(kernel, kshape), axis=3)
        return ops.reshape(out, (-1, ho, wo, c))

    def compute_output_shape(self, input_shape):
        return output_shape(input_shape, self.stride)

    def get_config(self):
        config = super().get_config()
        config.update(
            channel=self._channel_arg,
            group_number=self.group_number,
            kernel_size=self.kernel_size,
            stride=self.stride,
            reduction_ratio=self.reduction_ratio,
            group_channels=self.group_channels,
            strategy=self.strategy,
            group_layout=self.group_layout,
            padding=self.padding,
            bn_epsilon=self.bn_epsilon,
            reduce_bias=self.reduce_bias,
            batch_one_layout=self.batch_one_layout,
            strip_values=self.strip_values,
        )
        return config
