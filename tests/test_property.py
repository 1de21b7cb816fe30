"""Property test: for random small raw-TF1 architectures, slim(x) == sparse(x) and MACs shrink.

An architecture is plain data (a dict with a list of layer specs, see :func:`architectures`),
built by :func:`build` with ``tf.compat.v1`` ops only.  The examples are derandomized (the same
on every run); when hunting bugs set ``TF1PRUNE_EXPLORE=1`` for random examples and
``TF1PRUNE_EXAMPLES=500`` for more of them (the default 25 take about 10 s).
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf1prune
from helpers import check_slim_equals_sparse, freeze, keep_mask, randomize_bn_and_biases

ACTS = ("none", "relu", "relu6", "elu", "sigmoid", "tanh", "swish", "hard_swish", "leaky_relu", "gelu")
NORMS = (None, "fused", "unfused")
SE_MODES = ("keepdims", "reshape_const_conv", "reshape_stack_conv", "dense_reshape_const",
            "dense_reshape_stack")
HEADS = ("gap", "flatten_const", "flatten_dynamic")
EXAMPLES = int(os.environ.get("TF1PRUNE_EXAMPLES", "25"))


# --- building blocks (raw tf.compat.v1 ops) -------------------------------------------------

def act(x, kind):
    if kind == "none":
        return x
    if kind == "relu":
        return tf.nn.relu(x)
    if kind == "relu6":
        return tf.nn.relu6(x)
    if kind == "elu":
        return tf.nn.elu(x)
    if kind == "sigmoid":
        return tf.sigmoid(x)
    if kind == "tanh":
        return tf.tanh(x)
    if kind == "swish":
        return x * tf.sigmoid(x)
    if kind == "hard_swish":
        return x * tf.nn.relu6(x + 3.0) / 6.0
    if kind == "leaky_relu":
        return tf.nn.leaky_relu(x, alpha=0.2)
    if kind == "gelu":   # exact GELU through Erfc
        return 0.5 * x * tf.math.erfc(-x / np.sqrt(2.0))
    raise ValueError(kind)


def channels(x):
    return int(x.shape[-1])


def conv(x, out_ch, k=1, stride=1, bias=True, name="conv"):
    with tf.variable_scope(name):
        w = tf.get_variable("weights", [k, k, channels(x), out_ch],
                            initializer=tf.glorot_uniform_initializer())
        y = tf.nn.conv2d(x, w, [1, stride, stride, 1], "SAME")
        if bias:
            y = tf.nn.bias_add(y, tf.get_variable("biases", [out_ch], initializer=tf.zeros_initializer()))
    return y


def depthwise(x, mult, k=3, stride=1, bias=False, name="dw"):
    with tf.variable_scope(name):
        w = tf.get_variable("depthwise_weights", [k, k, channels(x), mult],
                            initializer=tf.glorot_uniform_initializer())
        y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME")
        if bias:
            y = tf.nn.bias_add(y, tf.get_variable("biases", [channels(x) * mult],
                                                  initializer=tf.zeros_initializer()))
    return y


def batch_norm(x, kind, name="bn"):
    if kind is None:
        return x
    c = channels(x)
    with tf.variable_scope(name):
        gamma = tf.get_variable("gamma", [c], initializer=tf.ones_initializer())
        beta = tf.get_variable("beta", [c], initializer=tf.zeros_initializer())
        mean = tf.get_variable("moving_mean", [c], initializer=tf.zeros_initializer())
        var = tf.get_variable("moving_variance", [c], initializer=tf.ones_initializer())
        if kind == "fused":
            y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, mean, var, epsilon=1e-3, is_training=False)
            return y
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-3)


def dense(x, units, bias="bias_add", name="dense"):
    """Weights as ``tf.Variable`` (not get_variable); bias via BiasAdd or a plain add."""
    with tf.name_scope(name):
        w = tf.Variable(tf.glorot_uniform_initializer()([int(x.shape[-1]), units]), name="weights")
        y = tf.matmul(x, w)
        if bias:
            b = tf.Variable(tf.zeros([units]), name="bias")
            y = tf.nn.bias_add(y, b) if bias == "bias_add" else y + b
    return y


def conv_bn_act(x, out_ch, k, norm, activation, stride=1, name="cba"):
    with tf.variable_scope(name):
        y = conv(x, out_ch, k, stride, bias=norm is None)
        return act(batch_norm(y, norm), activation)


def squeeze_excite(x, reduce_ch, mode, gate, name="se"):
    c = channels(x)
    with tf.variable_scope(name):
        if mode == "keepdims":
            s = tf.reduce_mean(x, [1, 2], keepdims=True)
        else:
            s = tf.reduce_mean(x, [1, 2])
        if mode.endswith("_conv"):
            shape = [-1, 1, 1, c] if "const" in mode else tf.stack([tf.shape(x)[0], 1, 1, c])
            s = tf.reshape(s, shape)
        if mode.startswith("dense"):
            s = tf.nn.relu(dense(s, reduce_ch, name="reduce"))
            s = dense(s, c, name="expand")
            shape = [-1, 1, 1, c] if "const" in mode else tf.stack([tf.shape(x)[0], 1, 1, c])
            s = tf.reshape(s, shape)
        else:
            s = tf.nn.relu(conv(s, reduce_ch, name="reduce"))
            s = conv(s, c, name="expand")
        s = tf.sigmoid(s) if gate == "sigmoid" else tf.nn.relu6(s + 3.0) / 6.0
        return x * s


def add_layer(x, spec, i):
    kind = spec["kind"]
    name = "l%d_%s" % (i, kind)
    with tf.variable_scope(name):
        if kind == "conv":
            return conv_bn_act(x, spec["out"], spec["k"], spec["norm"], spec["act"], spec["stride"])
        if kind == "dw":
            y = depthwise(x, spec["mult"], spec["k"], spec["stride"], bias=spec["norm"] is None)
            return act(batch_norm(y, spec["norm"]), spec["act"])
        if kind == "residual":
            y = conv_bn_act(x, spec["out"], 3, spec["norm"], spec["act"], name="a")
            with tf.variable_scope("b"):
                y = batch_norm(conv(y, spec["out"], 3, bias=spec["norm"] is None), spec["norm"])
            if channels(x) == spec["out"]:
                shortcut = x
            else:
                with tf.variable_scope("proj"):
                    shortcut = batch_norm(conv(x, spec["out"], 1, bias=spec["norm"] is None), spec["norm"])
            return act(shortcut + y, spec["act"])
        if kind == "concat":
            parts = [x] if spec["identity"] else []
            for j, (width, k) in enumerate(spec["branches"]):
                parts.append(conv_bn_act(x, width, k, spec["norm"], spec["act"], name="branch%d" % j))
            return tf.concat(parts, axis=3)
        if kind == "split":
            if spec["sizes"] is None:
                parts = tf.split(x, 2, axis=3)
            else:
                parts = tf.split(x, spec["sizes"], axis=3)
            outs = [conv_bn_act(p, w, k, spec["norm"], spec["act"], name="branch%d" % j)
                    for j, (p, (w, k)) in enumerate(zip(parts, spec["branches"]))]
            return tf.concat(outs, axis=-1)
        if kind == "se":
            return squeeze_excite(x, spec["reduce"], spec["mode"], spec["gate"])
        if kind == "pool":
            pool = tf.nn.max_pool2d if spec["type"] == "max" else tf.nn.avg_pool2d
            return pool(x, spec["k"], 2, spec["padding"])
        if kind == "pad":
            (t, b), (l, r) = spec["pads"]
            return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
        if kind == "up":
            if spec["mode"] == "transposed":
                w = tf.get_variable("up_weights", [3, 3, spec["out"], channels(x)],
                                    initializer=tf.glorot_uniform_initializer())
                h, wd = x.shape.as_list()[1:3]
                size = tf.stack([tf.shape(x)[0], 2 * h, 2 * wd, spec["out"]])
                return act(tf.nn.conv2d_transpose(x, w, size, [1, 2, 2, 1], "SAME"), spec["act"])
            h, wd = x.shape.as_list()[1:3]
            return tf.image.resize(x, [2 * h, 2 * wd], method=spec["mode"])
        if kind == "crop":
            return x[:, 1:-1, 1:, :]
        if kind == "d2s":
            y = conv_bn_act(x, 4 * spec["out"], 1, spec["norm"], spec["act"])
            return tf.nn.depth_to_space(y, 2)
        if kind == "s2d":
            return tf.nn.space_to_depth(x, 2)
    raise ValueError(kind)


def build(arch):
    """Build ``arch`` in the default graph: returns (input placeholder, logits tensor named 'logits')."""
    x = tf.placeholder(tf.float32, [None, arch["size"], arch["size"], arch["in_ch"]], name="input")
    with tf.variable_scope("net", use_resource=arch["resource"]):
        y = x
        for i, spec in enumerate(arch["layers"]):
            y = add_layer(y, spec, i)
        with tf.variable_scope("head"):
            if arch["head"] == "gap":
                y = tf.reduce_mean(y, [1, 2])
            elif arch["head"] == "flatten_const":
                h, w, c = y.shape.as_list()[1:]
                y = tf.reshape(y, [-1, h * w * c])
            else:
                h, w, c = y.shape.as_list()[1:]
                y = tf.reshape(y, [tf.shape(y)[0], -1])
                y.set_shape([None, h * w * c])  # the dense layer needs a static width
            if arch["hidden"]:
                y = act(dense(y, arch["hidden"], bias=arch["bias"], name="hidden"), arch["hidden_act"])
            y = dense(y, arch["classes"], bias=arch["bias"], name="logits")
    return x, tf.identity(y, name="logits")


def has_hidden_layer(arch):
    return bool(arch["hidden"]) or any(s["kind"] in ("conv", "residual", "concat", "split", "se", "d2s")
                                       or s.get("mode") == "transposed" for s in arch["layers"])


# --- the strategy -----------------------------------------------------------------------------

WIDTH = st.integers(2, 12)


@st.composite
def architectures(draw):
    """A random architecture as plain data; shapes are tracked so every layer is valid."""
    size = draw(st.integers(8, 16))
    in_ch = draw(st.sampled_from([1, 3]))
    h = w = size
    c = in_ch
    layers = []
    for _ in range(draw(st.integers(2, 6))):
        kinds = ["conv", "dw", "residual", "concat", "se", "pad"]
        if c >= 2:
            kinds.append("split")
        if min(h, w) >= 4:
            kinds += ["pool", "crop"]
        if max(h, w) <= 8:
            kinds += ["up", "d2s"]
        if h % 2 == 0 and w % 2 == 0 and h >= 4 and c <= 6:
            kinds.append("s2d")
        kind = draw(st.sampled_from(kinds))
        norm = draw(st.sampled_from(NORMS))
        activation = draw(st.sampled_from(ACTS))
        spec = {"kind": kind}
        if kind == "conv":
            stride = draw(st.sampled_from([1, 2])) if min(h, w) >= 4 else 1
            spec.update(out=draw(WIDTH), k=draw(st.sampled_from([1, 3])), stride=stride, norm=norm, act=activation)
            h, w, c = -(-h // stride), -(-w // stride), spec["out"]
        elif kind == "dw":
            stride = draw(st.sampled_from([1, 2])) if min(h, w) >= 4 else 1
            spec.update(mult=draw(st.sampled_from([1, 2])), k=3, stride=stride, norm=norm, act=activation)
            h, w, c = -(-h // stride), -(-w // stride), c * spec["mult"]
        elif kind == "residual":
            out = draw(st.sampled_from([c, draw(WIDTH)])) if c >= 2 else draw(WIDTH)
            spec.update(out=out, norm=norm, act=activation)
            c = out
        elif kind == "concat":
            branches = draw(st.lists(st.tuples(WIDTH, st.sampled_from([1, 3])), min_size=2, max_size=3))
            spec.update(branches=branches, identity=draw(st.booleans()), norm=norm, act=activation)
            c = sum(b[0] for b in branches) + (c if spec["identity"] else 0)
        elif kind == "split":
            if c % 2 == 0 and draw(st.booleans()):
                sizes = None
            else:
                first = draw(st.integers(1, c - 1))
                sizes = [first, c - first]
            branches = draw(st.lists(st.tuples(WIDTH, st.sampled_from([1, 3])), min_size=2, max_size=2))
            spec.update(sizes=sizes, branches=branches, norm=norm, act=activation)
            c = sum(b[0] for b in branches)
        elif kind == "se":
            spec.update(reduce=draw(st.integers(2, 8)), mode=draw(st.sampled_from(SE_MODES)),
                        gate=draw(st.sampled_from(["sigmoid", "hard_sigmoid"])))
        elif kind == "pool":
            spec.update(type=draw(st.sampled_from(["max", "avg"])), k=draw(st.sampled_from([2, 3])),
                        padding=draw(st.sampled_from(["SAME", "VALID"])))
            if spec["padding"] == "SAME":
                h, w = -(-h // 2), -(-w // 2)
            else:
                h, w = (h - spec["k"]) // 2 + 1, (w - spec["k"]) // 2 + 1
        elif kind == "pad":
            pads = draw(st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                  st.tuples(st.integers(0, 2), st.integers(0, 2))))
            spec.update(pads=pads)
            h, w = h + sum(pads[0]), w + sum(pads[1])
        elif kind == "up":
            spec.update(mode=draw(st.sampled_from(["transposed", "bilinear", "nearest"])), out=draw(WIDTH),
                        act=activation)
            h, w = 2 * h, 2 * w
            c = spec["out"] if spec["mode"] == "transposed" else c
        elif kind == "crop":
            h, w = h - 2, w - 1
        elif kind == "d2s":
            spec.update(out=draw(st.integers(1, 4)), norm=norm, act=activation)
            h, w, c = 2 * h, 2 * w, spec["out"]
        elif kind == "s2d":
            h, w, c = h // 2, w // 2, 4 * c
        layers.append(spec)
    return {"size": size, "in_ch": in_ch, "layers": layers, "head": draw(st.sampled_from(HEADS)),
            "hidden": draw(st.one_of(st.none(), WIDTH)), "hidden_act": draw(st.sampled_from(ACTS)),
            "bias": draw(st.sampled_from(["bias_add", "add", None])), "classes": draw(st.integers(3, 5)),
            "resource": draw(st.booleans())}


def frozen(arch, seed):
    """Build ``arch`` in a fresh graph, init with ``seed``, randomize BN/biases, freeze."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        build(arch)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            randomize_bn_and_biases(sess, seed)
            graph_def = freeze(sess, ["logits"])
    specs = {"input:0": ((1, arch["size"], arch["size"], arch["in_ch"]), "float32")}
    return graph_def, specs


