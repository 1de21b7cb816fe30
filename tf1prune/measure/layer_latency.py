"""Per-layer latency on this machine: each prunable layer's op timed alone, with its real input size
and batch, at a grid of kept widths; the rest of the model measured end to end.

:class:`LatencyProfile` of an analysis predicts the slim graph's latency for per-group kept counts:

    latency(counts) = scale x (sum over timed layers of time_l(kept MACs share of l)) + offset

``time_l`` interpolates the layer's timings at the grid ``WIDTHS`` (the kept share of its pruned
input and output channels), so a layer whose time does not fall with its MACs (small widths,
memory-bound depthwise convolutions) is modelled as it runs.  ``scale`` and ``offset`` make the
prediction equal the graph's end-to-end latency measured unpruned and at half the channels: they
hold what the timed layers alone do not (element-wise ops, BatchNorm, pooling, layers not timed
such as transposed and 3-D convolutions, einsums and function bodies, and the executor's own
per-op cost, which a layer timed alone overstates or understates).

Timings are medians of interleaved repeats after a warm-up; a layer timed while the machine was
busy (a large run-to-run spread) is timed again, and one that stays noisy is used but not cached.
Good ones are cached per machine, TensorFlow version, threads, batch and layer shape
(``~/.cache/tf1prune/latency-*.json``, ``TF1PRUNE_CACHE`` sets the folder), so identical layers
are timed once; the end-to-end runs per graph (its ops and wiring, not only its channels) and batch.

Example::

    profile = LatencyProfile.build(analysis, batch=1)
    print(profile.predict(layer_shares(analysis, choice)) / profile.total)
"""
import collections
import time

import numpy as np

from tf1prune.errors import Tf1PruneError
from tf1prune.measure.latency import BUSY

WIDTHS = (1.0, 0.75, 0.5, 0.25, 0.125)   # kept share of a layer's pruned channels
TIMED = ("conv", "depthwise", "dense")

LayerTiming = collections.namedtuple("LayerTiming", "node shares millis")
LayerTiming.__doc__ = ("A timed layer: ``millis[i]`` at the kept MACs share ``shares[i]`` (ascending), from its "
                       "own op run alone.")


def _op_graph(view, layer, fraction, batch):
    """``(GraphDef, input shape)`` of ``layer``'s op alone (input ``x``, output ``y``) with ``fraction``
    of its pruned channels (input and output), or None when it is not an op timed alone."""
    import tensorflow.compat.v1 as tf
    from tf1prune.core.rules.layers import patch_geometry
    node = view.nodes[layer.node]
    ins = view.data_inputs(layer.node)
    x_shape, k_shape = view.shape(ins[0]), view.shape(ins[1]) if len(ins) > 1 else None
    if x_shape is None or None in x_shape or k_shape is None or None in k_shape:
        return None
    x_shape, k_shape = list(x_shape), list(k_shape)
    x_shape[0] = x_shape[0] * batch
    pruned = [bool(len(d.elems)) for d in layer.dims]

    def keep(n, prune):
        return max(1, int(round(n * fraction))) if prune else n
    graph = tf.Graph()
    rng = np.random.RandomState(0)
    with graph.as_default():
        if layer.kind == "conv" and patch_geometry(view, node) is not None:
            fmt = view.attr(layer.node, "data_format", "NHWC") or "NHWC"
            c_axis = 1 if fmt == "NCHW" else 3
            k_shape[2], k_shape[3] = keep(k_shape[2], pruned[0]), keep(k_shape[3], pruned[1])
            x_shape[c_axis] = k_shape[2]
            x = tf.placeholder(tf.float32, x_shape, name="x")
            tf.nn.conv2d(x, tf.constant(rng.randn(*k_shape).astype(np.float32)), view.attr(layer.node, "strides"),
                         view.attr(layer.node, "padding"), data_format=fmt,
                         dilations=view.attr(layer.node, "dilations", [1, 1, 1, 1]), name="y")
        elif layer.kind == "depthwise" and patch_geometry(view, node, depthwise=True) is not None:
            fmt = view.attr(layer.node, "data_format", "NHWC") or "NHWC"
            c_axis = 1 if fmt == "NCHW" else 3
            k_shape[2] = keep(k_shape[2], pruned[0])
            x_shape[c_axis] = k_shape[2]
            x = tf.placeholder(tf.float32, x_shape, name="x")
            tf.nn.depthwise_conv2d_native(x, tf.constant(rng.randn(*k_shape).astype(np.float32)),
                                          view.attr(layer.node, "strides"), view.attr(layer.node, "padding"),
                                          data_format=fmt, name="y")
        elif layer.kind == "dense" and len(x_shape) == 2 and len(k_shape) == 2 \
                and not view.attr(layer.node, "transpose_a", False):
            k_in, k_out = (1, 0) if view.attr(layer.node, "transpose_b", False) else (0, 1)
            k_shape[k_in], k_shape[k_out] = keep(k_shape[k_in], pruned[0]), keep(k_shape[k_out], pruned[1])
            x_shape[1] = k_shape[k_in]
            x = tf.placeholder(tf.float32, x_shape, name="x")
            tf.matmul(x, tf.constant(rng.randn(*k_shape).astype(np.float32)), transpose_b=k_in == 1, name="y")
        else:
            return None
    return graph.as_graph_def(), x_shape


