"""Channel importance criteria: one registry, like the op rules.

A criterion scores every unit of an analysis (higher = more important) from its :class:`Inputs`:
the analysis, the parameter values and, for a data-driven criterion, calibration batches whose
activations it can read (:meth:`Inputs.activations`).  Scores are aggregated over every layer of a
group, each layer's divided by their mean first, so wide and narrow layers weigh the same.

Built in:

- ``l1`` (default), ``l2``: norms of a channel's kernel slices (producer outputs and consumer inputs);
- ``bn_gamma``: ``|gamma|`` of the BatchNorms on the channel (groups without BatchNorm: ``l1``).

A new criterion is one :func:`register` call::

    class Random(Criterion):
        def scores(self, inputs):
            return np.random.RandomState(0).rand(inputs.analysis.num_units)
    register("random", Random())
    spec = tf1prune.make_spec(analysis, sparsity=0.5, criterion="random")
"""
import numpy as np

from tf1prune.core.rules import KERNEL, Role, build
from tf1prune.errors import Tf1PruneError

REGISTRY = {}


class Criterion:
    """Scores every unit of an analysis (see the module docstring); ``needs_data``: it reads
    activations, so it needs calibration batches."""

    needs_data = False

    def scores(self, inputs):
        raise NotImplementedError


class Inputs:
    """What a criterion reads: ``analysis``, ``values(param name) -> array`` (default: the analysed
    graph's constants) and ``calibration`` batches (feed dicts; data-driven criteria only)."""

    def __init__(self, analysis, values=None, calibration=None):
        self.analysis = analysis
        self.values = values or const_values(analysis)
        self.calibration = calibration
        self._activations = {}

    def activations(self, tensors):
        """``{tensor: array}``: the analysed graph's ``tensors`` on the calibration batches, concatenated
        along the batch axis (computed once per tensor)."""
        if self.calibration is None:
            raise Tf1PruneError("this criterion reads activations: give calibration data")
        missing = [t for t in tensors if t not in self._activations]
        if missing:
            import tensorflow.compat.v1 as tf
            from tf1prune.apply import calibrate
            graph = tf.Graph()
            with graph.as_default():
                tf.import_graph_def(self.analysis.view.graph_def, name="")
            with tf.Session(graph=graph, config=calibrate.session_config()) as sess:
                runs = [sess.run(missing, feed) for feed in calibrate.feed_batches(self.calibration)]
            for i, t in enumerate(missing):
                self._activations[t] = np.concatenate([r[i] for r in runs])
        return {t: self._activations[t] for t in tensors}


def register(name, criterion):
    """Make ``criterion`` (a :class:`Criterion`) available as ``criterion=name`` everywhere."""
    if not isinstance(name, str) or not name:
        raise Tf1PruneError("a criterion needs a name, got %r" % (name,))
    if not isinstance(criterion, Criterion):
        raise Tf1PruneError("criterion %r must be a Criterion instance, got %r" % (name, criterion))
    REGISTRY[name] = criterion
    return criterion


def names():
    """The registered criteria."""
    return sorted(REGISTRY)


def lookup(name):
    if name not in REGISTRY:
        raise Tf1PruneError("unknown criterion %r (choose from %s)" % (name, ", ".join(names())))
    return REGISTRY[name]


def const_values(analysis):
    """Value provider reading the Const nodes of the analysed graph."""
    nodes = analysis.view.nodes
    return lambda name: build.const_value(nodes[name])


def channel_norms(value, axis, norm="l1"):
    """Per position of ``axis``: the L1 (or L2) norm of its slice, divided by their mean."""
    w = np.abs(np.asarray(value, dtype=np.float64))
    other = tuple(a for a in range(w.ndim) if a != axis)
    s = w.sum(axis=other) if norm == "l1" else np.sqrt((w ** 2).sum(axis=other))
    mean = s.mean() if s.size else 0.0
    return s / mean if mean > 0 else s


class Norm(Criterion):
    """The mean normalised L1 or L2 norm of a channel's kernel slices."""

    def __init__(self, norm):
        self.norm = norm

    def scores(self, inputs):
        total, count = inputs.analysis.per_unit(KERNEL, lambda name, axis: channel_norms(inputs.values(name), axis,
                                                                                         self.norm))
        return total / np.maximum(count, 1)


class BatchNormGamma(Criterion):
    """``|gamma|`` of the channel's BatchNorms; groups without one are scored by ``l1``."""

    def scores(self, inputs):
        scores = Norm("l1").scores(inputs)
        total, count = inputs.analysis.per_unit((Role.BN_SCALE,), lambda name, axis: channel_norms(inputs.values(name),
                                                                                                   axis))
        for group in inputs.analysis.groups:
            units = np.array(group.units)
            if count[units].all():
                scores[units] = total[units] / count[units]
        return scores


register("l1", Norm("l1"))
register("l2", Norm("l2"))
register("bn_gamma", BatchNormGamma())


def unit_scores(analysis, criterion="l1", values=None, calibration=None):
    """Importance of every unit (higher = more important) by the registered ``criterion``."""
    chosen = lookup(criterion)
    if chosen.needs_data and calibration is None:
        raise Tf1PruneError("criterion %r reads activations: give calibration data" % criterion)
    scores = np.asarray(chosen.scores(Inputs(analysis, values, calibration)), dtype=np.float64)
    if scores.shape != (analysis.num_units,):
        raise Tf1PruneError("criterion %r returned %s scores for %d units" % (criterion, scores.shape,
                                                                               analysis.num_units))
    return scores
