"""Random small raw-TF1 architectures for property tests: plain data (a dict with a list of layer
specs, see :func:`architectures`) built by :func:`build` with ``tf.compat.v1`` ops only.
Shared by the core, apply and workflow tests."""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from hypothesis import strategies as st

from helpers import freeze, randomize_bn_and_biases

ACTS = ("none", "relu", "relu6", "elu", "sigmoid", "tanh", "swish", "hard_swish", "leaky_relu", "gelu")
NORMS = (None, "fused", "unfused")
SE_MODES = ("keepdims", "reshape_const_conv", "reshape_stack_conv", "dense_reshape_const",
            "dense_reshape_stack")
HEADS = ("gap", "flatten_const", "flatten_dynamic")
EXAMPLES = int(os.environ.get("TF1PRUNE_EXAMPLES", "25"))   # examples per property test


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
        if kind == "attention":
            return self_attention(x, spec)
    raise ValueError(kind)


def self_attention(x, spec):
    """Multi-head self-attention over the spatial positions (1x1 conv Q/K/V, heads x d channels),
    a 1x1 conv back to the input width, optionally added to the input.  ``spec["target"]``: the
    head reshape's target as a constant or stacked from the batch read at run time."""
    heads, d = spec["heads"], spec["d"]
    h, w, c = x.shape.as_list()[1:]

    def split(t):
        batch = -1 if spec["target"] == "const" else tf.shape(t)[0]
        shape = [-1, h * w, heads, d] if spec["target"] == "const" else tf.stack([batch, h * w, heads, d])
        return tf.transpose(tf.reshape(t, shape), [0, 2, 1, 3])
    q, k, v = (split(conv(x, heads * d, name=n)) for n in ("query", "key", "value"))
    probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / float(np.sqrt(d)))
    context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [-1, h, w, heads * d])
    out = conv(context, c, name="output")
    return x + out if spec["residual"] else out


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
    return bool(arch["hidden"]) or any(s["kind"] in ("conv", "residual", "concat", "split", "se", "d2s", "attention")
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
        if h * w <= 256:
            kinds.append("attention")
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
        elif kind == "attention":
            spec.update(heads=draw(st.integers(1, 4)), d=draw(st.integers(1, 4)), residual=draw(st.booleans()),
                        target=draw(st.sampled_from(["const", "stacked"])))
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
