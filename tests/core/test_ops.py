"""One small graph per channel rule: the analysis groups what it must, and slim == sparse."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import check_slim_equals_sparse, freeze, run_graph
from tf1prune.apply import slim
from tf1prune.choose import spec as spec_mod
from tf1prune.core.rules import Role

from graphs import SPECS, H, analyse, build, conv, dense, exact, group_of, head, var  # noqa: F401


# --- producers and consumers -------------------------------------------------
def test_conv_bias_relu_chain():
    gd = build(lambda x: head(tf.nn.relu(conv(tf.nn.relu(conv(x, 8, "c1", 3)), 6, "c2", 3))))
    a = exact(gd)
    assert group_of(a, "c1").prunable and group_of(a, "c2").prunable
    assert group_of(a, "c1").consumers == ["c2"]
    assert not group_of(a, "fc").prunable and "graph output 'logits'" in group_of(a, "fc").reason


def test_conv_nchw_binds_axis_1():
    def fn(x):
        y = tf.transpose(x, [0, 3, 1, 2])
        y = tf.nn.relu(conv(y, 8, "c1", 3, fmt="NCHW"))
        y = conv(y, 6, "c2", 1, fmt="NCHW")
        head(tf.transpose(y, [0, 2, 3, 1]))
    gd = build(fn)
    a = analyse(gd)
    assert group_of(a, "c1").prunable and group_of(a, "c2").prunable
    assert a.bindings["c1_b"][0].role is Role.BIAS
    keep = spec_mod.make_spec(a, ratio=0.5)
    slim_gd = slim.apply_slim(a.plan(keep))
    shapes = {n.name: tf.make_ndarray(n.attr["value"].tensor).shape for n in slim_gd.node if n.op == "Const"}
    assert shapes["c1_w"] == (3, 3, 3, 4) and shapes["c2_w"] == (1, 1, 4, 3)
    try:
        exact(gd)
    except tf.errors.OpError as e:  # some CPU builds lack NCHW kernels
        pytest.skip("NCHW conv not runnable on this CPU build: %s" % str(e).splitlines()[0])


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_ties_input_and_output(multiplier):
    def fn(x):
        y = tf.nn.relu6(conv(x, 6, "expand"))
        y = tf.nn.depthwise_conv2d(y, var([3, 3, 6, multiplier], "dw_w"), [1, 1, 1, 1], "SAME", name="dw")
        head(conv(tf.nn.relu6(y), 4, "project"))
    a = exact(build(fn))
    g = group_of(a, "expand")
    assert g.prunable and g.channels == 6 and "project" in g.consumers
    assert [b.type for b in a.blocks] == ["inverted_residual"]
    assert a.blocks[0].nodes == ["expand", "dw", "project"]


@pytest.mark.parametrize("dynamic", [False, True])
def test_flatten_dense_expands_rows(dynamic):
    def fn(x):
        y = tf.nn.max_pool2d(tf.nn.relu(conv(x, 4, "c1", 3)), 2, 2, "VALID")
        flat = tf.reshape(y, [tf.shape(y)[0], -1] if dynamic else [-1, 4 * 4 * 4])
        tf.identity(dense(tf.nn.relu(dense(flat, 7, "d1", 64)), 3, "d2"), name="logits")
    a = exact(build(fn))
    assert group_of(a, "c1").prunable and group_of(a, "d1").prunable
    assert len(a.bindings["d1_w"][0].elems) == 64


def test_flatten_nchw_repeats_channels():
    from tf1prune.core.rules import reshape_channel_map as _reshape_channel
    assert _reshape_channel([1, 4, 3, 3], [1, 36], 1) == (1, 1, 9)     # NCHW flatten: each channel 9 times
    assert _reshape_channel([1, 3, 3, 4], [1, 36], 3) == (1, 9, 1)     # NHWC flatten: tiled 9 times
    assert _reshape_channel([1, 4], [1, 1, 1, 4], 1) == (3, 1, 1)      # SE unsqueeze
    assert _reshape_channel([1, 8], [1, 2, 4], 1) is None               # channel split
    assert _reshape_channel([2, 3, 3, 4], [72], 3) is None              # merged with batch


# --- per-channel ops ------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False])
def test_batch_norm_params_are_sliced(fused):
    def fn(x):
        y = tf.nn.conv2d(x, var([3, 3, 3, 8], "c1_w"), [1, 1, 1, 1], "SAME", name="c1")
        gamma, beta = var([8], "gamma"), var([8], "beta")
        mean, variance = var([8], "mean"), tf.abs(var([8], "variance")) + 0.5
        if fused:
            y = tf.nn.fused_batch_norm(y, gamma, beta, mean, variance, is_training=False)[0]
        else:
            y = tf.nn.batch_normalization(y, mean, variance, beta, gamma, 1e-3)
        head(conv(tf.nn.relu(y), 4, "c2"))
    a = exact(build(fn))
    assert group_of(a, "c1").prunable
    assert a.bindings["gamma"][0].role is (Role.BN_SCALE if fused else Role.STAT)
    assert 0 in a.bindings["mean"]


@pytest.mark.parametrize("act", ["elu", "selu", "sigmoid", "tanh", "softplus", "leaky", "swish", "hswish"])
def test_activations_pass_channels(act):
    fns = {"elu": tf.nn.elu, "selu": tf.nn.selu, "sigmoid": tf.sigmoid, "tanh": tf.tanh,
           "softplus": tf.nn.softplus, "leaky": tf.nn.leaky_relu, "swish": lambda v: v * tf.sigmoid(v),
           "hswish": lambda v: v * tf.nn.relu6(v + 3.0) / 6.0}

    def fn(x):
        y = fns[act](conv(x, 6, "c1", 3) * 1.5 - 0.25)
        y = y * tf.constant(np.linspace(0.5, 1.5, 6), tf.float32)   # per-channel constant
        head(conv(y, 4, "c2"))
    a = exact(build(fn))
    assert group_of(a, "c1").prunable


# --- coupling ------------------------------------------------------------------
def test_residual_add_couples_groups():
    def fn(x):
        stem = tf.nn.relu(conv(x, 6, "stem", 3))
        y = tf.nn.relu(tf.add(stem, conv(tf.nn.relu(conv(stem, 4, "a", 3)), 6, "b", 3), name="add"))
        head(tf.maximum(y, conv(y, 6, "c")))
    a = exact(build(fn))
    g = group_of(a, "stem")
    assert set(g.nodes) == {"stem", "b", "c"} and g.prunable
    assert group_of(a, "a").prunable and group_of(a, "a") is not g


def test_concat_offsets_and_add_through_concat():
    def fn(x):
        p, q = tf.nn.relu(conv(x, 4, "p", 3)), tf.nn.relu(conv(x, 6, "q", 3))
        cat = tf.concat([p, q], axis=3)
        y = cat + conv(x, 10, "r")        # an add fed through a concat
        head(conv(y, 5, "s"))
    a = exact(build(fn))
    assert set(group_of(a, "p").nodes) == {"p", "q", "r"}
    assert group_of(a, "p").channels == 10


def test_concat_alone_keeps_branches_independent():
    def fn(x):
        cat = tf.concat([tf.nn.relu(conv(x, 4, "p", 3)), tf.nn.relu(conv(x, 6, "q", 3)), x], axis=-1)
        head(conv(cat, 5, "s"))
    a = exact(build(fn))
    assert group_of(a, "p") is not group_of(a, "q") and group_of(a, "p").prunable


@pytest.mark.parametrize("sizes", [2, [2, 6]])
def test_split_on_channels(sizes):
    def fn(x):
        parts = tf.split(tf.nn.relu(conv(x, 8, "c1", 3)), sizes, axis=3)
        y = tf.concat([conv(parts[0], 3, "l"), conv(parts[1], 3, "r")], axis=3)
        head(y)
    a = exact(build(fn))
    assert group_of(a, "c1").prunable


def test_squeeze_excitation_with_packed_shape():
    def fn(x):
        y = tf.nn.relu6(conv(x, 8, "c1", 3))
        s = tf.reduce_mean(y, [1, 2], name="pool")
        s = tf.reshape(s, tf.stack([tf.shape(s)[0], 1, 1, 8]))
        s = tf.sigmoid(conv(tf.nn.relu(conv(s, 2, "reduce")), 8, "expand"))
        head(conv(tf.multiply(y, s, name="gate"), 4, "c2"))
    a = exact(build(fn))
    assert set(group_of(a, "c1").nodes) == {"c1", "expand"}
    se = [b for b in a.blocks if b.type == "squeeze_excitation"]
    assert se and se[0].nodes == ["pool", "reduce", "expand", "gate"]
    assert se[0].group == group_of(a, "reduce").id


def test_pad_pool_transpose_and_keepdims_mean():
    def fn(x):
        y = tf.pad(tf.nn.relu(conv(x, 6, "c1", 3)), [[0, 0], [1, 1], [1, 1], [0, 0]])
        y = tf.nn.avg_pool2d(tf.nn.max_pool2d(y, 2, 1, "SAME"), 2, 2, "VALID")
        m = tf.reduce_mean(y, [1, 2], keepdims=True)
        head(tf.transpose(tf.transpose(m, [0, 3, 1, 2]), [0, 2, 3, 1]) * y)
    a = exact(build(fn))
    assert group_of(a, "c1").prunable


def test_v1_cond_switch_merge():
    graph = tf.Graph()
    with graph.as_default():
        tf.disable_control_flow_v2()
        try:
            x = tf.placeholder(tf.float32, (None, H, H, 3), name="x")
            flag = tf.placeholder_with_default(False, [], name="flag")
            y = tf.nn.relu(conv(x, 6, "c1", 3))
            y = tf.cond(flag, lambda: y * 2.0, lambda: y - 1.0)
            head(conv(y, 4, "c2"))
            assert any(op.type == "Merge" for op in graph.get_operations())
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                gd = freeze(sess, ["logits"])
        finally:
            tf.enable_control_flow_v2()
    assert group_of(exact(gd), "c1").prunable


# --- what must stay unpruned ----------------------------------------------------
@pytest.mark.parametrize("op_name,fn", [
    ("Softmax", lambda y: tf.nn.softmax(y)),
    ("Cumsum", lambda y: tf.cumsum(y, axis=3)),
    ("Mean", lambda y: y * tf.reduce_mean(y, axis=3, keepdims=True)),
    ("Pad", lambda y: tf.pad(y, [[0, 0], [0, 0], [0, 0], [1, 1]])[..., 1:-1]),
])
def test_unknown_channel_use_is_unprunable_with_reason(op_name, fn):
    gd = build(lambda x: head(conv(fn(tf.nn.relu(conv(x, 6, "c1", 3))), 4, "c2")))
    g = group_of(analyse(gd), "c1")
    assert not g.prunable and op_name in g.reason
    assert group_of(analyse(gd), "c2").prunable


def test_excludes_fix_a_group():
    gd = build(lambda x: head(conv(tf.nn.relu(conv(x, 6, "c1", 3)), 4, "c2")))
    a = analyse(gd, excludes=["c1"])
    assert not group_of(a, "c1").prunable and "excluded node 'c1'" in group_of(a, "c1").reason
    with pytest.raises(tf1prune.Tf1PruneError, match="not in the graph"):
        analyse(gd, excludes=["nope"])


def test_random_noise_shape_is_rewritten():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        y = tf.nn.dropout(y, rate=0.5, noise_shape=[1, 1, 1, 6], seed=1)
        head(conv(y, 4, "c2"))
    gd = build(fn)
    a = analyse(gd)
    assert group_of(a, "c1").prunable
    keep = spec_mod.make_spec(a, ratio=0.5)
    slim_gd = slim.apply_slim(a.plan(keep))
    out = run_graph(slim_gd, {"x:0": np.ones((2, H, H, 3), np.float32)}, ["logits:0"])[0]
    assert out.shape == (2, 5)


def test_spec_for_another_graph_is_refused():
    a1 = analyse(build(lambda x: head(conv(x, 6, "c1", 3))))
    a2 = analyse(build(lambda x: head(conv(x, 7, "c1", 3))))
    spec = spec_mod.make_spec(a1, ratio=0.5)
    with pytest.raises(tf1prune.Tf1PruneError, match="another graph"):
        spec.keep_mask(a2)


def test_shared_shape_constant():
    """One shape constant for two reshapes: their channels are tied, so one rewrite fits both."""
    def fn(x):
        shape = tf.constant([-1, 1, 1, 6], name="shape")
        a = tf.reshape(tf.reduce_mean(tf.nn.relu(conv(x, 6, "a", 3)), [1, 2]), shape)
        b = tf.reshape(tf.reduce_max(tf.nn.relu(conv(x, 6, "b", 3)), [1, 2]), shape)
        head(conv(a, 4, "c1") + conv(b, 4, "c2"))
    a = exact(build(fn))
    assert group_of(a, "a") is group_of(a, "b") and group_of(a, "a").prunable


def test_shape_constant_read_as_data_is_not_rewritten():
    def fn(x):
        shape = tf.constant([1, 1, 1, 6], name="shape")
        y = tf.reshape(tf.reduce_mean(tf.nn.relu(conv(x, 6, "a", 3)), [1, 2]), shape)
        head(conv(y, 4, "c1") * tf.cast(tf.reduce_sum(shape), tf.float32))
    g = group_of(analyse(build(fn)), "a")
    assert not g.prunable and "shape constant 'shape' is also read by Sum" in g.reason


# --- more op rules: each one rule, exact and counted ------------------------------------------
def macs_of(a, node):
    return next(l for l in tf1prune.count_macs(a).layers if l.node == node).macs


def test_conv3d_and_3d_pools():
    def fn(x):
        y = tf.nn.conv3d(x, var([3, 3, 3, 3, 6], "c1_w"), [1] * 5, "SAME", name="c1")
        y = tf.nn.max_pool3d(tf.nn.relu(tf.nn.bias_add(y, var([6], "c1_b"))), 2, 2, "VALID")
        y = tf.nn.conv3d(y, var([1, 1, 1, 6, 5], "c2_w"), [1] * 5, "SAME", name="c2")
        y = tf.nn.avg_pool3d(tf.nn.relu(y), [1, 2, 2, 2, 1], [1, 2, 2, 2, 1], "VALID")
        tf.identity(dense(tf.reduce_mean(y, [1, 2, 3]), 3, "fc"), name="logits")
    specs = {"x:0": ((1, 4, H, H, 3), "float32")}
    a = exact(build(fn, (1, 4, H, H, 3)), specs)
    assert group_of(a, "c1").prunable and group_of(a, "c2").prunable
    assert macs_of(a, "c1") == 4 * H * H * 27 * 3 * 6
    assert a.bindings["c1_w"][4].role is Role.FILTER and a.bindings["c2_w"][3].role is Role.KERNEL_IN


@pytest.mark.parametrize("packed", [False, True])
def test_transposed_conv_rewrites_its_output_size(packed):
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        size = tf.stack([tf.shape(y)[0], 2 * H, 2 * H, 4]) if packed else tf.constant([1, 2 * H, 2 * H, 4])
        y = tf.nn.conv2d_transpose(y, var([3, 3, 4, 6], "up_w"), size, [1, 2, 2, 1], "SAME", name="up")
        head(conv(tf.nn.relu(y), 5, "c2"))
    gd = build(fn)
    a = check_slim_equals_sparse(gd, SPECS, ["logits"], ratio=0.5, batch=1 if not packed else 3)
    assert group_of(a, "c1").prunable and group_of(a, "up").prunable
    assert "c2" in group_of(a, "up").consumers and "up" in group_of(a, "c1").consumers
    assert macs_of(a, "up") == H * H * 9 * 6 * 4     # input positions x window x in x out


def test_keras_conv2d_transpose():
    keras = pytest.importorskip("tf_keras")

    def fn(x):
        y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
        y = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up")(y)
        head(conv(y, 5, "c2"))
    a = exact(build(fn))
    assert group_of(a, "up/conv2d_transpose").prunable


def test_grouped_conv_is_fixed_and_counted():
    def fn(x):
        y = tf.nn.relu(conv(x, 8, "c1", 3))
        y = tf.nn.conv2d(y, var([3, 3, 4, 8], "g_w"), [1, 1, 1, 1], "SAME", name="grouped")
        y = tf.nn.relu(y)
        head(conv(y, 6, "c2"))
    gd = build(fn)
    a = analyse(gd)
    assert not group_of(a, "c1").prunable and "grouped convolution" in group_of(a, "c1").reason
    assert a.group_by_node("grouped") is None     # its channels are not pruned: no group
    assert macs_of(a, "grouped") == H * H * 9 * 4 * 8
    try:
        exact(gd)
    except tf.errors.OpError as e:
        pytest.skip("grouped conv not runnable on this CPU build: %s" % str(e).splitlines()[0])


@pytest.mark.parametrize("op", ["depth_to_space", "space_to_depth"])
def test_depth_to_space_and_space_to_depth(op):
    def fn(x):
        y = tf.nn.relu(conv(x, 12, "c1", 3))
        y = tf.nn.depth_to_space(y, 2) if op == "depth_to_space" else tf.nn.space_to_depth(y, 2)
        head(conv(y, 5, "c2"))
    a = exact(build(fn))
    g = group_of(a, "c1")
    assert g.prunable and g.channels == (3 if op == "depth_to_space" else 12)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_resize_passes_channels(method):
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        head(conv(tf.image.resize(y, [2 * H, 2 * H], method=method), 5, "c2"))
    assert group_of(exact(build(fn)), "c1").prunable


@pytest.mark.parametrize("crop", ["strided", "ellipsis", "slice", "slice_full_size", "keras"])
def test_spatial_cropping_keeps_channels(crop):
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        if crop == "strided":
            y = y[:, 1:-1, 2:, :]
        elif crop == "ellipsis":
            y = y[:, 1:-1, ...]
        elif crop == "slice":
            y = tf.slice(y, [0, 1, 1, 0], [-1, 5, 5, -1])
        elif crop == "slice_full_size":
            y = tf.slice(y, [0, 1, 1, 0], [1, 5, 5, 6])
        else:
            import tf_keras as keras
            y = keras.layers.Cropping2D(((1, 2), (2, 1)))(y)
        head(conv(y, 5, "c2"))
    a = check_slim_equals_sparse(build(fn), SPECS, ["logits"], batch=1 if crop == "slice_full_size" else 3)
    assert group_of(a, "c1").prunable


def test_channel_slice_is_fixed_with_reason():
    gd = build(lambda x: head(conv(tf.nn.relu(conv(x, 6, "c1", 3))[..., :4], 5, "c2")))
    g = group_of(analyse(gd), "c1")
    assert not g.prunable and "StridedSlice" in g.reason and "slices the channel axis" in g.reason


def test_exact_gelu_with_erfc():
    def fn(x):
        y = conv(x, 6, "c1", 3)
        y = 0.5 * y * tf.math.erfc(-y / np.sqrt(2.0))
        head(conv(y, 5, "c2"))
    assert group_of(exact(build(fn)), "c1").prunable


def test_keras_dense_on_a_sequence():
    keras = pytest.importorskip("tf_keras")

    def fn(x):
        seq = tf.reshape(x, [-1, H * H, 3])
        y = keras.layers.Dense(8, activation="gelu", name="mlp1")(seq)
        y = keras.layers.Dense(6, name="mlp2")(y)
        tf.identity(dense(tf.reduce_mean(y, 1), 5, "fc"), name="logits")
    gd = build(fn)
    a = exact(gd)
    assert group_of(a, "mlp1/Tensordot/MatMul").prunable and group_of(a, "mlp2/Tensordot/MatMul").prunable
    assert macs_of(a, "mlp1/Tensordot/MatMul") == H * H * 3 * 8


def test_layers_inside_function_calls():
    @tf.function
    def block(x, w, b):
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"), b))

    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        y = block(y, var([3, 3, 6, 8], "f_w"), var([8], "f_b"))
        head(conv(y, 5, "c2"))
    gd = build(fn)
    a = exact(gd)
    inner = [l for l in a.layers if "PartitionedCall" in l.node]
    assert inner and inner[0].kind == "conv" and macs_of(a, inner[0].node) == H * H * 9 * 6 * 8
    assert group_of(a, "c1").prunable and group_of(a, inner[0].node).prunable
    assert tf1prune.count_macs(a).complete


def test_keras_grouped_conv_in_a_function_is_counted():
    keras = pytest.importorskip("tf_keras")

    def fn(x):
        y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
        y = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(y)
        head(conv(tf.nn.relu(y), 5, "c2"))
    gd = build(fn)
    a = analyse(gd)
    grouped = [l for l in a.layers if l.node.startswith("grouped/")]
    assert grouped and tf1prune.count_macs(a).complete
    assert macs_of(a, grouped[0].node) == H * H * 9 * 4 * 8
    assert not group_of(a, "c1/Conv2D").prunable and "grouped convolution" in group_of(a, "c1/Conv2D").reason


def test_atrous_space_to_batch_conv():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        y = tf.space_to_batch_nd(y, [2, 2], [[2, 2], [2, 2]])
        y = tf.nn.conv2d(y, var([3, 3, 6, 7], "a_w"), [1, 1, 1, 1], "VALID", name="atrous")
        y = tf.batch_to_space_nd(y, [2, 2], [[0, 0], [0, 0]])
        head(conv(tf.nn.relu(y), 5, "c2"))
    a = exact(build(fn))
    assert group_of(a, "c1").prunable and group_of(a, "atrous").prunable
    assert macs_of(a, "atrous") == 4 * (H // 2) ** 2 * 9 * 6 * 7


def test_fake_quant_per_tensor_and_per_channel():
    def fn(x):
        w = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            var([3, 3, 3, 6], "c1_w"), -tf.abs(var([6], "w_min")) - 1, tf.abs(var([6], "w_max")) + 1)
        y = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME", name="c1"))
        y = tf.quantization.fake_quant_with_min_max_vars(y, -6.0, 6.0)
        y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            y, -tf.abs(var([6], "a_min")) - 4, tf.abs(var([6], "a_max")) + 4)
        head(conv(y, 5, "c2"))
    a = exact(build(fn))
    assert group_of(a, "c1").prunable and macs_of(a, "c1") == H * H * 9 * 3 * 6
    assert 0 in a.bindings["w_min"] and 0 in a.bindings["a_max"]


def test_lrn_is_fixed_with_reason():
    gd = build(lambda x: head(conv(tf.nn.lrn(tf.nn.relu(conv(x, 6, "c1", 3)), 2), 5, "c2")))
    g = group_of(analyse(gd), "c1")
    assert not g.prunable and "LRN" in g.reason and "neighbouring channels" in g.reason


def test_einsum_and_batch_matmul_are_counted():
    def fn(x):
        seq = tf.reshape(tf.nn.relu(conv(x, 6, "c1", 3)), [-1, H * H, 6])
        att = tf.matmul(seq, seq, transpose_b=True, name="scores")            # [b, 64, 64]
        mixed = tf.einsum("bij,bjc->bic", att, seq, name="mix")             # [b, 64, 6]
        tf.identity(dense(tf.reduce_mean(mixed, 1), 5, "fc"), name="logits")
    a = analyse(build(fn))
    assert macs_of(a, "scores") == (H * H) ** 2 * 6 and macs_of(a, "mix/Einsum") == (H * H) ** 2 * 6
    assert not group_of(a, "c1").prunable
    assert tf1prune.count_macs(a).complete


def test_if_branches_count_the_costlier_one():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        flag = tf.placeholder_with_default(False, [], name="flag")
        y = tf.cond(flag, lambda: tf.nn.conv2d(y, var([3, 3, 6, 6], "t_w"), [1, 1, 1, 1], "SAME"),
                    lambda: tf.nn.conv2d(y, var([1, 1, 6, 6], "e_w"), [1, 1, 1, 1], "SAME"))
        head(conv(y, 5, "c2"))
    a = analyse(build(fn))
    branch = [l for l in a.layers if l.path]
    assert len(branch) == 2
    report = tf1prune.count_macs(a)
    assert report.macs == sum(l.macs for l in report.layers if l.node in ("c1", "c2", "fc")) + H * H * 9 * 36


def test_a_reason_names_every_op_that_fixes_a_group():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        head(conv(tf.nn.softmax(y) + tf.cumsum(y, axis=3), 5, "c2"))
    gd = build(fn)
    g = group_of(analyse(gd), "c1")
    assert not g.prunable and "Softmax" in g.reason and "Cumsum" in g.reason


def test_unknown_layer_ops_make_the_total_incomplete():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        y = tf.nn.depthwise_conv2d_backprop_input([1, H, H, 6], var([3, 3, 6, 1], "d_w"), y, [1, 1, 1, 1], "SAME",
                                                  name="dw_transposed")
        head(conv(y, 5, "c2"))
    a = analyse(build(fn))
    report = tf1prune.count_macs(a)
    assert not report.complete and "DepthwiseConv2dNativeBackpropInput 'dw_transposed'" in report.uncounted[0][1]
    assert not group_of(a, "c1").prunable
    from tf1prune.core import flops
    assert "not counted: DepthwiseConv2dNativeBackpropInput 'dw_transposed'" in flops.layer_table(report)


@pytest.mark.parametrize("multiples,prunable", [([1, 2, 2, 1], True), ([1, 1, 1, 2], False)])
def test_tile_keeps_or_fixes_channels(multiples, prunable):
    gd = build(lambda x: head(conv(tf.tile(tf.nn.relu(conv(x, 6, "c1", 3)), multiples), 5, "c2")))
    if prunable:
        assert group_of(exact(gd), "c1").prunable
    else:
        g = group_of(analyse(gd), "c1")
        assert not g.prunable and "tiles the channel axis" in g.reason
