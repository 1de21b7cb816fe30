"""Read-only view of a GraphDef: nodes, consumers, static shapes and constants.

Static shapes come from TensorFlow's own shape inference: the GraphDef is imported into a fresh
``tf.Graph`` with the placeholders set to the input specs.  Where that inference stops (loops,
``TensorArray``s, ``map_fn``, shapes computed at run time), the shapes are taken from one run of the
graph on inputs of the spec (:attr:`GraphView.measured`); the graph itself is not changed.  What an op *is* (an input, a read, a
call of library functions) is asked of :mod:`tf1prune.core.rules`.
"""
import collections
import copy

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.framework import function_def_to_graph

from tf1prune.core import rules
from tf1prune.errors import Tf1PruneError, tf_error_line
from tf1prune.core.names import node_of, output_index, tensor_name

FunctionBody = collections.namedtuple("FunctionBody", "view inputs outputs output_shapes")
FOLD_LIMIT = 64   # constant folding (get_static_value) only for small integer tensors


def parse_input_specs(text):
    """``'x:0=1,64,64,3;y:0=1,10'`` -> ``{'x:0': ((1, 64, 64, 3), 'float32')}``.

    A dtype may follow the shape: ``x:0=1,8:int32``; without one, the placeholder's own dtype.
    """
    specs = {}
    for item in filter(None, (s.strip() for s in (text or "").split(";"))):
        if "=" not in item:
            raise Tf1PruneError("bad input spec %r: expected name=d0,d1,..." % item)
        name, shape_text = (s.strip() for s in item.split("=", 1))
        dtype = None
        if ":" in shape_text:
            shape_text, dtype = shape_text.rsplit(":", 1)
        try:
            shape = tuple(int(d) if d.strip() not in ("", "?", "-1", "None") else None
                          for d in shape_text.split(","))
        except ValueError:
            raise Tf1PruneError("bad input spec %r: dimensions must be integers" % item)
        _check_dims(item, shape)
        try:
            tf.as_dtype(dtype or "float32")
        except TypeError:
            raise Tf1PruneError("bad input spec %r: unknown dtype %r" % (item, dtype))
        specs[tensor_name(name)] = (shape, dtype)
    return specs


def _check_dims(what, shape):
    """Dimensions are positive integers, or None (unknown)."""
    for d in shape:
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1):
            raise Tf1PruneError("bad input spec %r: dimension %r must be a positive integer (or -1, ?, None "
                                "for unknown)" % (what, d))


def normalize_input_specs(input_specs):
    """Accept ``{name: tf.TensorSpec | (shape, dtype) | shape}``; dimensions of -1 are unknown; a
    dtype of None (or no dtype) is the placeholder's own (:func:`with_placeholder_dtypes`)."""
    out = {}
    if input_specs is not None and not isinstance(input_specs, dict):
        raise Tf1PruneError("input specs must be a dict of input name -> shape, got %r" % (input_specs,))
    for name, spec in (input_specs or {}).items():
        try:
            if hasattr(spec, "shape") and hasattr(spec, "dtype"):
                shape, dtype = tuple(spec.shape.as_list()), tf.as_dtype(spec.dtype).name
            elif isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[1], int) and spec[1] is not None:
                shape, dtype = tuple(spec[0]), tf.as_dtype(spec[1]).name
            elif isinstance(spec, tuple) and len(spec) == 2 and spec[1] is None and not isinstance(spec[0], int):
                shape, dtype = tuple(spec[0]), None
            else:
                shape, dtype = tuple(spec), None
        except (TypeError, ValueError) as e:
            raise Tf1PruneError("bad input spec for %r: %s" % (name, e))
        shape = tuple(None if d is not None and not isinstance(d, bool) and d == -1 else d for d in shape)
        _check_dims("%s=%s" % (name, list(shape)), shape)
        out[tensor_name(name)] = (shape, dtype)
    return out


def with_placeholder_dtypes(input_specs, graph_def):
    """``input_specs`` with each missing dtype set to its placeholder's dtype (float32 if unknown)."""
    nodes = {n.name: n for n in graph_def.node}
    out = {}
    for name, (shape, dtype) in input_specs.items():
        node = nodes.get(node_of(name))
        if dtype is None:
            dtype = tf.as_dtype(node.attr["dtype"].type).name if node is not None and "dtype" in node.attr \
                and node.attr["dtype"].type else "float32"
        out[name] = (shape, dtype)
    return out


