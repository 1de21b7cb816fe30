"""Ops that move, join, slice or resample channels, and the shape-tensor rules.

Shape-tensor rules trace element ``index`` of a shape tensor (a Reshape target, a noise shape, a
transposed conv's output size) to either a constant to rewrite (:class:`ConstElement`) or a
dimension of a tensor that carries the same channels (then the two are joined).
"""
import numpy as np

from tf1prune.core.names import node_of
from tf1prune.core.rules import build
from tf1prune.core.rules.base import ALL, Param, ParamKind, ShapeRewrite, keeps_zero, nothing, register, zero_params


# --- rewrites -------------------------------------------------------------------------
class ConstElement(ShapeRewrite):
    """Element ``index`` of Const ``node`` (None: the scalar) becomes the kept count of ``elems``."""

    def __init__(self, node, index, elems):
        self.node, self.index, self.parts = node, index, [elems]

    def apply(self, graph_def, nodes, counts):
        node = nodes[self.node]
        value = build.const_value(node).copy()
        if self.index is None:
            value = np.asarray(counts[0], dtype=value.dtype)
        else:
            value.reshape(-1)[self.index] = counts[0]
        build.set_const_value(node, value)

    def touched(self):
        return [self.node]


class SplitSizes(ShapeRewrite):
    """A channel ``Split``/``SplitV`` whose parts keep ``counts`` channels: a SplitV with new sizes."""

    def __init__(self, node, parts):
        self.node, self.parts = node, list(parts)
        self.segments = self.parts

    def apply(self, graph_def, nodes, counts):
        node = nodes[self.node]
        sizes = build.const_node(self.node + "/size_splits", np.array(counts, np.int32))
        if node.op == "Split":
            axis, value = node.input[0], node.input[1]
            del node.input[:2]
            for ref in reversed([value, sizes.name, axis]):
                node.input.insert(0, ref)
            node.op = "SplitV"
            node.attr["Tlen"].CopyFrom(sizes.attr["dtype"])
        else:
            node.input[1] = sizes.name
        graph_def.node.extend([sizes])

    def touched(self):
        return [self.node, self.node + "/size_splits"]


# --- shape-tensor rules -----------------------------------------------------------------
def const_elem(ctx, node, tensor, index, elems, user):
    value = ctx.view.const_value(tensor)
    index = None if value.ndim == 0 else index
    for name, i in ctx.view.consumers[node.name]:
        consumer = ctx.view.nodes[name]
        if name in ctx.view.reachable and not ctx.rule(consumer).reads_shape_at(i):
            return ctx.fix(elems, "shape constant '%s' is also read by %s '%s'" % (node.name, consumer.op, name))
    key = (node.name, index)
    earlier = ctx.shape_elems.get(key)
    if earlier is not None:   # one constant shapes several tensors: they keep the same channels
        if len(earlier) == len(elems):
            return ctx.union(earlier, elems)
        why = "shape constant '%s' is shared by tensors of different widths" % node.name
        ctx.fix(earlier, why)
        return ctx.fix(elems, why)
    ctx.shape_elems[key] = elems
    if index is None or value.reshape(-1)[index] != -1:
        ctx.add_rewrite(ConstElement(node.name, index, elems))


def follow_input0(ctx, node, tensor, index, elems, user):
    ctx.rewrite_shape(ctx.inputs(node)[0], index, elems, user)


def _pack_elem(ctx, node, tensor, index, elems, user):
    ctx.rewrite_shape(ctx.inputs(node)[index or 0], None, elems, user)


def _concat_elem(ctx, node, tensor, index, elems, user):
    start = 0
    for t in ctx.inputs(node)[:-1]:
        shape = ctx.shape(t)
        if shape is None or len(shape) != 1 or shape[0] is None:
            break
        if start <= index < start + shape[0]:
            return ctx.rewrite_shape(t, index - start, elems, user)
        start += shape[0]
    ctx.fix(elems, "shape input of %s '%s' is a concatenation of unknown lengths '%s'" % (user.op, user.name, node.name))