def _time(graph_defs, threads, runs=9, warmup=2):
    """Median milliseconds of each ``(GraphDef, input shape)``, interleaved, minus a session call's
    own overhead; and the run-to-run spread."""
    import tensorflow.compat.v1 as tf
    sessions, calls = [], []
    config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    try:
        for gd, shape in graph_defs + [(None, None)]:
            graph = tf.Graph()
            with graph.as_default():
                if gd is None:   # the overhead of a session call that does nothing
                    x = tf.placeholder(tf.float32, [1], name="x")
                    tf.identity(x, name="y")
                    shape = [1]
                else:
                    tf.import_graph_def(gd, name="")
            sess = tf.Session(graph=graph, config=config)
            sessions.append(sess)
            run = sess.make_callable(graph.get_tensor_by_name("y:0"), [graph.get_tensor_by_name("x:0")])
            calls.append((run, np.random.RandomState(1).standard_normal(shape).astype(np.float32)))
        for run, x in calls:
            for _ in range(warmup):
                run(x)
        times = [[] for _ in calls]
        for i in range(runs):
            for j in (range(len(calls)) if i % 2 == 0 else reversed(range(len(calls)))):
                run, x = calls[j]
                start = time.perf_counter()
                run(x)
                times[j].append(1000 * (time.perf_counter() - start))
    finally:
        for sess in sessions:
            sess.close()
    overhead = float(np.median(times[-1]))
    medians = [max(float(np.median(t)) - overhead, 0.0) for t in times[:-1]]
    spreads = sorted((np.percentile(t, 90) - np.percentile(t, 10)) / max(np.median(t), 1e-9) for t in times[:-1])
    return medians, (spreads[len(spreads) // 2] if spreads else 0.0)


def _signature(view, layer, batch):
    node = view.nodes[layer.node]
    ins = view.data_inputs(layer.node)
    attrs = {k: view.attr(layer.node, k) for k in ("strides", "padding", "dilations", "data_format", "transpose_a",
                                                  "transpose_b")}
    return "%s|%s|%s|%s|%s|batch %d" % (node.op, view.shape(ins[0]), view.shape(ins[1]) if len(ins) > 1 else None,
                                        sorted(attrs.items()), [bool(len(d.elems)) for d in layer.dims], batch)


class LatencyProfile:
    """Per-layer timings and the end-to-end remainder of one model on this machine (see the module
    docstring).  ``total``: the original graph's measured latency (ms)."""

    def __init__(self, analysis, timings, calibration, batch, threads, seconds, cached):
        self.analysis, self.timings, self.batch, self.threads = analysis, timings, batch, threads
        self.seconds, self.cached = seconds, cached
        self._index = {t.node: i for i, t in enumerate(timings)}
        # [(layers' sum, end to end)]: unpruned, at half width, then every slim graph measured
        self.calibration = list(calibration)
        self.total = calibration[0][1]
        self._fit()

    def _fit(self):
        """``scale`` and ``offset`` from the end-to-end points: least squares, the unpruned point exact."""
        (l_full, e_full), rest = self.calibration[0], self.calibration[1:]
        dl = np.array([l_full - l for l, _ in rest])
        de = np.array([e_full - e for _, e in rest])
        scale = float(dl @ de / (dl @ dl)) if len(dl) and dl @ dl > 1e-12 else 0.0
        if not 0.0 < scale < 10.0:      # the runs do not order: the time is not in the layers
            scale = e_full / max(l_full, 1e-9) if not len(de) or de.max() > 0 else 0.0
        self.scale, self.offset = scale, e_full - scale * l_full

    def add_point(self, shares, millis):
        """Re-fit on one more end-to-end measurement: a slim graph at ``shares`` ran ``millis``."""
        self.calibration.append((self.layer_total(shares), float(millis)))
        self._fit()

    def layer_millis(self, node, share):
        """Interpolated time of layer ``node`` alone at kept MACs share ``share``."""
        t = self.timings[self._index[node]]
        return float(np.interp(share, t.shares, t.millis))

    def layer_total(self, shares):
        """Sum of the timed layers' times at ``shares`` (node -> MACs share; None: unpruned)."""
        return sum(self.layer_millis(t.node, 1.0 if shares is None else shares.get(t.node, 1.0))
                   for t in self.timings)

    def predict(self, shares):
        """Predicted end-to-end latency (ms) for per-layer kept MACs shares: the timed layers' sum,
        calibrated on the end-to-end runs (``scale`` x sum + ``offset``)."""
        return self.scale * self.layer_total(shares) + self.offset

    def table(self, shares=None):
        """Per timed layer: milliseconds alone, unpruned (and at ``shares``: node -> kept MACs share)."""
        lines = ["%-48s %9s%s" % ("layer", "ms", "" if shares is None else " %9s" % "ms after")]
        for t in self.timings:
            line = "%-48s %9.3f" % (t.node[-48:], self.layer_millis(t.node, 1.0))
            if shares is not None:
                line += " %9.3f" % self.layer_millis(t.node, shares.get(t.node, 1.0))
            lines.append(line)
        lines.append("end to end = %.3f x the layers' sum + %.3f ms (fitted on %d end-to-end runs)"
                     % (self.scale, self.offset, len(self.calibration)))
        return "\n".join(lines)

    @classmethod
    def build(cls, analysis, batch=1, threads=0, refresh=False, progress=None, attempts=3):
        """Time ``analysis``'s layers (cached) and its graph end to end, unpruned and at half width."""
        from tf1prune import progress as progress_lib
        from tf1prune.measure.rounding import _machine, cache_path
        from tf1prune.workflows.store import ResultStore
        import tensorflow.compat.v1 as tf
        if analysis.uncounted:
            raise Tf1PruneError("a latency target needs every layer sized: %s" % analysis.uncounted[0][1])
        start = time.time()
        view = analysis.view
        path = cache_path(threads).replace("rounding-", "latency-")
        identity = {"machine": _machine(threads)}
        try:
            store = ResultStore.open(path, "layer-latency", identity, {"widths": list(WIDTHS)})
        except Tf1PruneError as e:
            tf.logging.warning("latency cache: %s; timing again", e)
            store = ResultStore(path, "layer-latency", identity, {"widths": list(WIDTHS)})
        todo, timings, cached = collections.OrderedDict(), {}, True
        for layer in analysis.layers:
            if layer.kind not in TIMED or layer.path:
                continue
            key = _signature(view, layer, batch)
            if not refresh and store.value(key) is not None:
                timings[layer.node] = (key, store.entries[key]["millis"])
                continue
            graphs = [_op_graph(view, layer, f, batch) for f in WIDTHS]
            if graphs[0] is None:
                continue
            todo.setdefault(key, (layer, graphs))
            timings[layer.node] = (key, None)
        steps = progress_lib.Steps(len(todo), progress, "layer latency")
        measured = {}
        for key, (layer, graphs) in todo.items():
            for _ in range(max(1, attempts)):
                millis, spread = _time(graphs, threads)
                if spread <= BUSY:
                    break
            measured[key] = millis
            cached = False
            if spread <= BUSY:
                store.record(key, float(millis[0]), millis=millis)
            steps.tick(layer.node)
        if todo:
            try:
                store.save()
            except OSError:
                pass
        out = []
        for layer in analysis.layers:
            if layer.node not in timings:
                continue
            key, millis = timings[layer.node]
            millis = measured[key] if millis is None else millis
            shares = [_macs_share(layer, f) for f in WIDTHS]
            order = np.argsort(shares)
            out.append(LayerTiming(layer.node, [shares[i] for i in order], [millis[i] for i in order]))
        from tf1prune.core import flops
        from tf1prune.measure.latency import graph_fingerprint
        key = "end to end|%s|%s|batch %d" % (analysis.digest(), graph_fingerprint(view.graph_def), batch)
        entry = None if refresh else store.entries.get(key)
        half_choice = _half(analysis)
        if entry is None or entry.get("value") is None:
            ends, spread = _end_to_end(analysis, half_choice, batch, threads, attempts)
            cached = False
            if spread <= BUSY:
                store.record(key, ends[0], half=ends[1])
                try:
                    store.save()
                except OSError:
                    pass
        else:
            ends = (entry["value"], entry["half"])
        shares = layer_shares(analysis, half_choice)
        sums = [sum(float(np.interp(1.0 if s is None else s.get(t.node, 1.0), t.shares, t.millis)) for t in out)
                for s in (None, shares)]
        return cls(analysis, out, list(zip(sums, ends)), batch, threads, time.time() - start, cached)


def _macs_share(layer, fraction):
    share = 1.0
    for d in layer.dims:
        if len(d.elems):
            n = len(d.elems)
            share *= (max(1, int(round(n * fraction))) + d.fixed) / float(n + d.fixed)
    return share


def _half(analysis):
    """The L1 choice keeping half the channels of every prunable group."""
    from tf1prune.choose import allocation, criteria
    from tf1prune.core.choice import Choice
    ranking = allocation.rank_units(analysis, criteria.unit_scores(analysis))
    return Choice.from_counts(analysis, ranking, allocation.counts_for_ratio(analysis, 0.5, 1))


def layer_shares(analysis, choice):
    """Per counted layer, its kept MACs share under ``choice``."""
    from tf1prune.core import flops
    full = {l.node: l.macs for l in flops.count(analysis).layers}
    return {l.node: l.macs / full[l.node] if full[l.node] else 1.0 for l in flops.count(analysis, choice).layers}


def _end_to_end(analysis, half_choice, batch, threads, attempts=3):
    """``((ms unpruned, ms at half the channels), spread)``: the graph and its half-width slim graph
    timed end to end, interleaved (again while the machine is busy)."""
    from tf1prune.apply import slim
    from tf1prune.measure.latency import measure_settled
    half_gd = slim.apply_slim(analysis.plan(half_choice), validate=False)
    stats, spread = measure_settled([analysis.view.graph_def, half_gd], analysis.view.output_node_names,
                                    analysis.view.input_specs, batch=batch, threads=threads, attempts=attempts)
    return (stats[0].median, stats[1].median), spread
