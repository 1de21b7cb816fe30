"""Channel importance, aggregated over every layer of a group.

Criteria: ``l1`` (default) and ``l2`` norms of the kernel slices of a channel (producer output
slices and consumer input slices), and ``bn_gamma`` (|gamma| of the BatchNorms on the channel;
groups without BatchNorm fall back to ``l1``).  Each layer's scores are divided by their mean
before averaging, so wide and narrow layers weigh the same.

Example::

    scores = unit_scores(analysis, "l1")     # an array over units, higher = more important
"""
import numpy as np

from tf1prune.errors import Tf1PruneError
from tf1prune.rules import KERNEL, Role, build

CRITERIA = ("l1", "l2", "bn_gamma")


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


def accumulate(analysis, values, roles, norm="l1"):
    """Per unit: the sum of :func:`channel_norms` over the bound axes of ``roles``, and their number."""
    total = np.zeros(analysis.num_units)
    count = np.zeros(analysis.num_units)
    for name, axes in analysis.bindings.items():
        for axis, binding in axes.items():
            if binding.role in roles:
                units = analysis.unit_of[binding.elems]
                np.add.at(total, units, channel_norms(values(name), axis, norm))
                np.add.at(count, units, 1)
    return total, count


def unit_scores(analysis, criterion="l1", values=None):
    """Importance of every unit (higher = more important), an array over units."""
    if criterion not in CRITERIA:
        raise Tf1PruneError("unknown criterion %r (choose from %s)" % (criterion, ", ".join(CRITERIA)))
    values = values or const_values(analysis)
    total, count = accumulate(analysis, values, KERNEL, "l2" if criterion == "l2" else "l1")
    scores = total / np.maximum(count, 1)
    if criterion == "bn_gamma":
        g_total, g_count = accumulate(analysis, values, (Role.BN_SCALE,))
        for group in analysis.groups:
            units = np.array(group.units)
            if g_count[units].all():
                scores[units] = g_total[units] / g_count[units]
    return scores
