"""The state of one analysis: what op rules read and write (see :mod:`tf1prune.core.rules`).

Every channel a layer produces is an *element*; channels that must disappear together are
joined in a :class:`UnionFind`.  Parameters are *bound* to elements (:meth:`Context.bind`), shape
tensors are traced to constants to rewrite (:meth:`Context.rewrite_shape`), and anything a rule
cannot handle *fixes* the elements it touches, with a reason.
"""
import collections

import numpy as np

from tf1prune.core import rules
from tf1prune.core.names import node_of, tensor_name
from tf1prune.core.rules import Binding, ChannelInfo, Layer, ParamKind

Space = collections.namedtuple("Space", "start size kind node")


class UnionFind:
    """Union-find over integers 0..n-1 (path compression; the smaller root wins)."""

    def __init__(self, n=0):
        self.parent = list(range(n))

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

    def join(self, x, y):
        """Join integers ``x`` and ``y``."""
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def union(self, a, b):
        """Join ``a[i]`` with ``b[i]`` for every i (arrays)."""
        for x, y in zip(a.tolist(), b.tolist()):
            self.join(x, y)

    def roots(self):
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


class Shared:
    """What every context of one analysis (the graph and its function bodies) writes to."""

    def __init__(self, update_ops=()):
        self.uf = UnionFind()
        self.spaces = []
        self.fixed = collections.defaultdict(list)   # element -> reason ids
        self.reasons = {}                            # reason -> id
        self.layers = []
        self.uncounted = []                          # (node, why): layers whose MACs are not counted
        self.batch_norms = []                        # rules.BatchNormSite, in the main graph's names
        self.update_ops = set(update_ops)
        self.assigned = {}                           # variable -> update op writing it