def leaves_a_tensor_empty(analysis, keep):
    """True when ``keep`` removes every output channel of a conv/dense layer or every channel of a
    Split output (see ``test_split_part_pruned_to_nothing``, ``test_concat_part_pruned_to_nothing``)."""
    parts = [layer.dims[1].elems for layer in analysis.layers if layer.kind in ("conv", "dense")]
    parts += [part for rewrite in analysis.rewrites for part in rewrite.segments]
    return any(not analysis.kept_positions(part, keep).any() for part in parts)


def check_architecture(arch, seed, sparsity, divisible):
    """The property: slim == sparse at ratio 0.5 and at a MACs ``sparsity`` target."""
    graph_def, specs = frozen(arch, seed)
    analysis = tf1prune.analyze(graph_def, specs, ["logits"])
    if has_hidden_layer(arch):
        assert any(g.prunable for g in analysis.groups), [(g.nodes, g.reason) for g in analysis.groups]
    for i, prune in enumerate((dict(ratio=0.5), dict(sparsity=sparsity, channel_divisible=divisible))):
        assert not leaves_a_tensor_empty(analysis, keep_mask(analysis, **prune)), prune
        check_slim_equals_sparse(graph_def, specs, ["logits"], seed=seed + i, analysis=analysis, **prune)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("TF1PRUNE_EXPLORE") is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(arch=architectures(), seed=st.integers(0, 2 ** 16), sparsity=st.floats(0.2, 0.7),
       divisible=st.sampled_from([1, 2]))
