"""The Involution layer against independent numpy implementations, the reference formulation and PyTorch weights."""

import keras
import numpy as np
import pytest
from conftest import randomize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy_involution import involution_nhwc, involution_official, involution_seed

from involution import Involution
from involution.reference import InvolutionReference, builtin_from_reference
from involution.torch_weights import from_torch_state


def _weights(layer):
    """Kernel-generator weights of a built layer as the numpy reference wants them."""
    w1, b1 = [w.numpy() for w in layer.reduce.weights]
    gamma, beta, mean, var = [w.numpy() for w in layer.bn.weights]
    w2, b2 = [w.numpy() for w in layer.span.weights]
    return w1[0, 0], b1, gamma, beta, mean, var, w2[0, 0], b2


@st.composite
def layer_cases(draw):
    c = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    return dict(
        c=c,
        g=draw(st.sampled_from(divisors)),
        k=draw(st.sampled_from([1, 3, 5, 7])),
        s=draw(st.sampled_from([1, 2, 3])),
        h=draw(st.integers(3, 9)),
        w=draw(st.integers(3, 9)),
        n=draw(st.integers(1, 3)),
        r=draw(st.sampled_from([r for r in (1, 2, 4) if r <= c])),
        strategy=draw(st.sampled_from(["shift", "depthwise", "separable"])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_cases())
def test_matches_numpy_seed_formulation(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(np.float32)
    layer = Involution(channel=case["c"], group_number=case["g"], kernel_size=case["k"], stride=case["s"],
                       reduction_ratio=case["r"], strategy=case["strategy"])
    layer.build(x.shape)
    randomize(layer, case["seed"])
    got = np.asarray(layer(x, training=False))
    want = involution_seed(x.astype(np.float64), case["k"], case["s"], case["g"], *_weights(layer))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@st.composite
def export_cases(draw):
    c = draw(st.sampled_from([2, 4, 6, 8, 12]))
    return dict(
        c=c,
        g=draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0])),
        k=draw(st.sampled_from([1, 3, 5, 7])),
        s=draw(st.sampled_from([1, 2, 3])),
        h=draw(st.integers(3, 11)),
        w=draw(st.integers(3, 11)),
        padding=draw(st.sampled_from(["same", "symmetric"])),
        layout=draw(st.sampled_from(["interleaved", "contiguous"])),
        path=draw(st.sampled_from(["planes", "planes in strips", "channels-last", "groups innermost",
                                   "groups innermost in strips", "separable"])),
        strip_values=draw(st.integers(1, 400)),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(export_cases())
