"""Label-free distillation: train a pruned graph's parameters so that its outputs match the
original's on unlabelled calibration inputs.

Least-squares reconstruction (:mod:`tf1prune.apply.reconstruct`) refits one linear layer at a
time; what it cannot fix (nonlinear paths such as squeeze-and-excitation gates, errors that add up
through the depth) remains.  :func:`distill` then trains every kernel, bias and BatchNorm scale
and offset of the *sparse* model (pruned positions held at zero by constant masks, moving
statistics fixed) with Adam and a cosine-decayed learning rate towards the original graph, which
runs beside it on the same inputs as the teacher.  The loss sums, over the outputs, the KL
divergence of their softmax for a ``[batch, classes]`` output (of the outputs themselves when they
are probabilities), else their mean squared error relative to the original's mean square; plus,
weighted by ``features``, every layer's output matched to the original's on the channels the
pruned model keeps (mean squared error relative to the original's, averaged over the layers: many
targets per input, which is what a few hundred unlabelled inputs need).  Every tenth input is held
out: the parameters of the epoch whose *outputs* match the original's best on those are kept
(the layer outputs only guide the training), none when no epoch improves on the refined plan.
No labels are used: the original model is the teacher (knowledge distillation, Hinton et al.
2015; layer-wise hints as in FitNets, Romero et al. 2015).

The trained values are full-shape parameter updates for :meth:`~tf1prune.core.plan.Plan.with_updates`,
so the sparse and the slim graph (and sessions and checkpoints) get the same ones.

Example::

    plan, _ = refine(analysis.plan(spec), calibration=batches)
    result = distill(plan, batches)
    slim_gd = slim.apply_slim(plan.with_updates(result.updates))
"""
import collections
import time

import numpy as np

from tf1prune import progress as progress_lib
from tf1prune.apply import calibrate
from tf1prune.core import rules
from tf1prune.core.graph import run_on_batches
from tf1prune.core.rules import Role, build
from tf1prune.errors import Tf1PruneError, tf_error_line

TRAINED = frozenset((Role.FILTER, Role.KERNEL_IN, Role.BIAS, Role.BN_SCALE, Role.BN_OFFSET))
Distillation = collections.namedtuple("Distillation", "updates before after steps seconds epoch held_out")
Distillation.__doc__ = ("``updates``: parameter -> trained full-shape value (empty when no epoch helped); "
                        "``before``/``after``: the outputs' loss (without the layer outputs') on the held-out "
                        "inputs before training and with the kept parameters; ``steps``: optimiser steps; "
                        "``epoch``: the epoch whose parameters were kept (0: none); ``held_out``: how many inputs "
                        "were held out (0: under 20 inputs, the epochs were scored on the training inputs).")


def trainable(plan, nodes):
    """The parameters :func:`distill` trains: every layer kernel and every kernel, bias or BatchNorm
    scale/offset bound to channels, when a floating-point constant of the graph."""
    analysis = plan.analysis
    names = {layer.kernel for layer in analysis.layers if layer.kernel}
    names |= {name for name, axes in analysis.bindings.items() if any(b.role in TRAINED for b in axes.values())}
    names |= {name for site in analysis.batch_norms for name in (site.scale, site.offset) if name}
    out = []
    for name in sorted(names):
        node = nodes.get(name)
        if node is not None and rules.is_const(node.op) and build.const_value(node).dtype.kind == "f":
            out.append(name)
    return out


def _rows(batches):
    """``({input: all rows}, rows per step)``."""
    names = sorted(batches[0])
    if any(sorted(b) != names for b in batches):
        raise Tf1PruneError("calibration batches feed different inputs")
    data = {n: np.concatenate([b[n] for b in batches]) for n in names}
    return data, max(1, max(len(b[names[0]]) for b in batches))


def _loss_kind(reference):
    if reference.ndim == 2 and reference.shape[1] > 1:
        probabilities = reference.min() >= 0 and np.allclose(reference.sum(-1), 1.0, atol=1e-3)
        return "probabilities" if probabilities else "logits"
    return "mse"


def _loss(tf, got, targets, reference):
    """The summed loss of every output (see the module docstring)."""
    terms = []
    for g, t, r in zip(got, targets, reference):
        kind = _loss_kind(r)
        if kind == "mse":
            scale = float(max(np.mean(r.astype(np.float64) ** 2), 1e-12))
            terms.append(tf.reduce_mean(tf.square(g - t)) / scale)
            continue
        p = t if kind == "probabilities" else tf.nn.softmax(t)
        log_q = tf.log(g + 1e-12) if kind == "probabilities" else tf.nn.log_softmax(g)
        terms.append(tf.reduce_mean(tf.reduce_sum(p * (tf.log(p + 1e-12) - log_q), axis=-1)))
    return tf.add_n(terms)


