"""Channel importance criteria: one registry, like the op rules.

A criterion scores every unit of an analysis (higher = more important) from its :class:`Inputs`:
the analysis, the parameter values and, for a data-driven criterion, calibration batches whose
activations it can read (:meth:`Inputs.activations`).  Scores are aggregated over every layer of a
group, each layer's divided by their mean first, so wide and narrow layers weigh the same.

Built in:

- ``l1`` (default), ``l2``: norms of a channel's kernel slices (producer outputs and consumer inputs);
- ``bn_gamma``: ``|gamma|`` of the BatchNorms on the channel (groups without BatchNorm: ``l1``);
- ``contribution``: a channel's expected squared input to its readers, from BatchNorm parameters (no data);
- ``activation``: the same, measured on calibration batches;
- ``reconstruction``: ThiNet-style greedy selection by the readers' output error (calibration batches).

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
            from tf1prune.core.graph import feed_batches, run_on_batches
            values = run_on_batches(self.analysis.view.graph_def, missing, feed_batches(self.calibration))
            self._activations.update(zip(missing, values))
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


class Contribution(Criterion):
    """The expected squared contribution of a channel to the layers that read it: ``E[x²]`` of the
    channel at each reader's input times the squared weights that read it (summed over taps and
    outputs), each reader's scores divided by their mean.  ``E[x²]`` comes from the BatchNorm
    parameters (``contribution``, no data: :func:`~tf1prune.core.activations.gaussian_moments`) or
    is measured on calibration batches (``activation``); channels whose readers' inputs have no known
    moments are scored by ``l1``."""

    def __init__(self, measured):
        self.needs_data = measured

    def scores(self, inputs):
        from tf1prune.core import activations
        a = inputs.analysis
        readers = _readers(a)
        if self.needs_data:
            measured = activations.measured_moments(a, a.view.graph_def, inputs.calibration,
                                                    [t for _, t in readers if t])
            second = {t: ms for t, (_, ms) in measured.items()}
        else:
            second = {t: m * m + s * s for t, (m, s) in activations.gaussian_moments(a, inputs.values).items()}
        total, count = np.zeros(a.num_units), np.zeros(a.num_units)
        for layer, x in readers:
            binding = a.bindings[layer.kernel][layer.in_axis]
            if x not in second or len(second[x]) != len(binding.elems):
                continue
            w = np.asarray(inputs.values(layer.kernel), np.float64)
            energy = (w * w).sum(axis=tuple(i for i in range(w.ndim) if i != layer.in_axis)) * second[x]
            mean = energy.mean() if energy.size else 0.0
            units = a.unit_of[binding.elems]
            np.add.at(total, units, energy / mean if mean > 0 else energy)
            np.add.at(count, units, 1)
        fallback = Norm("l1").scores(inputs)
        return np.where(count > 0, total / np.maximum(count, 1), fallback)


class ReconstructionError(Criterion):
    """ThiNet-style greedy selection (Luo et al. 2017): in each group, channels are removed one at a
    time, each time the one that adds least to the squared error of the layers reading the group
    (their outputs on sampled positions of the calibration batches, centred since bias compensation
    absorbs the mean; each reader's error relative to its output variance).  A unit scores the step
    at which it would be removed.  Readers are Conv2D (SAME or VALID) and dense layers; a group any of
    whose channels no such layer reads is scored by ``l1``."""

    needs_data = True

    def scores(self, inputs):
        from tf1prune.core import activations
        from tf1prune.core.rules.layers import patch_geometry
        a = inputs.analysis
        readers = [layer for layer, x in _readers(a) if x and (layer.kind == "dense" or layer.kind == "conv" and
                                                                patch_geometry(a.view, a.view.nodes[layer.node]))]
        covariances = activations.row_covariances(a, a.view.graph_def, inputs.calibration, readers)
        groups = {g.id: g for g in a.groups if g.prunable}
        local = {u: (g.id, i) for g in groups.values() for i, u in enumerate(g.units)}
        grams, covered = {}, np.zeros(a.num_units, bool)
        for layer in readers:
            binding = a.bindings[layer.kernel][layer.in_axis]
            w = np.asarray(inputs.values(layer.kernel), np.float64)
            w = (w if layer.in_axis == 0 else w.T) if layer.kind == "dense" else w.reshape(-1, w.shape[-1])
            channels = len(binding.elems)
            cov = covariances[layer.node][0]
            if w.shape[0] % channels or cov.shape[0] != w.shape[0]:
                continue
            taps = w.shape[0] // channels   # per (tap, channel): covariance of contributions, summed over outputs
            gram = (cov * (w @ w.T)).reshape(taps, channels, taps, channels).sum(axis=(0, 2))
            total = gram.sum()
            if not total > 0:
                continue
            units = a.unit_of[binding.elems].tolist()
            for gid in {local[u][0] for u in units if u in local}:
                pos = np.array([i for i, u in enumerate(units) if local.get(u, (None,))[0] == gid])
                idx = np.array([local[units[i]][1] for i in pos])
                n = len(groups[gid].units)
                np.add.at(grams.setdefault(gid, np.zeros((n, n))), (idx[:, None], idx[None, :]),
                          gram[np.ix_(pos, pos)] / total)
                covered[np.array(groups[gid].units)[idx]] = True
        scores = Norm("l1").scores(inputs)
        for gid, gram in grams.items():
            units = np.array(groups[gid].units)
            if covered[units].all():
                scores[units] = greedy_removal(gram)
        return scores


def greedy_removal(gram):
    """Scores from greedy removal under ``error(S) = 1ᵀ gram[S, S] 1``: the unit removed first scores
    0, the last one ``n - 1``."""
    n = len(gram)
    added, removed, score = np.diag(gram).astype(np.float64), np.zeros(n, bool), np.empty(n)
    for step in range(n):
        pick = int(np.argmin(np.where(removed, np.inf, added)))
        score[pick], removed[pick] = step, True
        added += 2 * gram[:, pick]
    return score


def _readers(analysis):
    """``[(layer, input tensor)]``: the layers whose kernel reads units through its input axis."""
    from tf1prune.core import activations
    return [(layer, activations.input_tensor(analysis, layer)) for layer in analysis.layers
            if layer.kernel is not None and layer.in_axis is not None and not layer.path
            and layer.in_axis in analysis.bindings.get(layer.kernel, {})
            and analysis.bindings[layer.kernel][layer.in_axis].role is Role.KERNEL_IN]


register("l1", Norm("l1"))
register("l2", Norm("l2"))
register("bn_gamma", BatchNormGamma())
register("contribution", Contribution(measured=False))
register("activation", Contribution(measured=True))
register("reconstruction", ReconstructionError())


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