def test_batch_one_export_path_matches_numpy(case):
    """Batch 1 is the exported graph ([C/G, H, W, G] planes with 4+ groups, channel planes on large
    maps, each in row strips on the largest, channels-last on small ones, stride phases, the pool as a depthwise
    conv, and the GPU target's separable gather): every path against the independent numpy formulas for strides 1-3, both paddings, both group layouts,
    odd and even sizes."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((1, case["h"], case["w"], case["c"])).astype(np.float32)
    separable = case["path"] == "separable"  # the GPU target's form
    layout = "auto" if separable else case["path"].replace(" in strips", "").replace("groups innermost",
                                                                                      "groups-innermost")
    layer = Involution(channel=case["c"], group_number=case["g"], kernel_size=case["k"], stride=case["s"],
                       reduction_ratio=2 if case["c"] >= 2 else 1, group_layout=case["layout"],
                       padding=case["padding"], batch_one_layout=layout,
                       strategy="separable" if separable else "shift",
                       # from one row per strip to a single strip
                       strip_values=case["strip_values"] if case["path"].endswith("in strips") else None)
    layer.build(x.shape)
    randomize(layer, case["seed"])
    assert separable or layer.batch_one_path(x.shape) == layout  # every forced layout runs at every stride
    got = np.asarray(layer(x, training=False))
    want = involution_nhwc(x.astype(np.float64), case["k"], case["s"], case["g"], *_weights(layer),
                           padding=case["padding"], layout=case["layout"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("h,w,c,s,passes", [(8, 6, 8, 2, 1), (6, 4, 255, 2, 1), (6, 4, 256, 2, 2),
                                             (4, 6, 512, 2, 2), (6, 9, 120, 3, 2), (6, 6, 1536, 2, 2),
                                             (7, 6, 8, 2, 1), (6, 5, 256, 2, 2), (5, 7, 512, 2, 2)])
def test_stride_pool_keeps_each_weight_below_the_dynamic_range_threshold(h, w, c, s, passes):
    """The stride's average pool is one (s, s) depthwise conv while its weights stay under
    DYNAMIC_RANGE_MIN_WEIGHTS, else an s-tap pass over rows, then columns, on odd sizes too (stride 2); each is
    Keras's SAME average pool, and the whole layer stays the numpy formulation, at batch 1 (the export) and at
    any batch."""
    import tensorflow as tf

    from involution.layer import DYNAMIC_RANGE_MIN_WEIGHTS

    layer = Involution(channel=c, group_channels=c // 4 if c % 4 == 0 else c, kernel_size=3, stride=s, reduction_ratio=4)
    x = np.random.default_rng(c).standard_normal((2, h, w, c)).astype(np.float32)
    layer.build(x.shape)
    randomize(layer, c)
    want_pool = np.asarray(keras.layers.AveragePooling2D(s, padding="same")(x))
    np.testing.assert_allclose(np.asarray(layer._pool_as_depthwise(x)), want_pool, rtol=1e-6, atol=1e-6)
    graph = tf.function(layer._pool_as_depthwise).get_concrete_function(tf.TensorSpec((1, h, w, c))).graph
    convs = [op for op in graph.get_operations() if op.type == "DepthwiseConv2dNative"]
    assert len(convs) == passes and not [op for op in graph.get_operations() if op.type == "AvgPool"]
    assert all(np.prod(op.inputs[1].shape) < DYNAMIC_RANGE_MIN_WEIGHTS for op in convs)
    # At an unknown batch the two passes are MEANs (a dilated conv would stay SPACE_TO_BATCH_ND-split there).
    unknown = tf.function(layer._pool_as_depthwise, input_signature=[tf.TensorSpec((None, h, w, c))])
    ops_unknown = [op.type for op in unknown.get_concrete_function().graph.get_operations()]
    assert ops_unknown.count("Mean") == (2 if passes == 2 else 0) and "AvgPool" not in ops_unknown
    np.testing.assert_allclose(np.asarray(unknown(x)), want_pool, rtol=1e-6, atol=1e-6)
    for batch in (x[:1], x):
        want = involution_nhwc(batch.astype(np.float64), 3, s, layer.groups, *_weights(layer), layout="interleaved")
        np.testing.assert_allclose(np.asarray(layer(batch, training=False)), want, rtol=1e-5,
                                   atol=1e-5 * max(1.0, np.abs(want).max()))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_cases())
def test_batch_one_export_path_matches_batched_path(case):
    """Batch 1 computes on channel planes (the export graph); it must compute what training does."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((3, case["h"], case["w"], case["c"])).astype(np.float32)
    layer = Involution(channel=case["c"], group_number=case["g"], kernel_size=case["k"], stride=case["s"],
                       reduction_ratio=case["r"], group_layout="contiguous")
    layer.build(x.shape)
    randomize(layer, case["seed"])
    batched = np.asarray(layer(x, training=False))
    single = np.concatenate([np.asarray(layer(x[i : i + 1], training=False)) for i in range(3)])
    np.testing.assert_allclose(single, batched, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_reference_weights_transfer_gives_equal_outputs(groups, stride):
    x = np.random.default_rng(groups).standard_normal((2, 10, 10, 8)).astype(np.float32)
    inp = keras.Input((10, 10, 8))
    ref_layer = InvolutionReference(channel=8, group_number=groups, kernel_size=3, stride=stride, reduction_ratio=2)
    ref_model = randomize(keras.Model(inp, ref_layer(inp)), stride)
    for strategy in ("shift", "depthwise", "separable"):
        builtin = builtin_from_reference(ref_layer, (None, 10, 10, 8), strategy)
        np.testing.assert_allclose(np.asarray(builtin(x)), ref_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups,stride,k", [(1, 1, 7), (2, 1, 3), (4, 2, 7), (8, 2, 3)])
def test_official_pytorch_weights(groups, stride, k):
    c, mid = 16, 4
    rng = np.random.default_rng(k + groups)
    state = {
        "layer1.0.conv2.conv1.conv.weight": rng.standard_normal((mid, c, 1, 1)) * 0.3,
        "layer1.0.conv2.conv1.bn.weight": rng.uniform(0.5, 1.5, mid),
        "layer1.0.conv2.conv1.bn.bias": rng.standard_normal(mid) * 0.2,
        "layer1.0.conv2.conv1.bn.running_mean": rng.standard_normal(mid) * 0.2,
        "layer1.0.conv2.conv1.bn.running_var": rng.uniform(0.5, 1.5, mid),
        "layer1.0.conv2.conv2.conv.weight": rng.standard_normal((groups * k * k, mid, 1, 1)) * 0.3,
        "layer1.0.conv2.conv2.conv.bias": rng.standard_normal(groups * k * k) * 0.1,
    }
    x = rng.standard_normal((2, 8, 8, c)).astype(np.float32)
    layer = from_torch_state(state, kernel_size=k, stride=stride, input_shape=x.shape)
    want = involution_official(x.astype(np.float64), k, stride, groups,
                               *[state[f"layer1.0.conv2.{n}"] for n in (
                                   "conv1.conv.weight", "conv1.bn.weight", "conv1.bn.bias", "conv1.bn.running_mean",
                                   "conv1.bn.running_var", "conv2.conv.weight", "conv2.conv.bias")])
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), want, rtol=1e-5, atol=1e-5)


