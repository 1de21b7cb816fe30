"""BatchNorm: the fused ops' channel rule, the unfused pattern, and the training-mode graph that
adaptive BatchNorm runs.

Every BatchNorm the analysis meets is recorded as a :class:`BatchNormSite`: its input ``x`` (a
tensor of the main graph, through function arguments for Keras ``If`` BatchNorms), the constants
or variables holding its moving ``mean`` and ``variance``, the channel axis, and whether training
accumulates the unbiased batch variance (fused ops) or the biased one (``tf.nn.batch_normalization``).
"""
import collections

import numpy as np

from tf1prune.core.names import node_of, tensor_name
from tf1prune.core.rules import build
from tf1prune.core.rules.base import Role, register

BatchNormSite = collections.namedtuple("BatchNormSite", "node x mean variance axis rank dtype unbiased rewire output "
                                                      "scale offset", defaults=(None, None, None))
BatchNormSite.__doc__ += """

``rewire``: ``(node, input index, 'mean' | 'variance', shape)`` inputs that read the moving
statistics of an unfused BatchNorm (fused ones read them as their inputs 3 and 4); ``output``: the
normalised tensor, ``scale`` and ``offset`` (gamma and beta: parameter nodes, None when absent or
not found), for data-free moments."""
FUSED = "FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3"


def _rank(ctx, t):
    s = ctx.shape(t)
    return None if s is None else len(s)


def _batch_norm(ctx, node):
    x, scale, offset, mean, var = ctx.inputs(node)[:5]
    axis = ctx.view.channel_axis(node.name, _rank(ctx, x) or 4)
    ctx.add_batch_norm(BatchNormSite(node.name, x, mean, var, axis, _rank(ctx, x), None, True, (), node.name + ":0",
                                     scale, offset))
    elems = ctx.channel_in(x, axis, node)
    if elems is None:
        return
    where = "%s '%s'" % (node.op, node.name)
    for t, role in ((scale, Role.BN_SCALE), (offset, Role.BN_OFFSET), (mean, Role.STAT), (var, Role.STAT)):
        if ctx.shape(t) != [0]:
            ctx.bind(t, 0, elems, role, where)
    ctx.set(node.name + ":0", axis, elems)
    ctx.set(node.name + ":1", 0, elems)
    ctx.set(node.name + ":2", 0, elems)


def _bn_zero(node, params):
    """BatchNorm maps 0 to ``offset - scale * mean / sqrt(var + eps)``: zero when the offset is zero
    and the scale or the mean is."""
    scale, offset, mean = params.get(1), params.get(2), params.get(3)
    if scale is None or offset is None or mean is None:
        return "%s '%s' reads a computed parameter" % (node.op, node.name)
    if np.any(offset != 0) or np.any((scale != 0) & (mean != 0)):
        return "%s '%s' maps 0 to a non-zero value (offset, or scale and mean)" % (node.op, node.name)
    return None


def unfused_site(ctx, mul, x, inv):
    """``x * inv`` where ``inv = rsqrt(variance + eps) [* scale]`` and a sibling ``mean * inv``: the
    graph of ``tf.nn.batch_normalization``; its site, or None."""
    view = ctx.view
    node = view.nodes[node_of(inv)]
    if node.op == "Mul":   # inv * scale
        inner = [view.nodes[node_of(t)] for t in view.data_inputs(node.name)]
        node = next((n for n in inner if n.op == "Rsqrt"), None)
    if node is None or node.op != "Rsqrt":
        return None
    added = view.nodes[node_of(view.data_inputs(node.name)[0])]
    if added.op not in ("Add", "AddV2"):
        return None
    # the variance, not epsilon (a scalar, or [1]); a 1-channel variance is [1] beside a scalar epsilon
    inputs = view.data_inputs(added.name)
    sources = [t for t in inputs if ctx.param_source(t) and ctx.shape(t) not in (None, [])]
    wide = [t for t in sources if ctx.shape(t) != [1]]
    variance = None
    if len(wide) == 1:
        variance = wide[0]
    elif len(sources) == 1 and len(inputs) == 2 and ctx.shape(inputs[1 - inputs.index(sources[0])]) == []:
        variance = sources[0]
    sibling = [(c, i) for c, i in view.consumers[node_of(inv)] if c != mul.name and view.nodes[c].op == "Mul"]
    mean = None
    for consumer, index in sibling:
        other = [t for j, t in enumerate(view.data_inputs(consumer)) if j != index]
        if other and ctx.param_source(other[0]):
            mean, rewire_mean = other[0], (consumer, 1 - index)
            break
    if variance is None or mean is None:
        return None
    rank = _rank(ctx, x)
    if rank is None or ctx.shape(mean) != ctx.shape(variance):
        return None
    shape = ctx.shape(mean)
    if len(shape) > rank or sum(d != 1 for d in shape) > 1 or None in shape:
        return None
    wide = [i for i, d in enumerate(shape) if d != 1]
    axis = rank - len(shape) + (wide[0] if wide else len(shape) - 1)   # one channel: the last axis
    if (ctx.shape(x) or [None] * rank)[axis] != shape[axis - rank + len(shape)]:
        return None
    rewire = (rewire_mean + ("mean", shape),
              (added.name, view.data_inputs(added.name).index(variance), "variance", shape))
    output, scale, offset = _unfused_ends(ctx, mul, inv, rewire_mean[0])
    return BatchNormSite(mul.name, x, mean, variance, axis, rank, None, False, rewire, output, scale, offset)


