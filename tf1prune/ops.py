"""The op registry: one channel rule per op type.

A :class:`Rule` says how an op moves channels forward (``forward(ctx, node)``)
and, when the op computes a *parameter* (weights, BN statistics), how a channel
binding passes through it (``param``):

- ``"source"``: a Const or variable: the binding is recorded and sliced;
- ``"pass"``: the binding goes on to input 0 (Identity, ReadVariableOp, Rsqrt...);
- ``"elementwise"``: to every broadcast input that has the channel axis;
- ``"shape"``: input 0 is a shape whose element on that axis is rewritten (random noise, Fill);
- ``None``: not understood: the channels are fixed, with a reason naming the op.

Adding an op is one :func:`register` call.  Unknown ops fix every channel they
touch (:meth:`Context.opaque`).
"""
import collections

import numpy as np

from tf1prune.graph import CALL_OPS, node_of, static_size

Rule = collections.namedtuple("Rule", "forward param")
REGISTRY = {}
PARAM_SOURCES = ("Const", "VariableV2", "Variable", "VarHandleOp")
NON_PARAM_SOURCES = ("Placeholder", "PlaceholderWithDefault")


def register(op_types, forward, param=None):
    for op_type in op_types.split():
        REGISTRY[op_type] = Rule(forward, param)


def lookup(op_type):
    return REGISTRY.get(op_type) or Rule(_opaque, None)


def _opaque(ctx, node):
    ctx.opaque(node)


def _nothing(ctx, node):
    """Sources and shape readers: no channels out, nothing to fix."""


def _passthrough(ctx, node):
    """Output i carries the channels of data input i (Identity, IdentityN, unary math)."""
    for i, t in enumerate(ctx.inputs(node)):
        inf = ctx.get(t)
        if inf is not None:
            ctx.set("%s:%d" % (node.name, i), inf.axis, inf.elems)
        if node.op != "IdentityN":
            break


def _rank(ctx, t):
    s = ctx.shape(t)
    return None if s is None else len(s)


def _elementwise(ctx, node):
    """Broadcasting n-ary op: inputs carrying channels are joined element-wise."""
    ins = ctx.inputs(node)
    out = node.name + ":0"
    out_shape = ctx.shape(out)
    carriers = [(t, ctx.get(t)) for t in ins if ctx.get(t) is not None]
    if not carriers:
        return
    if out_shape is None or any(_rank(ctx, t) is None for t in ins):
        return ctx.opaque(node, "unknown rank")
    rank = len(out_shape)
    axes = {inf.axis + rank - _rank(ctx, t) for t, inf in carriers}
    if len(axes) != 1:
        return ctx.opaque(node, "inputs carry channels on different axes")
    axis = axes.pop()
    size = out_shape[axis]
    elems, params, unknown = None, [], []
    for t in ins:
        inf, ts = ctx.get(t), ctx.shape(t)
        idx = axis - (rank - len(ts))
        if inf is not None:
            if len(inf.elems) != size:
                ctx.fix(inf.elems, "%s '%s' broadcasts a single channel" % (node.op, node.name))
            elif elems is None:
                elems = inf.elems
            else:
                ctx.union(elems, inf.elems)
        elif idx < 0 or ts[idx] == 1:
            continue
        elif ctx.is_param(t) and ts[idx] is not None:
            params.append((t, idx))
        else:
            unknown.append(t)
    if elems is None:
        return
    for t, idx in params:
        ctx.bind(t, idx, elems, "param", "%s '%s'" % (node.op, node.name))
    for t in unknown:
        src = ctx.view.nodes[t.split(":")[0]]
        ctx.fix(elems, "%s '%s' combines channels with the output of %s '%s'"
                % (node.op, node.name, src.op, src.name))
    ctx.set(out, axis, elems)


