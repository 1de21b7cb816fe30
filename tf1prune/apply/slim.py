"""Slim and sparse graphs: pure GraphDef -> GraphDef functions, and their appliers of a plan.

- :func:`sparse_graph_def`: same shapes; pruned channels zeroed in every kernel (producer outputs
  *and* consumer inputs), bias and BatchNorm gamma/beta.  A pruned channel may still carry a
  constant (``act(0)``), but every layer that reads it has zero weights for it, so
  ``slim(x) == sparse(x)`` exactly (up to float summation order).
- :func:`slim_graph_def`: the channels are really gone: every bound constant is sliced, shape
  constants are rewritten, ``Split`` on channels becomes ``SplitV``, recorded shapes get the new
  channel counts, and the result is re-imported so that TensorFlow checks every shape.

Example::

    slim_gd = tf1prune.slim_graph_def(graph_def, 0.5, {"input:0": ((1, 224, 224, 3), "float32")}, ["logits"])
    slim_gd = tf1prune.slim_graph_def(graph_def, "model.spec", input_specs, ["logits"])
    slim_gd = tf1prune.slim_graph_def(graph_def, sparsity=0.5, input_specs=specs, output_node_names=["logits"])
"""
import numbers

import tensorflow.compat.v1 as tf

from tf1prune.core import rules
from tf1prune.errors import Tf1PruneError
from tf1prune.core.graph import GraphView
from tf1prune.core.rules import build


def _check_frozen(analysis, nodes):
    for name in analysis.bindings:
        if not rules.is_const(nodes[name].op):
            raise Tf1PruneError("parameter %r is a variable (%s): freeze the graph first" % (name, nodes[name].op))


def unneeded_nodes(analysis):
    """Nodes of the analysed graph that its output nodes do not need (left out of slim graphs), the
    unlisted heads (nodes nothing reads) first."""
    left = [n.name for n in analysis.view.graph_def.node if n.name not in analysis.view.reachable]
    return sorted(left, key=lambda name: bool(analysis.view.consumers[name]))


def _needed_graph(analysis, source=None):
    """A copy of the analysed graph (or of ``source``, a graph of the same structure with other
    weights) with only what its output nodes need (as ``extract_sub_graph`` keeps): a head that is
    not listed cannot read pruned channels unsliced."""
    source = source or analysis.view.graph_def
    graph_def = tf.GraphDef()
    graph_def.versions.CopyFrom(source.versions)
    graph_def.library.CopyFrom(source.library)
    graph_def.node.extend(n for n in source.node if n.name in analysis.view.reachable)
    return graph_def


def apply_sparse(plan, graph_def=None):
    """The sparse GraphDef of ``plan`` (a frozen graph's): pruned weights zeroed, shapes unchanged.
    Like the slim graph, it holds only what the output nodes need.  ``graph_def``: the weights to use,
    a frozen graph of the analysed structure (default: the analysed graph)."""
    graph_def = _needed_graph(plan.analysis, graph_def)
    nodes = {n.name: n for n in graph_def.node}
    _check_frozen(plan.analysis, nodes)
    for name, value in plan.sparse_values(lambda n: build.const_value(nodes[n]), nodes).items():
        build.set_const_value(nodes[name], value)
    return graph_def


def apply_slim(plan, validate=True, graph_def=None):
    """The slim GraphDef of ``plan``, with only what the output nodes need (see :func:`unneeded_nodes`);
    raises if TensorFlow rejects a shape.  ``graph_def``: as for :func:`apply_sparse`."""
    analysis = plan.analysis
    graph_def = _needed_graph(analysis, graph_def)
    _check_frozen(analysis, {n.name: n for n in graph_def.node})
    shrink(graph_def, plan)
    strip_unused_functions(graph_def)
    update_shape_hints(graph_def, plan)
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
            build.set_const_value(node, plan.slice(like, plan.value(name, build.const_value(node))))
        else:   # a variable: its shape attribute
            dims = plan.shape(like, [d.size for d in node.attr["shape"].shape.dim])
            node.attr["shape"].shape.Clear()
            for d in dims:
                node.attr["shape"].shape.dim.add(size=d)
    for name in set(plan.updates) - set(plan.params):   # updates of parameters with no channel axis
        if name in nodes and rules.is_const(nodes[name].op):
            build.set_const_value(nodes[name], plan.updates[name])
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


