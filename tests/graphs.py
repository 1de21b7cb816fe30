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


def detection_graph(control_flow_v2=True, seed=0, size=48, anchors=3, classes=4, max_boxes=8):
    """An Object-Detection-API-like export: a ``[None, None, None, 3]`` uint8 ``image_tensor``,
    preprocessing in ``tf.map_fn`` (resize to ``size``, scale to [-1, 1]), a small backbone (conv,
    depthwise, BatchNorm, ReLU6), two box-predictor heads whose channels are anchors x code (box
    encodings and class scores, reshaped to ``[batch, -1, code]`` with the batch read at run time),
    and NMS inside a second ``map_fn`` (a while loop); outputs ``detection_boxes``,
    ``detection_scores``, ``num_detections``, ``raw_boxes`` and ``raw_scores``.  With
    ``control_flow_v2=False`` the loops are TF1 ``Enter``/``Exit`` frames, as in TF 1.x exports."""
    import numpy as np
    rng = np.random.RandomState(seed)

    def const(v):
        return tf.constant(np.asarray(v, np.float32))

    def block(x, out, name, k=3, stride=1, depthwise=False):
        cin = int(x.shape[-1])
        if depthwise:
            out = cin
            y = tf.nn.depthwise_conv2d(x, const(rng.randn(k, k, cin, 1) * 0.3), [1, stride, stride, 1], "SAME",
                                       name=name)
        else:
            y = tf.nn.conv2d(x, const(rng.randn(k, k, cin, out) / np.sqrt(k * k * cin)), [1, stride, stride, 1],
                             "SAME", name=name)
        y, _, _ = tf.nn.fused_batch_norm(y, const(1 + 0.1 * rng.randn(out)), const(0.1 * rng.randn(out)),
                                         const(0.1 * rng.randn(out)), const(1 + 0.1 * rng.rand(out)),
                                         is_training=False, name=name + "/BatchNorm")
        return tf.nn.relu6(y)

    was_v2 = tf.control_flow_v2_enabled()
    (tf.enable_control_flow_v2 if control_flow_v2 else tf.disable_control_flow_v2)()
    try:
        graph = tf.Graph()
        with graph.as_default():
            image = tf.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")

            def preprocess(img):
                return tf.image.resize_images(tf.cast(img, tf.float32), [size, size]) / 127.5 - 1.0
            x = tf.map_fn(preprocess, image, dtype=tf.float32, back_prop=False)
            x = block(x, 16, "FeatureExtractor/conv0", stride=2)
            x = block(x, 0, "FeatureExtractor/dw1", depthwise=True)
            x = block(x, 24, "FeatureExtractor/pw1", k=1)
            f1 = block(x, 32, "FeatureExtractor/conv2", stride=2)
            f2 = block(f1, 40, "FeatureExtractor/conv3", stride=2)
            boxes, scores = [], []
            for i, f in enumerate([f1, f2]):
                for kind, code, out in (("BoxEncodingPredictor", 4, boxes), ("ClassPredictor", classes, scores)):
                    y = tf.nn.conv2d(f, const(rng.randn(3, 3, int(f.shape[-1]), anchors * code) * 0.1), [1] * 4,
                                     "SAME", name="BoxPredictor_%d/%s" % (i, kind))
                    y = tf.nn.bias_add(y, const(rng.randn(anchors * code) * 0.1))
                    out.append(tf.reshape(y, tf.stack([tf.shape(y)[0], -1, code])))
            boxes = tf.concat(boxes, 1, name="raw_boxes")
            scores = tf.sigmoid(tf.concat(scores, 1), name="raw_scores")

            def nms(args):
                b, s = args
                best = tf.reduce_max(s[:, 1:], 1)
                keep = tf.image.non_max_suppression(b, best, max_boxes, 0.5)
                pad = max_boxes - tf.shape(keep)[0]
                return (tf.pad(tf.gather(b, keep), [[0, pad], [0, 0]]), tf.pad(tf.gather(best, keep), [[0, pad]]),
                        tf.cast(tf.shape(keep)[0], tf.float32))
            db, ds, nd = tf.map_fn(nms, (boxes, scores), dtype=(tf.float32, tf.float32, tf.float32),
                                   back_prop=False)
            tf.identity(db, name="detection_boxes")
            tf.identity(ds, name="detection_scores")
            tf.identity(nd, name="num_detections")
        return graph.as_graph_def()
    finally:
        (tf.enable_control_flow_v2 if was_v2 else tf.disable_control_flow_v2)()