def _probe(sparse, analysis, batches):
    """``{layer output tensor: 0/1 channel mask}``: the channels of each layer's output the sparse
    model does not zero (pruned filters give exact zeros)."""
    present = {n.name for n in sparse.node}
    names = [layer.node + ":0" for layer in analysis.layers if not layer.path and layer.node in present]
    values = run_on_batches(sparse, names, batches)
    return {n: (np.abs(v).reshape(-1, v.shape[-1]).max(0) > 0).astype(np.float32)
            for n, v in zip(names, values) if v.ndim >= 2 and v.dtype.kind == "f"}


def _feature_loss(tf, graph, probes):
    """The mean over layers of the kept channels' squared error against the teacher's, relative
    to the teacher's mean square."""
    terms = []
    for name, mask in probes.items():
        got = tf.cast(graph.get_tensor_by_name(name), tf.float32) * mask
        want = tf.stop_gradient(tf.cast(graph.get_tensor_by_name("tf1prune_teacher/" + name), tf.float32) * mask)
        terms.append(tf.reduce_mean(tf.square(got - want)) / (tf.reduce_mean(tf.square(want)) + 1e-12))
    return tf.add_n(terms) / len(terms)


def _own_functions(graph_def, prefix):
    """A copy of ``graph_def`` whose library functions are renamed ``prefix + name`` (references
    too), so that it imports beside a graph holding other functions of the same names."""
    import tensorflow.compat.v1 as tf
    out = tf.GraphDef()
    out.CopyFrom(graph_def)
    names = {f.signature.name for f in out.library.function}

    def rename(attrs):
        for value in attrs.values():
            if value.HasField("func") and value.func.name in names:
                value.func.name = prefix + value.func.name
            for func in value.list.func:
                if func.name in names:
                    func.name = prefix + func.name
    for node in out.node:
        rename(node.attr)
    for function in out.library.function:
        function.signature.name = prefix + function.signature.name
        for node in function.node_def:
            rename(node.attr)
    for gradient in out.library.gradient:
        gradient.function_name = prefix + gradient.function_name
        gradient.gradient_func = prefix + gradient.gradient_func
    return out


