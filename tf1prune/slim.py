"""Slim and sparse graphs: pure GraphDef -> GraphDef functions, and their appliers of a plan.

- :func:`sparse_graph_def`: same shapes; pruned channels zeroed in every kernel (producer outputs
  *and* consumer inputs), bias and BatchNorm gamma/beta.  A pruned channel may still carry a
  constant (``act(0)``), but every layer that reads it has zero weights for it, so
  ``slim(x) == sparse(x)`` exactly (up to float summation order).
- :func:`slim_graph_def`: the channels are really gone: every bound constant is sliced, shape
  constants are rewritten, ``Split`` on channels becomes ``SplitV``, stale ``_output_shapes`` are
  dropped, and the result is re-imported so that TensorFlow checks every shape.

Example::

    slim_gd = tf1prune.slim_graph_def(graph_def, 0.5, {"input:0": ((1, 224, 224, 3), "float32")}, ["logits"])
    slim_gd = tf1prune.slim_graph_def(graph_def, "model.spec", input_specs, ["logits"])
    slim_gd = tf1prune.slim_graph_def(graph_def, sparsity=0.5, input_specs=specs, output_node_names=["logits"])
"""
import copy
import numbers

from tf1prune import rules
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import GraphView
from tf1prune.rules import ZEROED, build


def _check_frozen(analysis, nodes):
    for name in analysis.bindings:
        if not rules.is_const(nodes[name].op):
            raise Tf1PruneError("parameter %r is a variable (%s): freeze the graph first" % (name, nodes[name].op))


def apply_sparse(plan):
    """The sparse GraphDef of ``plan`` (a frozen graph's): pruned weights zeroed, shapes unchanged."""
    graph_def = copy.deepcopy(plan.analysis.view.graph_def)
    nodes = {n.name: n for n in graph_def.node}
    _check_frozen(plan.analysis, nodes)
    for name in plan.changed(ZEROED):
        build.set_const_value(nodes[name], plan.zero(name, build.const_value(nodes[name])))
    return graph_def


def apply_slim(plan, validate=True):
    """The slim GraphDef of ``plan``; raises if TensorFlow rejects a shape."""
    analysis = plan.analysis
    graph_def = copy.deepcopy(analysis.view.graph_def)
    _check_frozen(analysis, {n.name: n for n in graph_def.node})
    shrink(graph_def, plan)
    drop_stale_shapes(graph_def)
    strip_unused_functions(graph_def)
    if validate:
        try:
            GraphView(graph_def, analysis.view.input_specs, analysis.view.output_node_names)
        except Tf1PruneError as e:
            raise Tf1PruneError("internal error, slim graph rejected by TensorFlow (please report): %s" % e)
    return graph_def


def shrink(graph_def, plan, aliases=None):
    """In place: slice bound constants, shrink bound variables' ``shape``, rewrite shape tensors.

    ``aliases``: more variables, each shrunk like the parameter it names (weight copies); nodes
    missing from ``graph_def`` are skipped.
    """
    nodes = {n.name: n for n in graph_def.node}
    targets = [(name, name) for name in plan.params] + list((aliases or {}).items())
    for name, like in targets:
        node = nodes.get(name)
        if node is None:
            continue
        if rules.is_const(node.op):
            build.set_const_value(node, plan.slice(like, build.const_value(node)))
        else:   # a variable: its shape attribute
            dims = plan.shape(like, [d.size for d in node.attr["shape"].shape.dim])
            node.attr["shape"].shape.Clear()
            for d in dims:
                node.attr["shape"].shape.dim.add(size=d)
    plan.apply_rewrites(graph_def)
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


# --- the public pure functions ---------------------------------------------------------------
def _plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion, channel_divisible,
             excludes):
    from tf1prune.analysis import analyze
    from tf1prune.spec import Spec, make_spec
    analysis = analyze(graph_def, input_specs, output_node_names, excludes)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        spec, ratio = None, float(spec)
    if isinstance(spec, str):
        spec = Spec.load(spec)
    if spec is not None and (ratio is not None or sparsity is not None):
        raise Tf1PruneError("give a spec, a ratio or a sparsity, not several")
    if spec is None:
        spec = make_spec(analysis, ratio=ratio, sparsity=sparsity, criterion=criterion,
                         channel_divisible=channel_divisible)
    return analysis.plan(spec)


def slim_graph_def(graph_def, spec=None, input_specs=None, output_node_names=(), ratio=None, sparsity=None,
                   criterion="l1", channel_divisible=1, excludes=()):
    """A frozen GraphDef with channels removed: ``spec`` (a :class:`~tf1prune.Spec`, a spec file, or a
    uniform ratio), or ``ratio=``, or a MACs ``sparsity=`` target.  ``graph_def`` is not modified.

    Example::

        slim_gd = tf1prune.slim_graph_def(graph_def, 0.5, {"x:0": ((1, 28, 28, 1), "float32")}, ["logits"])
    """
    return apply_slim(_plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion,
                               channel_divisible, excludes))


def sparse_graph_def(graph_def, spec=None, input_specs=None, output_node_names=(), ratio=None, sparsity=None,
                     criterion="l1", channel_divisible=1, excludes=()):
    """The same choice as :func:`slim_graph_def`, with the pruned channels zeroed instead of removed.

    Example::

        sparse_gd = tf1prune.sparse_graph_def(graph_def, 0.5, {"x:0": ((1, 28, 28, 1), "float32")}, ["logits"])
    """
    return apply_sparse(_plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion,
                                 channel_divisible, excludes))
