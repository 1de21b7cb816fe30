"""CPU latency of frozen graphs: the runs of several graphs interleaved, so all see the same load.

Example::

    stats = tf1prune.measure.latency.measure([original_gd, slim_gd], ["logits/BiasAdd"], batch=8, runs=50)
    print(stats[0].median / stats[1].median)     # the speed-up
"""
import collections
import time

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import progress as progress_lib
from tf1prune.core import rules
from tf1prune.errors import Tf1PruneError, tf_error_line
from tf1prune.core.graph import example_input, normalize_input_specs, with_placeholder_dtypes
from tf1prune.core.names import node_of, tensor_name

Stats = collections.namedtuple("Stats", "median p10 p90 runs")
Stats.__doc__ = "Latency in milliseconds: median, 10th and 90th percentile over ``runs`` timed runs."


def _reachable(graph_def, output_node_names):
    """Names of the nodes the outputs depend on (through data and control inputs)."""
    inputs = {n.name: n.input for n in graph_def.node}
    seen, stack = set(), [node_of(n) for n in output_node_names]
    while stack:
        name = stack.pop()
        if name in seen or name not in inputs:
            continue
        seen.add(name)
        stack.extend(node_of(i) for i in inputs[name])
    return seen


def input_shapes(graph_def, input_specs=None, batch=1, output_node_names=None):
    """``{tensor: (shape, dtype)}`` of the graph's inputs: ``input_specs`` (any form
    :func:`tf1prune.analyze` takes) or the placeholders' own shapes, the first dimension set to
    ``batch`` (None: the spec's, else 1).  With ``output_node_names``, only the placeholders the outputs depend on."""
    specs = with_placeholder_dtypes(normalize_input_specs(input_specs), graph_def)
    nodes = {n.name: n for n in graph_def.node}
    for name in specs:
        if node_of(name) not in nodes:
            raise Tf1PruneError("input %r is not a node of the graph" % name)
    needed = _reachable(graph_def, output_node_names) if output_node_names else set(nodes)
    for node in graph_def.node:
        if rules.has_tag(node.op, "placeholder") and node.name in needed and tensor_name(node.name) not in specs:
            shape = tf.TensorShape(node.attr["shape"].shape) if "shape" in node.attr else tf.TensorShape(None)
            if shape.rank is None:
                raise Tf1PruneError("input %r has no static rank: give its shape in the input specs" % node.name)
            specs[tensor_name(node.name)] = (tuple(shape.as_list()), tf.as_dtype(node.attr["dtype"].type).name)
    out = {}
    for name, (shape, dtype) in specs.items():
        shape = tuple(shape)
        if shape:
            shape = (batch if batch is not None else shape[0] or 1,) + shape[1:]
        if any(d is None for d in shape):
            raise Tf1PruneError("input %r has an unknown dimension %s: give its shape in the input specs"
                                % (name, list(shape)))
        out[name] = (shape, dtype)
    return out


def random_feeds(shapes, seed=0):
    """Random inputs of ``shapes`` (:func:`~tf1prune.core.graph.example_input`)."""
    rng = np.random.RandomState(seed)
    return {name: example_input(shape, dtype, rng) for name, (shape, dtype) in shapes.items()}


class _Runner:
    """One graph in its own session, run through a callable (no per-run feed parsing)."""

    def __init__(self, graph_def, output_node_names, feeds, threads):
        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.import_graph_def(graph_def, name="")
                fetches = [self.graph.get_tensor_by_name(tensor_name(n)) for n in output_node_names]
                inputs = [self.graph.get_tensor_by_name(n) for n in feeds]
            except (KeyError, ValueError) as e:
                raise Tf1PruneError("cannot run the graph: %s" % str(e).strip().splitlines()[0])
        for tensor, value in zip(inputs, feeds.values()):
            if not tensor.shape.is_compatible_with(value.shape):
                raise Tf1PruneError("input %r takes shape %s, not %s%s" % (
                    tensor.name, [d if d is not None else -1 for d in tensor.shape.as_list()], list(value.shape),
                    " (its batch is fixed)" if tensor.shape.rank and tensor.shape.as_list()[0] is not None
                    and tensor.shape.as_list()[1:] == list(value.shape[1:]) else ""))
        config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads,
                                allow_soft_placement=True)   # graphs frozen on a GPU machine run on the CPU
        self.sess = tf.Session(graph=self.graph, config=config)
        self.run = self.sess.make_callable(fetches, inputs)
        self.args = list(feeds.values())

    def __call__(self):
        start = time.perf_counter()
        self.run(*self.args)
        return time.perf_counter() - start


