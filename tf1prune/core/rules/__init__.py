"""Op rules: the only place that knows op types (see :mod:`tf1prune.core.rules.base`).

Supporting a new op is one :func:`register` call, in the module of its kind:

- :mod:`~tf1prune.core.rules.params`: parameter sources, reads, inputs and writes;
- :mod:`~tf1prune.core.rules.elementwise`: activations, broadcasting math, BiasAdd, BatchNorm, FakeQuant;
- :mod:`~tf1prune.core.rules.layers`: conv, depthwise, dense, transposed conv, matmul, einsum;
- :mod:`~tf1prune.core.rules.shapes`: reshape, transpose, concat, split, pad, pool, slice, resize, and the
  shape-tensor rules;
- :mod:`~tf1prune.core.rules.control`: Switch/Merge, If, PartitionedCall, While.

Example: a custom per-channel activation op, and a layer op with the kernel layout of Conv2D::

    from tf1prune.core import rules
    rules.register("MyActivation", rules.passthrough, rules.PASS)
    rules.register("MyConv", rules.layer, layer=rules.CONV)
"""
from tf1prune.core.rules.base import (ALL, KERNEL, ZEROED, Binding, CallSpec, ChannelInfo, Dim, Layer, LayerSpec,
                                 Param, ParamKind, Role, Rule, ShapeRewrite, has_tag, known, looks_like_layer,
                                 lookup, nothing, opaque, register)
from tf1prune.core.rules.params import (ELEMENTWISE, PASS, SHAPE, SOURCE, assigned_value, passthrough, save_layout,
                                        update_operands, written_variable)
from tf1prune.core.rules import elementwise as _elementwise, shapes as _shapes  # noqa: F401  (registers)
from tf1prune.core.rules.layers import CONV, DENSE, TRANSPOSED, layer
from tf1prune.core.rules import control as _control  # noqa: F401  (registers)
from tf1prune.core.rules.batchnorm import BatchNormSite
from tf1prune.core.rules.elementwise import elementwise
from tf1prune.core.rules.shapes import ConstElement, SplitSizes, reshape_channel_map


def is_variable(op_type):
    return has_tag(op_type, "variable")


def is_param_source(op_type):
    """A Const or a variable."""
    return has_tag(op_type, "source")


def is_const(op_type):
    return has_tag(op_type, "const")


def is_input(op_type):
    return has_tag(op_type, "input")


def is_read(op_type):
    """An op whose output is its input's value (Identity, Snapshot, ReadVariableOp)."""
    return has_tag(op_type, "read")


def is_write(op_type):
    """An op that assigns a variable (assigns, scatters, optimizer updates)."""
    return has_tag(op_type, "write")


def is_optimizer_update(op_type):
    return has_tag(op_type, "apply")


def is_save(op_type):
    return has_tag(op_type, "save")


def call_spec(op_type):
    """The :class:`CallSpec` of an op that runs library functions, else None."""
    return lookup(op_type).call


def is_layer(op_type):
    """Ops whose MACs are counted (conv, depthwise, dense, matmul, einsum...)."""
    rule = lookup(op_type)
    return rule.layer is not None or "counted" in rule.tags or looks_like_layer(op_type)


__all__ = ["assigned_value", "save_layout", "update_operands", "written_variable", "ALL", "BatchNormSite", "CONV", "DENSE", "ELEMENTWISE", "KERNEL", "PASS", "SHAPE", "SOURCE", "TRANSPOSED", "ZEROED",
           "Binding", "CallSpec", "ChannelInfo", "ConstElement", "Dim", "Layer", "LayerSpec", "Param",
           "ParamKind", "Role", "Rule", "ShapeRewrite", "SplitSizes", "call_spec", "elementwise", "has_tag",
           "is_const", "is_input", "is_layer", "is_optimizer_update", "is_param_source", "is_read", "is_save",
           "is_variable", "is_write", "known", "layer", "looks_like_layer", "lookup", "nothing", "opaque",
           "passthrough", "register", "reshape_channel_map"]
