"""Adaptive BatchNorm: re-estimate every BatchNorm's moving statistics from calibration batches.

The statistics are exact, not an exponential average (TF1's momentum of 0.99 would keep 37% of
the stale statistics after 100 batches): every BatchNorm normalises with its batch's statistics,
as in training, in one pass over the batches, and its moving mean and variance become the average
of its batch means and variances, weighted by batch size.  Fused BatchNorms accumulate the
unbiased batch variance (as their training updates do), ``tf.nn.batch_normalization`` the biased
one.  Fused (V1-V3, NHWC and NCHW), unfused and Keras ``If`` BatchNorms are recalibrated.

Example::

    batches = [{"input:0": x[i:i + 128]} for i in range(0, 1280, 128)]
    calibrated = tf1prune.recalibrate_batch_norm(graph_def, batches, input_specs, ["logits"])
"""
import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.core import rules
from tf1prune.core.graph import feed_batches  # noqa: F401  (calibrate.feed_batches: the workflows' name)
from tf1prune.tfcompat import session_config
from tf1prune.errors import Tf1PruneError, tf_error_line
from tf1prune.core.names import tensor_name
from tf1prune.core.rules import batchnorm, build


def batches_from_arrays(arrays, analysis, batch_size=None, source="calibration data"):
    """Feed dicts of ``batch_size`` rows from ``{input name: array}`` (one array per input the graph
    reads, all of one length), each checked against its placeholder: a graph input, the rank and the
    known dimensions (those of the analysis' input specs too), a numeric type (cast to the input's).

    ``batch_size`` None: the inputs' fixed batch when they have one, else 64; a size the graph's fixed
    batch refuses is an error.  Returns ``(batches, batch_size)``."""
    view = analysis.view
    if not isinstance(arrays, dict) or not arrays:
        raise Tf1PruneError("%s must hold one array per graph input" % source)
    feeds, fixed = {}, set()
    for name, array in arrays.items():
        tensor = tensor_name(name)
        node = view.nodes.get(tensor.split(":")[0])
        if node is None or not rules.is_input(node.op):
            raise Tf1PruneError("%s holds %r, which is not an input of the graph" % (source, name))
        dtype = tf.as_dtype(node.attr["dtype"].type)
        array = np.asarray(array)
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not (dtype.is_floating or dtype.is_complex)):
            raise Tf1PruneError("%s: %r is %s, the input takes %s" % (source, name, array.dtype, dtype.name))
        placeholder = tf.TensorShape(node.attr["shape"].shape) if "shape" in node.attr else tf.TensorShape(None)
        dims = list(placeholder.as_list()) if placeholder.rank is not None else None
        spec = view.input_specs.get(tensor)
        if dims is None and spec is not None:
            dims = [None] + list(spec[0][1:])
        if dims is not None:
            if array.ndim != len(dims):
                raise Tf1PruneError("%s: %r has rank %d, the input takes rank %d %s" % (
                    source, name, array.ndim, len(dims), [d if d is not None else -1 for d in dims]))
            known = [(i, d) for i, d in enumerate(dims) if d is not None and i > 0]
            known += [(i, d) for i, d in enumerate(spec[0] if spec is not None else ()) if i > 0 and d is not None]
            for i, d in known:
                if array.shape[i] != d:
                    raise Tf1PruneError("%s: %r has shape %s, the input takes %s" % (
                        source, name, list(array.shape), [x if x is not None else -1 for x in dims]))
            if dims and dims[0] is not None:
                fixed.add(dims[0])
        feeds[tensor] = array.astype(dtype.as_numpy_dtype, copy=False)
    missing = sorted(tensor_name(n.name) for n in view.graph_def.node   # inputs without a default
                     if rules.has_tag(n.op, "placeholder") and n.name in view.reachable and tensor_name(n.name) not in feeds)
    if missing:
        raise Tf1PruneError("%s has no array for the graph input %r" % (source, missing[0]))
    lengths = {len(a) for a in feeds.values()}
    if len(lengths) != 1:
        raise Tf1PruneError("%s needs arrays of one length, got %s" % (source, sorted(lengths)))
    if len(fixed) > 1:
        raise Tf1PruneError("the graph's inputs have different fixed batches %s" % sorted(fixed))
    if batch_size is None:
        batch_size = fixed.pop() if fixed else 64
    elif fixed and batch_size not in fixed:
        raise Tf1PruneError("the graph takes batches of %d: a batch of %d cannot be fed" % (min(fixed), batch_size))
    n = lengths.pop()
    if fixed and n % batch_size:
        n -= n % batch_size   # a fixed-batch graph cannot take the remainder
    if n == 0:
        raise Tf1PruneError("%s holds fewer rows than one batch of %d" % (source, batch_size))
    return [{t: a[i:i + batch_size] for t, a in feeds.items()} for i in range(0, n, batch_size)], batch_size