class GraphView:
    """Nodes, consumers and static shapes of a GraphDef (which is not modified).

    Example::

        view = GraphView(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
        view.shape('conv/Conv2D:0')  # [1, 26, 26, 16]
    """

    def __init__(self, graph_def, input_specs=None, output_node_names=(), batch_size=1, check_inputs=True,
                 measure=True):
        self.graph_def = graph_def
        self._functions = {f.signature.name: f for f in graph_def.library.function}
        self._bodies = {}
        self.nodes = {n.name: n for n in graph_def.node}
        self.output_node_names = list(output_node_names)
        for name in self.output_node_names:
            if node_of(name) not in self.nodes:
                raise Tf1PruneError("output node %r is not in the graph" % name)
        self.input_specs = with_placeholder_dtypes(normalize_input_specs(input_specs), graph_def)
        for name in self.input_specs:
            node = self.nodes.get(node_of(name))
            if node is None:
                raise Tf1PruneError("input %r is not in the graph" % name)
            if not rules.is_input(node.op):
                raise Tf1PruneError("input %r is not a placeholder but a %s: give the graph's inputs" % (name, node.op))
            if output_index(name) != 0:
                raise Tf1PruneError("input %r: a placeholder has one output, %s:0" % (name, node_of(name)))
        self.consumers = {name: [] for name in self.nodes}
        for node in graph_def.node:
            for i, ref in enumerate(node.input):
                if not ref.startswith("^") and node_of(ref) in self.consumers:
                    self.consumers[node_of(ref)].append((node.name, i))
        self._check_inputs = check_inputs
        self.order = self._topological_order()
        self.tf_graph = self._import(batch_size)
        self.measured, self.measure_error = {}, None
        if measure:
            self._measure_unknown_shapes()
        for name in self.output_node_names:
            if ":" in name and not name.split(":", 1)[1].isdigit():
                raise Tf1PruneError("output %r: expected a node name or node:index" % name)
            if ":" in name and output_index(name) >= self.num_outputs(name):
                raise Tf1PruneError("output %r: node %r has %d output(s)" % (name, node_of(name), self.num_outputs(name)))

    def _shaped_graph_def(self, batch_size):
        graph_def = copy.deepcopy(self.graph_def)
        for node in graph_def.node:
            node.device = ""
            name = node.name + ":0"
            if not rules.is_input(node.op):
                continue
            placeholder = rules.has_tag(node.op, "placeholder")
            if name in self.input_specs:
                shape, dtype = self.input_specs[name]
                if placeholder:
                    node.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
            elif placeholder and node.attr["shape"].shape.unknown_rank:
                if self._check_inputs and self._reaches_outputs(node.name):
                    raise Tf1PruneError("input %r has an unknown shape: give its shape with input specs" % name)
                continue
            elif placeholder and node.attr["shape"].shape.dim:
                dims = [d.size for d in node.attr["shape"].shape.dim]
                if any(d < 0 for d in dims[1:]):
                    if self._check_inputs and self._reaches_outputs(node.name):
                        raise Tf1PruneError(
                            "input %r has shape %s with unknown dimensions: give its shape with input specs"
                            % (name, [d if d >= 0 else None for d in dims]))
                    continue
                shape = (batch_size if dims[0] < 0 else dims[0],) + tuple(dims[1:])
            else:
                continue
            if placeholder:
                node.attr["shape"].shape.CopyFrom(tf.TensorShape(list(shape)).as_proto())
        return graph_def

    def _reaches_outputs(self, name):
        return name in self.reachable

    def _import(self, batch_size):
        """Import with TF shape inference; If outputs get shapes inferred from their branches."""
        graph_def = self._shaped_graph_def(batch_size)
        while True:
            graph = tf.Graph()
            try:
                with graph.as_default():
                    tf.import_graph_def(graph_def, name="")
            except (ValueError, TypeError, tf.errors.OpError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise Tf1PruneError("TensorFlow cannot import the graph: %s" % first)
            if not self._fill_call_shapes(graph_def, graph):
                return graph

    def _unfetchable(self):
        """Reachable nodes inside TF1 while-loop frames (Enter ... Exit) or cond branches (Switch ...
        Merge): their tensors run per iteration or may be dead, so they cannot be fetched."""
        depth = {}
        for name in self.order:
            node = self.nodes[name]
            ins = [depth.get(node_of(r), (0, 0)) for r in node.input if not r.startswith("^")]
            frame, branch = max([d[0] for d in ins] or [0]), max([d[1] for d in ins] or [0])
            if rules.has_tag(node.op, "frame_enter"):
                frame += 1
            elif rules.has_tag(node.op, "frame_exit"):
                frame, branch = max(frame - 1, 0), 0
            elif rules.has_tag(node.op, "branch_enter"):
                branch += 1
            elif rules.has_tag(node.op, "branch_exit"):
                branch = max(branch - 1, 0)
            depth[name] = (frame, branch)
        return {name for name, d in depth.items() if any(d)}

    def _measure_unknown_shapes(self):
        """Shapes TensorFlow's inference leaves unknown, from one run on inputs of the spec:
        ``self.measured`` maps tensor -> shape; ``self.measure_error`` says why a run failed."""
        skip = self._unfetchable()
        unknown = []
        for name in self.order:
            if name in skip or rules.is_param_source(self.nodes[name].op) and not rules.is_const(self.nodes[name].op):
                continue
            used = set(self.used_outputs(name))
            for t in self.tf_graph.get_operation_by_name(name).outputs:
                if t.value_index not in used or t.dtype.base_dtype in (tf.resource, tf.variant) \
                        or t.shape.is_fully_defined():
                    continue
                unknown.append(t)
        if not unknown:
            return
        feeds = {}
        for node in self.graph_def.node:
            name = node.name + ":0"
            if not rules.has_tag(node.op, "placeholder") or node.name not in self.reachable:
                continue
            t = self.tf_graph.get_tensor_by_name(name)
            shape = t.shape.as_list() if t.shape.dims is not None else None
            if shape is None or any(d is None for d in shape):
                self.measure_error = "input %r has no full shape in the input specs" % name
                return
            feeds[t] = example_input(shape, t.dtype)
        try:
            with tf.Session(graph=self.tf_graph, config=_session_config()) as sess:
                values = sess.run(unknown, feeds)
        except (tf.errors.OpError, ValueError, TypeError) as e:
            self.measure_error = "running the graph on inputs of the spec failed: %s" % tf_error_line(e)[:300]
            return
        self.measured = {t.name: list(np.shape(v)) for t, v in zip(unknown, values)}

    def shape_note(self):
        """One line on shapes taken from a run (or why none could be), else None."""
        if self.measured:
            first = next(iter(self.measured))
            return ("shapes: %d tensor(s) measured in one run on inputs of the input specs, where TensorFlow's "
                    "static shape inference stops (from %r); the written graph keeps its own input shapes"
                    % (len(self.measured), first))
        if self.measure_error:
            return "shapes: some are not static and could not be measured: %s" % self.measure_error
        return None

    def _fill_call_shapes(self, graph_def, graph):
        """Output shapes of If/PartitionedCall ops from their bodies, and of While loops from the
        shapes their body keeps (the most specific ones compatible with every iteration)."""
        changed = False
        for node in graph_def.node:
            call = rules.call_spec(node.op)
            if call is None or "output_shapes" not in node.attr or node.name not in self.reachable:
                continue
            op = graph.get_operation_by_name(node.name)
            if all(t.shape.is_fully_defined() for t in op.outputs):
                continue
            in_shapes = tuple(tuple(t.shape.as_list()) if t.shape.dims is not None else None
                              for t in op.inputs[call.first_arg:])
            if None in in_shapes:
                continue
            shapes = self._loop_shapes(node.name, call, in_shapes) if call.loop else \
                self._branch_shapes(node.name, call, in_shapes)
            if shapes is None or [s.as_proto() for s in shapes] == list(node.attr["output_shapes"].list.shape):
                continue
            del node.attr["output_shapes"].list.shape[:]
            node.attr["output_shapes"].list.shape.extend([s.as_proto() for s in shapes])
            changed = True
        return changed

    def _branch_shapes(self, name, call, in_shapes):
        shapes = None
        for attr in call.branches:
            out = [tf.TensorShape(s) for s in self.function_body(name, attr, in_shapes).output_shapes]
            shapes = out if shapes is None else [a.most_specific_compatible_shape(b) for a, b in zip(shapes, out)]
        return shapes

    def _loop_shapes(self, name, call, in_shapes, limit=4):
        """Loop variables' shapes: generalised until the body keeps them."""
        shapes = [tf.TensorShape(s) for s in in_shapes]
        for _ in range(limit):
            key = tuple(tuple(s.as_list()) if s.dims is not None else None for s in shapes)
            if None in key:
                return None
            out = [tf.TensorShape(s) for s in self.function_body(name, call.branches[0], key).output_shapes]
            if len(out) != len(shapes):
                return None
            general = [a.most_specific_compatible_shape(b) for a, b in zip(shapes, out)]
            if [g.as_list() if g.dims is not None else None for g in general] == \
                    [s.as_list() if s.dims is not None else None for s in shapes]:
                return shapes
            shapes = general
        return None

    def function_body(self, name, attr, in_shapes=None):
        """The branch ``attr`` of call op ``name`` as a GraphDef, for the current input shapes."""
        if in_shapes is None:
            first = rules.call_spec(self.nodes[name].op).first_arg
            in_shapes = tuple(tuple(s) if s is not None else None
                              for s in (self.shape(t) for t in self.data_inputs(name)[first:]))
        key = (name, attr, in_shapes)
        if key not in self._bodies:
            fdef = self.function_def(name, attr)
            graph_def, names = function_def_to_graph.function_def_to_graph_def(
                fdef, [tf.TensorShape(s) for s in in_shapes])
            args = {arg.name: shape for arg, shape in zip(fdef.signature.input_arg, in_shapes)}
            for node in graph_def.node:
                node.attr.pop("_output_shapes", None)
                if rules.is_input(node.op) and node.name in args:  # stale arg_attr shapes lose
                    node.attr["shape"].shape.CopyFrom(tf.TensorShape(args[node.name]).as_proto())
            inputs = [names[arg.name] for arg in fdef.signature.input_arg]
            outputs = [names[fdef.ret[arg.name]] for arg in fdef.signature.output_arg]
            view = GraphView(graph_def, None, [node_of(o) for o in outputs], check_inputs=False, measure=False)
            self._bodies[key] = FunctionBody(view, inputs, outputs, [view.shape(o) for o in outputs])
        return self._bodies[key]

    def _topological_order(self):
        order, self.reachable = self.order_from([node_of(n) for n in self.output_node_names] or list(self.nodes))
        return order

    def order_from(self, roots):
        """Nodes that ``roots`` depend on, inputs first, and their set."""
        seen, order, stack = set(), [], [(r, False) for r in reversed(roots)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            stack.append((name, True))
            for ref in reversed(self.nodes[name].input):
                if node_of(ref) not in seen:
                    stack.append((node_of(ref), False))
        return order, seen

    # --- accessors -------------------------------------------------------
    def op(self, name):
        return self.tf_graph.get_operation_by_name(node_of(name))

    def shape(self, tensor):
        """Static shape as a list (``None`` for unknown dims), or None if the rank is unknown.

        A resource variable's handle has the shape of the variable it holds.
        """
        node = self.nodes[node_of(tensor)]
        if rules.is_variable(node.op) and "shape" in node.attr:
            shape = tf.TensorShape(node.attr["shape"].shape)
        else:
            shape = self.tf_graph.get_tensor_by_name(tensor_name(tensor)).shape
            if not shape.is_fully_defined() and tensor_name(tensor) in self.measured:
                return list(self.measured[tensor_name(tensor)])
        return None if shape.dims is None else shape.as_list()

    def dtype(self, tensor):
        return self.tf_graph.get_tensor_by_name(tensor_name(tensor)).dtype

    def num_outputs(self, name):
        return len(self.op(name).outputs)

    def used_outputs(self, name):
        """Indices of the outputs of node ``name`` that other nodes (or the graph outputs) read."""
        if name in [node_of(n) for n in self.output_node_names]:
            return list(range(self.num_outputs(name)))
        used = {output_index(self.nodes[c].input[i]) for c, i in self.consumers[name]}
        return sorted(used)

    def data_inputs(self, name):
        return [tensor_name(r) for r in self.nodes[name].input if not r.startswith("^")]

    def read_source(self, tensor):
        """The node whose value ``tensor`` is, through read ops (Identity, ReadVariableOp...)."""
        node = self.nodes.get(node_of(tensor))
        while node is not None and rules.is_read(node.op) and node.input:
            node = self.nodes.get(node_of(node.input[0]))
        return node.name if node is not None else None

    def const_value(self, tensor):
        """Value of a constant tensor (a Const read through Identity, or a small integer tensor that
        TensorFlow folds, e.g. a computed permutation), else None."""
        source = self.read_source(tensor)
        if source is None:
            return None
        node = self.nodes[source]
        if rules.is_const(node.op):
            return tf.make_ndarray(node.attr["value"].tensor)
        if rules.is_variable(node.op) or rules.is_input(node.op):
            return None
        try:
            t = self.tf_graph.get_tensor_by_name(tensor_name(tensor))
        except (KeyError, ValueError):
            return None
        if not t.dtype.is_integer or not t.shape.is_fully_defined() or t.shape.num_elements() > FOLD_LIMIT:
            return None
        value = tf.get_static_value(t)
        return None if value is None else np.asarray(value)

    def function_def(self, name, attr):
        """The library function that attribute ``attr`` of node ``name`` calls."""
        fname = self.nodes[name].attr[attr].func.name
        if fname not in self._functions:
            raise Tf1PruneError("function %r of %r is not in the graph library" % (fname, name))
        return self._functions[fname]

    def layer_ops_in(self, name, attr):
        """``(op, node)`` of the layer ops in the function ``attr`` of node ``name``, nested calls included."""
        found, seen, stack = [], set(), [self.function_def(name, attr)]
        while stack:
            fdef = stack.pop()
            if fdef.signature.name in seen:
                continue
            seen.add(fdef.signature.name)
            for node in fdef.node_def:
                if rules.is_layer(node.op):
                    found.append((node.op, node.name))
                for value in node.attr.values():
                    funcs = [value.func] if value.WhichOneof("value") == "func" else \
                        list(value.list.func) if value.WhichOneof("value") == "list" else []
                    stack += [self._functions[f.name] for f in funcs if f.name in self._functions]
        return found

    def attr(self, name, key, default=None):
        node = self.nodes[node_of(name)]
        if key not in node.attr:
            return default
        value = node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "list":
            lst = value.list
            return list(lst.i) or list(lst.s) or list(lst.f) or []
        result = getattr(value, kind) if kind else default
        return result.decode() if isinstance(result, bytes) else result

    def channel_axis(self, name, rank=4):
        """Channel axis for ops with a ``data_format`` attribute."""
        fmt = self.attr(name, "data_format", "NHWC") or "NHWC"
        return 1 if fmt.startswith("NC") else rank - 1


def example_input(shape, dtype, rng=None):
    """An input of ``shape`` and ``dtype`` for running a graph: random in the dtype's usual range
    (floats standard normal, uint8 0..255), zeros for other integers and booleans (safe as indices)."""
    dtype = tf.as_dtype(dtype)
    rng = rng if rng is not None else np.random.RandomState(0)
    if dtype.is_floating:
        return rng.standard_normal(shape).astype(dtype.as_numpy_dtype)
    if dtype.base_dtype == tf.uint8:
        return rng.randint(0, 256, shape).astype(np.uint8)
    if dtype.base_dtype == tf.string:
        return np.full(shape, b"", object)
    return np.zeros(shape, dtype.as_numpy_dtype)


def _session_config():
    from tf1prune.tfcompat import session_config
    return session_config()


def feed_batches(calibration_data):
    """The calibration batches as a list of ``{tensor name: array}`` (from a list or a callable)."""
    batches = calibration_data() if callable(calibration_data) else calibration_data
    try:
        batches = list(batches)
    except TypeError:
        raise Tf1PruneError("calibration data must be a list of feed dicts or a callable returning them")
    if not batches:
        raise Tf1PruneError("calibration data holds no batch")
    out = []
    for feed in batches:
        if not isinstance(feed, dict):
            raise Tf1PruneError("a calibration batch must be a feed dict {input name: array}, got %s"
                                % type(feed).__name__)
        out.append({tensor_name(getattr(k, "name", k)): np.asarray(v) for k, v in feed.items()})
    return out


def run_on_batches(graph_def, tensors, batches):
    """``[array]``: each of ``tensors`` of ``graph_def`` on every feed dict of ``batches``,
    concatenated along the batch axis (TensorFlow's errors are left to the caller)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=_session_config()) as sess:
        runs = [sess.run(list(tensors), feed) for feed in batches]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(tensors))]
