"""Channel-dependency analysis of a GraphDef.

Every channel a layer produces is an *element*; channels that must disappear together are joined
(a residual add joins its two inputs element-wise, a concat lays its inputs side by side, a
depthwise conv repeats its input channels, a flatten tiles them).  A class of joined elements is a
*unit*: removing a unit removes its position in every tensor that carries it.  Spaces (the channel
sets of producers) that share units form a *group*.

Parameters (Const or variables) are never elements: a per-channel parameter is *bound* to the
elements of the tensor it is applied to.  Anything the op rules do not understand *fixes* the
elements it touches, with a reason naming the op.  For a choice of kept channels, :meth:`plan`
gives what every back-end applies.

Example::

    a = analyze(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
    for g in a.groups:
        print(g.nodes, g.channels, g.prunable, g.reason)
"""
import collections
import hashlib
import json

import numpy as np

from tf1prune.core import rules
from tf1prune.core.context import Context, Shared, UnionFind
from tf1prune.errors import Tf1PruneError
from tf1prune.core.graph import GraphView
from tf1prune.core.names import node_of, tensor_name
from tf1prune.core.rules import ParamKind, Role


class Group:
    """Channels that must shrink together."""

    def __init__(self, gid, units, spaces, consumers, reasons, width=1):
        self.id = gid
        self.width = width            # channels per unit in its producers (an attention head's size; else 1)
        self.units = units            # global unit indices, in canonical order
        self.nodes = [s.node for s in spaces if s.kind == "producer"]
        self.consumers = consumers    # layers whose input channels shrink with the group
        self.reasons = reasons        # every reason that fixes it (empty: prunable)
        self.prunable = not reasons

    @property
    def reason(self):
        """Why the group is not prunable (every reason, '; '-separated), or None."""
        return "; ".join(self.reasons) if self.reasons else None

    @property
    def channels(self):
        return len(self.units)

    def to_dict(self):
        return {"id": self.id, "nodes": self.nodes, "consumers": self.consumers,
                "channels": self.channels, "prunable": self.prunable, "reason": self.reason or ""}


