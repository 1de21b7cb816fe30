"""Parameter sources, reads, inputs and writes; how a binding passes through a parameter op."""
from tf1prune.core.rules.base import Param, ParamKind, Role, keeps_zero, nothing, opaque, register
from tf1prune.core.rules.shapes import const_elem, follow_input0


def _bind_source(ctx, node, axis, elems, role, where):
    ctx.record_binding(node.name, axis, elems, role)


def _bind_pass(ctx, node, axis, elems, role, where):
    ctx.bind(ctx.inputs(node)[0], axis, elems, role, where)


def _bind_elementwise(ctx, node, axis, elems, role, where):
    rank = len(ctx.shape(node.name + ":0"))
    for t in ctx.inputs(node):
        ts = ctx.shape(t)
        idx = axis - (rank - len(ts)) if ts is not None else -1
        if ts is None or (idx >= 0 and ts[idx] is None):
            ctx.fix(elems, "parameter op %s '%s' has unknown shape" % (node.op, node.name))
        elif idx >= 0 and ts[idx] != 1:
            ctx.bind(t, idx, elems, Role.TIED if role is Role.TIED else Role.STAT, where)


def _bind_shape(ctx, node, axis, elems, role, where):
    ctx.rewrite_shape(ctx.inputs(node)[0], axis, elems, node)


SOURCE = Param(ParamKind.SOURCE, _bind_source)
PASS = Param(ParamKind.PASS, _bind_pass)
ELEMENTWISE = Param(ParamKind.ELEMENTWISE, _bind_elementwise)
SHAPE = Param(ParamKind.SHAPE, _bind_shape)


def passthrough(ctx, node):
    """Output i carries the channels of data input i (IdentityN), or output 0 those of input 0."""
    for i, t in enumerate(ctx.inputs(node)):
        inf = ctx.get(t)
        if inf is not None:
            ctx.set("%s:%d" % (node.name, i), inf.axis, inf.elems)
        if "multi_output" not in ctx.rule(node).tags:
            break


def _assign(ctx, node):
    """An update op (BN moving averages in UPDATE_OPS) binds its variable to the value's channels;
    any other assignment of channel data (a variable used as state) is opaque."""
    ref, value = ctx.inputs(node)[:2]
    inf = ctx.get(value)
    if inf is None:
        return
    if node.name not in ctx.update_ops:
        return ctx.opaque(node, "a variable written from activations outside UPDATE_OPS")
    ctx.bind(ref, inf.axis, inf.elems, Role.STAT, "%s '%s'" % (node.op, node.name))
    ctx.assigned[ctx.view.read_source(ref)] = node.name


# --- input layouts of writes and saves, for the appliers (NodeDef inputs, control inputs dropped) ---------
def _data(inputs):
    return [r for r in inputs if not r.startswith("^")]


def written_variable(inputs):
    """The variable a write op (assign, scatter, optimizer update) writes: its first input."""
    data = _data(inputs)
    return data[0] if data else None


def update_operands(inputs):
    """The other variables an optimizer update reads and writes (its slots) and its operands."""
    return _data(inputs)[1:]


def assigned_value(inputs):
    """The value an Assign writes: its second input (None when it has none)."""
    data = _data(inputs)
    return data[1] if len(data) > 1 else None


def save_layout(inputs):
    """``(tensor names input, shape-and-slices input, saved tensors)`` of a SaveV2 op."""
    data = _data(inputs)
    return data[1], data[2], data[3:]


register("Const", nothing, SOURCE, shape_elem=const_elem, tags="source const")
register("VariableV2 Variable VarHandleOp", nothing, SOURCE, tags="source variable")
register("Placeholder", nothing, tags="input placeholder")
register("PlaceholderWithDefault", nothing, tags="input")
register("Identity Snapshot", passthrough, PASS, shape_inputs=(0,), shape_elem=follow_input0, tags="read",
         zero=keeps_zero)
register("ReadVariableOp", nothing, PASS, tags="read")
register("IdentityN", passthrough, tags="multi_output", zero=keeps_zero)
register("ShapeN Size Rank NoOp", nothing)
register("Assign AssignSub AssignAdd AssignVariableOp AssignSubVariableOp AssignAddVariableOp", _assign,
         tags="write")
register("ScatterUpdate ResourceScatterUpdate", opaque, tags="write")
register("Apply ResourceApply SparseApply ResourceSparseApply", opaque, tags="write apply", prefix=True)
register("SaveV2", nothing, tags="save")
