"""Attention heads: a reshape that splits the channel axis into (heads, head size) makes each head
one unit; Q, K and V lose the same heads, the output projection the matching rows, and the
attention batch matmuls (counted with the sequence length) follow.  Slim equals sparse."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from graphs import ENCODER_SPECS, encoder_graph
from helpers import check_slim_equals_sparse
from tf1prune.core import flops
from tf1prune.core.choice import Choice

SEQ, HIDDEN, HEADS, FFN = 6, 16, 4, 24


@pytest.mark.parametrize("style,fused", [("rank3", False), ("matrix", False), ("rank3", True)])
def test_heads_are_prunable_and_the_encoder_converts_exactly(style, fused):
    gd = encoder_graph(style, fused_qkv=fused)
    analysis = tf1prune.analyze(gd, ENCODER_SPECS, ["logits"])
    for i in range(2):
        heads = analysis.group_by_node("layer%d/%s" % (i, "qkv" if fused else "query"))
        assert heads.prunable and heads.channels == HEADS, heads.reason
        if not fused:
            assert {"layer%d/key" % i, "layer%d/value" % i} <= set(heads.nodes)
        assert analysis.group_by_node("layer%d/intermediate" % i).prunable
    # the residual stream is normalised over its channels: it stays, with that reason
    assert "reduces over the channel axis" in analysis.group_by_node("layer0/attention_output").reason
    pruned = check_slim_equals_sparse(gd, ENCODER_SPECS, ["logits"], sparsity=0.5, analysis=analysis)
    assert abs(1 - pruned.macs_after / pruned.macs_before - 0.5) <= 0.005


def test_attention_matmuls_are_counted_with_the_sequence_length_and_shrink_with_the_heads():
    analysis = tf1prune.analyze(encoder_graph("rank3"), ENCODER_SPECS, ["logits"])
    matmuls = [l for l in analysis.layers if l.kind == "batch_matmul"]
    assert len(matmuls) == 4
    heads = analysis.group_by_node("layer0/query")
    one_less = Choice(analysis.digest(), {heads.id: [1, 2, 3]})     # one head of layer 0 removed
    full = {l.node: l.macs for l in flops.count(analysis).layers}
    kept = {l.node: l.macs for l in flops.count(analysis, one_less).layers}
    d = HIDDEN // HEADS
    for layer in matmuls:   # scores: T x T x d per head; context: T x d x T per head
        assert full[layer.node] == HEADS * SEQ * SEQ * d
        assert kept[layer.node] == full[layer.node] * (3 if layer.node in
                                                       [m.node for m in matmuls[:2]] else 4) // 4
    for name in ("layer0/query", "layer0/key", "layer0/value", "layer0/attention_output"):
        assert kept[name] == full[name] * 3 // 4


def test_a_single_head_contracts_query_and_key_channels_together():
    """With one head the scores contract Q's and K's channels: they are joined, and V's pass on."""
    gd = encoder_graph("rank3", heads=1)
    analysis = tf1prune.analyze(gd, ENCODER_SPECS, ["logits"])
    group = analysis.group_by_node("layer0/query")
    assert group.prunable and group.channels == HIDDEN and "layer0/key" in group.nodes
    value = analysis.group_by_node("layer0/value")
    assert value.prunable and value.channels == HIDDEN and "layer0/query" not in value.nodes
    check_slim_equals_sparse(gd, ENCODER_SPECS, ["logits"], ratio=0.5, analysis=analysis)


