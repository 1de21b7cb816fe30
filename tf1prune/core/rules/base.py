"""The rule type, the registry, and the records that rules write into an analysis.

A :class:`Rule` holds everything tf1prune knows about one op type:

- ``forward(ctx, node)``: how the op moves channels from its inputs to its outputs (and, for
  layers, records a :class:`Layer` with its MACs and binds its kernel);
- ``param``: how a per-channel parameter binding passes through the op when it computes a
  parameter (a :class:`Param`: source, pass-through, element-wise, shape, or a custom one);
- ``shape_inputs``: the inputs that are shape tensors (a constant read only there may be rewritten);
- ``shape_elem(ctx, node, tensor, index, elems, user)``: how element ``index`` of a shape tensor
  that the op computes is traced back to a constant to rewrite or a dimension of a channel tensor;
- ``layer``: a :class:`LayerSpec` for conv/dense-like ops (kernel axes, filter axis, MACs);
- ``call``: a :class:`CallSpec` for ops that run library functions (If, PartitionedCall);
- ``zero(node, params)``: whether the op maps a zero channel to zero (``params``: input index ->
  that parameter input's value at the channel, None when it is computed): None when it does, else
  the reason; :func:`keeps_zero` for ops that always do (ReLU, pooling, reshapes);
- ``tags``: plain facts other modules ask about (``variable``, ``read``, ``write``...).

Nothing outside :mod:`tf1prune.core.rules` compares op type names.
"""
import collections
import enum

import numpy as np

REGISTRY = {}
PREFIXES = {}   # op type prefix -> Rule (e.g. every optimizer ``Apply*`` op)
ALL = "all"     # shape_inputs: every input


class Role(enum.Enum):
    """What a bound parameter axis is to its channels."""
    FILTER = "filter"          # kernel slice that produces a channel (conv/dense output, depthwise channel)
    KERNEL_IN = "kernel_in"    # kernel slice that reads a channel
    BIAS = "bias"
    BN_SCALE = "bn_scale"
    BN_OFFSET = "bn_offset"
    TIED = "tied"              # parameter math tied to a weight (an L2-SP term): zeroed with it
    STAT = "stat"              # any other per-channel constant (BN mean/variance): sliced, never zeroed

    @property
    def zeroed(self):
        """Zeroed for pruned channels in the sparse model (everything but statistics)."""
        return self is not Role.STAT

    @property
    def kernel(self):
        return self in (Role.FILTER, Role.KERNEL_IN)


ZEROED = frozenset(r for r in Role if r.zeroed)
KERNEL = frozenset((Role.FILTER, Role.KERNEL_IN))


class ParamKind(enum.Enum):
    SOURCE = "source"            # a Const or variable: the binding is recorded and sliced
    PASS = "pass"                # the binding goes on to input 0 (Identity, ReadVariableOp, Relu...)
    ELEMENTWISE = "elementwise"  # to every broadcast input that has the channel axis
    SHAPE = "shape"              # input 0 is a shape whose element on that axis is rewritten
    CUSTOM = "custom"


class Param:
    """How a binding ``(axis, elems, role)`` on the output of a parameter op reaches its sources."""

    def __init__(self, kind, bind):
        self.kind, self.bind = kind, bind

    def __repr__(self):
        return "Param(%s)" % self.kind.value


LayerSpec = collections.namedtuple("LayerSpec", "kind data kernel kernel_axes x_axis y_axis positions prunable")
LayerSpec.__doc__ = """A conv/dense-like op.

``data``/``kernel``: input indices; ``kernel_axes(view, node, rank)`` -> (in axis, out axis) of the
kernel, the out axis being the filter axis; ``x_axis``/``y_axis(view, node, rank)``: the channel
axis of the input and of the output; ``positions``: ``'output'`` or ``'input'``, whose positions
(batch x spatial) the MACs count; MACs = positions x kernel window x in x out.  ``prunable``:
False for ops only counted (their channels are fixed)."""
CallSpec = collections.namedtuple("CallSpec", "branches first_arg loop")
CallSpec.__doc__ = """An op that runs library functions: the function attributes, the index of
its first data input passed to them, and whether it loops (While)."""


class Rule:
    """Everything tf1prune knows about one op type (see the module docstring)."""

    def __init__(self, forward=None, param=None, shape_inputs=(), shape_elem=None, layer=None, call=None,
                 tags=(), zero=None):
        self.forward = forward or opaque
        self.zero = zero or _no_zero
        self.param = param
        self.shape_inputs = shape_inputs
        self.shape_elem = shape_elem
        self.layer = layer
        self.call = call
        self.tags = frozenset(tags.split() if isinstance(tags, str) else tags)

    def reads_shape_at(self, index):
        return self.shape_inputs == ALL or index in self.shape_inputs


