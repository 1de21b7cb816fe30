"""Tiny raw-TF1 graphs for the rule and analysis tests: conv/dense builders with a ``logits`` head."""
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import check_slim_equals_sparse, freeze

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


def fixed_batch_graph():
    """A frozen conv/BN/conv/dense graph whose input ``x`` has a fixed batch of 1 (output ``logits``)."""
    import numpy as np
    graph = tf.Graph()
    rng = np.random.RandomState(0)
    with graph.as_default():
        x = tf.placeholder(tf.float32, (1, 8, 8, 3), name="x")
        h = tf.nn.conv2d(x, tf.constant(rng.randn(3, 3, 3, 8).astype(np.float32)), [1, 1, 1, 1], "SAME")
        h, _, _ = tf.nn.fused_batch_norm(h, tf.constant(rng.rand(8).astype(np.float32) + 0.5),
                                         tf.constant(rng.randn(8).astype(np.float32)),
                                         mean=tf.constant(rng.randn(8).astype(np.float32)),
                                         variance=tf.constant(rng.rand(8).astype(np.float32) + 0.5),
                                         is_training=False)
        h = tf.nn.relu(h)
        h = tf.nn.conv2d(h, tf.constant(rng.randn(3, 3, 8, 8).astype(np.float32)), [1, 1, 1, 1], "SAME")
        h = tf.reshape(tf.nn.relu(h), [1, 512])
        tf.matmul(h, tf.constant(rng.randn(512, 4).astype(np.float32)), name="logits")
    return graph.as_graph_def()
