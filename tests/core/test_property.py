"""Property test: for random small raw-TF1 architectures, slim(x) == sparse(x) and MACs shrink.

Architectures come from ``tests/architectures.py``.  The examples are derandomized (the same
on every run); when hunting bugs set ``TF1PRUNE_EXPLORE=1`` for random examples and
``TF1PRUNE_EXAMPLES=500`` for more of them (the default 25 take about 10 s).
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tf1prune
from architectures import EXAMPLES, architectures, frozen, has_hidden_layer
from helpers import check_slim_equals_sparse, keep_mask, random_feeds, run_graph

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
        assert not leaves_a_tensor_empty(analysis, analysis.plan(keep_mask(analysis, **prune)).keep), prune
        check_slim_equals_sparse(graph_def, specs, ["logits"], seed=seed + i, analysis=analysis, **prune)
    check_refined(analysis, specs, seed, sparsity, divisible)


def check_refined(analysis, specs, seed, sparsity, divisible):
    """With post-training updates (data-free compensation, or compensation, reconstruction and
    BatchNorm re-estimation on random calibration batches), slim == sparse still."""
    from tf1prune.apply import refine, slim
    plan = analysis.plan(keep_mask(analysis, sparsity=sparsity, channel_divisible=divisible))
    calibration = [random_feeds(specs, 8, seed + i) for i in range(2)] if seed % 2 else None
    refined, _ = refine.refine(plan, calibration)
    feeds = random_feeds(specs, 3, seed + 7)
    sparse_out = run_graph(slim.apply_sparse(refined), feeds, ["logits:0"])[0]
    slim_out = run_graph(slim.apply_slim(refined), feeds, ["logits:0"])[0]
    scale = max(float(np.max(np.abs(sparse_out))), 1e-6)
    assert np.all(np.isfinite(sparse_out)) and np.allclose(slim_out, sparse_out, rtol=1e-4, atol=1e-4 * scale), \
        np.max(np.abs(slim_out - sparse_out))


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
