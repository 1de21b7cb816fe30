"""Shared test helpers: freeze a session, randomize BN/biases, run a GraphDef, check slim == sparse."""
import re

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import tf1prune
from tf1prune.choose import allocation, criteria, spec as spec_mod
from tf1prune.core import flops
from tf1prune.apply import slim

BN_AND_BIAS_NAMES = ("gamma", "beta", "moving_mean", "moving_variance", "bias", "biases")


def freeze(sess, output_node_names):
    """Frozen GraphDef of ``sess.graph`` (variables -> constants) reduced to ``output_node_names``."""
    return tf.graph_util.convert_variables_to_constants(
        sess, sess.graph.as_graph_def(), list(output_node_names))


def randomize_bn_and_biases(sess, seed):
    """Give every BN gamma/beta/moving mean/variance and every bias variable random non-trivial values.

    Variables are recognised by the last component of their name (see ``BN_AND_BIAS_NAMES``).
    Returns the names of the variables that were changed.
    """
    rng = np.random.RandomState(seed)
    variables, feeds = [], {}
    with sess.graph.as_default():
        for var in tf.global_variables():
            kind = var.op.name.split("/")[-1]
            if kind not in BN_AND_BIAS_NAMES:
                continue
            shape = var.shape.as_list()
            if kind == "gamma":
                value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
            elif kind == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            else:  # beta, moving_mean, biases
                value = rng.normal(0.0, 0.5, shape)
            # re-run the initializer with the value fed in: one session run for all variables
            feeds[var.initializer.inputs[1]] = value.astype(var.dtype.base_dtype.as_numpy_dtype)
            variables.append(var)
    if variables:
        sess.run([v.initializer for v in variables], feed_dict=feeds)
    return [v.op.name for v in variables]


def session_config():
    """Session config without Grappler's remapper: on CPU (oneDNN) it fuses FusedBatchNorm with the
    following activation and then fails at run time, e.g. "Fusion is not implemented:
    [FusedBatchNorm,Tanh]" (a TensorFlow 2.21 bug, not tf1prune's)."""
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    return config


def run_graph(graph_def, feeds, output_tensor_names):
    """Import ``graph_def`` into a fresh graph and run ``output_tensor_names`` on ``feeds``."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=session_config()) as sess:
        return sess.run(list(output_tensor_names), feed_dict=dict(feeds))


def kl_divergence(logits_p, logits_q):
    """Mean KL(softmax p || softmax q) over the rows of two logit arrays."""
    def log_softmax(v):
        v = v.astype(np.float64) - v.max(-1, keepdims=True)
        return v - np.log(np.exp(v).sum(-1, keepdims=True))
    log_p, log_q = log_softmax(logits_p), log_softmax(logits_q)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)))


def random_feeds(input_specs, batch, seed):
    """Random batch-``batch`` inputs for ``input_specs`` (whose batch dimension is replaced)."""
    rng = np.random.RandomState(seed)
    feeds = {}
    for name, (shape, dtype) in input_specs.items():
        full = (batch,) + tuple(shape[1:])
        if np.issubdtype(np.dtype(dtype), np.floating):
            feeds[name] = rng.standard_normal(full).astype(dtype)
        else:
            feeds[name] = rng.randint(0, 4, full).astype(dtype)
    return feeds


def check_reasons(analysis):
    """Every unprunable group has a reason naming a node of the graph (quoted)."""
    for g in analysis.groups:
        if g.prunable:
            assert g.reason is None
            continue
        assert isinstance(g.reason, str) and g.reason.strip(), "group %d: empty reason" % g.id
        named = [n for n in re.findall(r"'([^']+)'", g.reason) if n in analysis.view.nodes]
        assert named, "group %d: reason names no node of the graph: %r" % (g.id, g.reason)


def static_shapes(graph_def):
    """Tensor name -> static shape TensorFlow infers when it imports ``graph_def`` as it is."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    return {t.name: t.shape for op in graph.get_operations() for t in op.outputs}