def test_slim_equals_sparse_random_architectures(arch, seed, sparsity, divisible):
    check_architecture(arch, seed, sparsity, divisible)


# --- known core bugs: minimal reproducers ----------------------------------------------------

def split_part_pruned_to_nothing():
    """input(1ch) -> conv 3ch -> split [1, 2] -> conv per part -> concat -> GAP -> logits.

    Channel 0 of the first conv has tiny weights, so a 50% L1 spec keeps channels 1 and 2 and the
    first split part is left with 0 channels.
    """
    rng = np.random.RandomState(0)
    x = tf.placeholder(tf.float32, [None, 8, 8, 1], name="input")
    k = np.ones([3, 3, 1, 3], np.float32)
    k[..., 0] = 0.01
    y = tf.nn.conv2d(x, tf.constant(k), [1, 1, 1, 1], "SAME")
    a, b = tf.split(y, [1, 2], axis=3)
    a = tf.nn.conv2d(a, tf.constant(rng.randn(1, 1, 1, 4).astype(np.float32)), [1, 1, 1, 1], "SAME")
    b = tf.nn.conv2d(b, tf.constant(rng.randn(1, 1, 2, 4).astype(np.float32)), [1, 1, 1, 1], "SAME")
    y = tf.reduce_mean(tf.nn.relu(tf.concat([a, b], 3)), [1, 2])
    tf.identity(tf.matmul(y, tf.constant(rng.randn(8, 3).astype(np.float32))), name="logits")