def _dim_of(ctx, shape_op, axis, elems, user):
    """The element is dimension ``axis`` of the tensor that ``shape_op`` (a Shape) reads."""
    t = ctx.inputs(shape_op)[0]
    inf, shape = ctx.get(t), ctx.shape(t)
    if inf is not None and shape is not None and axis is not None and inf.axis == int(axis) % len(shape) \
            and len(inf.elems) == len(elems):
        return ctx.union(inf.elems, elems)
    ctx.fix(elems, "shape input of %s '%s' reads a dimension of '%s' that is not the same channels"
            % (user.op, user.name, node_of(t)))


def _shape_elem(ctx, node, tensor, index, elems, user):
    _dim_of(ctx, node, index, elems, user)


def _slice_of_shape(ctx, node, tensor, index, elems, user, position):
    """StridedSlice/GatherV2 of ``Shape(t)``: element ``index`` is dimension ``position`` of t."""
    source = ctx.view.nodes[node_of(ctx.inputs(node)[0])]
    if "shape_of" in ctx.rule(source).tags and position is not None:
        return _dim_of(ctx, source, position, elems, user)
    ctx.fix(elems, "shape input of %s '%s' is computed by op %s '%s'" % (user.op, user.name, node.op, node.name))


def _strided_slice_elem(ctx, node, tensor, index, elems, user):
    begin, strides = ctx.const_value(ctx.inputs(node)[1]), ctx.const_value(ctx.inputs(node)[3])
    simple = not any(ctx.view.attr(node.name, k, 0) for k in ("ellipsis_mask", "new_axis_mask", "begin_mask"))
    position = None
    if simple and begin is not None and strides is not None and begin.size == 1 and int(strides.reshape(-1)[0]) == 1:
        position = int(begin.reshape(-1)[0]) + (index or 0)
    _slice_of_shape(ctx, node, tensor, index, elems, user, position)


def _gather_elem(ctx, node, tensor, index, elems, user):
    indices, axis = ctx.const_value(ctx.inputs(node)[1]), ctx.const_value(ctx.inputs(node)[2])
    position = None
    if indices is not None and axis is not None and int(axis) == 0:
        position = int(indices.reshape(-1)[index or 0]) if indices.ndim else int(indices)
    _slice_of_shape(ctx, node, tensor, index, elems, user, position)


def _prod_elem(ctx, node, tensor, index, elems, user):
    shape = ctx.shape(ctx.inputs(node)[0])
    if shape == [1]:
        return ctx.rewrite_shape(ctx.inputs(node)[0], 0, elems, user)
    ctx.fix(elems, "shape input of %s '%s' multiplies the channel count by other dimensions ('%s')"
            % (user.op, user.name, node.name))