def _unfused_ends(ctx, mul, inv, mean_mul):
    """``(output tensor, scale, offset)`` of ``tf.nn.batch_normalization``'s graph: ``x * inv + (offset -
    mean * inv)`` with ``inv = rsqrt(variance + eps) [* scale]``; None for what is not found."""
    view = ctx.view
    inv_node = view.nodes[node_of(inv)]
    scale = None
    if inv_node.op == "Mul":
        scale = next((t for t in view.data_inputs(inv_node.name) if ctx.param_source(t)), None)
    subs = [c for c, _ in view.consumers[mean_mul] if view.nodes[c].op == "Sub"]
    offset = view.data_inputs(subs[0])[0] if subs and ctx.param_source(view.data_inputs(subs[0])[0]) else None
    adds = [c for c, _ in view.consumers[mul.name] if view.nodes[c].op in ("Add", "AddV2")
            and subs and subs[0] + ":0" in [tensor_name(t) for t in view.data_inputs(c)]]
    output = adds[0] + ":0" if adds and offset is not None else None
    return output, scale, offset


def set_training_mode(node):
    """Make a fused BatchNorm NodeDef normalise with its batch's statistics; False for other ops."""
    if node.op not in FUSED.split():
        return False
    node.attr["is_training"].b = True
    return True


def training_graph(graph_def, sites):
    """A copy of ``graph_def`` in which every BatchNorm normalises with its batch's statistics (as in
    training), and, per site, the tensors of its batch mean, biased batch variance and element count
    per channel: ``(graph_def, [(mean, variance, count)])`` (None for a site without a main-graph x)."""
    copy = type(graph_def)()
    copy.CopyFrom(graph_def)
    graph_def = copy
    nodes = {n.name: n for n in graph_def.node}
    for node in graph_def.node:
        set_training_mode(node)
    for function in graph_def.library.function:
        for node in function.node_def:
            set_training_mode(node)
    fetches = []
    for i, site in enumerate(sites):
        if site.x is None:
            fetches.append(None)
            continue
        fetches.append(_moments(graph_def, "tf1prune_bn_stats_%d" % i, site, nodes))
    return graph_def, fetches


def _moments(graph_def, name, site, nodes):
    """NodeDefs of the per-channel batch moments of ``site.x`` (and the unfused site's rewiring)."""
    x, dtype = tensor_name(site.x), site.dtype
    axes = [a for a in range(site.rank) if a != site.axis]
    int32 = build.dtype_enum("int32")
    new = [build.const_node(name + "/axes", np.array(axes, np.int32)),
           build.op_node(name + "/mean", "Mean", [x, name + "/axes"], {"T": dtype, "Tidx": int32}, keep_dims=True),
           build.op_node(name + "/sq", "SquaredDifference", [x, name + "/mean"], {"T": dtype}),
           build.op_node(name + "/variance", "Mean", [name + "/sq", name + "/axes"], {"T": dtype, "Tidx": int32},
                         keep_dims=True),
           build.op_node(name + "/size", "Size", [x], {"T": dtype, "out_type": int32})]
    for consumer, index, which, shape in site.rewire:   # unfused: normalise with the batch moments
        shaped = build.const_node(name + "/%s_shape" % which, np.array(shape, np.int32))
        new += [shaped, build.op_node(name + "/%s_as_param" % which, "Reshape", [name + "/" + which, shaped.name],
                                      {"T": dtype, "Tshape": int32})]
        nodes[consumer].input[index] = name + "/%s_as_param" % which
    graph_def.node.extend(new)
    return name + "/mean:0", name + "/variance:0", name + "/size:0"


register(FUSED, _batch_norm, zero=_bn_zero)