DETECTION_OUTPUTS = ["detection_boxes", "detection_scores", "num_detections", "raw_boxes", "raw_scores"]


def encoder_graph(style="rank3", seed=0, seq=6, hidden=16, heads=4, ffn=24, layers=2, classes=3, fused_qkv=False):
    """A BERT-style encoder (frozen): per layer dense Q/K/V, reshape to heads, transpose, scaled
    batch matmul, attention mask, softmax, batch matmul with V, transpose back, output dense,
    residual + LayerNorm, erf-GELU FFN, residual + LayerNorm; a [CLS] pooler and ``logits``.
    ``style="rank3"``: the dense layers run on ``[B, T, H]`` (``tf.tensordot``-free: MatMul on a
    reshape to ``[B*T, H]`` and back); ``"matrix"``: google-research/bert's ``modeling.py`` way,
    the hidden states kept as a ``[B*T, H]`` matrix, reshaped to ``[B, T, heads, d]`` only for
    the attention.  ``fused_qkv``: one dense layer of 3 x hidden units split into Q, K and V.
    Inputs ``x`` ``[B, T, hidden]`` float and ``mask`` ``[B, T]`` float."""
    import numpy as np
    rng = np.random.RandomState(seed)
    d = hidden // heads

    def const(*shape, scale=None):
        return tf.constant((rng.randn(*shape) * (scale or 1.0 / np.sqrt(shape[0]))).astype(np.float32))

    def dense(x, units, name):
        w, b = const(int(x.shape[-1]), units), const(units, scale=0.1)
        if style == "rank3":
            flat = tf.reshape(x, [-1, int(x.shape[-1])])
            y = tf.nn.bias_add(tf.matmul(flat, w, name=name), b)
            return tf.reshape(y, [-1, seq, units])
        return tf.nn.bias_add(tf.matmul(x, w, name=name), b)

    def layer_norm(x, name):
        mean, var = tf.nn.moments(x, [-1], keep_dims=True)
        return (x - mean) * tf.rsqrt(var + 1e-6) * const(hidden, scale=0.1) + 1.0 + const(hidden, scale=0.1)

    def split_heads(x):
        return tf.transpose(tf.reshape(x, [-1, seq, heads, d]), [0, 2, 1, 3])

    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, seq, hidden], name="x")
        mask = tf.placeholder(tf.float32, [None, seq], name="mask")
        adder = (1.0 - tf.expand_dims(tf.expand_dims(mask, 1), 1)) * -10000.0      # [B, 1, 1, T]
        h = x if style == "rank3" else tf.reshape(x, [-1, hidden])
        for i in range(layers):
            if fused_qkv:
                q, k, v = (split_heads(t) for t in tf.split(dense(h, 3 * hidden, "layer%d/qkv" % i), 3, axis=-1))
            else:
                q, k, v = (split_heads(dense(h, hidden, "layer%d/%s" % (i, n))) for n in ("query", "key", "value"))
            scores = tf.matmul(q, k, transpose_b=True) * (1.0 / np.sqrt(d)) + adder
            context = tf.transpose(tf.matmul(tf.nn.softmax(scores), v), [0, 2, 1, 3])
            context = tf.reshape(context, [-1, seq, hidden] if style == "rank3" else [-1, hidden])
            h = layer_norm(h + dense(context, hidden, "layer%d/attention_output" % i), "ln1")
            inner = dense(h, ffn, "layer%d/intermediate" % i)
            inner = inner * 0.5 * (1.0 + tf.math.erf(inner / np.sqrt(2.0)))
            h = layer_norm(h + dense(inner, hidden, "layer%d/output" % i), "ln2")
        first = h[:, 0] if style == "rank3" else tf.reshape(h, [-1, seq, hidden])[:, 0]
        pooled = tf.tanh(tf.nn.bias_add(tf.matmul(first, const(hidden, hidden), name="pooler"), const(hidden)))
        tf.identity(tf.matmul(pooled, const(hidden, classes)), name="logits")
    return graph.as_graph_def()


ENCODER_SPECS = {"x:0": ((1, 6, 16), "float32"), "mask:0": ((1, 6), "float32")}
