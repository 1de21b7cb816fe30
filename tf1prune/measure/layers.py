"""Per-layer timing on this machine: a model's own conv, depthwise and dense layers at other widths.

A :class:`LayerConfig` is one of the analysed graph's layer ops with its real input size, kernel and
attributes (strides, padding, data format...), at given input and output channel counts.
:func:`time_layers` builds each config as its own small graph (the op's NodeDef copied, its input
and kernel resized) and times them all in one session, round-robin, so a burst of load hits every
config alike; :class:`Timings` keeps every run and says when the spread says the machine was busy.

Example::

    configs = [LayerConfig.of(analysis, layer, c_in, c_out, batch=1) for ...]
    timings = time_layers(configs, runs=7)
    print(timings.median(configs[0]), timings.noise)
"""
import collections
import time

import numpy as np

from tf1prune.core import rules
from tf1prune.core.rules import Role
from tf1prune.errors import Tf1PruneError

BUSY = 0.25   # a median relative spread (IQR / median) above this: the machine was busy


class LayerConfig(collections.namedtuple("LayerConfig", "op attrs x_shape x_dtype k_shape macs")):
    """One layer op to time: its NodeDef attributes, input shape and dtype, kernel shape, and its
    multiply-accumulates per run; hashable, so it keys :class:`Timings` (equal layers time once)."""

    @classmethod
    def of(cls, analysis, layer, c_in=None, c_out=None, batch=1):
        """The config of ``layer`` (a conv, depthwise or dense of ``analysis``' main graph) with ``c_in``
        input and ``c_out`` output channels (default: as in the graph), or None when it cannot be timed."""
        view = analysis.view
        node = view.nodes.get(layer.node)
        if node is None or layer.kernel is None or layer.in_axis is None or layer.kind not in (
                "conv", "depthwise", "dense"):
            return None
        inputs = view.data_inputs(node.name)
        x, k = inputs[0], inputs[1] if len(inputs) > 1 else None
        xs, ks = view.shape(x), view.shape(k) if k else None
        info = analysis.tensor_info(x)
        if xs is None or ks is None or any(d is None for d in xs + ks) or len(inputs) != 2:
            return None
        x_axis = info.axis if info is not None else (len(xs) - 1 if layer.kind == "dense"
                                                     else view.channel_axis(node.name, len(xs)))
        out_axis = next((a for a, b in analysis.bindings.get(layer.kernel, {}).items() if b.role is Role.FILTER
                         and a != layer.in_axis), len(ks) - 1)
        xs, ks = list(xs), list(ks)
        if x_axis != 0:
            xs[0] = batch
        c_in = ks[layer.in_axis] if c_in is None else int(c_in)
        xs[x_axis], ks[layer.in_axis] = c_in, c_in
        if layer.kind == "depthwise":
            outputs = c_in * ks[-1]
        else:
            ks[out_axis] = outputs = ks[out_axis] if c_out is None else int(c_out)
        attrs = tuple(sorted((key, value.SerializeToString()) for key, value in node.attr.items()
                             if not key.startswith("_")))
        macs = layer.factor * (outputs if layer.kind == "depthwise" else c_in * outputs) * (
            batch if x_axis != 0 else 1) // (view.shape(x)[0] if x_axis != 0 and view.shape(x)[0] else 1)
        return cls(node.op, attrs, tuple(xs), view.dtype(x).base_dtype.name, tuple(ks), int(macs))

    def signature(self):
        """Text that names the config apart from its node (two equal layers time alike)."""
        return "%s|%s|%s|%s|%s" % (self.op, self.x_shape, self.x_dtype, self.k_shape,
                                   ";".join("%s=%s" % (k, v.hex()) for k, v in self.attrs))


class Timings:
    """Every timed run of every config, in seconds."""

    def __init__(self, runs):
        self.runs = runs   # config -> [seconds]

    def median(self, config):
        return float(np.median(self.runs[config]))

    @property
    def noise(self):
        """The median over configs of the relative spread (IQR / median) of their runs."""
        spreads = [(np.percentile(t, 75) - np.percentile(t, 25)) / max(np.median(t), 1e-12)
                   for t in self.runs.values() if len(t) >= 3]
        return float(np.median(spreads)) if spreads else 0.0

    @property
    def busy(self):
        return self.noise > BUSY


def _graph_def(config, prefix):
    """NodeDefs of ``config``: a placeholder input, a random kernel, and the layer op."""
    import tensorflow.compat.v1 as tf
    from tf1prune.core.rules import build
    rng = np.random.RandomState(0)
    dtype = tf.as_dtype(config.x_dtype)
    x = build.placeholder_node(prefix + "x", dtype, config.x_shape)
    kernel = build.const_node(prefix + "k", (rng.standard_normal(config.k_shape) * 0.1), dtype)
    op = tf.NodeDef(name=prefix + "y", op=config.op, input=[x.name, kernel.name])
    for key, data in config.attrs:
        op.attr[key].ParseFromString(data)
    return [x, kernel, op]


def time_layers(configs, runs=7, warmup=2, threads=0):
    """:class:`Timings` of ``configs`` (each timed ``runs`` times after ``warmup`` runs, round-robin)."""
    import tensorflow.compat.v1 as tf
    configs = list(dict.fromkeys(c for c in configs if c is not None))
    graph_def = tf.GraphDef()
    for i, config in enumerate(configs):
        if not rules.is_layer(config.op):
            raise Tf1PruneError("%r is not a layer op" % config.op)
        graph_def.node.extend(_graph_def(config, "c%d/" % i))
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.import_graph_def(graph_def, name="")
        except ValueError as e:
            raise Tf1PruneError("cannot build a layer to time: %s" % str(e).strip().splitlines()[0])
    config_proto = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads,
                                  allow_soft_placement=True)
    rng = np.random.RandomState(1)
    times = {c: [] for c in configs}
    with tf.Session(graph=graph, config=config_proto) as sess:
        calls = []
        for i, config in enumerate(configs):
            x = graph.get_tensor_by_name("c%d/x:0" % i)
            value = rng.standard_normal(config.x_shape).astype(tf.as_dtype(config.x_dtype).as_numpy_dtype)
            calls.append((config, sess.make_callable(graph.get_tensor_by_name("c%d/y:0" % i).op, [x]), value))
        for _ in range(warmup):
            for _, run, value in calls:
                run(value)
        for i in range(runs):
            for config, run, value in (calls if i % 2 == 0 else calls[::-1]):
                start = time.perf_counter()
                run(value)
                times[config].append(time.perf_counter() - start)
    return Timings(times)
