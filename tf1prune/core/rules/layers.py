"""Layers: the ops that hold weights and MACs.

A layer rule records a :class:`~tf1prune.core.rules.base.Layer` (always: layers that cannot be pruned
are still counted) and, when its kernel is a constant or variable of the input's width, binds the
kernel's input axis to the input channels (role ``kernel_in``) and its output axis to a new space
of channels (role ``filter``).
"""
import numpy as np

from tf1prune.core.names import static_size
from tf1prune.core.rules.base import Dim, LayerSpec, Role, keeps_zero, register


def patch_geometry(view, node, depthwise=False):
    """How a 2-D convolution (``depthwise``: a depthwise one) reads its input, for extracting its
    input patches: ``(kernel height, width), (strides), (dilations), padding ('SAME' or 'VALID'),
    channels first?``; None for other ops (3-D, transposed...) and explicit padding."""
    if node.op != ("DepthwiseConv2dNative" if depthwise else "Conv2D") or view.attr(node.name, "padding", "") not in ("SAME", "VALID"):
        return None
    fmt = view.attr(node.name, "data_format", "NHWC") or "NHWC"
    hw = (2, 3) if fmt == "NCHW" else (1, 2)
    strides = list(view.attr(node.name, "strides", [1, 1, 1, 1]))
    dilations = list(view.attr(node.name, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1])
    kernel = view.shape(view.data_inputs(node.name)[1])
    if kernel is None:
        return None
    return ((kernel[0], kernel[1]), (strides[hw[0]], strides[hw[1]]), (dilations[hw[0]], dilations[hw[1]]),
            view.attr(node.name, "padding"), fmt == "NCHW")


def _conv_kernel_axes(view, node, rank):
    return rank - 2, rank - 1             # [spatial..., in, out]


def _transposed_kernel_axes(view, node, rank):
    return rank - 1, rank - 2             # [spatial..., out, in]


def _dense_kernel_axes(view, node, rank):
    return (1, 0) if view.attr(node.name, "transpose_b", False) else (0, 1)


def _format_axis(view, node, rank):
    return view.channel_axis(node.name, rank)


def _dense_x_axis(view, node, rank):
    return 0 if view.attr(node.name, "transpose_a", False) else 1


def _last_axis(view, node, rank):
    return rank - 1


CONV = LayerSpec("conv", data=0, kernel=1, kernel_axes=_conv_kernel_axes, x_axis=_format_axis, y_axis=_format_axis,
                 positions="output", prunable=True)
TRANSPOSED = LayerSpec("transposed_conv", data=2, kernel=1, kernel_axes=_transposed_kernel_axes,
                       x_axis=_format_axis, y_axis=_format_axis, positions="input", prunable=True)
DENSE = LayerSpec("dense", data=0, kernel=1, kernel_axes=_dense_kernel_axes, x_axis=_dense_x_axis,
                  y_axis=_last_axis, positions="input", prunable=True)


def _static(ctx, node, tensors):
    """Static shapes of ``tensors``; None (the layer reported as uncounted) when one is not static."""
    shapes = [ctx.shape(t) for t in tensors]
    if any(static_size(s) is None for s in shapes):
        ctx.uncounted(node, "shapes are not static")
        ctx.opaque(node, "shapes are not static")
        return None
    return shapes