def test_split_part_pruned_to_nothing():
    """Every split part keeps a channel, even when its only channel is the weakest."""
    graph = tf.Graph()
    with graph.as_default():
        split_part_pruned_to_nothing()
    check_slim_equals_sparse(graph.as_graph_def(), {"input:0": ((1, 8, 8, 1), "float32")}, ["logits"], ratio=0.5)


def concat_part_pruned_to_nothing():
    """input -> [conv_a 1ch | conv_b 2ch] -> concat -> + conv_c (3ch) -> GAP -> logits.

    The add joins the concat with conv_c, so conv_a, conv_b and conv_c form one 3-channel group.
    Unit 0 (conv_a's only channel) has tiny weights in conv_c and in the dense layer, so a 50% L1
    spec keeps units 1 and 2 only and the slim conv_a has 0 output channels.
    """
    rng = np.random.RandomState(0)
    x = tf.placeholder(tf.float32, [None, 8, 8, 2], name="input")
    a = tf.nn.conv2d(x, tf.constant(rng.randn(1, 1, 2, 1).astype(np.float32)), [1, 1, 1, 1], "SAME")
    b = tf.nn.conv2d(x, tf.constant(rng.randn(1, 1, 2, 2).astype(np.float32)), [1, 1, 1, 1], "SAME")
    kc = np.ones([1, 1, 2, 3], np.float32)
    kc[..., 0] = 0.01
    c = tf.nn.conv2d(x, tf.constant(kc), [1, 1, 1, 1], "SAME")
    y = tf.reduce_mean(tf.nn.relu(tf.concat([a, b], 3) + c), [1, 2])
    kd = np.ones([3, 3], np.float32)
    kd[0] = 0.01
    tf.identity(tf.matmul(y, tf.constant(kd)), name="logits")


def test_concat_part_pruned_to_nothing():
    """Every producer of a multi-producer group keeps a channel (concat joined by an add)."""
    graph = tf.Graph()
    with graph.as_default():
        concat_part_pruned_to_nothing()
    check_slim_equals_sparse(graph.as_graph_def(), {"input:0": ((1, 8, 8, 2), "float32")}, ["logits"], ratio=0.5)