# --- channel movers -----------------------------------------------------------------------
def reshape_channel_map(src, dst, axis):
    """Where the channel axis of ``src`` lands in ``dst``: (out_axis, outer, inner) or None.

    Dimensions are matched in row-major blocks; the channel's block may merge axes (a flatten:
    the channels repeat ``outer`` times with ``inner`` copies each) but may not split the channel
    axis nor include the batch axis 0.
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


def head_split(src, dst, axis):
    """Where a reshape splits the channel axis of ``src`` into (heads, head size) in ``dst``:
    ``(head axis, head size)``, or None.  The channel axis must be a block of its own (only unit
    axes beside it) that becomes exactly two non-unit axes, e.g. ``[B, T, 768] -> [B, T, 12, 64]``
    or ``[B*T, 768] -> [B, T, 12, 64]``."""
    before = int(np.prod(src[:axis], dtype=np.int64))
    i, prefix = 0, 1
    while i < len(dst) and prefix < before:
        prefix *= dst[i]
        i += 1
    if axis == 0 or prefix != before:
        return None
    k, size = i, 1
    while k < len(dst) and size < src[axis]:
        size *= dst[k]
        k += 1
    block = [j for j in range(i, k) if dst[j] != 1]
    if size != src[axis] or len(block) != 2 or dst[block[0]] < 2 or dst[block[1]] < 2:
        return None
    if int(np.prod(dst[k:], dtype=np.int64)) != int(np.prod(src[axis + 1:], dtype=np.int64)):
        return None
    return block[0], dst[block[1]]


def _reshape(ctx, node):
    """Reshape/Squeeze/ExpandDims: unit axes moved, a flatten that tiles channels, or the channel
    axis split into (heads, head size): each head's channels then go together, as one unit."""
    x = ctx.inputs(node)[0]
    inf = ctx.get(x)
    if inf is None:
        return
    src, dst = ctx.shape(x), ctx.shape(node.name + ":0")
    if src is None or dst is None or None in src or None in dst:
        return ctx.opaque(node, "shapes not static")
    mapping = reshape_channel_map(src, dst, inf.axis)
    if mapping is None:
        split = head_split(src, dst, inf.axis)
        if split is None:
            return ctx.opaque(node, "splits the channel axis or merges it with the batch axis")
        head_axis, size = split
        heads = inf.elems[::size]
        ctx.union(np.repeat(heads, size), inf.elems)     # a head's channels are pruned together
        if "reshape" in ctx.rule(node).tags:
            ctx.rewrite_shape(ctx.inputs(node)[1], head_axis, heads, node)
        return ctx.set(node.name + ":0", head_axis, heads)
    out_axis, outer, inner = mapping
    elems = np.tile(np.repeat(inf.elems, inner), outer)
    if "reshape" in ctx.rule(node).tags:
        ctx.rewrite_shape(ctx.inputs(node)[1], out_axis, elems, node)
    ctx.set(node.name + ":0", out_axis, elems)