class Calibrator:
    """The training-mode statistics graph of an analysed frozen graph, built once and run for any
    constants patched in (``ana`` candidates).  ``graph_def``: the weights, a frozen graph of the
    analysed structure (default: the analysed graph)."""

    def __init__(self, analysis, graph_def=None):
        self.analysis = analysis
        unique = {}
        for s in analysis.batch_norms:   # a Keras If BatchNorm appears in both branches
            if s.x is not None and s.mean and s.variance:
                unique.setdefault((s.x, s.mean, s.variance), s)
        self.sites = list(unique.values())
        self.skipped = [s.node for s in analysis.batch_norms if s.x is None or not (s.mean and s.variance)]
        graph_def, self.fetches = batchnorm.training_graph(graph_def or analysis.view.graph_def, self.sites)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        self.session = tf.Session(graph=self.graph, config=session_config())

    def statistics(self, calibration_data, patches=None):
        """``{moving mean/variance constant: value}`` after the batches, with ``patches`` (constant
        name -> value) applied to the graph's constants."""
        batches = feed_batches(calibration_data)
        constants = {name + ":0": value for name, value in (patches or {}).items()}
        fetches = [f for site_fetches in self.fetches for f in site_fetches]
        sums = [None] * len(self.sites)
        for feed in batches:
            for name in feed:
                if name.split(":")[0] not in self.analysis.view.nodes:
                    raise Tf1PruneError("calibration input %r is not in the graph" % name)
            try:
                values = self.session.run(fetches, dict(feed, **constants))
            except (tf.errors.OpError, ValueError) as e:
                raise Tf1PruneError("calibration batch does not run: %s" % tf_error_line(e))
            for i, site in enumerate(self.sites):
                mean, variance, size = values[3 * i:3 * i + 3]
                mean, variance = mean.reshape(-1).astype(np.float64), variance.reshape(-1).astype(np.float64)
                n = size / max(len(mean), 1)
                if site.unbiased and n > 1:
                    variance = variance * n / (n - 1)
                acc = sums[i] or (0.0, 0.0, 0.0)
                sums[i] = (acc[0] + n * mean, acc[1] + n * variance, acc[2] + n)
        out = {}
        for site, (mean_sum, variance_sum, n) in zip(self.sites, sums):
            for name, value in ((site.mean, mean_sum / n), (site.variance, variance_sum / n)):
                shape = self.analysis.view.shape(name + ":0")
                dtype = self.analysis.view.dtype(name + ":0").base_dtype.as_numpy_dtype
                out[name] = value.reshape(shape).astype(dtype)
        return out

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def apply_statistics(graph_def, statistics):
    """A copy of frozen ``graph_def`` whose constants take the values in ``statistics``."""
    copy = tf.GraphDef()
    copy.CopyFrom(graph_def)
    nodes = {n.name: n for n in copy.node}
    for name, value in statistics.items():
        if not rules.is_const(nodes[name].op):
            raise Tf1PruneError("BatchNorm statistic %r is a variable: freeze the graph first" % name)
        build.set_const_value(nodes[name], value)
    return copy


def recalibrate_batch_norm(graph_def, calibration_data, input_specs=None, output_node_names=(), analysis=None):
    """A copy of frozen ``graph_def`` whose BatchNorms' moving statistics are re-estimated exactly on
    ``calibration_data`` (a list of feed dicts ``{input name: batch}``, or a callable returning one).

    Example::

        batches = [{"x:0": images[i:i + 128]} for i in range(0, 1280, 128)]
        calibrated = tf1prune.recalibrate_batch_norm(slim_gd, batches, {"x:0": ((1, 28, 28, 1), "float32")},
                                                     ["logits"])
    """
    from tf1prune.core.analysis import analyze
    analysis = analysis or analyze(graph_def, input_specs, output_node_names)
    calibrator = Calibrator(analysis)
    try:
        return apply_statistics(graph_def, calibrator.statistics(calibration_data))
    finally:
        calibrator.close()
