"""Fine-grained sparsity in TF1 sessions: TFMOT's magnitude pruning for graphs built any way.

:class:`WeightPruningRunner` finds the prunable kernels from the analysis (conv, depthwise, dense and
transposed conv kernels held in session variables; the output layer too unless excluded), and
keeps a 0/1 mask per kernel that a schedule (:class:`ConstantSparsity`, :class:`PolynomialDecay`)
updates by magnitude: exactly ``round(n * (1 - s))`` weights kept, or whole blocks, or N of every M
input-channel weights.  The masks are kept by the same optimizer hooks as channel masks: every
``tf.compat.v1.train`` and tf_keras optimizer, Adam slots and weight decay cannot revive a pruned
weight, and checkpoints are written sparse.

Example::

    pruner = WeightPruningRunner(sess, ["logits"], PolynomialDecay(0.0, 0.75, 0, 1000, frequency=100))
    train_op = tf.train.AdamOptimizer(1e-3).minimize(loss, global_step=tf.train.get_global_step())
    for step in range(1200):
        sess.run(train_op, feeds)
        sess.run(pruner.update_op)            # or hooks=[pruner.hook()], or callbacks=[pruner.keras_callback()]
    frozen = pruner.strip()                   # plain constants, no mask ops
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import tfcompat
from tf1prune.apply import masks as masks_lib
from tf1prune.apply.finegrained import check_block, check_options, kernel_mask, kept_sparsity, layer_kernels
from tf1prune.apply.finegrained import magnitude_mask, satisfied_n_m  # noqa: F401  (tf1prune 0.1 names)
from tf1prune.apply.finegrained import report_table, sparsify_checkpoint, sparsify_graph_def  # noqa: F401
from tf1prune.apply.finegrained import sparsity_report  # noqa: F401
from tf1prune.core import zeros
from tf1prune.core.names import node_of
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule  # noqa: F401
from tf1prune.workflows.session import SessionModel

LayerSparsity = collections.namedtuple("LayerSparsity", "layer variable weights zeros sparsity")
LayerSparsity.__doc__ = "A kernel's weights and zeros, counted on the channels it keeps (what the slim graph holds)."


class WeightPruningRunner(SessionModel):
    """Magnitude pruning of a session's kernels (see the module docstring).

    Create it after channel pruning, if any: the sparsity and N:M groups are then made on the
    channels each kernel keeps, so they hold in the slim graph's kernels.

    Args:
      sess: the session holding the model's variables.
      output_node_names: the model's outputs (the analysis finds the layers they need).
      schedule: a :class:`PruningSchedule`.  With ``m_by_n`` only its timing counts, and its target must
        be ``1 - N/M`` (a :class:`ConstantSparsity`).
      block_size, block_pooling: prune whole blocks of the kernels' last two axes, pooled by AVG or MAX.
      m_by_n: ``(N, M)``: keep N of every M consecutive input-channel weights (layers whose kept input
        channels are not a multiple of M are skipped, see :attr:`skipped`).
      excludes: layers (node names) or kernel variables left dense.
      sparsity_map: layer or variable name -> final sparsity of that kernel (the schedule's timing).
      input_specs: input shapes, when the placeholders' are not static but for the batch.
    """

    def __init__(self, sess, output_node_names, schedule, block_size=(1, 1), block_pooling="AVG", m_by_n=None,
                 excludes=(), sparsity_map=None, input_specs=None):
        if not isinstance(schedule, PruningSchedule):
            raise Tf1PruneError("schedule must be a ConstantSparsity or PolynomialDecay, got %r" % (schedule,))
        super().__init__(sess, input_specs, output_node_names)
        self.schedule = schedule
        analysis = self.analyze(self.frozen_graph_def())
        kernels = layer_kernels(analysis, lambda name: name in self.variables)
        self.m_by_n, self.block_size, excludes = check_options(kernels, m_by_n, block_size, block_pooling,
                                                               list(excludes or ()) + list(sparsity_map or {}))
        excludes = excludes - set(sparsity_map or {})
        self.block_pooling = block_pooling
        if self.m_by_n is not None:
            n, m = self.m_by_n
            if sparsity_map or not isinstance(schedule, ConstantSparsity) \
                    or abs(schedule.target_sparsity - (1 - n / m)) > 1e-9:
                raise Tf1PruneError("m_by_n=(%d, %d) sets the sparsity to %g: use ConstantSparsity(%g, ...) for its "
                                    "timing, and no sparsity_map" % (n, m, 1 - n / m, 1 - n / m))
        masks_lib.install()
        self.plan = self._channel_plan(analysis)
        self.layers, self.skipped = collections.OrderedDict(), []
        for node, kernel, in_axis in kernels:
            if node in excludes or kernel in excludes:
                self.skipped.append((node, "excluded"))
                continue
            shape = self.variables[kernel].shape.as_list()
            kept = shape if self.plan is None else self.plan.shape(kernel, shape)
            if self.m_by_n and kept[in_axis] % self.m_by_n[1]:
                self.skipped.append((node, "%d input channels are not a multiple of %d" % (kept[in_axis],
                                                                                            self.m_by_n[1])))
                continue
            check_block(kept, self.block_size)
            target = (sparsity_map or {}).get(node, (sparsity_map or {}).get(kernel))
            self.layers[kernel] = (node, in_axis, schedule if target is None else schedule.with_target(target))
        if not self.layers:
            raise Tf1PruneError("no prunable kernel in the model (skipped: %s)" % (self.skipped or "none"))
        self.mask_set = masks_lib.MaskSet.for_graph(sess.graph, {name: self.variables[name] for name in self.layers})
        self.mask_set.load(sess, self.mask_set.values())   # the mask variables exist in this session
        self.mask_set.attach(sess)
        self.variables = {name: self.variables[name] for name in self.layers}
        self.thresholds = {name: 0.0 for name in self.layers}
        self._update_op = self._summary_op = None

    def _channel_plan(self, analysis):
        """The plan of the channels the session's masks prune now (None when none are)."""
        current = masks_lib.MaskSet.current(self.sess.graph)
        if current is None or not current.values():
            return None
        shape_of = lambda n: self.variables[n].shape.as_list() if n in self.variables \
            else analysis.view.shape(n + ":0")  # noqa: E731
        masks = {n: m for n, m in current.values().items() if n in analysis.bindings}
        keep = zeros.find_zero_channels(analysis, zeros.mask_values(analysis, masks, shape_of)).keep
        choice = Choice.from_mask(analysis, keep)
        return analysis.plan(choice) if choice.pruned else None

    # --- masks --------------------------------------------------------------
    def masks_at(self, step, weights):
        """``{kernel: 0/1 mask}`` for the kernels the schedule prunes at ``step``, from their values."""
        out = {}
        for name, (_, in_axis, schedule) in self.layers.items():
            prune, sparsity = schedule(step)
            if not prune:
                continue
            mask, _ = kernel_mask(weights[name], sparsity, self.block_size, self.block_pooling, self.m_by_n, in_axis,
                                  self.plan, name)
            kept = np.abs(weights[name])[mask > 0]
            self.thresholds[name] = float(kept.min()) if kept.size else 0.0
            out[name] = mask
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
        """``[LayerSparsity]`` of every pruned kernel now, counted on its kept channels (as in the slim
        graph), and the total as the last row."""
        sess = sess or self.sess
        values = sess.run([self.variables[n] for n in self.layers])
        rows = []
        for (name, (node, _, _)), w in zip(self.layers.items(), values):
            weights, zero = kept_sparsity(w, self.plan, name)
            rows.append(LayerSparsity(node, name, weights, zero, zero / float(max(weights, 1))))
        total, zero = sum(r.weights for r in rows), sum(r.zeros for r in rows)
        rows.append(LayerSparsity("total", "", total, zero, zero / float(max(total, 1))))
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


WeightPruner = WeightPruningRunner   # the name of tf1prune 0.1 (deprecated alias, see tf1prune.__init__)