def test_torch_state_missing_key_is_named():
    with pytest.raises(ValueError, match="conv2.conv.bias"):
        from_torch_state({"conv1.conv.weight": np.zeros((1, 4, 1, 1))}, kernel_size=3)


def test_seed_notebook_call_and_group_size_form():
    seed = Involution(channel=3, group_number=1, kernel_size=3, stride=1, reduction_ratio=2)
    assert seed.groups == 1
    official = Involution(channel=64)
    assert (official.groups, official.kernel_size, official.reduction_ratio) == (4, 7, 4)
    assert Involution(channel=32, group_channels=8).groups == 4


@pytest.mark.parametrize("kwargs,argument", [
    (dict(channel=8, group_number=1, kernel_size=4), "kernel_size"),
    (dict(channel=8, group_number=3, kernel_size=3), "group_number"),
    (dict(channel=8, group_channels=3, kernel_size=3), "group_channels"),
    (dict(channel=4, group_number=1, kernel_size=3, reduction_ratio=8), "reduction_ratio"),
    (dict(channel=8, group_number=1, kernel_size=3, strategy="gather"), "strategy"),
    (dict(channel=8, group_number=1, kernel_size=3, stride=0), "stride"),
    (dict(channel=8, group_number=1, kernel_size=3, group_layout="x"), "group_layout"),
    (dict(channel=8, group_number=1, kernel_size=3, bn_epsilon=0.0), "bn_epsilon"),
    (dict(channel=8, group_number=1, kernel_size=3, bn_epsilon="1e-5"), "bn_epsilon"),
])
def test_bad_arguments_name_the_argument_and_allowed_values(kwargs, argument):
    with pytest.raises(ValueError, match=argument) as info:
        Involution(**kwargs)
    if argument == "strategy":
        assert "'shift'" in str(info.value) and "'depthwise'" in str(info.value)
    if argument == "group_number":
        assert "[1, 2, 4, 8]" in str(info.value)


