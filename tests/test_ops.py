"""One small graph per channel rule: the analysis groups what it must, and slim == sparse."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import check_slim_equals_sparse, freeze, run_graph
from tf1prune import slim, spec as spec_mod

H = 8


def var(shape, name):
    return tf.get_variable(name, shape, initializer=tf.random_normal_initializer(stddev=0.5))


def conv(x, cout, name, k=1, fmt="NHWC"):
    cin = x.shape[1 if fmt == "NCHW" else -1]
    y = tf.nn.conv2d(x, var([k, k, cin, cout], name + "_w"), [1, 1, 1, 1], "SAME", data_format=fmt, name=name)
    return tf.nn.bias_add(y, var([cout], name + "_b"), data_format=fmt)


def dense(x, n, name, n_in=None):
    w = var([n_in or x.shape[-1], n], name + "_w")
    return tf.nn.bias_add(tf.matmul(x, w, name=name), var([n], name + "_b"))


def head(y):
    """Global pool + dense logits, the graph output 'logits'."""
    return tf.identity(dense(tf.reduce_mean(y, [1, 2]), 5, "fc"), name="logits")


def build(fn, shape=(1, H, H, 3), seed=0, control_flow_v2=True):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, (None,) + shape[1:], name="x")
        fn(x)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return freeze(sess, ["logits"])


SPECS = {"x:0": ((1, H, H, 3), "float32")}


def analyse(graph_def, specs=SPECS, **kw):
    return tf1prune.analyze(graph_def, specs, ["logits"], **kw)


def group_of(a, node):
    g = a.group_by_node(node)
    assert g is not None, node
    return g


def exact(graph_def, specs=SPECS, ratio=0.5):
    return check_slim_equals_sparse(graph_def, specs, ["logits"], ratio=ratio)


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
    assert a.bindings["c1_b"][0].role == "bias"
    keep = spec_mod.make_spec(a, ratio=0.5).keep_mask(a)
    slim_gd = slim.slim_graph_def(a, keep)
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
    from tf1prune.ops import _reshape_channel
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
    assert a.bindings["gamma"][0].role == ("bn_scale" if fused else "param")
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
    keep = spec_mod.make_spec(a, ratio=0.5).keep_mask(a)
    slim_gd = slim.slim_graph_def(a, keep)
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
