"""Channel importance, aggregated over every layer of a group.

Criteria: ``l1`` (default) and ``l2`` norms of the kernel slices of a channel
(producer output slices and consumer input slices), and ``bn_gamma`` (|gamma| of
the BatchNorms on the channel; groups without BatchNorm fall back to ``l1``).
Each layer's scores are divided by their mean before averaging, so wide and
narrow layers weigh the same.
"""
import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.errors import Tf1PruneError

CRITERIA = ("l1", "l2", "bn_gamma")


def const_values(analysis):
    """Value provider reading the Const nodes of the analysed graph."""
    nodes = analysis.view.nodes
    return lambda name: tf.make_ndarray(nodes[name].attr["value"].tensor)


def _accumulate(analysis, values, roles, norm):
    total = np.zeros(analysis.num_units)
    count = np.zeros(analysis.num_units)
    for name, axes in analysis.bindings.items():
        for axis, binding in axes.items():
            if binding.role not in roles:
                continue
            w = np.abs(np.asarray(values(name), dtype=np.float64))
            other = tuple(a for a in range(w.ndim) if a != axis)
            s = w.sum(axis=other) if norm == "l1" else np.sqrt((w ** 2).sum(axis=other))
            mean = s.mean()
            s = s / mean if mean > 0 else s
            units = analysis.unit_of[binding.elems]
            np.add.at(total, units, s)
            np.add.at(count, units, 1)
    return total, count


def unit_scores(analysis, criterion="l1", values=None):
    """Importance of every unit (higher = more important), an array over units."""
    if criterion not in CRITERIA:
        raise Tf1PruneError("unknown criterion %r (choose from %s)" % (criterion, ", ".join(CRITERIA)))
    values = values or const_values(analysis)
    total, count = _accumulate(analysis, values, ("kernel",), "l2" if criterion == "l2" else "l1")
    scores = total / np.maximum(count, 1)
    if criterion == "bn_gamma":
        g_total, g_count = _accumulate(analysis, values, ("bn_scale",), "l1")
        for group in analysis.groups:
            units = np.array(group.units)
            if g_count[units].all():
                scores[units] = g_total[units] / g_count[units]
    return scores


def zeroed_units(analysis, values=None, masks=None):
    """Prunable units whose every kernel slice is zero in ``values`` (param name -> array; default:
    the graph's constants), or in 0/1 ``masks`` (param name -> array; unnamed params are all ones)."""
    if masks is not None:
        values = lambda n: masks[n] if n in masks else np.ones(analysis.view.shape(n + ":0"))  # noqa: E731
    values = values or const_values(analysis)
    zero = np.ones(analysis.num_units, bool)
    seen = np.zeros(analysis.num_units, bool)
    for name, axes in analysis.bindings.items():
        for axis, b in axes.items():
            if b.role == "kernel":
                w = np.abs(np.asarray(values(name)))
                nonzero = w.sum(axis=tuple(a for a in range(w.ndim) if a != axis)) != 0
                units = analysis.unit_of[b.elems]
                np.logical_and.at(zero, units, ~nonzero)
                seen[units] = True
    prunable = np.zeros(analysis.num_units, bool)
    for g in analysis.groups:
        if g.prunable:
            prunable[g.units] = True
    return zero & seen & prunable
