"""Pure GraphDef -> GraphDef rewrites of a frozen graph for a kept-unit mask.

- :func:`sparse_graph_def`: same shapes; pruned channels zeroed in every
  kernel (producer outputs *and* consumer inputs), bias and BatchNorm
  gamma/beta.  A pruned channel may still carry a constant (``act(0)``), but
  every layer that reads it has zero weights for it, so
  ``slim(x) == sparse(x)`` exactly (up to float summation order).
- :func:`slim_graph_def`: the channels are really gone: every bound constant is
  sliced, shape constants (Reshape targets, noise shapes, Pack elements) are
  rewritten, ``Split`` on channels becomes ``SplitV``, stale ``_output_shapes``
  are dropped, and the result is re-imported to check every shape.
"""
import copy

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.analysis import ZERO_ROLES
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import GraphView


def _const_nodes(graph_def):
    return {n.name: n for n in graph_def.node}


def _value(node):
    return tf.make_ndarray(node.attr["value"].tensor)


def _set_value(node, value):
    dtype = tf.as_dtype(node.attr["dtype"].type)
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, dtype=dtype.as_numpy_dtype),
                                                            dtype=dtype))


def _check_frozen(analysis, nodes):
    for name in analysis.bindings:
        if nodes[name].op != "Const":
            raise Tf1PruneError("parameter %r is a variable (%s): freeze the graph first" % (name, nodes[name].op))


def sparse_graph_def(analysis, keep):
    """Same-shape graph with the pruned channels of weights, biases and BN gamma/beta zeroed."""
    graph_def = copy.deepcopy(analysis.view.graph_def)
    nodes = _const_nodes(graph_def)
    _check_frozen(analysis, nodes)
    for name, axes in analysis.bindings.items():
        zero_axes = [(axis, b) for axis, b in axes.items() if b.role in ZERO_ROLES]
        if not zero_axes:
            continue
        value = _value(nodes[name]).copy()
        for axis, binding in zero_axes:
            drop = ~analysis.kept_positions(binding.elems, keep)
            index = [slice(None)] * value.ndim
            index[axis] = drop
            value[tuple(index)] = 0
        _set_value(nodes[name], value)
    return graph_def


def slim_graph_def(analysis, keep, validate=True):
    """Graph with the pruned channels removed; raises if TensorFlow rejects a shape."""
    graph_def = copy.deepcopy(analysis.view.graph_def)
    _check_frozen(analysis, _const_nodes(graph_def))
    shrink(graph_def, analysis, keep)
    drop_stale_shapes(graph_def)
    strip_unused_functions(graph_def)
    if validate:
        try:
            GraphView(graph_def, analysis.view.input_specs, analysis.view.output_node_names)
        except Tf1PruneError as e:
            raise Tf1PruneError("internal error, slim graph rejected by TensorFlow (please report): %s" % e)
    return graph_def


def shrink(graph_def, analysis, keep, bindings=None, rewrites=None):
    """In place: slice bound constants, shrink bound variables' ``shape``, rewrite shape constants.

    ``bindings``/``rewrites`` default to the analysis'; nodes missing from ``graph_def`` are skipped.
    """
    nodes = _const_nodes(graph_def)
    bindings = analysis.bindings if bindings is None else bindings
    for name, axes in bindings.items():
        node = nodes.get(name)
        if node is None:
            continue
        if node.op == "Const":
            value = _value(node)
            for axis, binding in axes.items():
                value = np.compress(analysis.kept_positions(binding.elems, keep), value, axis=axis)
            _set_value(node, value)
        else:   # a variable: VariableV2 / VarHandleOp / Variable
            dims = [d.size for d in node.attr["shape"].shape.dim]
            for axis, binding in axes.items():
                dims[axis] = int(np.count_nonzero(analysis.kept_positions(binding.elems, keep)))
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(dims).as_proto())
    shape_values = {}
    for kind, name, index, elems in analysis.rewrites if rewrites is None else rewrites:
        if name not in nodes:
            continue
        if kind == "const_elem":
            count = int(np.count_nonzero(analysis.kept_positions(elems, keep)))
            key = (name, index)
            if shape_values.setdefault(key, count) != count:
                raise Tf1PruneError("shape constant %r is shared by tensors of different widths" % name)
            value = _value(nodes[name]).copy()
            if index is None:
                value = np.asarray(count, dtype=value.dtype)
            else:
                value.reshape(-1)[index] = count
            _set_value(nodes[name], value)
        elif kind == "split":
            _rewrite_split(graph_def, nodes, nodes[name],
                           [int(np.count_nonzero(analysis.kept_positions(p, keep))) for p in elems])
    return graph_def


def strip_unused_functions(graph_def):
    """Remove library functions no node reaches (training leaves gradient functions behind)."""
    functions = {f.signature.name: f for f in graph_def.library.function}
    used, stack = set(), [graph_def.node]
    while stack:
        for node in stack.pop():
            names = [node.op] + [v.func.name for v in node.attr.values() if v.WhichOneof("value") == "func"]
            names += [f.name for v in node.attr.values() if v.WhichOneof("value") == "list" for f in v.list.func]
            for name in names:
                if name in functions and name not in used:
                    used.add(name)
                    stack.append(functions[name].node_def)
    kept = [f for f in graph_def.library.function if f.signature.name in used]
    del graph_def.library.function[:]
    graph_def.library.function.extend(kept)
    grads = [g for g in graph_def.library.gradient if g.function_name in used]
    del graph_def.library.gradient[:]
    graph_def.library.gradient.extend(grads)
    return graph_def


def drop_stale_shapes(graph_def):
    """Remove recorded shapes (node, call-op and function-argument shape hints)."""
    for node in graph_def.node:
        node.attr.pop("_output_shapes", None)
        if "output_shapes" in node.attr and node.attr["output_shapes"].WhichOneof("value") == "list":
            del node.attr["output_shapes"].list.shape[:]
    for function in graph_def.library.function:
        function.attr.pop("_input_shapes", None)
        for arg_attr in function.arg_attr.values():
            arg_attr.attr.pop("_output_shapes", None)
        for node in function.node_def:
            node.attr.pop("_output_shapes", None)


def _rewrite_split(graph_def, nodes, node, sizes):
    sizes_const = tf.NodeDef(name=node.name + "/size_splits", op="Const")
    sizes_const.attr["dtype"].type = tf.int32.as_datatype_enum
    sizes_const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array(sizes, np.int32)))
    if node.op == "Split":
        axis, value = node.input[0], node.input[1]
        del node.input[:2]
        for ref in reversed([value, sizes_const.name, axis]):
            node.input.insert(0, ref)
        node.op = "SplitV"
        node.attr["Tlen"].type = tf.int32.as_datatype_enum
    else:
        node.input[1] = sizes_const.name
    graph_def.node.extend([sizes_const])
