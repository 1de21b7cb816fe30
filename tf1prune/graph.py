"""Read-only view of a GraphDef: nodes, consumers, static shapes and constants.

Static shapes come from TensorFlow's own shape inference: the GraphDef is
imported into a fresh ``tf.Graph`` with the placeholders set to the input specs.
"""
import collections
import copy
import os

import numpy as np
import tensorflow.compat.v1 as tf
from google.protobuf import message, text_format

from tensorflow.python.framework import function_def_to_graph

from tf1prune.errors import Tf1PruneError

VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
PARAM_SOURCE_OPS = ("Const",) + VARIABLE_OPS
# Function-calling ops: branch attributes; data input 0 is the predicate.
CALL_OPS = {"If": ("then_branch", "else_branch"), "StatelessIf": ("then_branch", "else_branch")}
FunctionBody = collections.namedtuple("FunctionBody", "view inputs outputs output_shapes")


def tensor_name(ref):
    """Canonical ``node:index`` for an input reference (``n``, ``n:1``)."""
    ref = ref.lstrip("^")
    return ref if ":" in ref else ref + ":0"


def node_of(ref):
    """Node name of a tensor or input reference."""
    return ref.lstrip("^").split(":")[0]


def output_index(ref):
    return int(ref.split(":")[1]) if ":" in ref else 0