def _random_like(ctx, node):
    """Noise or a fill shaped by ``Shape(x)`` carries x's channels (dropout masks, ones_like)."""
    shape_node = ctx.view.nodes[node_of(ctx.inputs(node)[0])]
    if shape_node.op == "Shape":
        inf = ctx.get(ctx.inputs(shape_node)[0])
        if inf is not None:
            ctx.set(node.name + ":0", inf.axis, inf.elems)


def _spatial_layer(ctx, node):
    """Common checks of conv-like ops: (x, kernel, kernel shape, channel axis, MACs per channel pair)."""
    x, k = ctx.inputs(node)[:2]
    xs, ks, out_shape = ctx.shape(x), ctx.shape(k), ctx.shape(node.name + ":0")
    if xs is None or ks is None or None in ks or not ctx.is_param(k):
        return ctx.opaque(node, "kernel is not a constant or variable of static shape")
    if static_size(out_shape) is None:
        return ctx.opaque(node, "output shape is not static")
    axis = ctx.view.channel_axis(node.name, len(xs))
    factor = static_size(out_shape) // out_shape[axis] * ks[0] * ks[1]
    return x, k, ks, axis, factor


def _conv2d(ctx, node):
    layer = _spatial_layer(ctx, node)
    if layer is None:
        return
    x, k, ks, axis, factor = layer
    if ctx.shape(x)[axis] != ks[2]:
        return ctx.opaque(node, "grouped convolution")
    where = "%s '%s'" % (node.op, node.name)
    elems_in = ctx.channel_in(x, axis, node)
    if elems_in is not None:
        ctx.bind(k, 2, elems_in, "kernel", where)
    elems_out = ctx.new_space(node.name, ks[3])
    ctx.bind(k, 3, elems_out, "kernel", where)
    ctx.set(node.name + ":0", axis, elems_out)
    ctx.add_layer(node, "conv", factor, [elems_in if elems_in is not None else ks[2], elems_out], k)


def _depthwise(ctx, node):
    layer = _spatial_layer(ctx, node)
    if layer is None:
        return
    x, k, ks, axis, factor = layer
    elems_in = ctx.channel_in(x, axis, node)
    if elems_in is None:
        return ctx.add_layer(node, "depthwise", factor, [ks[2] * ks[3]], k)
    ctx.bind(k, 2, elems_in, "kernel", "%s '%s'" % (node.op, node.name))
    elems_out = np.repeat(elems_in, ks[3])
    ctx.set(node.name + ":0", axis, elems_out)
    ctx.add_layer(node, "depthwise", factor, [elems_out], k)


def _matmul(ctx, node):
    a, b = ctx.inputs(node)[:2]
    ta, tb = ctx.view.attr(node.name, "transpose_a", False), ctx.view.attr(node.name, "transpose_b", False)
    bs = ctx.shape(b)
    if ta or ctx.is_param(a) or not ctx.is_param(b) or bs is None or None in bs:
        return ctx.opaque(node, "not a dense layer (activation x constant weights)")
    where = "%s '%s'" % (node.op, node.name)
    k_in, k_out = (1, 0) if tb else (0, 1)
    elems_in = ctx.channel_in(a, 1, node)
    if elems_in is not None:
        ctx.bind(b, k_in, elems_in, "kernel", where)
    elems_out = ctx.new_space(node.name, bs[k_out])
    ctx.bind(b, k_out, elems_out, "kernel", where)
    ctx.set(node.name + ":0", 1, elems_out)
    rows = ctx.shape(a)[0] or 1
    ctx.add_layer(node, "dense", rows, [elems_in if elems_in is not None else bs[k_in], elems_out], b)


def _bias_add(ctx, node):
    x, b = ctx.inputs(node)[:2]
    rank = _rank(ctx, x)
    axis = ctx.view.channel_axis(node.name, rank) if rank else 0
    elems = ctx.channel_in(x, axis, node)
    if elems is not None:
        ctx.bind(b, 0, elems, "bias", "%s '%s'" % (node.op, node.name))
        ctx.set(node.name + ":0", axis, elems)