class Context:
    """One graph (or function body) being analysed; see the module docstring."""

    def __init__(self, view, shared=None, parent=None, arg_map=None, prefix="", path=()):
        self.view = view
        self.shared = shared or Shared()
        self.parent, self.arg_map, self.prefix, self.path = parent, arg_map or {}, prefix, path
        self.info = {}                                  # tensor name -> ChannelInfo
        self.bindings = collections.defaultdict(dict)   # param node -> {axis: Binding}
        self.rewrites = []                              # rules.ShapeRewrite
        self.shape_elems = {}                           # (shape constant, index) -> elements it counts
        self._param = {}

    @property
    def update_ops(self):
        return self.shared.update_ops

    @property
    def assigned(self):
        return self.shared.assigned

    # --- function bodies ----------------------------------------------------
    def child(self, view, arg_map, prefix, path=()):
        """Context of a function body: its arguments are the call's inputs; names get ``prefix``."""
        sub = Context(view, self.shared, self, arg_map, self.prefix + prefix, self.path + tuple(path))
        for name, outer in arg_map.items():
            sub._param[name] = self.is_param(outer)
            inf = self.get(outer)
            if inf is not None:
                sub.set(name + ":0", inf.axis, inf.elems)
        return sub

    def close_child(self, sub, where):
        """Constants and shapes inside a function body cannot be sliced: fix what they touch."""
        for name, axes in sub.bindings.items():
            for binding in axes.values():
                self.fix(binding.elems, "constant '%s' inside the function of %s" % (name, where))
        for rewrite in sub.rewrites:
            for elems in rewrite.parts:
                self.fix(elems, "shape '%s' inside the function of %s" % (rewrite.touched()[0], where))

    def propagate(self, order=None):
        """Run every op's forward rule in topological order (parameter subgraphs skipped)."""
        for name in self.view.order if order is None else order:
            node = self.view.nodes[name]
            rule = rules.lookup(node.op)
            if self.is_param(name + ":0") and not rules.is_input(node.op):
                continue
            if not rules.known(node.op) and rules.looks_like_layer(node.op):
                self.uncounted(node, "op %s is not known to tf1prune" % node.op)
            rule.forward(self, node)

    # --- reading ------------------------------------------------------------
    def rule(self, node):
        return rules.lookup(node.op)

    def inputs(self, node):
        return self.view.data_inputs(node.name)

    def shape(self, tensor):
        return self.view.shape(tensor)

    def get(self, tensor):
        return self.info.get(tensor_name(tensor))

    def const_value(self, tensor):
        return self.view.const_value(tensor)

    def const_input(self, node, index):
        """The constant value of input ``index``; None (the op made opaque) when it is computed."""
        value = self.const_value(self.inputs(node)[index])
        if value is None:
            self.opaque(node, "input %d is not a constant" % index)
        return value

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
                op = self.view.nodes[cur].op
                if rules.is_param_source(op) or rules.is_input(op) or rules.lookup(op).param is None:
                    self._param[cur] = rules.is_param_source(op)
                    stack.pop()
                    continue
                ins = [node_of(r) for r in self.view.data_inputs(cur)]
                pending = [n for n in ins if n not in self._param]
                if pending:
                    stack.extend(pending)
                    continue
                self._param[cur] = bool(ins) and all(self._param[n] for n in ins)
                stack.pop()
        return self._param[name]

    def param_source(self, tensor):
        """The Const/variable whose value ``tensor`` is (through reads and function arguments), else None."""
        name = self.view.read_source(tensor)
        if name in self.arg_map:
            return self.parent.param_source(self.arg_map[name])
        return self.prefix + name if name is not None and rules.is_param_source(self.view.nodes[name].op) else None

    # --- writing ------------------------------------------------------------
    def set(self, tensor, axis, elems):
        if elems is not None:
            self.info[tensor_name(tensor)] = ChannelInfo(axis, np.asarray(elems, dtype=np.int64))

    def new_space(self, node_name, size, kind="producer"):
        """``size`` new channel elements produced by node ``node_name``."""
        uf = self.shared.uf
        elems = uf.add(int(size))
        self.shared.spaces.append(Space(int(elems[0]) if size else len(uf.parent), int(size), kind,
                                        self.prefix + node_name))
        return elems

    def union(self, a, b):
        self.shared.uf.union(a, b)

    def fix(self, elems, reason):
        """These elements are never pruned, because of ``reason``."""
        rid = self.shared.reasons.setdefault(reason, len(self.shared.reasons))
        fixed = self.shared.fixed
        for e in np.unique(elems).tolist():
            if rid not in fixed[e]:
                fixed[e].append(rid)

    def opaque(self, node, why=""):
        """An op not understood (or not here): fix every channel it touches."""
        name = self.prefix + node.name
        reason = "%s '%s': %s" % (node.op, name, why) if why else "unsupported op %s '%s'" % (node.op, name)
        for t in self.inputs(node):
            if self.get(t) is not None:
                self.fix(self.get(t).elems, reason)

    def channel_in(self, tensor, axis, node):
        """Elements of ``tensor`` along ``axis``, or None when it carries none there."""
        inf = self.get(tensor)
        if inf is None:
            return None
        if inf.axis != axis:
            self.fix(inf.elems, "op %s '%s' reads channels on another axis" % (node.op, self.prefix + node.name))
            return None
        return inf.elems

    def bind(self, tensor, axis, elems, role, where=""):
        """Tie axis ``axis`` of parameter ``tensor`` to ``elems`` through the rules' ``param``."""
        node = self.view.nodes[node_of(tensor)]
        if node.name in self.arg_map:
            return self.parent.bind(self.arg_map[node.name], axis, elems, role, where)
        shape = self.shape(tensor)
        param = rules.lookup(node.op).param
        if shape is None and param is not None and param.kind is ParamKind.PASS:
            return self.bind(self.inputs(node)[0], axis, elems, role, where)   # a resource argument's read
        if shape is None or axis >= len(shape) or shape[axis] != len(elems):
            return self.fix(elems, "parameter '%s' of %s does not match its channels" % (node.name, where or "?"))
        if param is None:
            return self.fix(elems, "per-channel parameter of %s is computed by unsupported op %s '%s'"
                            % (where or "?", node.op, node.name))
        param.bind(self, node, axis, elems, role, where)

    def record_binding(self, name, axis, elems, role):
        """A source's axis is bound (the Param.SOURCE rule); an earlier binding is joined."""
        binding = self.bindings[name].get(axis)
        if binding is not None:
            self.union(binding.elems, elems)
            if binding.role.zeroed:
                role = binding.role
            elems = binding.elems
        self.bindings[name][axis] = Binding(elems, role)

    def rewrite_shape(self, tensor, index, elems, user):
        """Element ``index`` of shape tensor ``tensor`` must become the kept count of ``elems``."""
        node = self.view.nodes[node_of(tensor)]
        trace = rules.lookup(node.op).shape_elem
        if trace is None:
            return self.fix(elems, "shape input of %s '%s' is computed by op %s '%s'"
                            % (user.op, self.prefix + user.name, node.op, self.prefix + node.name))
        trace(self, node, tensor, index, elems, user)

    def add_rewrite(self, rewrite):
        self.rewrites.append(rewrite)

    def add_layer(self, node, kind, kernel, window, factor, dims, in_axis=None):
        self.shared.layers.append(Layer(self.prefix + node.name, kind, kernel, int(window), int(factor),
                                        list(dims), self.path, in_axis))

    def outer_tensor(self, tensor):
        """The main-graph tensor that ``tensor`` is (through function arguments), else None."""
        if self.parent is None:
            return tensor_name(tensor)
        name = node_of(tensor)
        return self.parent.outer_tensor(self.arg_map[name]) if name in self.arg_map else None

    def add_batch_norm(self, site):
        """Record a BatchNorm (a rules.BatchNormSite in this context's names) for adaptive BatchNorm."""
        x = self.outer_tensor(site.x)
        if site.rewire and self.parent is not None:
            x = None   # an unfused BatchNorm inside a function body cannot be rewired
        dtype = self.view.dtype(site.x).as_datatype_enum
        output = self.outer_tensor(site.output) if site.output and self.parent is None else None
        self.shared.batch_norms.append(site._replace(node=self.prefix + site.node, x=x, dtype=dtype,
                                                     mean=self.param_source(site.mean),
                                                     variance=self.param_source(site.variance), output=output,
                                                     scale=site.scale and self.param_source(site.scale),
                                                     offset=site.offset and self.param_source(site.offset)))

    def uncounted(self, node, why):
        self.shared.uncounted.append((self.prefix + node.name, "%s '%s': %s" % (node.op, self.prefix + node.name,
                                                                                  why)))