def _transpose(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return
    perm = ctx.const_input(node, 1)
    if perm is not None:
        ctx.set(node.name + ":0", list(perm).index(inf.axis), inf.elems)


def _bind_transpose(ctx, node, axis, elems, role, where):
    perm = ctx.const_value(ctx.inputs(node)[1])
    if perm is None:
        return ctx.fix(elems, "parameter op %s '%s' has a computed permutation" % (node.op, node.name))
    ctx.bind(ctx.inputs(node)[0], int(perm[axis]), elems, role, where)


def _concat(ctx, node):
    ins = ctx.inputs(node)
    values, axis_t = (ins[:-1], ins[-1]) if "concat_v2" in ctx.rule(node).tags else (ins[1:], ins[0])
    carriers = [(t, ctx.get(t)) for t in values if ctx.get(t) is not None]
    if not carriers:
        return
    axis = ctx.const_value(axis_t)
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
                src = ctx.view.nodes[node_of(t)]
                elems = ctx.new_space(src.name, ctx.shape(t)[axis], "fixed")
                ctx.fix(elems, "%s '%s' concatenates the channels of %s '%s'" % (node.op, node.name, src.op, src.name))
                parts.append(elems)
            else:
                parts.append(inf.elems)
        return ctx.set(node.name + ":0", axis, np.concatenate(parts))
    if len(carriers) != len(values):
        return ctx.opaque(node, "concatenates tensors of unknown channels")
    for _, inf in carriers[1:]:
        ctx.union(carriers[0][1].elems, inf.elems)
    ctx.set(node.name + ":0", ch_axis, carriers[0][1].elems)


def _split(ctx, node):
    ins = ctx.inputs(node)
    axis_t, value = (ins[0], ins[1]) if "split_v1" in ctx.rule(node).tags else (ins[2], ins[0])
    inf = ctx.get(value)
    if inf is None:
        return
    axis = ctx.const_value(axis_t)
    rank = len(ctx.shape(value) or [])
    outs = ["%s:%d" % (node.name, i) for i in range(ctx.view.num_outputs(node.name))]
    if axis is None or not rank:
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
    ctx.add_rewrite(SplitSizes(node.name, parts))


def _per_axis(keeps, why):
    """Forward rule of an op whose input 1 holds one entry per axis (paddings, multiples): the
    channels pass when ``keeps(entry of the channel axis)``."""
    def forward(ctx, node):
        inf = ctx.get(ctx.inputs(node)[0])
        if inf is None:
            return
        value = ctx.const_input(node, 1)
        if value is None:
            return
        if not keeps(value[inf.axis]):
            return ctx.opaque(node, why)
        ctx.set(node.name + ":0", inf.axis, inf.elems)
    return forward


def _pool(ctx, node):
    """Max/avg pooling (2-D and 3-D): a window of 1 on the channel axis keeps the channels."""
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return
    ins = ctx.inputs(node)
    for key, index in (("ksize", 1), ("strides", 2)):
        vals = ctx.view.attr(node.name, key, None)
        if not vals and len(ins) > index:   # MaxPoolV2: window and strides are inputs
            vals = ctx.const_value(ins[index])
            if vals is None:
                return ctx.opaque(node, "%s is not a constant" % key)
        vals = list(vals if vals is not None else [])
        if len(vals) > inf.axis and vals[inf.axis] != 1:
            return ctx.opaque(node, "pools across channels")
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _reduce(ctx, node):
    x = ctx.inputs(node)[0]
    inf, rank = ctx.get(x), len(ctx.shape(x) or [])
    if inf is None:
        return
    axes = ctx.const_input(node, 1)
    if axes is None:
        return
    axes = {int(a) % rank for a in np.atleast_1d(axes)}
    if inf.axis in axes:
        return ctx.opaque(node, "reduces over the channel axis")
    keep = ctx.view.attr(node.name, "keep_dims", False)
    ctx.set(node.name + ":0", inf.axis if keep else inf.axis - sum(a < inf.axis for a in axes), inf.elems)


def _channels_last(ctx, node):
    """Ops that only touch the spatial axes of an NHWC tensor (image resizing)."""
    x = ctx.inputs(node)[0]
    inf = ctx.get(x)
    if inf is None:
        return
    if inf.axis != len(ctx.shape(x) or []) - 1:
        return ctx.opaque(node, "channels are not the last axis")
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _block_format(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return None, None
    if (ctx.view.attr(node.name, "data_format", "NHWC") or "NHWC") != "NHWC" or inf.axis != 3:
        ctx.opaque(node, "only NHWC with channels last is supported")
        return None, None
    return inf, int(ctx.view.attr(node.name, "block_size"))


def _depth_to_space(ctx, node):
    """Output channel c reads input channels k*C + c (k < block^2): those are pruned together."""
    inf, block = _block_format(ctx, node)
    if inf is None:
        return
    parts = inf.elems.reshape(block * block, -1)
    for part in parts[1:]:
        ctx.union(parts[0], part)
    ctx.set(node.name + ":0", 3, parts[0])


def _space_to_depth(ctx, node):
    """Output channel (i*block + j)*C + c is input channel c: the channels tile block^2 times."""
    inf, block = _block_format(ctx, node)
    if inf is not None:
        ctx.set(node.name + ":0", 3, np.tile(inf.elems, block * block))


def _space_batch(ctx, node):
    """SpaceToBatchND/BatchToSpaceND (atrous convolution): the block axes follow the batch axis."""
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is None:
        return
    block = ctx.shape(ctx.inputs(node)[1])
    if block is None or len(block) != 1 or block[0] is None:
        return ctx.opaque(node, "block shape of unknown length")
    if inf.axis <= block[0]:
        return ctx.opaque(node, "moves the channel axis")
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _slice(ctx, node):
    """Slice keeping the channel axis whole (begin 0, size -1 or the full width, rewritten)."""
    x, begin_t, size_t = ctx.inputs(node)[:3]
    inf = ctx.get(x)
    if inf is None:
        return
    begin, size = ctx.const_value(begin_t), ctx.const_value(size_t)
    if begin is None or size is None:
        return ctx.opaque(node, "slice bounds are not constants")
    a = inf.axis
    if int(begin[a]) != 0 or int(size[a]) not in (-1, len(inf.elems)):
        return ctx.opaque(node, "slices the channel axis")
    if int(size[a]) != -1:
        ctx.rewrite_shape(size_t, a, inf.elems, node)
    ctx.set(node.name + ":0", a, inf.elems)


def _strided_slice(ctx, node):
    """StridedSlice keeping the channel axis whole (spatial cropping, ``x[:, 1:-1, 1:-1, :]``)."""
    x = ctx.inputs(node)[0]
    inf, shape = ctx.get(x), ctx.shape(x)
    if inf is None:
        return
    begin, end, strides = (ctx.const_value(t) for t in ctx.inputs(node)[1:4])
    if begin is None or end is None or strides is None or shape is None:
        return ctx.opaque(node, "slice bounds are not constants")
    mask = {k: int(ctx.view.attr(node.name, k + "_mask", 0) or 0)
            for k in ("begin", "end", "ellipsis", "new_axis", "shrink_axis")}
    n, dim = len(begin), len(inf.elems)
    in_axis = out_axis = 0
    out = None
    for i in range(n):
        bit = 1 << i
        if mask["ellipsis"] & bit:
            consuming = sum(1 for j in range(n) if j != i and not (mask["new_axis"] | mask["ellipsis"]) & (1 << j))
            covered = len(shape) - consuming
            if in_axis <= inf.axis < in_axis + covered:
                out = out_axis + inf.axis - in_axis
            in_axis, out_axis = in_axis + covered, out_axis + covered
            continue
        if mask["new_axis"] & bit:
            out_axis += 1
            continue
        if in_axis == inf.axis:
            whole = (int(strides[i]) == 1 and not mask["shrink_axis"] & bit
                     and (mask["begin"] & bit or int(begin[i]) == 0 or int(begin[i]) <= -dim)
                     and (mask["end"] & bit or int(end[i]) >= dim))
            if not whole:
                return ctx.opaque(node, "slices the channel axis")
            out = out_axis
        if not mask["shrink_axis"] & bit:
            out_axis += 1
        in_axis += 1
    if inf.axis >= in_axis:   # axes after the slice spec are taken whole
        out = out_axis + inf.axis - in_axis
    out_shape = ctx.shape(node.name + ":0")
    if out is None or out_shape is None or out_shape[out] != dim:
        return ctx.opaque(node, "cannot tell where the channel axis goes")
    ctx.set(node.name + ":0", out, inf.elems)


register("Shape", nothing, shape_elem=_shape_elem, tags="shape_of")
register("Reshape", _reshape, shape_inputs=(1,), tags="reshape", zero=keeps_zero)
register("Squeeze ExpandDims", _reshape, zero=keeps_zero)
register("Transpose", _transpose, Param(ParamKind.CUSTOM, _bind_transpose), zero=keeps_zero)
register("ConcatV2", _concat, shape_inputs=ALL, shape_elem=_concat_elem, tags="concat_v2", zero=keeps_zero)
register("Concat", _concat, zero=keeps_zero)
register("Pack", shape_inputs=ALL, shape_elem=_pack_elem)
register("Split", _split, tags="split_v1", zero=keeps_zero)
register("SplitV", _split, zero=keeps_zero)
register("Pad MirrorPad", _per_axis(lambda pads: not np.any(pads), "pads the channel axis"), zero=keeps_zero)
register("PadV2", _per_axis(lambda pads: not np.any(pads), "pads the channel axis"), zero=zero_params)
register("Tile", _per_axis(lambda multiple: int(multiple) == 1, "tiles the channel axis"), zero=keeps_zero)
register("MaxPool AvgPool MaxPoolV2 MaxPool3D AvgPool3D", _pool, zero=keeps_zero)
register("Mean Max Min Sum", _reduce, zero=keeps_zero)
register("Prod", _reduce, shape_elem=_prod_elem, zero=keeps_zero)
register("ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea", _channels_last, zero=keeps_zero)
register("DepthToSpace", _depth_to_space, zero=keeps_zero)
register("SpaceToDepth", _space_to_depth, zero=keeps_zero)
register("SpaceToBatchND BatchToSpaceND", _space_batch, zero=keeps_zero)
register("Slice", _slice, shape_inputs=(2,), zero=keeps_zero)
register("StridedSlice", _strided_slice, shape_elem=_strided_slice_elem, zero=keeps_zero)
register("GatherV2", shape_elem=_gather_elem)
