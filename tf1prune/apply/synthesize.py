"""Calibration inputs made from the model itself, for post-training pruning without any data.

Every BatchNorm remembers the mean and variance its input had on the training data.  Starting from
random noise, :func:`synthesize_inputs` adjusts a batch of inputs by gradient descent (Adam) until
the batch statistics at every BatchNorm's input match those moving statistics (as ZeroQ, Cai et
al. 2020, does for quantization).  The inputs then serve as calibration data: BatchNorm
re-estimation and least-squares reconstruction see activations like the training data's.

Example::

    batches = synthesize_inputs(analysis, count=256)
    plan, report = refine(analysis.plan(spec), calibration=batches)
"""
import numpy as np

from tf1prune import progress as progress_lib
from tf1prune.core.names import tensor_name
from tf1prune.errors import Tf1PruneError


def synthesize_inputs(analysis, count=256, batch=64, steps=500, learning_rate=0.1, seed=0, graph_def=None,
                      progress=None):
    """``count`` inputs as feed dicts of ``batch`` rows whose BatchNorm input statistics match the
    moving statistics of ``analysis``' BatchNorms (see the module docstring)."""
    import tensorflow.compat.v1 as tf
    from tf1prune.tfcompat import session_config
    view = analysis.view
    graph_def = graph_def or view.graph_def
    nodes = {n.name: n for n in graph_def.node}
    sites = [s for s in analysis.batch_norms if s.x is not None and s.mean and s.variance
             and s.mean in nodes and s.variance in nodes]
    if not sites:
        raise Tf1PruneError("the graph has no BatchNorm whose statistics could guide synthetic inputs")
    specs, fixed = _inputs(view)
    if fixed:   # a graph with a fixed batch takes only that
        batch = fixed
        count = max(batch, count - count % batch)
    for name in list(specs):
        if not tf.as_dtype(specs[name][1]).is_floating:
            raise Tf1PruneError("input %r is %s: only floating-point inputs can be synthesized" % (name, specs[name][1]))
    if any("_gradient_op_type" in n.attr for n in graph_def.node):
        graph_def = _without_custom_gradients(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        holders = {name: tf.placeholder(tf.as_dtype(dtype), (fixed,) + tuple(shape[1:]), name="tf1prune_synth_in%d" % i)
                   for i, (name, (shape, dtype)) in enumerate(sorted(specs.items()))}
        tf.import_graph_def(graph_def, input_map={name: holder for name, holder in holders.items()}, name="")
        loss = 0.0
        for site in sites:
            x = graph.get_tensor_by_name(tensor_name(site.x))
            axes = [a for a in range(x.shape.ndims) if a != site.axis]
            mean, variance = tf.nn.moments(tf.cast(x, tf.float32), axes)
            want_mean = tf.constant(np.asarray(_const(nodes[site.mean]), np.float32).reshape(-1))
            want_std = tf.constant(np.sqrt(np.maximum(np.asarray(_const(nodes[site.variance]), np.float32), 0)).reshape(-1))
            loss += tf.reduce_mean(tf.square(mean - want_mean)) + tf.reduce_mean(tf.square(tf.sqrt(variance + 1e-6)
                                                                                           - want_std))
        loss = loss / float(len(sites))
        names = sorted(holders)
        grads = tf.gradients(loss, [holders[n] for n in names])
    rng = np.random.RandomState(seed)
    out = []
    steps_bar = progress_lib.Steps(int(np.ceil(count / float(batch))) * steps, progress, "synthesize")
    with tf.Session(graph=graph, config=session_config()) as sess:
        for start in range(0, count, batch):
            rows = min(batch, count - start)
            values = {n: rng.standard_normal((rows,) + tuple(specs[n][0][1:])).astype(np.float32) for n in names}
            first, second = {n: 0.0 for n in names}, {n: 0.0 for n in names}
            for step in range(1, steps + 1):
                feed = {holders[n]: values[n] for n in names}
                for n, g in zip(names, sess.run(grads, feed)):
                    first[n] = 0.9 * first[n] + 0.1 * g
                    second[n] = 0.999 * second[n] + 0.001 * g * g
                    values[n] = values[n] - learning_rate * (first[n] / (1 - 0.9 ** step)) / (
                        np.sqrt(second[n] / (1 - 0.999 ** step)) + 1e-8)
                steps_bar.tick()
            out.append({n: values[n].astype(tf.as_dtype(specs[n][1]).as_numpy_dtype) for n in names})
    return out


def _without_custom_gradients(graph_def):
    """A copy of ``graph_def`` whose ops with Python custom gradients (Keras swish, ``tf.custom_gradient``)
    are differentiated like any other: their gradient functions belong to the graph that made them
    (another graph, or another process) and cannot be called on an imported copy."""
    import tensorflow.compat.v1 as tf
    out = tf.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        if "_gradient_op_type" in node.attr:
            del node.attr["_gradient_op_type"]
    return out


def _inputs(view):
    """``({tensor: (shape, dtype name)}, fixed batch or None)`` of the placeholders the outputs read
    (batch 1 shapes)."""
    import tensorflow.compat.v1 as tf
    from tf1prune.core import rules
    out, fixed = {}, set()
    for name in view.order:
        node = view.nodes[name]
        if rules.has_tag(node.op, "placeholder"):
            shape = view.shape(name + ":0")
            if shape is None or any(d is None for d in shape[1:]):
                raise Tf1PruneError("input %r has no static shape: give it in the input specs" % name)
            out[name + ":0"] = (tuple(shape), view.dtype(name + ":0").base_dtype.name)
            own = tf.TensorShape(node.attr["shape"].shape) if "shape" in node.attr else tf.TensorShape(None)
            if own.rank and own.as_list()[0] is not None:
                fixed.add(own.as_list()[0])
    if not out:
        raise Tf1PruneError("the graph has no input to synthesize")
    if len(fixed) > 1:
        raise Tf1PruneError("the graph's inputs have different fixed batches %s" % sorted(fixed))
    return out, (fixed.pop() if fixed else None)


def _const(node):
    from tf1prune.core.rules import build
    return build.const_value(node)
