"""Fine-grained sparsity in TF1 sessions: TFMOT's magnitude pruning for graphs built any way.

``WeightPruner`` finds the prunable kernels from the analysis (conv, depthwise, dense and
transposed conv kernels held in session variables; the output layer too unless excluded), and
keeps a 0/1 mask per kernel that a schedule (:class:`ConstantSparsity`, :class:`PolynomialDecay`)
updates by magnitude: exactly ``round(n * (1 - s))`` weights kept, or whole blocks, or N of every M
input-channel weights.  The masks are kept by the same optimizer hooks as channel masks: every
``tf.compat.v1.train`` and tf_keras optimizer, Adam slots and weight decay cannot revive a pruned
weight, and checkpoints are written sparse.

Example::

    pruner = WeightPruner(sess, ["logits"], PolynomialDecay(0.0, 0.75, 0, 1000, frequency=100))
    train_op = tf.train.AdamOptimizer(1e-3).minimize(loss, global_step=tf.train.get_global_step())
    for step in range(1200):
        sess.run(train_op, feeds)
        sess.run(pruner.update_op)            # or hooks=[pruner.hook()], or callbacks=[pruner.keras_callback()]
    frozen = pruner.strip()                   # plain constants, no mask ops
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import masks as masks_lib, tfcompat
from tf1prune.analysis import analyze
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import normalize_input_specs
from tf1prune.names import node_of
from tf1prune.sparsity_masks import (ConstantSparsity, PolynomialDecay, PruningSchedule, check_block,  # noqa: F401
                                     check_m_by_n, magnitude_mask, satisfied_n_m)

LayerSparsity = collections.namedtuple("LayerSparsity", "layer variable weights zeros sparsity")


class WeightPruner:
    """Magnitude pruning of a session's kernels (see the module docstring).

    Args:
      sess: the session holding the model's variables.
      output_node_names: the model's outputs (the analysis finds the layers they need).
      schedule: a :class:`PruningSchedule`.
      block_size, block_pooling: prune whole blocks of the kernels' last two axes, pooled by AVG or MAX.
      m_by_n: ``(N, M)``: keep N of every M consecutive input-channel weights (layers whose input
        channels are not a multiple of M are skipped, see :attr:`skipped`).
      excludes: layers (node names) or kernel variables left dense.
      sparsity_map: layer or variable name -> final sparsity of that kernel (the schedule's timing).
      input_specs: input shapes, when the placeholders' are not static but for the batch.
    """

    def __init__(self, sess, output_node_names, schedule, block_size=(1, 1), block_pooling="AVG", m_by_n=None,
                 excludes=(), sparsity_map=None, input_specs=None):
        if not isinstance(schedule, PruningSchedule):
            raise Tf1PruneError("schedule must be a ConstantSparsity or PolynomialDecay, got %r" % (schedule,))
        self.sess, self.schedule = sess, schedule
        self.block_pooling, self.m_by_n = block_pooling, None if m_by_n is None else check_m_by_n(m_by_n)
        self.block_size = tuple(block_size)
        variables = {v.op.name: v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
        outputs = self.output_node_names = [node_of(n) for n in output_node_names]
        frozen = tfcompat.freeze_session(sess, sess.graph.as_graph_def(), outputs)
        analysis = analyze(frozen, normalize_input_specs(input_specs), outputs)
        excludes = set(excludes or ())
        known = {l.node for l in analysis.layers} | {l.kernel for l in analysis.layers if l.kernel}
        unknown = sorted((excludes | set(sparsity_map or {})) - known)
        if unknown:
            raise Tf1PruneError("%r is neither a layer nor a kernel of the model" % unknown[0])
        self.layers, self.skipped = collections.OrderedDict(), []
        for layer in analysis.layers:
            if layer.kernel is None or layer.kernel not in variables or layer.in_axis is None:
                continue
            if layer.node in excludes or layer.kernel in excludes:
                self.skipped.append((layer.node, "excluded"))
                continue
            shape = variables[layer.kernel].shape.as_list()
            if self.m_by_n and shape[layer.in_axis] % self.m_by_n[1]:
                self.skipped.append((layer.node, "%d input channels are not a multiple of %d"
                                     % (shape[layer.in_axis], self.m_by_n[1])))
                continue
            check_block(shape, self.block_size)
            target = (sparsity_map or {}).get(layer.node, (sparsity_map or {}).get(layer.kernel))
            self.layers[layer.kernel] = (layer.node, layer.in_axis, schedule if target is None
                                         else schedule.with_target(target))
        if not self.layers:
            raise Tf1PruneError("no prunable kernel in the model (skipped: %s)" % (self.skipped or "none"))
        masks_lib.install()
        self.mask_set = masks_lib.MaskSet.for_graph(sess.graph, {name: variables[name] for name in self.layers})
        self.base = {name: self.mask_set.values().get(name) for name in self.layers}   # channel masks, if any
        self.mask_set.load(sess, self.mask_set.values())   # the mask variables exist in this session
        self.mask_set.attach(sess)
        self.variables = {name: variables[name] for name in self.layers}
        self.thresholds = {name: 0.0 for name in self.layers}
        self._update_op = self._summary_op = None

    # --- masks --------------------------------------------------------------
    def masks_at(self, step, weights):
        """``{kernel: 0/1 mask}`` for the kernels the schedule prunes at ``step``, from their values."""
        out = {}
        for name, (_, in_axis, schedule) in self.layers.items():
            prune, sparsity = schedule(step)
            if not prune:
                continue
            mask = magnitude_mask(weights[name], sparsity, self.block_size, self.block_pooling, self.m_by_n, in_axis)
            kept = np.abs(weights[name])[mask > 0]
            self.thresholds[name] = float(kept.min()) if kept.size else 0.0
            out[name] = mask if self.base[name] is None else mask * self.base[name]
        return out

    def update(self, step, sess=None):
        """Update the masks for ``step`` (when the schedule says so) and zero the pruned weights."""
        sess = sess or self.sess
        pending = [name for name, (_, _, schedule) in self.layers.items() if schedule.should_prune(int(step))]
        if not pending:
            return False
        weights = dict(zip(pending, sess.run([self.variables[n] for n in pending])))
        values = dict(self.mask_set.values())
        values.update(self.masks_at(int(step), weights))
        self.mask_set.load(sess, values)
        self.mask_set.attach(sess)
        return True

    @property
    def update_op(self):
        """An op that updates the masks at the graph's ``global_step`` (for custom training loops)."""
        if self._update_op is None:
            graph = self.sess.graph
            with graph.as_default(), tf.name_scope("tf1prune_weight_pruning"):
                step = tf.train.get_or_create_global_step()
                names = list(self.layers)
                inputs = [step] + [self.variables[n].read_value() if hasattr(self.variables[n], "read_value")
                                   else self.variables[n] for n in names] + [self.mask_set.masks[n] for n in names]

                def compute(step_value, *values):
                    weights, current = dict(zip(names, values[:len(names)])), dict(zip(names, values[len(names):]))
                    new_masks = self.masks_at(int(step_value), weights)
                    self.mask_set.remember(new_masks)
                    current.update(new_masks)
                    return [np.asarray(current[n], values[len(names) + i].dtype) for i, n in enumerate(names)]
                new = tf.py_func(compute, inputs, [self.mask_set.masks[n].dtype.base_dtype for n in names],
                                 stateful=True)
                assigns = [self.mask_set.masks[n].assign(tf.reshape(m, self.mask_set.masks[n].shape))
                           for n, m in zip(names, new)]
                self._update_op = self.mask_set.apply_after(assigns)
        return self._update_op

    def hook(self):
        """A SessionRunHook that updates the masks at the global step after every training step."""
        return _UpdateHook(self)

    def keras_callback(self):
        """A tf_keras callback that updates the masks before every training batch (its own step count)."""
        pruner = self

        class UpdatePruningStep(tfcompat.keras_callback_class()):
            def __init__(self):
                super().__init__()
                self.step = 0

            def on_train_batch_begin(self, batch, logs=None):
                pruner.update(self.step, tf.get_default_session() or pruner.sess)
                self.step += 1
        return UpdatePruningStep()

    # --- reports and export ---------------------------------------------------
    def report(self, sess=None):
        """``[LayerSparsity]`` of every pruned kernel now (and the total as the last row)."""
        sess = sess or self.sess
        values = sess.run([self.variables[n] for n in self.layers])
        rows = []
        for (name, (node, _, _)), w in zip(self.layers.items(), values):
            zeros = int(np.count_nonzero(w == 0))
            rows.append(LayerSparsity(node, name, int(w.size), zeros, zeros / float(w.size)))
        total, zeros = sum(r.weights for r in rows), sum(r.zeros for r in rows)
        rows.append(LayerSparsity("total", "", total, zeros, zeros / float(max(total, 1))))
        return rows

    def summaries(self):
        """A merged summary op: per kernel its mask's sparsity and the magnitude threshold, and overall."""
        if self._summary_op is None:
            with self.sess.graph.as_default(), tf.name_scope("tf1prune_sparsity"):
                items, kept, total = [], [], 0
                for name in self.layers:
                    mask = self.mask_set.masks[name]
                    tag = name.replace("/", "_")
                    items.append(tf.summary.scalar(tag + "/sparsity", 1.0 - tf.reduce_mean(mask)))
                    threshold = tf.py_func(lambda n=name: np.float32(self.thresholds[n]), [], tf.float32,
                                           stateful=True)
                    items.append(tf.summary.scalar(tag + "/threshold", threshold))
                    kept.append(tf.reduce_sum(mask))
                    total += int(np.prod(mask.shape.as_list()))
                items.append(tf.summary.scalar("sparsity", 1.0 - tf.add_n(kept) / total))
                self._summary_op = tf.summary.merge(items)
        return self._summary_op

    def strip(self, output_node_names=None):
        """A frozen GraphDef of the session with the masks applied: plain constants, no mask ops."""
        self.sess.run(self.mask_set.apply_op)
        outputs = [node_of(n) for n in (output_node_names or self.output_node_names)]
        return tfcompat.freeze_session(self.sess, self.sess.graph.as_graph_def(), outputs)


class _UpdateHook(tf.train.SessionRunHook):
    def __init__(self, pruner):
        self.pruner = pruner

    def begin(self):
        self.step = tf.train.get_or_create_global_step()

    def after_create_session(self, session, coord):
        self.pruner.mask_set.load(session, self.pruner.mask_set.values())
        self.pruner.update(session.run(self.step), session)

    def after_run(self, run_context, run_values):
        self.pruner.update(run_context.session.run(self.step), run_context.session)


# --- frozen graphs and checkpoints ---------------------------------------------------------
def _layer_kernels(analysis, is_value_source):
    """``[(layer node, kernel source, input-channel axis)]`` of the layers whose kernel is a source."""
    return [(layer.node, layer.kernel, layer.in_axis) for layer in analysis.layers
            if layer.kernel is not None and layer.in_axis is not None and is_value_source(layer.kernel)]


def _masks(kernels, values, sparsity, m_by_n, block_size, block_pooling, excludes):
    """``({kernel: mask}, [(layer, reason)])`` for one-shot magnitude sparsity."""
    if (sparsity is None) == (m_by_n is None):
        raise Tf1PruneError("give a weight sparsity or m_by_n (N:M already sets the sparsity)")
    m_by_n = None if m_by_n is None else check_m_by_n(m_by_n)
    out, skipped = {}, []
    for node, kernel, in_axis in kernels:
        if node in excludes or kernel in excludes:
            skipped.append((node, "excluded"))
            continue
        value = np.asarray(values(kernel))
        if m_by_n and value.shape[in_axis] % m_by_n[1]:
            skipped.append((node, "%d input channels are not a multiple of %d" % (value.shape[in_axis], m_by_n[1])))
            continue
        out[kernel] = magnitude_mask(value, sparsity, block_size, block_pooling, m_by_n, in_axis)
    return out, skipped


def sparsify_graph_def(graph_def, input_specs=None, output_node_names=(), sparsity=None, m_by_n=None,
                       block_size=(1, 1), block_pooling="AVG", excludes=()):
    """One-shot magnitude sparsity of a frozen graph's kernels (data-free): ``(graph_def, report,
    skipped)`` with the report as from :func:`sparsity_report`.

    Example::

        sparse_gd, report, skipped = sparsify_graph_def(gd, specs, ["logits"], m_by_n=(2, 4))
    """
    from tf1prune.rules import build, is_const
    analysis = analyze(graph_def, input_specs, output_node_names)
    nodes = {n.name: n for n in graph_def.node}
    kernels = _layer_kernels(analysis, lambda name: is_const(nodes[name].op))
    masks, skipped = _masks(kernels, lambda name: build.const_value(nodes[name]), sparsity, m_by_n, block_size,
                            block_pooling, set(excludes))
    out = tf.GraphDef()
    out.CopyFrom(graph_def)
    out_nodes = {n.name: n for n in out.node}
    for kernel, mask in masks.items():
        value = build.const_value(out_nodes[kernel])
        build.set_const_value(out_nodes[kernel], value * mask.astype(value.dtype))
    return out, sparsity_report(analyze(out, input_specs, output_node_names)), skipped


LayerReport = collections.namedtuple("LayerReport", "layer kernel weights zeros n_m")


def sparsity_report(analysis):
    """Per layer with a constant kernel: its weights, zero share, and the N:M patterns it satisfies
    (``[(N, M)]`` for M in 4, 8, 16 dividing its input channels, N the most non-zeros of any group)."""
    from tf1prune.rules import build, is_const
    nodes = analysis.view.nodes
    rows = []
    for node, kernel, in_axis in _layer_kernels(analysis, lambda name: name in nodes and is_const(nodes[name].op)):
        value = build.const_value(nodes[kernel])
        rows.append(LayerReport(node, kernel, int(value.size), float(np.mean(value == 0)),
                                satisfied_n_m(value, in_axis)))
    return rows


def report_table(rows):
    """Text table of a :func:`sparsity_report`."""
    lines = ["%-44s %10s %7s  %s" % ("layer", "weights", "zeros", "N:M (most non-zeros of M)")]
    for r in rows:
        pattern = ", ".join("%d:%d" % nm for nm in r.n_m) or "-"
        lines.append("%-44s %10d %6.1f%%  %s" % (r.layer[-44:], r.weights, 100 * r.zeros, pattern))
    total = sum(r.weights for r in rows)
    zeros = sum(r.weights * r.zeros for r in rows)
    lines.append("%-44s %10d %6.1f%%" % ("total", total, 100 * zeros / max(total, 1)))
    return "\n".join(lines)


def sparsify_checkpoint(model, output_dir, sparsity=None, m_by_n=None, block_size=(1, 1), block_pooling="AVG",
                        excludes=(), checkpoint=None):
    """One-shot magnitude sparsity of a :class:`~tf1prune.CheckpointModel`'s kernels, written as a copy
    in ``output_dir`` with the optimizer slots masked too; returns ``(prefix, skipped)``.

    Example::

        prefix, skipped = sparsify_checkpoint(CheckpointModel(meta, ckpt, ["logits"]), "sparse/", m_by_n=(2, 4))
    """
    from tf1prune.checkpoint import open_checkpoint, write_masked_copy
    prefix, reader = open_checkpoint(checkpoint or model.prefix)
    kernels = _layer_kernels(model.analysis, model.is_variable)
    masks, skipped = _masks(kernels, model.values_in(reader, prefix), sparsity, m_by_n, block_size, block_pooling,
                            set(excludes))
    return write_masked_copy(model, prefix, reader, masks, output_dir), skipped