def measure(graph_defs, output_node_names, input_specs=None, batch=1, threads=0, runs=50, warmup=5, seed=0,
            progress=True):
    """Latency :class:`Stats` of each graph on the same random inputs (batch ``batch``; inputs of one
    name get one value, and each graph is fed the placeholders its outputs read).  After ``warmup`` untimed runs each, the ``runs`` timed runs
    alternate between the graphs, in turn-reversing order; ``threads`` (0: TensorFlow's default)
    sets intra- and inter-op parallelism."""
    if runs < 1 or warmup < 0 or batch < 1 or threads < 0:
        raise Tf1PruneError("runs and batch must be positive, warmup and threads not negative")
    specs = normalize_input_specs(input_specs)
    shapes = [input_shapes(graph_defs[0], specs, batch, output_node_names)]
    for gd in graph_defs[1:]:   # a slim graph may have lost inputs the outputs do not read
        names = {n.name for n in gd.node}
        shapes.append(input_shapes(gd, {k: v for k, v in specs.items() if node_of(k) in names}, batch,
                                   output_node_names))
    union = {}
    for s in shapes:
        for name, shape in s.items():
            if union.setdefault(name, shape) != shape:
                raise Tf1PruneError("input %r has shape %s in one graph and %s in another: give it in the input specs"
                                    % (name, list(union[name][0]), list(shape[0])))
    feeds = random_feeds(dict(sorted(union.items())), seed)
    runners, times = [], [[] for _ in graph_defs]
    steps = progress_lib.Steps(runs, progress, "latency b=%d" % batch)
    try:
        for gd, s in zip(graph_defs, shapes):
            runners.append(_Runner(gd, output_node_names, {n: feeds[n] for n in sorted(s)}, threads))
        for r in runners:
            for _ in range(warmup):
                r()
        for i in range(runs):
            order = range(len(runners)) if i % 2 == 0 else reversed(range(len(runners)))
            for j in order:
                times[j].append(1000 * runners[j]())
            steps.tick()
    except tf.errors.OpError as e:
        raise Tf1PruneError("running the graph failed: %s" % tf_error_line(e))
    finally:
        for r in runners:
            r.sess.close()
    return [Stats(float(np.median(t)), float(np.percentile(t, 10)), float(np.percentile(t, 90)), len(t))
            for t in times]


def graph_fingerprint(graph_def):
    """A digest of what a graph runs: every node's op, wiring and attributes (constants' values left
    out) and its functions'.  Timings are cached under it: two graphs with the same channels but
    other ops (a Keras BatchNorm as an ``If`` or fused) are timed apart."""
    import hashlib
    h = hashlib.sha256()

    def add(nodes):
        for n in nodes:
            h.update(("%s|%s|%s|" % (n.name, n.op, ",".join(n.input))).encode())
            for k in sorted(n.attr):
                if k != "value":
                    h.update(k.encode() + n.attr[k].SerializeToString(deterministic=True))
    add(graph_def.node)
    for f in sorted(graph_def.library.function, key=lambda f: f.signature.name):
        h.update(f.signature.name.encode())
        add(f.node_def)
    return h.hexdigest()[:16]


BUSY = 0.3   # median (p90 - p10) / median of the timed graphs above this: the machine was busy


def noise(stats):
    """The median relative spread ``(p90 - p10) / median`` of timed graphs."""
    spreads = sorted((s.p90 - s.p10) / max(s.median, 1e-12) for s in stats)
    return spreads[len(spreads) // 2] if spreads else 0.0


def measure_settled(graph_defs, output_node_names, input_specs=None, batch=1, threads=0, runs=30, warmup=5,
                    attempts=3, progress=None):
    """``(stats, spread)``: :func:`measure`, again (up to ``attempts`` times) while the spread says the
    machine was busy."""
    for _ in range(max(1, attempts)):
        stats = measure(graph_defs, output_node_names, input_specs, batch=batch, threads=threads, runs=runs,
                        warmup=warmup, progress=progress)
        spread = noise(stats)
        if spread <= BUSY:
            break
    return stats, spread