def layer(ctx, node):
    """Conv (2-D, 3-D, transposed) and dense layers, driven by the rule's :class:`LayerSpec`."""
    spec = ctx.rule(node).layer
    ins = ctx.inputs(node)
    x, k, y = ins[spec.data], ins[spec.kernel], node.name + ":0"
    shapes = _static(ctx, node, (x, k, y))
    if shapes is None:
        return
    xs, ks, ys = shapes
    k_in, k_out = spec.kernel_axes(ctx.view, node, len(ks))
    x_axis, y_axis = spec.x_axis(ctx.view, node, len(xs)), spec.y_axis(ctx.view, node, len(ys))
    window = int(np.prod([d for i, d in enumerate(ks) if i not in (k_in, k_out)], dtype=np.int64))
    positions = static_size(ys) // ys[y_axis] if spec.positions == "output" else static_size(xs) // xs[x_axis]
    where = "%s '%s'" % (node.op, node.name)
    why = None
    if not spec.prunable:
        why = "a fused layer"
    elif not ctx.is_param(k):
        why = "kernel is not a constant or variable"
    elif xs[x_axis] != ks[k_in]:
        why = "grouped convolution (%d input channels, kernel in-depth %d)" % (xs[x_axis], ks[k_in])
    if why:
        ctx.opaque(node, why)
        return ctx.add_layer(node, spec.kind, ctx.param_source(k), window, positions * window,
                             [Dim(fixed=ks[k_in]), Dim(fixed=ks[k_out])], k_in)
    elems_in = ctx.channel_in(x, x_axis, node)
    if elems_in is not None:
        ctx.bind(k, k_in, elems_in, Role.KERNEL_IN, where)
    elems_out = ctx.new_space(node.name, ks[k_out])
    ctx.bind(k, k_out, elems_out, Role.FILTER, where)
    ctx.set(y, y_axis, elems_out)
    if spec.kind == "transposed_conv":   # the output size input names the output channels
        ctx.rewrite_shape(ins[0], y_axis, elems_out, node)
    ctx.add_layer(node, spec.kind, ctx.param_source(k), window, positions * window,
                  [Dim(elems_in) if elems_in is not None else Dim(fixed=ks[k_in]), Dim(elems_out)], k_in)


def _depthwise(ctx, node):
    """Depthwise conv: kernel [kh, kw, C, M]; output channel c*M + m reads input channel c."""
    x, k = ctx.inputs(node)[:2]
    shapes = _static(ctx, node, (x, k, node.name + ":0"))
    if shapes is None:
        return
    xs, ks, ys = shapes
    axis = ctx.view.channel_axis(node.name, len(xs))
    window = ks[0] * ks[1]
    factor = static_size(ys) // ys[axis] * window
    if not ctx.is_param(k):
        ctx.opaque(node, "kernel is not a constant or variable")
        return ctx.add_layer(node, "depthwise", None, window, factor, [Dim(fixed=ks[2] * ks[3])], 2)
    elems_in = ctx.channel_in(x, axis, node)
    if elems_in is None:
        return ctx.add_layer(node, "depthwise", ctx.param_source(k), window, factor, [Dim(fixed=ks[2] * ks[3])], 2)
    ctx.bind(k, 2, elems_in, Role.FILTER, "%s '%s'" % (node.op, node.name))
    elems_out = np.repeat(elems_in, ks[3])
    ctx.set(node.name + ":0", axis, elems_out)
    ctx.add_layer(node, "depthwise", ctx.param_source(k), window, factor, [Dim(elems_out)], 2)