def _set_channels(shape, info, plan):
    """Shape proto ``shape`` of a tensor carrying ``info``: its channel dim becomes the kept count."""
    if info is None or shape.unknown_rank or info.axis >= len(shape.dim) or shape.dim[info.axis].size < 0:
        return
    shape.dim[info.axis].size = int(plan.analysis.kept_positions(info.elems, plan.keep).sum())


def _call_hints(graph_def, plan):
    """``output_shapes`` of call ops and the argument shape hints of the functions they call; returns
    the unread outputs whose recorded dimensions were made unknown: ``[(node, output, dims)]``."""
    analysis = plan.analysis
    unread = []
    functions = {f.signature.name: f for f in graph_def.library.function}
    rewritten = {}   # (function, arg) -> count set by an earlier call site
    read = {i if ":" in i else i + ":0" for n in graph_def.node for i in n.input if not i.startswith("^")}
    for node in graph_def.node:
        call = rules.call_spec(node.op)
        if call is None or node.name not in analysis.view.nodes:
            continue
        if "output_shapes" in node.attr:
            for i, shape in enumerate(node.attr["output_shapes"].list.shape):
                info = analysis.tensor_info("%s:%d" % (node.name, i))
                if info is None and ("%s:%d" % (node.name, i)) not in read:   # unread: not analysed
                    unread.append((node, i, [j for j, d in enumerate(shape.dim) if d.size >= 0]))
                    for d in shape.dim:
                        d.size = -1
                _set_channels(shape, info, plan)
        args = analysis.view.data_inputs(node.name)[call.first_arg:]
        for attr in call.branches:
            function = functions.get(node.attr[attr].func.name)
            for j, arg in enumerate(args):
                hint = function.arg_attr[j].attr.get("_output_shapes") if function is not None \
                    and j in function.arg_attr else None
                if hint is None or not hint.list.shape:
                    continue
                shape = hint.list.shape[0]
                before = [d.size for d in shape.dim]
                _set_channels(shape, analysis.tensor_info(arg), plan)
                key = (function.signature.name, j)
                if rewritten.setdefault(key, [d.size for d in shape.dim]) != [d.size for d in shape.dim]:
                    for d, old in zip(shape.dim, before):   # call sites of other widths: unknown
                        if d.size != old:
                            d.size = -1
    return unread


def update_shape_hints(graph_def, plan, infer=True):
    """Recorded shapes get the kept channel counts: the ``output_shapes`` of call ops (If, While) and
    the argument hints of their functions from the analysis (an output nothing reads: from its
    branches' shape inference with ``infer``, else unknown); ``_output_shapes`` of the graph's nodes
    from TensorFlow's shape inference of the result (``infer``; else they are dropped).  Hints
    inside function bodies, which the analysis does not follow, are dropped."""
    unread = _call_hints(graph_def, plan)
    if unread and infer:
        view = GraphView(graph_def, plan.analysis.view.input_specs, plan.analysis.view.output_node_names)
        for node, i, dims in unread:
            inferred = view.tf_graph.get_tensor_by_name("%s:%d" % (node.name, i)).shape
            shape = node.attr["output_shapes"].list.shape[i]
            if inferred.dims is not None and len(inferred.dims) == len(shape.dim):
                for j in dims:
                    shape.dim[j].size = -1 if inferred[j] is None else int(inferred[j])
    for function in graph_def.library.function:
        function.attr.pop("_input_shapes", None)
        for node in function.node_def:
            node.attr.pop("_output_shapes", None)
    hinted = [n for n in graph_def.node if "_output_shapes" in n.attr]
    if not hinted:
        return graph_def
    if infer:
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
    for node in hinted:
        del node.attr["_output_shapes"]
        if infer:
            shapes = [t.shape.as_proto() for t in graph.get_operation_by_name(node.name).outputs]
            node.attr["_output_shapes"].list.shape.extend(shapes)
    return graph_def


