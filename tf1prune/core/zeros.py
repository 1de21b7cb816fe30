"""Channels whose contribution is provably zero, as masked training or network slimming leaves them.

A prunable channel (unit) can be removed without changing any output when

- every consumer reads it with zero weights (its ``kernel_in`` slices are zero), or
- every filter that produces it is zero and every op between the producers and the consumers maps a
  zero channel to zero (the op rules' ``zero``): a zero bias, a BatchNorm with zero offset and zero
  scale (or mean), ReLU-like activations, pooling, reshapes...

Example::

    found = find_zero_channels(analysis, values)      # values(param name) -> array
    keep = found.keep                                 # every layer keeps a channel
    print(found.report())
"""
import collections

import numpy as np

from tf1prune.core import rules
from tf1prune.core.rules import KERNEL, Role

GroupZeros = collections.namedtuple("GroupZeros", "group channels by_consumers by_filters kept_reason")


class ZeroChannels(collections.namedtuple("ZeroChannels", "keep groups")):
    """``keep``: kept-unit mask without the zero channels; ``groups``: a :class:`GroupZeros` per
    prunable group with zero channels or zero filters."""

    @property
    def removed(self):
        return int(sum(g.by_consumers + g.by_filters for g in self.groups))

    def report(self):
        lines = []
        for g in self.groups:
            line = "group %d: %d of %d channels are zero" % (g.group, g.by_consumers + g.by_filters, g.channels)
            if g.by_consumers or g.by_filters:
                line += " (%d read with zero weights, %d with zero filters and offsets)" % (g.by_consumers,
                                                                                           g.by_filters)
            if g.kept_reason:
                line += "; channels with zero filters stay: %s" % g.kept_reason
            lines.append(line)
        return "\n".join(lines)


def _all_zero(analysis, values, roles):
    """Per unit: every slice of ``roles`` is zero (and there is one)."""
    def nonzero(name, axis):
        w = np.abs(np.asarray(values(name)))
        return (w.sum(axis=tuple(a for a in range(w.ndim) if a != axis)) != 0).astype(np.float64)
    total, count = analysis.per_unit(roles, nonzero)
    return (total == 0) & (count > 0)


def _nodes_carrying(analysis, units):
    """Unit -> names of the non-layer nodes whose outputs carry it."""
    layers = {layer.node for layer in analysis.layers}
    wanted = set(np.flatnonzero(units).tolist())
    out = collections.defaultdict(set)
    for tensor, info in analysis.info.items():
        node = tensor.split(":")[0]
        if node in layers:
            continue
        for u in set(analysis.unit_of[info.elems].tolist()) & wanted:
            out[u].add(node)
    return out


def _param_at(analysis, values, tensor, unit):
    """A parameter input's value at ``unit`` (all of it when it has no channel axis), or None."""
    source = analysis.view.read_source(tensor)
    if source is None or not rules.is_param_source(analysis.view.nodes[source].op):
        return None
    value = np.asarray(values(source))
    for axis, b in analysis.bindings.get(source, {}).items():
        value = np.compress(analysis.unit_of[b.elems] == unit, value, axis=axis)
    return value


def _zero_path(analysis, values, nodes, unit, position):
    """None when every op of ``nodes`` maps the zero channel ``unit`` to zero, else the first reason."""
    view = analysis.view
    for name in sorted(nodes, key=position.get):
        node = view.nodes[name]
        params = {i: _param_at(analysis, values, t, unit) for i, t in enumerate(view.data_inputs(name))
                  if analysis.tensor_info(t) is None}
        why = rules.lookup(node.op).zero(node, params)
        if why:
            return why
    return None


def keep_segments(analysis, keep, scores=None):
    """``keep`` with one channel restored in every producer or split part it would empty (the
    highest-scoring one), so that every layer keeps a channel."""
    keep = keep.copy()
    scores = np.zeros(analysis.num_units) if scores is None else scores
    for gid, segments in analysis.segments.items():
        if analysis.groups[gid].prunable:
            for segment in segments:
                if not keep[segment].any():
                    keep[segment[int(np.argmax(scores[segment]))]] = True
    return keep


def _prunable(analysis):
    prunable = np.zeros(analysis.num_units, bool)
    for g in analysis.groups:
        if g.prunable:
            prunable[g.units] = True
    return prunable


def zeroed_units(analysis, values):
    """Prunable units whose every kernel slice (producer and consumer side) is zero in ``values``:
    what the runner's masks leave."""
    return _all_zero(analysis, values, KERNEL) & _prunable(analysis)


def find_zero_channels(analysis, values):
    """The prunable channels whose contribution is provably zero in ``values`` (parameter name ->
    array), and per group how many were found and why other zero-filter channels stay."""
    prunable = _prunable(analysis)
    by_consumers = _all_zero(analysis, values, (Role.KERNEL_IN,)) & prunable
    zero_filters = _all_zero(analysis, values, (Role.FILTER,)) & prunable & ~by_consumers
    carriers = _nodes_carrying(analysis, zero_filters)
    by_filters = np.zeros(analysis.num_units, bool)
    reasons, position = {}, {n: i for i, n in enumerate(analysis.view.order)}
    for u in np.flatnonzero(zero_filters).tolist():
        why = _zero_path(analysis, values, carriers.get(u, ()), u, position)
        if why is None:
            by_filters[u] = True
        else:
            reasons[u] = why
    keep = keep_segments(analysis, ~(by_consumers | by_filters))
    groups = []
    for g in analysis.groups:
        units = np.array(g.units)
        if not g.prunable or not (zero_filters[units].any() or by_consumers[units].any()):
            continue
        kept = ~keep[units]
        why = next((reasons[u] for u in g.units if u in reasons), None)
        groups.append(GroupZeros(g.id, g.channels, int((by_consumers[units] & kept).sum()),
                                 int((by_filters[units] & kept).sum()), why))
    return ZeroChannels(keep, groups)


def mask_values(analysis, masks, shape_of):
    """Value provider of 0/1 ``masks`` (parameter name -> array; unnamed parameters are all ones),
    checked against the analysis: a one-line error names the first bad mask."""
    from tf1prune.errors import Tf1PruneError
    if not isinstance(masks, dict):
        raise Tf1PruneError("masks must be a dict of variable name -> 0/1 array, got %s" % type(masks).__name__)
    checked = {}
    for name, mask in masks.items():
        if name not in analysis.bindings:
            raise Tf1PruneError("mask for %r, which holds no prunable channels of this model" % (name,))
        try:
            value = np.asarray(mask, dtype=np.float64)
        except (TypeError, ValueError):
            raise Tf1PruneError("mask for %r is not numeric" % name)
        if list(value.shape) != list(shape_of(name)):
            raise Tf1PruneError("mask for %r has shape %s, the variable %s" % (name, list(value.shape),
                                                                                list(shape_of(name))))
        if not np.isin(value, (0.0, 1.0)).all():
            raise Tf1PruneError("mask for %r holds values other than 0 and 1" % name)
        checked[name] = value
    return lambda name: checked[name] if name in checked else np.ones(shape_of(name))