def _batch_matmul(ctx, node):
    """Batched matmul ``[..., M, K] x [..., K, N]`` (attention scores and context, MLP mixing).

    Channels on a batch axis (attention heads) pass through, joined across both operands; channels
    on ``M`` or ``N`` become the output's; channels on the contracted ``K`` of both operands are
    joined (removing one removes its products).  Counted: MACs = output size x K, scaled by the
    kept channels."""
    a, b = ctx.inputs(node)[:2]
    out = node.name + ":0"
    shapes = _static(ctx, node, (a, b, out))
    if shapes is None:
        return
    a_shape, b_shape, o_shape = shapes
    adj_x = ctx.view.attr(node.name, "adj_x", False) or ctx.view.attr(node.name, "transpose_a", False)
    adj_y = ctx.view.attr(node.name, "adj_y", False) or ctx.view.attr(node.name, "transpose_b", False)
    depth = a_shape[-2] if adj_x else a_shape[-1]
    contract = {a: len(a_shape) - (2 if adj_x else 1), b: len(b_shape) - (1 if adj_y else 2)}
    free = {a: (len(a_shape) - (1 if adj_x else 2), len(o_shape) - 2),
            b: (len(b_shape) - (2 if adj_y else 1), len(o_shape) - 1)}
    out_axis, out_elems, joined, why = None, None, None, None
    for t, shape in ((a, a_shape), (b, b_shape)):
        inf = ctx.get(t)
        if inf is None:
            continue
        if inf.axis == contract[t]:
            other = b if t == a else a
            other_inf = ctx.get(other)
            if other_inf is None or other_inf.axis != contract[other]:
                why = "contracts channels with an operand that does not carry them"
            elif joined is None:
                joined = inf.elems
                ctx.union(inf.elems, other_inf.elems)
            continue
        axis = free[t][1] if inf.axis == free[t][0] else inf.axis + len(o_shape) - len(shape)
        if out_axis is None:
            out_axis, out_elems = axis, inf.elems
        elif axis == out_axis and len(inf.elems) == len(out_elems):
            ctx.union(out_elems, inf.elems)
        else:
            why = "its operands carry channels on different axes"
    if out_axis is not None and out_axis < len(o_shape) - 2 and why is None:
        for t, shape in ((a, a_shape), (b, b_shape)):   # a batch axis: the other operand broadcasts or carries them
            at = out_axis - len(o_shape) + len(shape)
            if ctx.get(t) is None and at >= 0 and shape[at] != 1:
                why = "reads channels of one operand with an operand of the same batch size that carries none"
    if why:
        ctx.opaque(node, why)
        return ctx.add_layer(node, "batch_matmul", None, 1, static_size(o_shape), [Dim(fixed=depth)])
    dims = [Dim(joined) if joined is not None else Dim(fixed=depth)]
    factor = static_size(o_shape)
    if out_axis is not None:
        ctx.set(out, out_axis, out_elems)
        dims.append(Dim(out_elems))
        factor //= o_shape[out_axis]
    ctx.add_layer(node, "batch_matmul", None, 1, factor, dims)


def _einsum(ctx, node):
    """Einsum: MACs = the product of every index's size; channels fixed."""
    ins = ctx.inputs(node)
    shapes = _static(ctx, node, list(ins) + [node.name + ":0"])
    if shapes is None:
        return
    equation = ctx.view.attr(node.name, "equation", "").replace(" ", "")
    terms, _, out_term = equation.partition("->")
    sizes, ellipsis = {}, 1
    all_terms = terms.split(",") + [out_term]
    for i, (term, shape) in enumerate(zip(all_terms, shapes)):
        labels = term.replace("...", "")
        if "..." in term:
            start = term.index("...")
            n_ell = len(shape) - len(labels)
            if i == len(all_terms) - 1:
                ellipsis = int(np.prod(shape[start:start + n_ell], dtype=np.int64))
            shape = shape[:start] + shape[start + n_ell:]
        sizes.update(zip(labels, shape))
    ctx.opaque(node, "an einsum mixes channels")
    ctx.add_layer(node, "einsum", None, 1, ellipsis * int(np.prod(list(sizes.values()), dtype=np.int64)), [])


register("Conv2D Conv3D", layer, layer=CONV)
register("Conv2DBackpropInput Conv3DBackpropInputV2", layer, shape_inputs=(0,), layer=TRANSPOSED)
register("MatMul", layer, layer=DENSE)
register("_FusedConv2D", layer, layer=CONV._replace(prunable=False))
register("_FusedMatMul", layer, layer=DENSE._replace(prunable=False))
register("DepthwiseConv2dNative", _depthwise, tags="counted depthwise", zero=keeps_zero)
register("BatchMatMul BatchMatMulV2 BatchMatMulV3", _batch_matmul, tags="counted")
register("Einsum", _einsum, tags="counted")