def read_proto(path, proto_class, what, text_first=False, valid=lambda proto: proto.ByteSize()):
    """Parse a binary or text protobuf file; None when neither parses into a ``valid`` message."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Tf1PruneError("cannot read %s %r: %s" % (what, path, e.strerror or e))
    for as_text in ((True, False) if text_first else (False, True)):
        proto = proto_class()
        try:
            if as_text:
                text_format.Merge(data.decode("utf-8"), proto)
            else:
                proto.ParseFromString(data)
            if valid(proto):
                return proto
        except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError):
            pass
    return None


def load_graph_def(path):
    """Read a binary ``.pb`` or text ``.pbtxt`` GraphDef; never modifies the file."""
    graph_def = read_proto(path, tf.GraphDef, "graph", path.endswith((".pbtxt", ".txt")), lambda g: g.node)
    if graph_def is None:
        raise Tf1PruneError("%r is not a valid GraphDef (binary .pb or text .pbtxt)" % path)
    return graph_def


def save_graph_def(graph_def, path, as_text=None):
    """Write atomically (temp file + rename); text format for ``.pbtxt``."""
    if as_text is None:
        as_text = path.endswith((".pbtxt", ".txt"))
    data = text_format.MessageToString(graph_def).encode() if as_text else graph_def.SerializeToString()
    atomic_write(path, data)


def atomic_write(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.tmp%d" % (os.path.basename(path), os.getpid()))
    mode = "w" if isinstance(data, str) else "wb"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parse_input_specs(text):
    """``'x:0=1,64,64,3;y:0=1,10'`` -> ``{'x:0': ((1, 64, 64, 3), 'float32')}``.

    A dtype may follow the shape: ``x:0=1,8:int32``.
    """
    specs = {}
    for item in filter(None, (s.strip() for s in (text or "").split(";"))):
        if "=" not in item:
            raise Tf1PruneError("bad input spec %r: expected name=d0,d1,..." % item)
        name, shape_text = (s.strip() for s in item.split("=", 1))
        dtype = "float32"
        if ":" in shape_text:
            shape_text, dtype = shape_text.rsplit(":", 1)
        try:
            shape = tuple(int(d) if d.strip() not in ("", "?", "-1", "None") else None
                          for d in shape_text.split(","))
        except ValueError:
            raise Tf1PruneError("bad input spec %r: dimensions must be integers" % item)
        try:
            tf.as_dtype(dtype)
        except TypeError:
            raise Tf1PruneError("bad input spec %r: unknown dtype %r" % (item, dtype))
        specs[tensor_name(name)] = (shape, dtype)
    return specs


def normalize_input_specs(input_specs):
    """Accept ``{name: tf.TensorSpec | (shape, dtype) | shape}``."""
    out = {}
    for name, spec in (input_specs or {}).items():
        if hasattr(spec, "shape") and hasattr(spec, "dtype"):
            shape, dtype = tuple(spec.shape.as_list()), tf.as_dtype(spec.dtype).name
        elif isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[1], int) and spec[1] is not None:
            shape, dtype = tuple(spec[0]), tf.as_dtype(spec[1]).name
        else:
            shape, dtype = tuple(spec), "float32"
        out[tensor_name(name)] = (shape, dtype)
    return out


class GraphView:
    """Nodes, consumers and static shapes of a GraphDef (which is not modified).

    Example::

        view = GraphView(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
        view.shape('conv/Conv2D:0')  # [1, 26, 26, 16]
    """

    def __init__(self, graph_def, input_specs=None, output_node_names=(), batch_size=1, check_inputs=True):
        self.graph_def = graph_def
        self._functions = {f.signature.name: f for f in graph_def.library.function}
        self._bodies = {}
        self.nodes = {n.name: n for n in graph_def.node}
        self.output_node_names = list(output_node_names)
        for name in self.output_node_names:
            if node_of(name) not in self.nodes:
                raise Tf1PruneError("output node %r is not in the graph" % name)
        self.input_specs = normalize_input_specs(input_specs)
        for name in self.input_specs:
            node = self.nodes.get(node_of(name))
            if node is None:
                raise Tf1PruneError("input %r is not in the graph" % name)
        self.consumers = {name: [] for name in self.nodes}
        for node in graph_def.node:
            for i, ref in enumerate(node.input):
                if not ref.startswith("^") and node_of(ref) in self.consumers:
                    self.consumers[node_of(ref)].append((node.name, i))
        self._check_inputs = check_inputs
        self.order = self._topological_order()
        self.tf_graph = self._import(batch_size)

    def _shaped_graph_def(self, batch_size):
        graph_def = copy.deepcopy(self.graph_def)
        for node in graph_def.node:
            node.device = ""
            name = node.name + ":0"
            if node.op not in ("Placeholder", "PlaceholderWithDefault"):
                continue
            if name in self.input_specs:
                shape, dtype = self.input_specs[name]
                if node.op == "Placeholder":
                    node.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
            elif node.op == "Placeholder" and node.attr["shape"].shape.unknown_rank:
                if self._check_inputs and self._reaches_outputs(node.name):
                    raise Tf1PruneError("input %r has an unknown shape: give its shape with input specs" % name)
                continue
            elif node.op == "Placeholder" and node.attr["shape"].shape.dim:
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
            if node.op == "Placeholder":
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

    def _fill_call_shapes(self, graph_def, graph):
        changed = False
        for node in graph_def.node:
            if node.op not in CALL_OPS or node.name not in self.reachable:
                continue
            op = graph.get_operation_by_name(node.name)
            if all(t.shape.is_fully_defined() for t in op.outputs):
                continue
            in_shapes = tuple(tuple(t.shape.as_list()) if t.shape.dims is not None else None
                              for t in op.inputs[1:])
            if None in in_shapes:
                continue
            shapes = None
            for attr in CALL_OPS[node.op]:
                body = self.function_body(node.name, attr, in_shapes)
                out = [tf.TensorShape(s) for s in body.output_shapes]
                shapes = out if shapes is None else [a.most_specific_compatible_shape(b) for a, b in zip(shapes, out)]
            if [s.as_proto() for s in shapes] == list(node.attr["output_shapes"].list.shape):
                continue
            del node.attr["output_shapes"].list.shape[:]
            node.attr["output_shapes"].list.shape.extend([s.as_proto() for s in shapes])
            changed = True
        return changed

    def function_body(self, name, attr, in_shapes=None):
        """The branch ``attr`` of call op ``name`` as a GraphDef, for the current input shapes."""
        if in_shapes is None:
            in_shapes = tuple(tuple(s) if s is not None else None
                              for s in (self.shape(t) for t in self.data_inputs(name)[1:]))
        key = (name, attr, in_shapes)
        if key not in self._bodies:
            fname = self.nodes[name].attr[attr].func.name
            if fname not in self._functions:
                raise Tf1PruneError("function %r of %r is not in the graph library" % (fname, name))
            fdef = self._functions[fname]
            graph_def, names = function_def_to_graph.function_def_to_graph_def(
                fdef, [tf.TensorShape(s) for s in in_shapes])
            args = {arg.name: shape for arg, shape in zip(fdef.signature.input_arg, in_shapes)}
            for node in graph_def.node:
                node.attr.pop("_output_shapes", None)
                if node.op == "Placeholder" and node.name in args:  # stale arg_attr shapes lose
                    node.attr["shape"].shape.CopyFrom(tf.TensorShape(args[node.name]).as_proto())
            inputs = [names[arg.name] for arg in fdef.signature.input_arg]
            outputs = [names[fdef.ret[arg.name]] for arg in fdef.signature.output_arg]
            view = GraphView(graph_def, None, [node_of(o) for o in outputs], check_inputs=False)
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
        if node.op == "VarHandleOp":
            shape = tf.TensorShape(node.attr["shape"].shape)
        else:
            shape = self.tf_graph.get_tensor_by_name(tensor_name(tensor)).shape
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

    def const_value(self, tensor):
        """Value of a tensor that a Const produces (through Identity), else None."""
        node = self.nodes.get(node_of(tensor))
        while node is not None and node.op in ("Identity", "Snapshot") and node.input:
            node = self.nodes.get(node_of(node.input[0]))
        if node is None or node.op != "Const":
            return None
        return tf.make_ndarray(node.attr["value"].tensor)

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


def static_size(shape):
    """Number of elements of a fully known static shape, else None."""
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))