def _batch_norm(ctx, node):
    x, scale, offset, mean, var = ctx.inputs(node)[:5]
    axis = ctx.view.channel_axis(node.name, _rank(ctx, x) or 4)
    elems = ctx.channel_in(x, axis, node)
    if elems is None:
        return
    where = "%s '%s'" % (node.op, node.name)
    for t, role in ((scale, "bn_scale"), (offset, "bn_offset"), (mean, "param"), (var, "param")):
        if ctx.shape(t) != [0]:
            ctx.bind(t, 0, elems, role, where)
    ctx.set(node.name + ":0", axis, elems)
    ctx.set(node.name + ":1", 0, elems)
    ctx.set(node.name + ":2", 0, elems)


def _const_input(ctx, node, index):
    value = ctx.view.const_value(ctx.inputs(node)[index])
    if value is None:
        ctx.opaque(node, "input %d is not a constant" % index)
    return value


def _concat(ctx, node):
    ins = ctx.inputs(node)
    values, axis_t = (ins[:-1], ins[-1]) if node.op == "ConcatV2" else (ins[1:], ins[0])
    carriers = [(t, ctx.get(t)) for t in values if ctx.get(t) is not None]
    if not carriers:
        return
    axis = ctx.view.const_value(axis_t)
    out_shape = ctx.shape(node.name + ":0")
    if axis is None or out_shape is None:
        return ctx.opaque(node, "axis or rank unknown")
    axis = int(axis) % len(out_shape)
    if len({inf.axis for _, inf in carriers}) != 1:
        return ctx.opaque(node, "inputs carry channels on different axes")
    ch_axis = carriers[0][1].axis
    if axis == ch_axis:
        parts = []
        for t in values:
            inf = ctx.get(t)
            if inf is None:
                src = ctx.view.nodes[t.split(":")[0]]
                inf_elems = ctx.new_space(src.name, ctx.shape(t)[axis], "fixed")
                ctx.fix(inf_elems, "%s '%s' concatenates the channels of %s '%s'"
                        % (node.op, node.name, src.op, src.name))
                parts.append(inf_elems)
            else:
                parts.append(inf.elems)
        ctx.set(node.name + ":0", axis, np.concatenate(parts))
        return
    if len(carriers) != len(values):
        return ctx.opaque(node, "concatenates tensors of unknown channels")
    for _, inf in carriers[1:]:
        ctx.union(carriers[0][1].elems, inf.elems)
    ctx.set(node.name + ":0", ch_axis, carriers[0][1].elems)


def _split(ctx, node):
    ins = ctx.inputs(node)
    if node.op == "Split":
        axis_t, value = ins[0], ins[1]
    else:
        value, axis_t = ins[0], ins[2]
    inf = ctx.get(value)
    if inf is None:
        return
    axis = ctx.view.const_value(axis_t)
    rank = _rank(ctx, value)
    outs = ["%s:%d" % (node.name, i) for i in range(ctx.view.num_outputs(node.name))]
    if axis is None or rank is None:
        return ctx.opaque(node, "axis or rank unknown")
    if int(axis) % rank != inf.axis:
        for o in outs:
            ctx.set(o, inf.axis, inf.elems)
        return
    sizes = [ctx.shape(o)[inf.axis] for o in outs]
    if None in sizes:
        return ctx.opaque(node, "split sizes unknown")
    bounds = np.cumsum([0] + sizes)
    parts = [inf.elems[bounds[i]:bounds[i + 1]] for i in range(len(outs))]
    for o, p in zip(outs, parts):
        ctx.set(o, inf.axis, p)
    ctx.rewrites.append(("split", node.name, None, parts))


