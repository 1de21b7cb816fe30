"""Per-channel ops: activations and unary math, broadcasting binary math, BiasAdd, fake
quantization, noise shaped like a tensor, and LRN (which mixes channels)."""
from tf1prune.core.names import node_of
from tf1prune.core.rules.base import Param, ParamKind, Role, keeps_zero, register, zero_params
from tf1prune.core.rules import batchnorm
from tf1prune.core.rules.params import ELEMENTWISE, PASS, SHAPE, passthrough
from tf1prune.core.rules.shapes import follow_input0


def _rank(ctx, t):
    s = ctx.shape(t)
    return None if s is None else len(s)


def elementwise(ctx, node):
    """Broadcasting n-ary op: inputs carrying channels are joined element-wise; a parameter input
    with the channel axis is bound (role ``stat``)."""
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
        ctx.bind(t, idx, elems, Role.STAT, "%s '%s'" % (node.op, node.name))
    for t in unknown:
        src = ctx.view.nodes[node_of(t)]
        ctx.fix(elems, "%s '%s' combines channels with the output of %s '%s'"
                % (node.op, node.name, src.op, src.name))
    ctx.set(out, axis, elems)


def _along_last_axis(ctx, node):
    """Softmax-like ops normalise along the last axis: channels on another axis (attention heads)
    pass through; on the last axis they are mixed."""
    x = ctx.inputs(node)[0]
    inf, rank = ctx.get(x), _rank(ctx, x)
    if inf is None:
        return
    if rank is None or inf.axis == rank - 1:
        return ctx.opaque(node, "normalises over the channel axis")
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _bias_add(ctx, node):
    x, b = ctx.inputs(node)[:2]
    rank = _rank(ctx, x)
    axis = ctx.view.channel_axis(node.name, rank) if rank else 0
    elems = ctx.channel_in(x, axis, node)
    if elems is not None:
        ctx.bind(b, 0, elems, Role.BIAS, "%s '%s'" % (node.op, node.name))
        ctx.set(node.name + ":0", axis, elems)


def _mul(ctx, node):
    """Element-wise; ``x * rsqrt(variance + eps) * scale`` is also an unfused BatchNorm's site."""
    ins = ctx.inputs(node)
    if len(ins) == 2 and ctx.is_param(ins[0]) != ctx.is_param(ins[1]):
        x, inv = ins if ctx.is_param(ins[1]) else ins[::-1]
        site = batchnorm.unfused_site(ctx, node, x, inv)
        if site is not None:
            ctx.add_batch_norm(site)
    elementwise(ctx, node)


def _fake_quant_per_channel(ctx, node):
    """Per-channel ranges on the last axis: bound to the channels (role ``stat``)."""
    x, lo, hi = ctx.inputs(node)[:3]
    inf = ctx.get(x)
    if inf is None:
        return
    rank = _rank(ctx, x)
    if inf.axis != rank - 1:
        return ctx.opaque(node, "quantizes per channel on another axis")
    for t in (lo, hi):
        ctx.bind(t, 0, inf.elems, Role.STAT, "%s '%s'" % (node.op, node.name))
    ctx.set(node.name + ":0", inf.axis, inf.elems)


def _bind_fake_quant_per_channel(ctx, node, axis, elems, role, where):
    """A kernel quantized per output channel: the ranges follow the kernel's last axis."""
    x, lo, hi = ctx.inputs(node)[:3]
    ctx.bind(x, axis, elems, role, where)
    if axis == len(ctx.shape(x)) - 1:
        for t in (lo, hi):
            ctx.bind(t, 0, elems, Role.TIED if role is Role.TIED else Role.STAT, where)


def _random_like(ctx, node):
    """Noise or a fill shaped by ``Shape(x)`` carries x's channels (dropout masks, ones_like)."""
    shape_node = ctx.view.nodes[node_of(ctx.inputs(node)[0])]
    if "shape_of" in ctx.rule(shape_node).tags:
        inf = ctx.get(ctx.inputs(shape_node)[0])
        if inf is not None:
            ctx.set(node.name + ":0", inf.axis, inf.elems)


def _zero_numerator(node, params):
    """x / c keeps x = 0 at zero; a zero channel as the denominator does not."""
    if 0 in params or 1 not in params:
        return "%s '%s' divides by the channel" % (node.op, node.name)
    return None


def _lrn(ctx, node):
    ctx.opaque(node, "mixes neighbouring channels (depth_radius %s)" % ctx.view.attr(node.name, "depth_radius", 5))


UNARY_ZERO = ("Relu Relu6 Elu Selu LeakyRelu Tanh Softsign Neg Abs Square Sqrt Expm1 Log1p Erf Floor Ceil Round "
              "Sign ZerosLike Sin Gelu StopGradient PreventGradient CheckNumerics EnsureShape "
              "FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVars")   # f(0) = 0
UNARY = "Sigmoid Softplus Rsqrt Reciprocal Inv Exp Log Erfc OnesLike Cos"
BINARY = "Pow Greater GreaterEqual Less LessEqual Equal NotEqual LogicalAnd LogicalOr Select SelectV2"

register(UNARY_ZERO, passthrough, PASS, zero=keeps_zero)
register(UNARY, passthrough, PASS)
register("Cast", passthrough, PASS, shape_inputs=(0,), shape_elem=follow_input0, zero=keeps_zero)
register(BINARY, elementwise, ELEMENTWISE)
register("Sub Maximum Minimum SquaredDifference AddN", elementwise, ELEMENTWISE, zero=zero_params)
register("RealDiv Div DivNoNan FloorDiv FloorMod", elementwise, ELEMENTWISE, zero=_zero_numerator)
register("MulNoNan", elementwise, ELEMENTWISE, zero=keeps_zero)
register("Add AddV2", elementwise, ELEMENTWISE, tags="add", zero=zero_params)
register("Mul", _mul, ELEMENTWISE, tags="mul", zero=keeps_zero)
register("BiasAdd BiasAddV1", _bias_add, zero=zero_params)
register("FakeQuantWithMinMaxVarsPerChannel", _fake_quant_per_channel,
         Param(ParamKind.CUSTOM, _bind_fake_quant_per_channel), zero=keeps_zero)
register("RandomUniform RandomStandardNormal TruncatedNormal Fill StatelessRandomUniform StatelessRandomNormal "
         "StatelessTruncatedNormal StatelessRandomUniformV2 StatelessRandomNormalV2 StatelessTruncatedNormalV2",
         _random_like, SHAPE, shape_inputs=(0,))
register("LRN", _lrn, zero=keeps_zero)
register("Softmax LogSoftmax", _along_last_axis)
