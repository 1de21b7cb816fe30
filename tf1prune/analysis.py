"""Channel-dependency analysis of a GraphDef.

Every channel a layer produces is an *element*; channels that must disappear
together are joined in a union-find (a residual add joins its two inputs
element-wise, a concat lays its inputs side by side, a depthwise conv repeats
its input channels, a flatten tiles them).  A class of joined elements is a
*unit*: removing a unit removes its position in every tensor that carries it.
Spaces (the channel sets of producers) that share units form a *group*.

Parameters (Const or variables) are never elements: a per-channel parameter is
*bound* to the elements of the tensor it is applied to, so the slimmer knows
which axis of which constant to slice.  Anything the op registry does not
understand *fixes* the elements it touches, with a reason naming the op.

Example::

    a = analyze(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
    for g in a.groups:
        print(g.nodes, g.channels, g.prunable, g.reason)
"""
import collections
import hashlib
import json

import numpy as np

from tf1prune import ops
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import GraphView, node_of, tensor_name

ChannelInfo = collections.namedtuple("ChannelInfo", "axis elems")
Space = collections.namedtuple("Space", "start size kind node")
Binding = collections.namedtuple("Binding", "elems role")
Layer = collections.namedtuple("Layer", "node kind factor dims kernel")
ZERO_ROLES = ("kernel", "bias", "bn_scale", "bn_offset", "tied")  # "tied": see bind_parameter_math
# Ops that read a shape constant, and at which input (None: any input).
SHAPE_INPUTS = dict({"Reshape": 1, "Pack": None, "Identity": 0, "Cast": 0},
                    **{op: 0 for op, rule in ops.REGISTRY.items() if rule.param == "shape"})


class Group:
    """Channels that must shrink together."""

    def __init__(self, gid, units, spaces, consumers, reason):
        self.id = gid
        self.units = units            # global unit indices, in canonical order
        self.nodes = [s.node for s in spaces if s.kind == "producer"]
        self.consumers = consumers    # layers whose input channels shrink with the group
        self.reason = reason
        self.prunable = reason is None

    @property
    def channels(self):
        return len(self.units)

    def to_dict(self):
        return {"id": self.id, "nodes": self.nodes, "consumers": self.consumers,
                "channels": self.channels, "prunable": self.prunable, "reason": self.reason or ""}


class _UnionFind:
    def __init__(self):
        self.parent = []

    def add(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x):
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a, b):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def roots(self):
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