def test_channel_none_takes_the_inputs_channels_and_checks_them_after():
    """Involution(channel=None) builds for its input's channels (groups from group_channels), computes what the
    explicit layer computes with the same weights, and then refuses an input of other channels (input_spec)."""
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 32)).astype(np.float32)
    implicit = Involution(group_channels=8, kernel_size=3, reduction_ratio=4)
    explicit = Involution(channel=32, group_channels=8, kernel_size=3, reduction_ratio=4)
    want = explicit(x)
    got = implicit(x)
    assert implicit.channel == 32 and implicit.groups == 4
    implicit.set_weights(explicit.get_weights())
    np.testing.assert_allclose(implicit(x), want, rtol=1e-5, atol=1e-5)
    assert got.shape == want.shape
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 32"):
        implicit(np.zeros((1, 9, 9, 16), np.float32))
    with pytest.raises(ValueError, match="expected ndim=4"):
        implicit(np.zeros((9, 9, 32), np.float32))
    # The config is what was asked, before and after build: a copy builds for its own input too.
    assert implicit.get_config()["channel"] is None and explicit.get_config()["channel"] == 32
    assert Involution.from_config(implicit.get_config())(np.zeros((1, 9, 9, 16), np.float32)).shape == (1, 9, 9, 16)


@pytest.mark.parametrize("shape,stride,groups,want", [
    ((1, 56, 56, 64), 1, 4, "groups-innermost"),  # stride 1 with 4+ groups
    ((1, 56, 56, 128), 2, 8, "groups-innermost"), # stride 2 with 4+ groups
    ((1, 56, 56, 32), 1, 2, "planes"),            # few groups, a large map
    ((1, 56, 56, 64), 2, 2, "planes"),            # few groups, stride 2 on a large map
    ((1, 14, 14, 64), 2, 2, "channels-last"),     # few groups, a map of at most 196 output pixels
    ((2, 56, 56, 64), 1, 4, "channels-last"),     # any other batch
    ((None, 56, 56, 64), 1, 4, "channels-last"),  # a dynamic batch
])
def test_auto_batch_one_layout_follows_the_measured_thresholds(shape, stride, groups, want):
    layer = Involution(channel=shape[-1], group_number=groups, kernel_size=7, stride=stride)
    assert layer.batch_one_path(shape) == want
    forced = Involution(channel=shape[-1], group_number=groups, kernel_size=7, stride=stride,
                        batch_one_layout="channels-last")
    assert forced.batch_one_path(shape) == "channels-last"


def test_batch_one_layout_and_strips_are_checked_and_kept_in_the_config():
    with pytest.raises(ValueError, match="batch_one_layout must be one of"):
        Involution(8, batch_one_layout="rows")
    with pytest.raises(ValueError, match="strip_values must be a positive integer"):
        Involution(8, strip_values=0)
    layer = Involution(8, group_number=2, kernel_size=3, batch_one_layout="planes", strip_values=64)
    copy = Involution.from_config(layer.get_config())
    assert (copy.batch_one_layout, copy.strip_values) == ("planes", 64)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_save_and_load_round_trip(tmp_path, fmt):
    inp = keras.Input((9, 9, 8))
    out = Involution(channel=8, group_number=2, kernel_size=5, stride=2, reduction_ratio=2, strategy="depthwise",
                     group_layout="contiguous", padding="symmetric")(inp)
    model = randomize(keras.Model(inp, keras.layers.ReLU()(out)))
    path = tmp_path / f"m.{fmt}"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    layer = [x for x in loaded.layers if isinstance(x, Involution)][0]
    assert layer.get_config()["strategy"] == "depthwise" and layer.padding == "symmetric"