class Analysis:
    """Result of :func:`analyze`: groups, blocks, layers, bindings, shape rewrites."""

    def __init__(self, ctx, excludes):
        shared = ctx.shared
        self.view = ctx.view
        self.layers = shared.layers
        self.uncounted = shared.uncounted
        self.batch_norms = shared.batch_norms
        self.bindings = dict(ctx.bindings)
        self.rewrites = ctx.rewrites
        self.info = ctx.info
        roots = shared.uf.roots()
        self.unit_of_root = {}
        self._build_groups(shared, roots)
        self.unit_of = np.array([self.unit_of_root[r] for r in roots.tolist()], dtype=np.int64) \
            if len(roots) else np.zeros(0, np.int64)
        self.num_units = len(self.unit_of_root)
        self.group_of_unit = {u: g.id for g in self.groups for u in g.units}
        self.segments = self._segments(shared, roots)
        from tf1prune.core import blocks  # local import: blocks reads a finished analysis
        self.blocks = blocks.find_blocks(self)
        self.excludes = list(excludes)

    def _build_groups(self, shared, roots):
        spaces = shared.spaces
        consumer_of_root, reasons_of_root = _per_root(shared, roots)
        text = {rid: reason for reason, rid in shared.reasons.items()}
        self.groups = []
        for sis in _joined_spaces(spaces, roots):
            group_spaces = [spaces[i] for i in sis]
            if not any(s.kind == "producer" for s in group_spaces):
                continue
            unit_roots = []
            for sp in group_spaces:
                for r in roots[sp.start:sp.start + sp.size].tolist():
                    if r not in self.unit_of_root:
                        self.unit_of_root[r] = len(self.unit_of_root)
                        unit_roots.append(r)
            consumers, ids = set(), set()
            for r in unit_roots:
                consumers |= consumer_of_root.get(r, set())
                ids |= reasons_of_root.get(r, set())
            units = [self.unit_of_root[r] for r in unit_roots]
            widths = [sp.size // len(set(roots[sp.start:sp.start + sp.size].tolist()))
                      for sp in group_spaces if sp.kind == "producer" and sp.size]
            self.groups.append(Group(len(self.groups), units, group_spaces, sorted(consumers),
                                     [text[i] for i in sorted(ids)], min(widths or [1])))
        for r in sorted(set(roots.tolist())):
            if r not in self.unit_of_root:
                self.unit_of_root[r] = len(self.unit_of_root)

    def _segments(self, shared, roots):
        """Per group, the unit sets that must each keep a channel: every producer and split part."""
        parts = [roots[sp.start:sp.start + sp.size] for sp in shared.spaces if sp.size]
        parts += [roots[p] for r in self.rewrites for p in r.segments]
        segments = collections.defaultdict(list)
        for part in parts:   # a part across groups keeps a channel in each group's piece
            pieces = collections.defaultdict(set)
            for r in part.tolist():
                unit = self.unit_of_root[int(r)]
                if unit in self.group_of_unit:
                    pieces[self.group_of_unit[unit]].add(unit)
            for gid, units in pieces.items():
                segments[gid].append(np.array(sorted(units)))
        return segments

    # --- queries ---------------------------------------------------------
    def kept_positions(self, elems, keep_units):
        """Boolean mask over the positions of ``elems`` given a kept-unit mask."""
        return keep_units[self.unit_of[elems]]

    def full_keep(self):
        """The kept-unit mask that keeps everything."""
        return np.ones(self.num_units, dtype=bool)

    def tensor_info(self, tensor):
        """``ChannelInfo(axis, elems)`` of a tensor of the graph, or None when it carries no channels."""
        return self.info.get(tensor_name(tensor))

    def group_of_tensor(self, tensor):
        """The group of the channels a tensor carries (of its first channel), or None."""
        inf = self.tensor_info(tensor)
        if inf is None or not len(inf.elems):
            return None
        gid = self.group_of_unit.get(int(self.unit_of[inf.elems[0]]))
        return None if gid is None else self.groups[gid]

    def group_by_node(self, name):
        """The group that node ``name`` produces channels for, or None."""
        for g in self.groups:
            if name in g.nodes:
                return g
        return None

    def digest(self):
        """Digest of the channel structure: a spec only applies to an identical one."""
        payload = [(sorted(g.nodes), g.channels, g.consumers) for g in self.groups]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def per_unit(self, roles, slice_score):
        """Per unit: the sum of ``slice_score(param name, axis)`` (an array over the axis' positions) over
        every bound axis of ``roles``, and how many such axes there are (criteria, filter norms and the
        zero-channel test all add up this way)."""
        total = np.zeros(self.num_units)
        count = np.zeros(self.num_units)
        for name, axes in self.bindings.items():
            for axis, binding in axes.items():
                if binding.role in roles:
                    units = self.unit_of[binding.elems]
                    np.add.at(total, units, slice_score(name, axis))
                    np.add.at(count, units, 1)
        return total, count

    def plan(self, choice=None):
        """The :class:`~tf1prune.core.plan.Plan` of a :class:`~tf1prune.core.choice.Choice` (a spec is one;
        None keeps everything)."""
        from tf1prune.core.choice import Choice
        from tf1prune.core.plan import Plan
        return Plan(self, Choice.everything(self) if choice is None else choice)

    def to_dict(self):
        from tf1prune.core import flops
        report = flops.count(self)
        return {"macs": report.macs, "macs_complete": report.complete, "uncounted": [w for _, w in report.uncounted],
                "params": report.params, "groups": [g.to_dict() for g in self.groups],
                "blocks": [b.to_dict() for b in self.blocks], "measured_shapes": len(self.view.measured),
                "shape_note": self.view.shape_note() or ""}


def _joined_spaces(spaces, roots):
    """Space indices grouped by shared units, in the order of their first space."""
    joined, space_of_root = UnionFind(len(spaces)), {}
    for si, sp in enumerate(spaces):
        for r in set(roots[sp.start:sp.start + sp.size].tolist()):
            if r in space_of_root:
                joined.join(si, space_of_root[r])
            else:
                space_of_root[r] = si
    members = collections.OrderedDict()
    for si in range(len(spaces)):
        members.setdefault(joined.find(si), []).append(si)
    return list(members.values())


def _per_root(shared, roots):
    """Per unit root: the layers that read it, and the ids of the reasons that fix it."""
    consumer_of_root = collections.defaultdict(set)
    for layer in shared.layers:
        if len(layer.dims) == 2 and len(layer.dims[0].elems):
            for r in set(roots[layer.dims[0].elems].tolist()):
                consumer_of_root[r].add(layer.node)
    reasons_of_root = collections.defaultdict(set)
    for e, ids in shared.fixed.items():
        reasons_of_root[int(roots[e])].update(ids)
    return consumer_of_root, reasons_of_root