class Context:
    """State of one analysis: what op rules read and write."""

    def __init__(self, view):
        self.view = view
        self.uf = _UnionFind()
        self.spaces = []
        self.info = {}             # tensor name -> ChannelInfo
        self.fixed = {}            # element -> reason
        self.bindings = collections.defaultdict(dict)   # param node -> {axis: Binding}
        self.rewrites = []         # shape constants to rewrite in the slim graph
        self.layers = []
        self._param = {}
        self._shape_elems = {}     # (shape constant, index) -> elements it counts
        self.parent, self.arg_map = None, {}
        self.update_ops = set()    # UPDATE_OPS roots: their assignments bind variables (ops._assign)
        self.assigned = {}         # variable read -> update op writing it

    def child(self, view, arg_map):
        """Context for a function body: shares elements; its arguments are the call's inputs."""
        sub = Context(view)
        sub.uf, sub.spaces, sub.fixed, sub.layers = self.uf, self.spaces, self.fixed, self.layers
        sub.parent, sub.arg_map = self, arg_map
        sub.update_ops, sub.assigned = self.update_ops, self.assigned
        for name, outer in arg_map.items():
            sub._param[name] = self.is_param(outer)
            inf = self.get(outer)
            if inf is not None:
                sub.set(name + ":0", inf.axis, inf.elems)
        return sub

    def close_child(self, sub, where):
        """Constants inside a function body cannot be sliced: fix what they touch."""
        for name, axes in sub.bindings.items():
            for binding in axes.values():
                self.fix(binding.elems, "constant '%s' inside the function of %s" % (name, where))
        for rewrite in sub.rewrites:
            for elems in (rewrite[3] if rewrite[0] == "split" else [rewrite[3]]):
                self.fix(elems, "shape '%s' inside the function of %s" % (rewrite[1], where))

    # --- reading ---------------------------------------------------------
    def inputs(self, node):
        return self.view.data_inputs(node.name)

    def shape(self, tensor):
        return self.view.shape(tensor)

    def get(self, tensor):
        return self.info.get(tensor_name(tensor))

    def is_param(self, tensor):
        """True when a tensor depends on constants and variables only."""
        name = node_of(tensor)
        if name not in self._param:
            stack = [name]
            while stack:
                cur = stack[-1]
                if cur in self._param:
                    stack.pop()
                    continue
                node = self.view.nodes[cur]
                if node.op in ops.PARAM_SOURCES:
                    self._param[cur] = True
                    stack.pop()
                    continue
                if node.op in ops.NON_PARAM_SOURCES or ops.lookup(node.op).param is None:
                    self._param[cur] = False
                    stack.pop()
                    continue
                pending = [node_of(r) for r in self.view.data_inputs(cur) if node_of(r) not in self._param]
                if pending:
                    stack.extend(pending)
                    continue
                ins = self.view.data_inputs(cur)
                self._param[cur] = bool(ins) and all(self._param[node_of(r)] for r in ins)
                stack.pop()
        return self._param[name]

    # --- writing ---------------------------------------------------------
    def set(self, tensor, axis, elems):
        if elems is not None:
            self.info[tensor_name(tensor)] = ChannelInfo(axis, np.asarray(elems, dtype=np.int64))

    def new_space(self, node_name, size, kind="producer"):
        elems = self.uf.add(int(size))
        self.spaces.append(Space(int(elems[0]) if size else len(self.uf.parent), int(size), kind, node_name))
        return elems

    def union(self, a, b):
        self.uf.union(a, b)

    def fix(self, elems, reason):
        for e in np.unique(elems).tolist():
            self.fixed.setdefault(e, reason)

    def opaque(self, node, why=""):
        """Default for ops the registry does not understand: fix every channel they touch."""
        reason = "unsupported op %s '%s'%s" % (node.op, node.name, (": " + why) if why else "")
        for t in self.inputs(node):
            if self.get(t) is not None:
                self.fix(self.get(t).elems, reason)

    def channel_in(self, tensor, axis, node):
        """Elements of ``tensor`` along ``axis``, or None when it carries none there."""
        inf = self.get(tensor)
        if inf is None:
            return None
        if inf.axis != axis:
            self.fix(inf.elems, "op %s '%s' reads channels on another axis" % (node.op, node.name))
            return None
        return inf.elems

    def bind(self, tensor, axis, elems, role="param", where=""):
        """Tie axis ``axis`` of parameter ``tensor`` to ``elems`` (see ops.Rule.param)."""
        node = self.view.nodes[node_of(tensor)]
        if node.name in self.arg_map:
            return self.parent.bind(self.arg_map[node.name], axis, elems, role, where)
        shape = self.shape(tensor)
        kind = ops.lookup(node.op).param
        if shape is None and kind == "pass":  # e.g. ReadVariableOp of a resource argument of a function
            return self.bind(self.inputs(node)[0], axis, elems, role, where)
        if shape is None or axis >= len(shape) or shape[axis] != len(elems):
            self.fix(elems, "parameter '%s' of %s does not match its channels" % (node.name, where or "?"))
            return
        if kind == "source":
            binding = self.bindings[node.name].get(axis)
            if binding is not None:
                self.union(binding.elems, elems)
                if binding.role in ZERO_ROLES:
                    role = binding.role
                elems = binding.elems
            self.bindings[node.name][axis] = Binding(elems, role)
        elif kind == "pass":
            self.bind(self.inputs(node)[0], axis, elems, role, where)
        elif kind == "elementwise":
            rank = len(shape)
            for t in self.inputs(node):
                ts = self.shape(t)
                idx = axis - (rank - len(ts)) if ts is not None else -1
                if ts is None or (idx >= 0 and ts[idx] is None):
                    self.fix(elems, "parameter op %s '%s' has unknown shape" % (node.op, node.name))
                elif idx >= 0 and ts[idx] != 1:
                    self.bind(t, idx, elems, "tied" if role == "tied" else "param", where)
        elif kind == "shape":
            self.rewrite_shape(self.inputs(node)[0], axis, elems, node)
        else:
            self.fix(elems, "per-channel parameter of %s is computed by unsupported op %s '%s'"
                     % (where or "?", node.op, node.name))

    def source_of(self, name):
        """The Const/variable a parameter tensor reads through pass-through ops."""
        node = self.view.nodes[node_of(name)]
        while ops.lookup(node.op).param == "pass":
            node = self.view.nodes[node_of(self.inputs(node)[0])]
        return node.name

    def rewrite_shape(self, tensor, index, elems, user):
        """Element ``index`` of shape tensor ``tensor`` must become the kept count of ``elems``."""
        node = self.view.nodes[node_of(tensor)]
        if node.op == "Const":
            value = self.view.const_value(tensor)
            index = None if value.ndim == 0 else index
            for name, i in self.view.consumers[node.name]:
                op = self.view.nodes[name].op
                if name in self.view.reachable and SHAPE_INPUTS.get(op, -1) not in (None, i):
                    return self.fix(elems, "shape constant '%s' is also read by %s '%s'" % (node.name, op, name))
            earlier = self._shape_elems.setdefault((node.name, index), elems)
            if earlier is not elems:  # one constant shapes several tensors: they keep the same channels
                if len(earlier) == len(elems):
                    return self.union(earlier, elems)
                self.fix(earlier, "shape constant '%s' is shared by tensors of different widths" % node.name)
                return self.fix(elems, "shape constant '%s' is shared by tensors of different widths" % node.name)
            if index is None or value.reshape(-1)[index] != -1:
                self.rewrites.append(("const_elem", node.name, index, elems))
            return
        if node.op in ("Identity", "Cast"):
            return self.rewrite_shape(self.inputs(node)[0], index, elems, user)
        if node.op == "Pack":
            return self.rewrite_shape(self.inputs(node)[index], 0, elems, user)
        if node.op == "StridedSlice" and self.view.nodes[node_of(self.inputs(node)[0])].op == "Shape":
            begin = self.view.const_value(self.inputs(node)[1])
            src = self.get(self.inputs(self.view.nodes[node_of(self.inputs(node)[0])])[0])
            rank = len(self.shape(self.inputs(self.view.nodes[node_of(self.inputs(node)[0])])[0]) or [])
            if begin is not None and begin.size == 1 and src is not None and rank \
                    and src.axis == int(begin.reshape(-1)[0]) % rank and len(src.elems) == len(elems):
                self.union(src.elems, elems)
                return
        self.fix(elems, "shape input of %s '%s' is computed by op %s '%s'"
                 % (user.op, user.name, node.op, node.name))

    def add_layer(self, node, kind, factor, dims, kernel=None):
        self.layers.append(Layer(node.name, kind, int(factor), dims, kernel and node_of(kernel)))


