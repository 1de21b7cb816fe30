"""MACs and parameter counts from static shapes, per layer and in total.

MACs count the conv, depthwise and dense layers (multiply-accumulates for the
batch of the input specs); parameters count every float constant or variable
the outputs depend on.  Both can be evaluated for a kept-unit mask without
building the slim graph, e.g. ``count(a, keep).macs``.
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import ops

Report = collections.namedtuple("Report", "macs params layers")
LayerCount = collections.namedtuple("LayerCount", "node kind macs params")


def _count(analysis, dim, keep):
    if np.isscalar(dim):
        return int(dim)
    if keep is None:
        return len(dim)
    return int(np.count_nonzero(keep[analysis.unit_of[dim]]))


def param_shape(analysis, node_name, keep=None):
    """Static shape of a parameter node with its bound axes shrunk to the kept channels."""
    shape = list(analysis.view.shape(node_name + ":0") or [])
    for axis, binding in analysis.bindings.get(node_name, {}).items():
        shape[axis] = _count(analysis, binding.elems, keep)
    return shape


def _param_nodes(analysis):
    view = analysis.view
    for name in view.order:
        node = view.nodes[name]
        if node.op in ops.PARAM_SOURCES and view.shape(name + ":0") is not None:
            dtype = tf.as_dtype(node.attr["dtype"].type) if "dtype" in node.attr else view.dtype(name + ":0")
            if dtype.base_dtype.is_floating:
                yield name


def count(analysis, keep=None):
    """MACs/params of the graph, or of its slim version for kept-unit mask ``keep``."""
    layers = []
    for layer in analysis.layers:
        macs = layer.factor
        for dim in layer.dims:
            macs *= _count(analysis, dim, keep)
        params = int(np.prod(param_shape(analysis, layer.kernel, keep), dtype=np.int64)) if layer.kernel else 0
        layers.append(LayerCount(layer.node, layer.kind, int(macs), params))
    params = 0
    for name in _param_nodes(analysis):
        params += int(np.prod(param_shape(analysis, name, keep), dtype=np.int64))
    return Report(sum(l.macs for l in layers), params, layers)


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
    return "\n".join(rows)