def _split(count, batch, fixed):
    """``(training rows, held-out rows)``: every tenth row held out from 20 rows on; with a fixed
    batch size, whole batches of held-out rows (none when fewer than one batch)."""
    if count < 20:
        return np.arange(count), np.arange(count)
    held = np.arange(9, count, 10)
    if fixed:
        held = held[:len(held) // batch * batch]
        if not len(held):
            return np.arange(count), np.arange(count // batch * batch)
    return np.setdiff1d(np.arange(count), held), held


def distill(plan, calibration_data, graph_def=None, epochs=40, learning_rate=1e-3, features=3.0, seed=0,
            progress=None):
    """Train ``plan``'s sparse model towards the original graph on ``calibration_data`` (see the
    module docstring); returns a :class:`Distillation` whose ``updates`` go to ``plan.with_updates``.
    ``graph_def``: the original weights (default: the analysed graph); ``features``: the weight of the
    layer outputs' term (0: the graph's outputs only)."""
    import tensorflow.compat.v1 as tf
    from tf1prune.apply import slim
    from tf1prune.apply.synthesize import _without_custom_gradients
    from tf1prune.tfcompat import session_config
    if not isinstance(epochs, int) or epochs < 0:
        raise Tf1PruneError("distillation epochs must be a whole number >= 0, got %r" % (epochs,))
    if not learning_rate > 0:
        raise Tf1PruneError("the distillation learning rate must be > 0, got %r" % (learning_rate,))
    if not features >= 0:
        raise Tf1PruneError("the weight of the layer outputs must be >= 0, got %r" % (features,))
    if epochs == 0:
        return Distillation({}, None, None, 0, 0.0, 0, 0)
    start = time.time()
    analysis = plan.analysis
    original = graph_def or analysis.view.graph_def
    batches = calibrate.feed_batches(calibration_data)
    data, batch = _rows(batches)
    count = len(next(iter(data.values())))
    outputs = [o if ":" in o else o + ":0" for o in analysis.view.output_node_names]
    try:
        reference = [r.astype(np.float32) for r in run_on_batches(original, outputs, batches)]
    except (tf.errors.OpError, ValueError) as e:
        raise Tf1PruneError("calibration batch does not run: %s" % tf_error_line(e))
    sparse = _without_custom_gradients(slim.apply_sparse(plan, original))
    nodes = {n.name: n for n in sparse.node}
    names = trainable(plan, nodes)
    try:
        probes = _probe(sparse, analysis, batches[:1]) if features > 0 else {}
    except (tf.errors.OpError, ValueError) as e:
        raise Tf1PruneError("the pruned graph does not run: %s" % tf_error_line(e))
    if not names:
        raise Tf1PruneError("the graph has no constant parameter to distill")
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.set_random_seed(seed)
            params, mapped = {}, {}
            with tf.name_scope("tf1prune_distill"):
                for i, name in enumerate(names):
                    value = build.const_value(nodes[name])
                    var = tf.Variable(value.astype(np.float32), name="p%d" % i)
                    params[name] = var * tf.constant(plan.mask(name, value.shape).astype(np.float32))
                    mapped[name + ":0"] = params[name] if value.dtype == np.float32 else tf.cast(params[name],
                                                                                                 value.dtype)
                raw = {n: tf.placeholder(tf.as_dtype(v.dtype), (None,) + v.shape[1:], name="x%d" % i)
                       for i, (n, v) in enumerate(sorted(data.items()))}
            same = original.library == sparse.library   # else the sparse model changed a function body
            teacher = tf.import_graph_def(original if same else _own_functions(original, "tf1prune_teacher_"),
                                          input_map=dict(raw), return_elements=outputs, name="tf1prune_teacher")
            targets = [tf.stop_gradient(tf.cast(t, tf.float32)) for t in teacher]
            tf.import_graph_def(sparse, input_map=dict(mapped, **raw), name="")
            fixed = any(graph.get_tensor_by_name(n if ":" in n else n + ":0").shape[:1].is_fully_defined()
                        for n in data)
            fit, held = _split(count, batch, fixed)
            with tf.name_scope("tf1prune_distill"):
                got = [tf.cast(graph.get_tensor_by_name(o), tf.float32) for o in outputs]
                score = _loss(tf, got, targets, reference)   # what the kept epoch is chosen by
                loss = score + features * _feature_loss(tf, graph, probes) if probes else score
                per_epoch = len(fit) // batch if fixed else int(np.ceil(len(fit) / float(batch)))
                steps = epochs * per_epoch
                step = tf.train.get_or_create_global_step()
                rate = tf.train.cosine_decay(learning_rate, step, steps)
                train = tf.train.AdamOptimizer(rate).minimize(loss, global_step=step, var_list=list(
                    v for v in tf.global_variables() if v.name.startswith("tf1prune_distill/p")))
                init = tf.global_variables_initializer()
    except (LookupError, TypeError, ValueError, tf.errors.OpError) as e:
        raise Tf1PruneError("the pruned graph cannot be distilled: %s" % tf_error_line(e))
    bar = progress_lib.Steps(steps, progress, "distill")
    rng = np.random.RandomState(seed)
    with tf.Session(graph=graph, config=session_config()) as sess:
        sess.run(init)

        def feed(rows):
            return {raw[k]: v[rows] for k, v in data.items()}

        def held_out():
            chunks = [held[i:i + batch] for i in range(0, len(held), batch)]
            return float(sum(sess.run(score, feed(c)) * len(c) for c in chunks) / len(held))
        try:
            before = best = held_out()
            if not np.isfinite(before):
                raise Tf1PruneError("the distillation loss of the pruned model is %s: check the calibration "
                                    "data" % before)
            kept, epoch = None, 0
            for e in range(1, epochs + 1):
                order = fit[rng.permutation(len(fit))]
                for i in range(0, per_epoch * batch, batch):
                    sess.run(train, feed(order[i:i + batch]))
                    bar.tick()
                now = held_out()
                if not np.isfinite(now):
                    break   # diverged: keep the best epoch so far
                if now < best:
                    best, epoch, kept = now, e, sess.run(params)
        except (tf.errors.OpError, ValueError) as e:
            raise Tf1PruneError("distillation does not run: %s" % tf_error_line(e))
    updates = {name: kept[name].astype(build.const_value(nodes[name]).dtype) for name in names} if kept else {}
    return Distillation(updates, before, best, steps, time.time() - start, epoch, len(held) if len(fit) < count else 0)