def check_static_shapes(sparse_gd, slim_gd):
    """Every tensor of the slim graph has the static shape it has in the sparse graph, but for
    smaller (known) channel dimensions: no static dimension is lost (e.g. after an If)."""
    sparse, slim_shapes = static_shapes(sparse_gd), static_shapes(slim_gd)
    for name, want in sparse.items():
        got = slim_shapes.get(name)
        if got is None:
            continue
        assert got.rank == want.rank, (name, got, want)
        for i, (g, w) in enumerate(zip(got.as_list() if got.rank is not None else [],
                                       want.as_list() if want.rank is not None else [])):
            assert g == w or w is None or (g is not None and g < w), \
                "%s: dimension %d is %s in the slim graph, %s in the sparse one" % (name, i, g, w)


def keep_mask(analysis, ratio=0.5, sparsity=None, channel_divisible=1):
    """The L1 spec (a Choice) for a uniform ``ratio`` or, when given, a MACs ``sparsity``."""
    if sparsity is not None:
        spec = spec_mod.make_spec(analysis, sparsity=sparsity, channel_divisible=channel_divisible,
                                  best_effort=True)   # exactness is tested here, targets elsewhere
    else:
        spec = spec_mod.make_spec(analysis, ratio=ratio, channel_divisible=channel_divisible)
    return spec


def check_slim_equals_sparse(graph_def, input_specs, outputs, ratio=0.5, batch=3, seed=0,
                             sparsity=None, channel_divisible=1, rtol=1e-4, atol=1e-4, analysis=None):
    """Analyse, prune (``ratio``, or ``sparsity`` when given), and assert slim(x) == sparse(x).

    ``input_specs`` have batch 1 (used for the analysis); a batch-``batch`` random input is fed
    to both graphs.  Also checks the reasons of unprunable groups, that the MACs of the slim graph
    (re-analysed) equal the predicted ``flops.count(analysis, keep)`` and are below the original
    whenever a channel was removed, and that a ratio spec removes channels when it should.
    ``analysis`` may be given to reuse an analysis of ``graph_def``.  Returns the analysis, with
    ``keep`` (the kept-unit mask), ``macs_before`` and ``macs_after`` (of the re-analysed slim
    graph) set on it for reporting.
    """
    analysis = analysis or tf1prune.analyze(graph_def, input_specs, outputs)
    check_reasons(analysis)
    choice = keep_mask(analysis, ratio, sparsity, channel_divisible)
    plan = analysis.plan(choice)
    keep = plan.keep
    if sparsity is None:
        minimum = allocation.rank_units(analysis, criteria.unit_scores(analysis)).minimum
        expect_pruned = any(g.prunable and max(minimum[g.id], allocation.keep_count(g.channels, ratio, channel_divisible))
                            < g.channels for g in analysis.groups)
        assert expect_pruned == (not keep.all())
    sparse_gd = slim.apply_sparse(plan)
    slim_gd = slim.apply_slim(plan)

    check_static_shapes(sparse_gd, slim_gd)
    feeds = random_feeds(input_specs, batch, seed)
    names = [o if ":" in o else o + ":0" for o in outputs]
    sparse_out = run_graph(sparse_gd, feeds, names)
    slim_out = run_graph(slim_gd, feeds, names)
    for name, a, b in zip(names, sparse_out, slim_out):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert np.all(np.isfinite(a)), "%s: sparse output not finite" % name
        scale = max(float(np.max(np.abs(a))), 1e-6)
        assert np.allclose(b, a, rtol=rtol, atol=atol * scale), \
            "%s: slim != sparse, max abs diff %g (output scale %g)" % (name, np.max(np.abs(a - b)), scale)

    before = flops.count(analysis).macs
    predicted = flops.count(analysis, choice).macs
    actual = flops.count(tf1prune.analyze(slim_gd, input_specs, outputs)).macs
    assert actual == predicted, "slim graph has %d MACs, predicted %d" % (actual, predicted)
    if not keep.all():
        assert actual < before, "channels removed but MACs %d -> %d" % (before, actual)
    analysis.keep, analysis.macs_before, analysis.macs_after = keep, before, actual
    return analysis