# --- the public pure functions ---------------------------------------------------------------
def _plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion, channel_divisible,
             excludes, calibration, data_free, reconstruct, distill):
    from tf1prune.apply.refine import refine
    from tf1prune.core.analysis import analyze
    from tf1prune.choose.spec import Spec, make_spec
    analysis = analyze(graph_def, input_specs, output_node_names, excludes)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        spec, ratio = None, float(spec)
    if isinstance(spec, str):
        spec = Spec.load(spec)
    if spec is not None and (ratio is not None or sparsity is not None):
        raise Tf1PruneError("give a spec, a ratio or a sparsity, not several")
    if calibration is None and data_free == "synthesize":   # the synthesized inputs serve every step
        from tf1prune.apply.synthesize import synthesize_inputs
        calibration = synthesize_inputs(analysis)
    if spec is None:
        spec = make_spec(analysis, ratio=ratio, sparsity=sparsity, criterion=criterion,
                         channel_divisible=channel_divisible, calibration=calibration)
    return refine(analysis.plan(spec), calibration, data_free, reconstruct, distill=distill)[0]


def slim_graph_def(graph_def, spec=None, input_specs=None, output_node_names=(), ratio=None, sparsity=None,
                   criterion="l1", channel_divisible=1, excludes=(), calibration=None, data_free="compensate",
                   reconstruct=True, distill=None):
    """A frozen GraphDef with channels removed: ``spec`` (a :class:`~tf1prune.Spec`, a spec file, or a
    uniform ratio), or ``ratio=``, or a MACs ``sparsity=`` target.  ``graph_def`` is not modified.

    What keeps it accurate without training (:func:`tf1prune.apply.refine.refine`): with
    ``calibration`` (unlabelled feed dicts), bias compensation, least-squares reconstruction
    (``reconstruct``), BatchNorm re-estimation and, with ``distill`` (options of
    :func:`tf1prune.apply.distill.distill`, ``{}`` its defaults), label-free distillation; without,
    ``data_free`` (``"compensate"``, ``"synthesize"``: inputs made from the BatchNorm statistics serve
    as calibration, a data-driven ``criterion`` included; or ``"none"``).

    Example::

        slim_gd = tf1prune.slim_graph_def(graph_def, 0.5, {"x:0": ((1, 28, 28, 1), "float32")}, ["logits"])
        slim_gd = tf1prune.slim_graph_def(graph_def, sparsity=0.3, input_specs=specs, output_node_names=["logits"],
                                          calibration=[{"x:0": images[i:i + 64]} for i in range(0, 1280, 64)])
    """
    return apply_slim(_plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion,
                               channel_divisible, excludes, calibration, data_free, reconstruct, distill))


def sparse_graph_def(graph_def, spec=None, input_specs=None, output_node_names=(), ratio=None, sparsity=None,
                     criterion="l1", channel_divisible=1, excludes=(), calibration=None, data_free="compensate",
                     reconstruct=True, distill=None):
    """The same model as :func:`slim_graph_def`, with the pruned channels zeroed instead of removed.

    Example::

        sparse_gd = tf1prune.sparse_graph_def(graph_def, 0.5, {"x:0": ((1, 28, 28, 1), "float32")}, ["logits"])
    """
    return apply_sparse(_plan_of(graph_def, spec, input_specs, output_node_names, ratio, sparsity, criterion,
                                 channel_divisible, excludes, calibration, data_free, reconstruct, distill))