def _attention(mix):
    graph = tf.Graph()
    rng = np.random.RandomState(0)
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, SEQ, HIDDEN], name="x")
        flat = tf.reshape(x, [-1, HIDDEN])

        def heads(name):
            y = tf.matmul(flat, tf.constant(rng.randn(HIDDEN, HIDDEN).astype(np.float32)), name=name)
            return tf.transpose(tf.reshape(y, [-1, SEQ, HEADS, HIDDEN // HEADS]), [0, 2, 1, 3])
        q, k, v = heads("query"), heads("key"), heads("value")
        context = tf.matmul(mix(tf.matmul(q, k, transpose_b=True)), v)
        out = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, HIDDEN])
        tf.identity(tf.matmul(out, tf.constant(rng.randn(HIDDEN, 3).astype(np.float32))), name="logits")
    return graph.as_graph_def()


@pytest.mark.parametrize("mix,op", [
    (lambda s: tf.transpose(tf.nn.softmax(tf.transpose(s, [0, 2, 3, 1])), [0, 3, 1, 2]), "Softmax"),   # across heads
    (lambda s: s - tf.reduce_mean(s, axis=1, keepdims=True), "Mean"),  # heads averaged
])
def test_ops_that_mix_heads_keep_them_with_the_reason(mix, op):
    analysis = tf1prune.analyze(_attention(mix), {"x:0": (1, SEQ, HIDDEN)}, ["logits"])
    group = analysis.group_by_node("query")
    assert not group.prunable and op in group.reason, group.reason


def test_a_reshape_to_more_than_heads_and_head_size_is_refused():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, HIDDEN], name="x")
        y = tf.matmul(x, tf.constant(np.ones((HIDDEN, HIDDEN), np.float32)), name="d1")
        y = tf.reduce_sum(tf.reshape(y, [-1, 2, 2, 4]), [1, 2])
        tf.identity(tf.matmul(y, tf.constant(np.ones((4, 3), np.float32))), name="logits")
    analysis = tf1prune.analyze(graph.as_graph_def(), {"x:0": (1, HIDDEN)}, ["logits"])
    group = analysis.group_by_node("d1")
    assert not group.prunable and "splits the channel axis" in group.reason


def test_channel_rounding_counts_channels_not_heads():
    """A head of 4 channels already keeps multiples of 4: rounding to 8 steps by 2 heads, not 8."""
    analysis = tf1prune.analyze(encoder_graph("rank3", heads=8, hidden=32), {
        "x:0": ((1, 6, 32), "float32"), "mask:0": ((1, 6), "float32")}, ["logits"])
    heads = analysis.group_by_node("layer0/query")
    assert heads.width == 4 and heads.channels == 8
    ffn = analysis.group_by_node("layer0/intermediate")
    assert ffn.width == 1
    spec = tf1prune.make_spec(analysis, ratio=0.5, channel_divisible=8)
    kept = {g.id: len(g.keep) for g in spec.groups}
    assert kept[heads.id] == 4 and kept[ffn.id] % 8 == 0


def test_keras_dense_attention_through_tensordot():
    """Keras Dense layers on ``[B, T, H]`` (Tensordot: reshapes around a MatMul) feeding the heads."""
    import tf_keras as keras
    from helpers import freeze
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, SEQ, HIDDEN], name="x")

        def split(t):
            return tf.transpose(tf.reshape(t, [-1, SEQ, HEADS, HIDDEN // HEADS]), [0, 2, 1, 3])
        q, k, v = (split(keras.layers.Dense(HIDDEN, name=n)(x)) for n in ("q", "k", "v"))
        probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / 2.0)
        context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [-1, SEQ, HIDDEN])
        out = keras.layers.Dense(HIDDEN, name="o")(context)
        tf.identity(keras.layers.Dense(3, name="head")(tf.reduce_mean(x + out, 1)), name="logits")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            gd = freeze(sess, ["logits"])
    specs = {"x:0": ((1, SEQ, HIDDEN), "float32")}
    analysis = tf1prune.analyze(gd, specs, ["logits"])
    heads = analysis.group_by_node("q/Tensordot/MatMul")
    assert heads.prunable and heads.channels == HEADS and {"k/Tensordot/MatMul", "v/Tensordot/MatMul"} <= set(
        heads.nodes)
    check_slim_equals_sparse(gd, specs, ["logits"], ratio=0.5, analysis=analysis)