def _pad(ctx, node):
    x = ctx.inputs(node)[0]
    inf = ctx.get(x)
    if inf is None:
        return
    pads = _const_input(ctx, node, 1)
    if pads is None:
        return
    if np.any(pads[inf.axis] != 0):
        return ctx.opaque(node, "pads the channel axis")
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _pool(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return
    for key in ("ksize", "strides"):
        vals = ctx.view.attr(node.name, key, []) or []
        if len(vals) > inf.axis and vals[inf.axis] != 1:
            return ctx.opaque(node, "pools across channels")
    if node.op not in ("MaxPool", "AvgPool"):
        return ctx.opaque(node)
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _reduce(ctx, node):
    x = ctx.inputs(node)[0]
    inf, rank = ctx.get(x), _rank(ctx, x)
    if inf is None:
        return
    axes = _const_input(ctx, node, 1)
    if axes is None:
        return
    axes = {int(a) % rank for a in np.atleast_1d(axes)}
    if inf.axis in axes:
        return ctx.opaque(node, "reduces over the channel axis")
    keep = ctx.view.attr(node.name, "keep_dims", False)
    ctx.set(node.name + ":0", inf.axis if keep else inf.axis - sum(a < inf.axis for a in axes), inf.elems)


def _reshape(ctx, node):
    """Reshape/Squeeze/ExpandDims: unit axes moved, or a flatten that tiles channels."""
    x = ctx.inputs(node)[0]
    inf = ctx.get(x)
    if inf is None:
        return
    src, dst = ctx.shape(x), ctx.shape(node.name + ":0")
    if src is None or dst is None or None in src or None in dst:
        return ctx.opaque(node, "shapes not static")
    mapping = _reshape_channel(src, dst, inf.axis)
    if mapping is None:
        return ctx.opaque(node, "splits the channel axis or merges it with the batch axis")
    out_axis, outer, inner = mapping
    elems = np.tile(np.repeat(inf.elems, inner), outer)
    if node.op == "Reshape":
        ctx.rewrite_shape(ctx.inputs(node)[1], out_axis, elems, node)
    ctx.set(node.name + ":0", out_axis, elems)


def _reshape_channel(src, dst, axis):
    """Where the channel axis of ``src`` lands in ``dst``: (out_axis, outer, inner) or None.

    Dimensions are matched in row-major blocks; the channel's block may merge
    axes (a flatten: the channels repeat ``outer`` times with ``inner`` copies
    each) but may not split the channel axis nor include the batch axis 0.
    """
    i = j = 0
    while i < len(src) and j < len(dst):
        i0, j0 = i, j
        ps, pd = src[i], dst[j]
        i, j = i + 1, j + 1
        while ps != pd:
            if ps < pd:
                if i >= len(src):
                    return None
                ps *= src[i]
                i += 1
            else:
                if j >= len(dst):
                    return None
                pd *= dst[j]
                j += 1
        # absorb trailing unit axes on either side into separate blocks
        if i0 <= axis < i:
            if src[axis] == 1:
                return None
            if j - j0 != 1:
                non_unit = [k for k in range(j0, j) if dst[k] != 1]
                if len(non_unit) != 1 or [k for k in range(i0, i) if src[k] != 1] != [axis]:
                    return None
                return non_unit[0], 1, 1
            if i0 == 0 and i - i0 > 1 and any(src[k] != 1 for k in range(0, i) if k != axis):
                return None
            outer = int(np.prod(src[i0:axis], dtype=np.int64))
            inner = int(np.prod(src[axis + 1:i], dtype=np.int64))
            return j0, outer, inner
    return None


def _transpose(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return
    perm = _const_input(ctx, node, 1)
    if perm is not None:
        ctx.set(node.name + ":0", list(perm).index(inf.axis), inf.elems)


def _assign(ctx, node):
    """An update op (BN moving averages in UPDATE_OPS) binds its variable to the value's channels.

    Any other assignment of channel data (a variable used as state inside the model) is opaque."""
    ref, value = ctx.inputs(node)[:2]
    inf = ctx.get(value)
    if inf is None:
        return
    if node.name not in ctx.update_ops:
        return ctx.opaque(node, "a variable written from activations outside UPDATE_OPS")
    ctx.bind(ref, inf.axis, inf.elems, "param", "%s '%s'" % (node.op, node.name))
    ctx.assigned[node_of(ref)] = node.name


def _switch(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is not None:
        ctx.set(node.name + ":0", inf.axis, inf.elems)
        ctx.set(node.name + ":1", inf.axis, inf.elems)


def _call(ctx, node):
    """If/StatelessIf: each branch is analysed like a graph; used outputs must agree."""
    from tf1prune.analysis import propagate
    args = ctx.inputs(node)[1:]
    if all(ctx.get(t) is None for t in args):
        return
    used = ctx.view.used_outputs(node.name)
    where = "%s '%s'" % (node.op, node.name)
    results = {i: [] for i in used}
    for attr in CALL_OPS[node.op]:
        body = ctx.view.function_body(node.name, attr)
        outs = [body.outputs[i] for i in used]
        sub = ctx.child(body.view, {node_of(p): a for p, a in zip(body.inputs, args)})
        propagate(sub, body.view.order_from([node_of(o) for o in outs])[0])
        ctx.close_child(sub, where)
        for i, o in zip(used, outs):
            results[i].append(sub.get(o))
    for i, infos in results.items():
        known = [inf for inf in infos if inf is not None]
        if not known:
            continue
        if len(known) != len(infos) or len({(inf.axis, len(inf.elems)) for inf in known}) != 1:
            for inf in known:
                ctx.fix(inf.elems, "the branches of %s disagree on output %d's channels" % (where, i))
            continue
        for inf in known[1:]:
            ctx.union(known[0].elems, inf.elems)
        ctx.set("%s:%d" % (node.name, i), known[0].axis, known[0].elems)


UNARY = ("Identity Snapshot StopGradient PreventGradient CheckNumerics EnsureShape Relu Relu6 Elu Selu "
         "LeakyRelu Sigmoid Tanh Softplus Softsign Neg Abs Square Sqrt Rsqrt Reciprocal Inv Exp Expm1 "
         "Log Log1p Erf Floor Ceil Round Sign Cast ZerosLike OnesLike Sin Cos Gelu")
BINARY = ("Add AddV2 Sub Mul RealDiv Div DivNoNan MulNoNan Maximum Minimum SquaredDifference Pow "
          "FloorDiv FloorMod Greater GreaterEqual Less LessEqual Equal NotEqual LogicalAnd LogicalOr "
          "Select SelectV2 AddN")

register("Const VariableV2 Variable VarHandleOp", _nothing, "source")
register("Placeholder PlaceholderWithDefault Shape ShapeN Size Rank NoOp", _nothing)
register("ReadVariableOp", _nothing, "pass")
register(UNARY, _passthrough, "pass")
register("IdentityN", _passthrough)
register(BINARY, _elementwise, "elementwise")
register("RandomUniform RandomStandardNormal TruncatedNormal Fill StatelessRandomUniform StatelessRandomNormal "
         "StatelessTruncatedNormal StatelessRandomUniformV2 StatelessRandomNormalV2 StatelessTruncatedNormalV2",
         _random_like, "shape")
register("Conv2D", _conv2d)
register("DepthwiseConv2dNative", _depthwise)
register("MatMul", _matmul)
register("BiasAdd BiasAddV1", _bias_add)
register("FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3", _batch_norm)
register("ConcatV2 Concat", _concat)
register("Split SplitV", _split)
register("Pad PadV2 MirrorPad", _pad)
register("MaxPool AvgPool", _pool)
register("Mean Max Min Sum Prod", _reduce)
register("Reshape Squeeze ExpandDims", _reshape)
register("Transpose", _transpose)
register("Switch", _switch)
register("Assign AssignSub AssignAdd AssignVariableOp AssignSubVariableOp AssignAddVariableOp", _assign)
register("Merge", _elementwise)
register(" ".join(CALL_OPS), _call)