class Analysis:
    """Result of :func:`analyze`: groups, blocks, layers, bindings, rewrites."""

    def __init__(self, ctx, excludes):
        self.view = ctx.view
        self.layers = ctx.layers
        self.bindings = dict(ctx.bindings)
        self.rewrites = ctx.rewrites
        self.info = ctx.info
        roots = ctx.uf.roots()
        self.unit_of_root = {}
        self._build_groups(ctx, roots)
        self.unit_of = np.array([self.unit_of_root[r] for r in roots.tolist()], dtype=np.int64) \
            if len(roots) else np.zeros(0, np.int64)
        self.num_units = len(self.unit_of_root)
        self.group_of_unit = {u: g.id for g in self.groups for u in g.units}
        self.segments = self._segments(ctx, roots)
        from tf1prune import blocks  # local import: blocks reads a finished analysis
        self.blocks = blocks.find_blocks(self)
        self.excludes = list(excludes)

    def _build_groups(self, ctx, roots):
        space_of_root = {}
        parent = list(range(len(ctx.spaces)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i
        for si, sp in enumerate(ctx.spaces):
            for r in set(roots[sp.start:sp.start + sp.size].tolist()):
                if r in space_of_root:
                    a, b = find(si), find(space_of_root[r])
                    parent[max(a, b)] = min(a, b)
                else:
                    space_of_root[r] = si
        members = collections.OrderedDict()
        for si in range(len(ctx.spaces)):
            members.setdefault(find(si), []).append(si)
        consumer_of_root = collections.defaultdict(set)
        for layer in ctx.layers:
            if layer.kind in ("conv", "dense") and not np.isscalar(layer.dims[0]):
                for r in set(roots[layer.dims[0]].tolist()):
                    consumer_of_root[r].add(layer.node)
        reasons_of_root = collections.defaultdict(list)
        for e, why in ctx.fixed.items():
            reasons_of_root[int(roots[e])].append(why)
        self.groups = []
        next_unit = 0
        for sis in members.values():
            spaces = [ctx.spaces[i] for i in sis]
            if not any(s.kind == "producer" for s in spaces):
                continue
            unit_roots, reasons, consumers = [], [], set()
            for sp in spaces:
                for r in roots[sp.start:sp.start + sp.size].tolist():
                    if r not in self.unit_of_root:
                        self.unit_of_root[r] = next_unit
                        next_unit += 1
                        unit_roots.append(r)
            for r in unit_roots:
                consumers |= consumer_of_root.get(r, set())
            reasons = []
            for r in unit_roots:
                for why in reasons_of_root.get(r, ()):
                    if why not in reasons:
                        reasons.append(why)
            units = [self.unit_of_root[r] for r in unit_roots]
            self.groups.append(Group(len(self.groups), units, spaces, sorted(consumers),
                                     "; ".join(reasons[:3]) if reasons else None))
        for r in sorted(set(roots.tolist())):
            if r not in self.unit_of_root:
                self.unit_of_root[r] = next_unit
                next_unit += 1

    def _segments(self, ctx, roots):
        """Per group, the unit sets that must each keep a channel: every producer and split part."""
        parts = [roots[sp.start:sp.start + sp.size] for sp in ctx.spaces if sp.size]
        parts += [roots[p] for r in ctx.rewrites if r[0] == "split" for p in r[3]]
        segments = collections.defaultdict(list)
        for roots in parts:   # a part across groups keeps a channel in each group's piece
            pieces = collections.defaultdict(set)
            for r in roots.tolist():
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
        return np.ones(self.num_units, dtype=bool)

    def tensor_info(self, tensor):
        return self.info.get(tensor_name(tensor))

    def digest(self):
        """Digest of the channel structure: a spec only applies to an identical one."""
        payload = [(sorted(g.nodes), g.channels, g.consumers) for g in self.groups]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def group_by_node(self, name):
        for g in self.groups:
            if name in g.nodes:
                return g
        return None

    def to_dict(self):
        from tf1prune import flops
        report = flops.count(self)
        return {"macs": report.macs, "params": report.params,
                "groups": [g.to_dict() for g in self.groups],
                "blocks": [b.to_dict() for b in self.blocks]}


def propagate(ctx, order=None):
    """Run every op's channel rule in topological order (parameter subgraphs skipped)."""
    for name in ctx.view.order if order is None else order:
        node = ctx.view.nodes[name]
        if ctx.is_param(name + ":0") and node.op not in ops.NON_PARAM_SOURCES:
            continue
        ops.lookup(node.op).forward(ctx, node)


def _param_sources(ctx, tensor):
    """Const/variable nodes an element-wise parameter expression reads."""
    out, stack = set(), [tensor]
    while stack:
        node = ctx.view.nodes[node_of(stack.pop())]
        kind = ops.lookup(node.op).param
        if kind == "source":
            out.add(node.name)
        elif kind in ("pass", "elementwise"):
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
        kind = ops.lookup(node.op).param
        if kind == "source":
            if name in ctx.bindings:
                axes_of[name + ":0"] = {a: b.elems for a, b in ctx.bindings[name].items()}
            continue
        if kind not in ("pass", "elementwise") or not ctx.is_param(name + ":0"):
            continue
        ins = ctx.inputs(node)
        if kind == "pass":
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
                ctx.bind(name + ":0", axis, elems, "tied", "%s '%s'" % (node.op, node.name))
        if found:
            axes_of[name + ":0"] = found


def analyze(graph_def, input_specs=None, output_node_names=(), excludes=(), view=None, update_ops=()):
    """Find the channel groups of ``graph_def``; see the module docstring.

    ``update_ops`` (a training graph's UPDATE_OPS, e.g. BN moving averages) are analysed with the
    outputs, so the variables they update are bound to their channels."""
    if not output_node_names:
        raise Tf1PruneError("output node names are required")
    view = view or GraphView(graph_def, input_specs, list(output_node_names) + [node_of(n) for n in update_ops])
    for name in excludes:
        if node_of(name) not in view.nodes:
            raise Tf1PruneError("excluded node %r is not in the graph" % name)
    ctx = Context(view)
    ctx.update_ops = {node_of(n) for n in update_ops}
    propagate(ctx)
    bind_parameter_math(ctx)
    for read, op in ctx.assigned.items():   # weights must not be updated from activations
        source = ctx.source_of(read)
        for binding in ctx.bindings.get(source, {}).values():
            if binding.role in ZERO_ROLES:
                ctx.fix(binding.elems, "weight '%s' is also updated from activations by '%s'" % (source, op))
    for name in list(output_node_names):
        for i in range(view.num_outputs(node_of(name))):
            inf = ctx.get("%s:%d" % (node_of(name), i))
            if inf is not None:
                ctx.fix(inf.elems, "graph output '%s'" % node_of(name))
    for name in excludes:
        for i in range(view.num_outputs(node_of(name))):
            inf = ctx.get("%s:%d" % (node_of(name), i))
            if inf is not None:
                ctx.fix(inf.elems, "excluded node '%s'" % node_of(name))
    return Analysis(ctx, excludes)
