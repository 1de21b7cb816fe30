"""Elastic-width masks: a plan's zeroed parameters read through masks that follow a widths variable.

Every group's units are ranked once, so a width ``k`` means "its first ``k`` units".  For each
parameter the plan zeroes (producer and consumer kernel slices, biases, BatchNorm scale and
offset), :func:`splice` puts ``value * mask`` between the parameter and its forward-pass readers,
the mask of each bound axis gathered from "rank < width" by the units its positions carry (the
plan's ``ParamSlice.units``).  No weight is overwritten, and at widths ``w`` the graph computes the
sparse graph of ``w``.  The rewiring happens in place (as ``tf.contrib.quantize`` did): build it
before the training ops.

Example::

    widths, assign, widths_in, unmasked = splice(graph, analysis, ranking, gids, full, ["logits"])
    sess.run(assign, {widths_in: [8, 16, 4]})
"""
import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.core import rules
from tf1prune.core.rules import ZEROED

SCOPE = "tf1prune_ofa"


def splice(graph, analysis, ranking, gids, full, output_node_names):
    """Read every zeroed parameter of ``analysis`` through width masks, in ``graph`` (in place).

    ``gids``: the elastic groups, in the order of the widths vector; ``full``: their full widths.
    Returns ``(widths variable, assign op, widths placeholder, parameters no mask could reach)``."""
    plan = analysis.plan()
    rank = np.zeros(analysis.num_units, np.int32)
    slot = np.full(analysis.num_units, len(gids), np.int32)
    for i, gid in enumerate(gids):
        rank[ranking[gid]] = np.arange(len(ranking[gid]))
        slot[ranking[gid]] = i
    elastic = slot < len(gids)
    forward = _ancestors(graph, output_node_names)
    unmasked = []
    with graph.as_default(), tf.name_scope(SCOPE + "/"):
        widths = tf.Variable(list(full), dtype=tf.int32, trainable=False, name="widths",
                             collections=[tf.GraphKeys.LOCAL_VARIABLES])
        widths_in = tf.placeholder(tf.int32, [len(gids)], name="widths_in")
        assign = widths.assign(widths_in)
        limits = tf.concat([widths, [np.iinfo(np.int32).max]], 0)
        keep = tf.less(tf.constant(rank), tf.gather(limits, tf.constant(slot)))
        for name, slices in sorted(plan.params.items()):
            axes = [s for s in slices if s.role in ZEROED and elastic[s.units].any()]
            if not axes:
                continue
            sources = _forward_reads(graph, name, forward)
            if sources is None:
                unmasked.append(name)
                continue
            for tensor, consumers in sources:
                mask = None
                for s in axes:
                    shape = [1] * tensor.shape.ndims
                    shape[s.axis] = -1
                    part = tf.reshape(tf.gather(keep, tf.constant(s.units.astype(np.int32))), shape)
                    mask = part if mask is None else tf.logical_and(mask, part)
                masked = tf.multiply(tensor, tf.cast(mask, tensor.dtype), name="masked")
                for op, index in consumers:
                    op._update_input(index, masked)  # pylint: disable=protected-access
    return widths, assign, widths_in, unmasked


def _ancestors(graph, output_node_names):
    """Names of the ops the outputs depend on (data inputs)."""
    todo = [graph.get_operation_by_name(n) for n in output_node_names]
    seen = {op.name for op in todo}
    while todo:
        op = todo.pop()
        for t in op.inputs:
            if t.op.name not in seen:
                seen.add(t.op.name)
                todo.append(t.op)
    return seen


def _forward_reads(graph, name, forward):
    """``[(tensor, [(consumer op, input index)])]``: where the forward pass reads parameter ``name``
    (a variable's read ops, or a constant itself); None when it reads it where no mask can go."""
    try:
        op = graph.get_operation_by_name(name)
    except KeyError:
        return None
    if not rules.is_variable(op.type):
        tensors = [op.outputs[0]]
    else:
        tensors = []
        for consumer in op.outputs[0].consumers():
            if consumer.name not in forward:
                continue
            if not rules.is_read(consumer.type):
                return None   # the handle goes on (into a function call): no mask can reach it
            tensors.append(consumer.outputs[0])
    out = []
    for t in tensors:
        uses = [(c, i) for c in t.consumers() if c.name in forward for i, x in enumerate(c.inputs) if x is t]
        if uses:
            out.append((t, uses))
    return out or None