def register(op_types, forward=None, param=None, shape_inputs=(), shape_elem=None, layer=None, call=None,
             tags=(), zero=None, prefix=False):
    """Register one rule for each op type in ``op_types`` (space-separated).

    With ``prefix=True`` the names are prefixes: the rule serves every op type that starts with
    one of them and has no rule of its own (the optimizers' ``Apply*`` ops).

    Example (a per-channel activation)::

        register("Mish", forward=passthrough, param=PASS)
    """
    rule = Rule(forward, param, shape_inputs, shape_elem, layer, call, tags, zero)
    for op_type in op_types.split():
        (PREFIXES if prefix else REGISTRY)[op_type] = rule
    return rule


def lookup(op_type):
    """The rule of ``op_type`` (an opaque rule for op types nobody registered)."""
    rule = REGISTRY.get(op_type)
    if rule is not None:
        return rule
    for prefix, rule in PREFIXES.items():
        if op_type.startswith(prefix):
            return rule
    return _UNKNOWN


def known(op_type):
    """Has ``op_type`` a rule (of its own or by prefix)?"""
    return lookup(op_type) is not _UNKNOWN


def has_tag(op_type, tag):
    return tag in lookup(op_type).tags


LAYER_WORDS = ("Conv", "MatMul", "Einsum")


def looks_like_layer(op_type):
    """A layer-like op type without a layer rule (its MACs cannot be counted)."""
    rule = lookup(op_type)
    return rule.layer is None and "counted" not in rule.tags and any(w in op_type for w in LAYER_WORDS)


def keeps_zero(node, params):
    """``zero`` rule of ops that map a zero channel to zero whatever their parameters."""
    return None


def zero_params(node, params):
    """``zero`` rule of ops that keep a zero channel zero when their parameter inputs are zero there
    (``x + b``, ``max(x, c)``, BiasAdd)."""
    for i, value in sorted(params.items()):
        if value is None:
            return "%s '%s' reads a computed parameter" % (node.op, node.name)
        if np.any(value != 0):
            return "%s '%s' adds a non-zero parameter (input %d)" % (node.op, node.name, i)
    return None


def _no_zero(node, params):
    return "%s '%s' does not map 0 to 0" % (node.op, node.name)


def opaque(ctx, node, why=""):
    """The default forward rule: fix every channel the op touches, with a reason naming it."""
    ctx.opaque(node, why)


def nothing(ctx, node):
    """Sources and shape readers: no channels out, nothing to fix."""


_UNKNOWN = Rule()


# --- records that rules write into an analysis ----------------------------------------
ChannelInfo = collections.namedtuple("ChannelInfo", "axis elems")
Binding = collections.namedtuple("Binding", "elems role")


class Dim(collections.namedtuple("Dim", "elems fixed")):
    """A layer dimension: channel elements that may be pruned plus ``fixed`` positions that stay."""

    def __new__(cls, elems=None, fixed=0):
        elems = np.zeros(0, np.int64) if elems is None else np.asarray(elems, np.int64)
        return super().__new__(cls, elems, int(fixed))

    @property
    def size(self):
        return len(self.elems) + self.fixed


class Layer(collections.namedtuple("Layer", "node kind kernel window factor dims path in_axis",
                                   defaults=(None,))):
    """A counted layer: MACs = ``factor`` x the product of its dims' kept sizes.

    ``kernel``: the parameter node of its weights (None when they are not constants);
    ``window``: kernel positions per output (kh*kw; 1 for dense); ``path``: the alternative
    branches (``(call node, branch index)``...) that hold it, () in the main graph;
    ``in_axis``: the kernel's input-channel axis (N:M groups run along it).
    """

    @property
    def prunable_dims(self):
        return [d for d in self.dims if len(d.elems)]


class ShapeRewrite:
    """A shape tensor to rewrite for a kept-channel choice (made by a rule, applied by a plan).

    ``parts``: element arrays whose kept counts the rewrite needs; ``segments``: those that must
    each keep a channel (split parts); ``apply(graph_def, nodes, counts)`` edits ``graph_def`` in
    place; ``touched()``: the node names it changes or adds.
    """
    parts = ()
    segments = ()

    def apply(self, graph_def, nodes, counts):
        raise NotImplementedError

    def touched(self):
        raise NotImplementedError