def _param_sources(ctx, tensor):
    """Const/variable nodes an element-wise parameter expression reads."""
    out, stack = set(), [tensor]
    while stack:
        node = ctx.view.nodes[node_of(stack.pop())]
        param = rules.lookup(node.op).param
        if param is None:
            continue
        if param.kind is ParamKind.SOURCE:
            out.add(node.name)
        elif param.kind in (ParamKind.PASS, ParamKind.ELEMENTWISE):
            stack.extend(ctx.inputs(node))
    return out


def bind_parameter_math(ctx):
    """Element-wise math between parameters that no layer consumes (an L2-SP term ``w - w0`` in a
    loss): a channel axis bound on one input is bound on all, so they shrink together.  The newly
    bound parameters are zeroed in the sparse graph too (role ``tied``), so slim == sparse holds
    for such outputs as well."""
    axes_of = {}   # parameter tensor -> {axis: elements}
    for name in ctx.view.order:
        node = ctx.view.nodes[name]
        param = rules.lookup(node.op).param
        kind = param.kind if param is not None else None
        if kind is ParamKind.SOURCE:
            if name in ctx.bindings:
                axes_of[name + ":0"] = {a: b.elems for a, b in ctx.bindings[name].items()}
            continue
        if kind not in (ParamKind.PASS, ParamKind.ELEMENTWISE) or not ctx.is_param(name + ":0"):
            continue
        ins = ctx.inputs(node)
        if kind is ParamKind.PASS:
            if ins and ins[0] in axes_of:
                axes_of[name + ":0"] = axes_of[ins[0]]
            continue
        out_shape = ctx.shape(name + ":0")
        if out_shape is None:
            continue
        found = {}
        for t in ins:
            ts = ctx.shape(t)
            for axis, elems in axes_of.get(t, {}).items():
                if ts is not None:
                    found.setdefault(axis + len(out_shape) - len(ts), elems)
        sources = _param_sources(ctx, name + ":0")
        for axis, elems in found.items():
            unbound = []   # sources with this channel axis and no binding on it yet
            for src in sources:
                shape = ctx.shape(src + ":0") or []
                at = axis - len(out_shape) + len(shape)
                if 0 <= at < len(shape) and shape[at] == len(elems) and at not in ctx.bindings.get(src, {}):
                    unbound.append(src)
            if unbound:
                ctx.bind(name + ":0", axis, elems, Role.TIED, "%s '%s'" % (node.op, node.name))
        if found:
            axes_of[name + ":0"] = found


def _fix_outputs(ctx, names, why):
    for name in names:
        for i in range(ctx.view.num_outputs(node_of(name))):
            inf = ctx.get("%s:%d" % (node_of(name), i))
            if inf is not None:
                ctx.fix(inf.elems, "%s '%s'" % (why, node_of(name)))


def analyze(graph_def, input_specs=None, output_node_names=(), excludes=(), view=None, update_ops=()):
    """Find the channel groups of ``graph_def``; see the module docstring.

    ``update_ops`` (a training graph's UPDATE_OPS, e.g. BN moving averages) are analysed with the
    outputs, so the variables they update are bound to their channels.

    Example::

        a = tf1prune.analyze(graph_def, {"input:0": ((1, 28, 28, 1), "float32")}, ["logits"])
        print([(g.nodes, g.channels, g.reason) for g in a.groups])
    """
    if not output_node_names:
        raise Tf1PruneError("output node names are required")
    view = view or GraphView(graph_def, input_specs, list(output_node_names) + [node_of(n) for n in update_ops])
    for name in excludes:
        if node_of(name) not in view.nodes:
            raise Tf1PruneError("excluded node %r is not in the graph" % name)
    ctx = Context(view, Shared({node_of(n) for n in update_ops}))
    ctx.propagate()
    bind_parameter_math(ctx)
    for var, op in ctx.assigned.items():   # weights must not be updated from activations
        for binding in ctx.bindings.get(var, {}).values():
            if binding.role.zeroed:
                ctx.fix(binding.elems, "weight '%s' is also updated from activations by '%s'" % (var, op))
    _fix_outputs(ctx, output_node_names, "graph output")
    _fix_outputs(ctx, excludes, "excluded node")
    return Analysis(ctx, excludes)
