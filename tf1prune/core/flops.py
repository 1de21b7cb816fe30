"""MACs and parameter counts from static shapes, per layer and in total.

MACs count every layer the op rules know (conv, depthwise, dense, transposed conv, batched matmul,
einsum), pruned or not, inside function bodies too (for an If, the costlier branch): the
multiply-accumulates for the batch of the input specs.  Layers whose MACs cannot be counted (a
loop body, an unknown layer op) are listed in ``uncounted``: the total is then incomplete.
Parameters count every float constant or variable the outputs depend on.  Both can be evaluated
for a kept-channel choice without building the slim graph, e.g. ``count(a, spec).macs``.
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.core import rules

LayerCount = collections.namedtuple("LayerCount", "node kind macs params")


class Report(collections.namedtuple("Report", "macs params layers uncounted")):
    """MACs and params in total and per layer; ``uncounted``: (node, why) of layers not in the total."""

    @property
    def complete(self):
        return not self.uncounted


def _kept(analysis, dim, keep):
    return dim.fixed + (len(dim.elems) if keep is None else int(np.count_nonzero(keep[analysis.unit_of[dim.elems]])))


def layer_macs(analysis, layer, keep=None):
    """MACs of one layer for kept-unit mask ``keep`` (None: unpruned)."""
    macs = layer.factor
    for dim in layer.dims:
        macs *= _kept(analysis, dim, keep)
    return int(macs)


def total(layers, macs):
    """Total MACs of ``layers`` (per-layer ``macs``): alternative branches count their costliest one."""
    flat, branches = 0, collections.defaultdict(lambda: collections.defaultdict(list))
    for layer, m in zip(layers, macs):
        if layer.path:
            call, branch = layer.path[0]
            branches[call][branch].append((layer._replace(path=layer.path[1:]), m))
        else:
            flat += m
    for per_branch in branches.values():
        flat += max(total(*zip(*items)) for items in per_branch.values())
    return flat


def param_nodes(analysis):
    """The floating-point parameters (constants and variables) of known shape the outputs need."""
    view = analysis.view
    for name in view.order:
        node = view.nodes[name]
        if rules.is_param_source(node.op) and view.shape(name + ":0") is not None:
            dtype = tf.as_dtype(node.attr["dtype"].type) if "dtype" in node.attr else view.dtype(name + ":0")
            if dtype.base_dtype.is_floating:
                yield name


def count(analysis, choice=None):
    """MACs/params of the graph, or of its slim version for a :class:`~tf1prune.core.choice.Choice`
    (a spec is one).

    Example::

        before, after = count(a), count(a, spec)
        print(before.macs, after.macs, before.complete)
    """
    plan = None if choice is None else analysis.plan(choice)
    keep = None if plan is None else plan.keep
    per_layer = [layer_macs(analysis, layer, keep) for layer in analysis.layers]
    layers = []
    for layer, macs in zip(analysis.layers, per_layer):
        params = 0   # a kernel: window x its dims (layers without constant weights have none)
        if layer.kernel is not None:
            params = layer.window * int(np.prod([_kept(analysis, d, keep) for d in layer.dims], dtype=np.int64))
        layers.append(LayerCount(layer.node, layer.kind, macs, params))
    params = 0
    for name in param_nodes(analysis):
        shape = analysis.view.shape(name + ":0")
        params += int(np.prod(plan.shape(name, shape) if plan else shape, dtype=np.int64))
    return Report(total(analysis.layers, per_layer), params, layers, list(analysis.uncounted))


def layer_table(before, after=None):
    """Text table of per-layer MACs/params (with a second report: before -> after)."""
    rows = ["%-48s %-9s %14s %12s" % ("layer", "kind", "MACs", "params")]
    after_by_node = {l.node: l for l in after.layers} if after else {}
    for l in before.layers:
        a = after_by_node.get(l.node)
        macs = "%d" % l.macs if a is None else "%d->%d" % (l.macs, a.macs)
        params = "%d" % l.params if a is None else "%d->%d" % (l.params, a.params)
        rows.append("%-48s %-9s %14s %12s" % (l.node[-48:], l.kind, macs, params))
    rows.append("%-48s %-9s %14s %12s" % ("total", "", before.macs if not after else
                                          "%d->%d" % (before.macs, after.macs),
                                          before.params if not after else "%d->%d" % (before.params, after.params)))
    for _, why in before.uncounted:
        rows.append("not counted: %s" % why)
    return "\n".join(rows)
