"""Control flow: TF1 Switch/Merge, and ops that run library functions (If, PartitionedCall, While).

A function body is analysed like a graph whose arguments are the call's inputs: its layers are
counted (for If, the costlier branch) and its channels are joined with the caller's.  Constants
and shapes inside a body cannot be sliced, so what they touch is fixed.
"""
from tf1prune.core.names import node_of
from tf1prune.core.rules.base import CallSpec, keeps_zero, register
from tf1prune.core.rules.elementwise import elementwise


def _switch(ctx, node):
    inf = ctx.get(ctx.inputs(node)[0])
    if inf is not None:
        ctx.set(node.name + ":0", inf.axis, inf.elems)
        ctx.set(node.name + ":1", inf.axis, inf.elems)


def _call(ctx, node):
    """If/StatelessIf and PartitionedCall: each body is analysed; outputs of the branches agree."""
    spec = ctx.rule(node).call
    args = ctx.inputs(node)[spec.first_arg:]
    used = ctx.view.used_outputs(node.name)
    where = "%s '%s'" % (node.op, node.name)
    alternatives = len(spec.branches) > 1
    results = {i: [] for i in used}
    for b, attr in enumerate(spec.branches):
        body = ctx.view.function_body(node.name, attr)
        outs = [body.outputs[i] for i in used]
        prefix = "%s/%s/" % (node.name, attr) if alternatives else node.name + "/"
        sub = ctx.child(body.view, {node_of(p): a for p, a in zip(body.inputs, args)}, prefix,
                        ((node.name, b),) if alternatives else ())
        sub.propagate(body.view.order_from([node_of(o) for o in outs])[0])
        ctx.close_child(sub, where)
        for i, o in zip(used, outs):
            results[i].append(sub.get(o))
    for i, infos in results.items():
        known = [inf for inf in infos if inf is not None]
        if not known:
            continue
        if len(known) != len(infos) or len({(inf.axis, len(inf.elems)) for inf in known}) != 1:
            for inf in known:
                ctx.fix(inf.elems, "the branches of %s disagree on output %d's channels" % (where, i))
            continue
        for inf in known[1:]:
            ctx.union(known[0].elems, inf.elems)
        ctx.set("%s:%d" % (node.name, i), known[0].axis, known[0].elems)


def _loop(ctx, node):
    """While/StatelessWhile: channels through a loop are fixed; layers in its body run an unknown
    number of times, so the MACs total is incomplete."""
    ctx.opaque(node, "channels through a loop are not pruned")
    for attr in ctx.rule(node).call.branches:
        layers = ctx.view.layer_ops_in(node.name, attr)
        if layers:
            ctx.uncounted(node, "its %s runs layer %s '%s' an unknown number of times"
                          % (attr, layers[0][0], layers[0][1]))
            break


register("Switch", _switch, zero=keeps_zero)
register("Enter RefEnter", tags="frame_enter")     # TF1 while loops: tensors between these run per iteration
register("Exit RefExit", tags="frame_exit")
register("Merge", elementwise, zero=keeps_zero)
register("If StatelessIf", _call, call=CallSpec(("then_branch", "else_branch"), 1, False))
register("PartitionedCall StatefulPartitionedCall", _call, call=CallSpec(("f",), 0, False))
register("While StatelessWhile", _loop, call=CallSpec(("body", "cond"), 0, True))
