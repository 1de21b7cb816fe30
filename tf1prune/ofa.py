"""Once-for-all (OFA) for TF1 graphs: train one elastic-width network, deploy many slim ones.

Every prunable group's channels are ranked once by importance, so a width ``k`` means "the first
``k`` channels".  :meth:`OFAPruner.ofa_model` splices a forward-pass mask into the session's graph:
each zeroed parameter of the sparse model (producer and consumer kernel slices, biases, BatchNorm
scale and offset) is read through ``value * mask``, the mask being a function of one ``widths``
variable.  No weight is overwritten, so any sub-network trains without destroying the others, and
the masked network at widths ``w`` computes what the slim graph of ``w`` computes (checked on
random inputs when the masks are made).  The rewiring is the one ``tf.contrib.quantize`` did:
it happens in place, before the training ops are built, and sessions created before it do not
see it, so :class:`ElasticModel` opens a new session holding the old one's variable values.

Training follows the sandwich rule with in-place distillation (:class:`SandwichTrainer`): each
step the largest sub-network learns from the labels, the smallest and ``num_random`` random ones
from the largest one's soft outputs; the gradients are summed and applied once.  The search
(:meth:`ElasticModel.search`) is evolutionary within a MACs range; every candidate's BatchNorm
statistics are re-estimated on calibration batches before ``eval_fn`` scores its frozen graph.
:meth:`ElasticModel.get_static_subnet` exports the slim frozen graph and a slim checkpoint through
the same slim and checkpoint paths as the other runners.

Example::

    ofa = tf1prune.OFAPruner("resnet", sess, {"input_1:0": ((1, 28, 28, 1), "float32")}, ["logits"])
    model = ofa.ofa_model(expand_ratios=(0.5, 0.75, 1.0), channel_divisible=4)
    sess = model.sess                        # the masks live in this session (and later ones)
    loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
    trainer = model.sandwich_trainer(loss, tf.train.AdamOptimizer(1e-3), logits, num_random=2)
    for x, y in batches:
        trainer.step({images: x, labels: y})
    front = model.search(eval_fn, calibration_batches, min_macs=0.45 * model.full_macs,
                         max_macs=0.5 * model.full_macs)
    slim_gd = model.get_static_subnet(front[-1].widths, calibration_batches, output_dir="sub50")

Limits: Keras ``fit`` cannot run several forward passes per step, so :meth:`ElasticModel.
keras_callback` cycles the sandwich's widths over batches, trained on the labels only.  A
parameter read inside a function body (a Keras ``If`` BatchNorm's scale) cannot be masked in the
main graph; the channel then still reaches no output (its consumers' kernels are masked), which
the random-input check confirms or refutes.
"""
import collections
import json
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import allocation, calibrate, importance, rules, sensitivity, slim, tfcompat
from tf1prune.analysis import analyze
from tf1prune.errors import Tf1PruneError
from tf1prune.evaluate import evaluate
from tf1prune.files import atomic_write, save_graph_def
from tf1prune.graph import normalize_input_specs
from tf1prune.latency import input_shapes, random_feeds
from tf1prune.names import node_of
from tf1prune.rules import ZEROED
from tf1prune.spec import spec_from_counts

Subnet = collections.namedtuple("Subnet", "macs metric widths")
FORMAT = "tf1prune-ofa-search"
SCOPE = "tf1prune_ofa"


class OFAPruner:
    """Once-for-all pruning of a TF1 session's model (see the module docstring).

    Args:
      model_name: names the search files in the workspace.
      sess: a session holding the trained graph; its weights rank the channels.
      input_specs: input tensor name -> ``tf.TensorSpec`` (or ``(shape, dtype)``).
      output_node_names: output nodes; their channels are never pruned.
      excludes: nodes whose output channels are not pruned.
      workspace: folder of the search files (default ``./.tf1prune``).
      criterion: channel importance, ``l1`` (default), ``l2`` or ``bn_gamma``.
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1"):
        self.model_name, self.sess, self.criterion = model_name, sess, criterion
        self.input_specs = normalize_input_specs(input_specs)
        self.output_node_names = [node_of(n) for n in output_node_names]
        self.excludes = list(excludes or ())
        self.workspace = workspace or os.path.join(os.getcwd(), ".tf1prune")
        names = {op.name for op in sess.graph.get_operations()}
        for name in self.output_node_names + [node_of(n) for n in self.input_specs] + self.excludes:
            if node_of(name) not in names:
                raise Tf1PruneError("node %r is not in the graph" % name)

    def ofa_model(self, expand_ratios=(0.5, 0.75, 1.0), channel_divisible=1, excludes=None):
        """Make the session's graph elastic; returns the :class:`ElasticModel` (with a new session).

        ``expand_ratios``: the widths every group may take, as fractions of its channels (1.0 is
        added when missing); each is rounded to a multiple of ``channel_divisible``.
        """
        ratios = sorted({float(r) for r in expand_ratios} | {1.0})
        if any(not 0 < r <= 1 for r in ratios):
            raise Tf1PruneError("expand_ratios must be in (0, 1], got %r" % (list(expand_ratios),))
        from tf1prune import divisible
        if any(op.name.startswith(SCOPE + "/") for op in self.sess.graph.get_operations()):
            raise Tf1PruneError("the graph is already elastic (ofa_model was called on it)")
        excludes = self.excludes if excludes is None else list(excludes)
        graph_def = self.sess.graph.as_graph_def()
        meta_graph = tf.train.export_meta_graph(graph=self.sess.graph)
        frozen = tfcompat.freeze_session(self.sess, graph_def, self.output_node_names)
        analysis = analyze(frozen, self.input_specs, self.output_node_names, excludes)
        if analysis.uncounted:   # MACs ranges and figures would leave layers out
            raise Tf1PruneError("the MACs total is incomplete (%s), so sub-networks cannot be searched by MACs"
                                % analysis.uncounted[0][1])
        channel_divisible = divisible.resolve(channel_divisible, analysis)
        scores = importance.unit_scores(analysis, self.criterion, importance.const_values(analysis))
        order = allocation.rank_units(analysis, scores)
        choices = {}
        for g in analysis.groups:
            if g.prunable:
                counts = {max(order.minimum[g.id], allocation.keep_count(g.channels, 1 - r, channel_divisible))
                          for r in ratios}
                choices[g.id] = sorted({min(c, g.channels) for c in counts})
        if not any(len(c) > 1 for c in choices.values()):
            raise Tf1PruneError("no group has more than one width (prunable groups: %d): add smaller expand_ratios"
                                % len(choices))
        return ElasticModel(self, graph_def, meta_graph, analysis, order, choices)


class ElasticModel:
    """The elastic network: widths, masks, training, search and export (see the module docstring).

    ``widths`` are dicts {group id: kept channels}; ``choices[gid]`` lists a group's widths.
    """

    def __init__(self, pruner, graph_def, meta_graph, analysis, order, choices):
        self.pruner, self.graph = pruner, pruner.sess.graph
        self.graph_def, self.meta_graph = graph_def, meta_graph   # the graph before the masks
        self.analysis, self.order, self.choices = analysis, order, choices
        self.gids = sorted(choices)
        self._macs = allocation.MacsModel(analysis, order)
        self.full_macs = self.macs(self.max_widths())
        self.model_variables = list(self.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES))
        self.unmasked = self._splice()
        self.sess = self._new_session()
        self._check_masks()

    # --- widths -----------------------------------------------------------
    def max_widths(self):
        return {g: self.choices[g][-1] for g in self.gids}

    def min_widths(self):
        return {g: self.choices[g][0] for g in self.gids}

    def sample(self, rng, level=None, spread=0.25):
        """Random widths (``rng``: numpy RandomState): every group picks one of its choices uniformly,
        or, with ``level`` in [0, 1], the choice nearest to that fraction of its list, moved by
        normal noise of ``spread`` (for sub-networks across the whole MACs range)."""
        if level is None:
            return {g: self.choices[g][rng.randint(len(self.choices[g]))] for g in self.gids}
        out = {}
        for g in self.gids:
            n = len(self.choices[g])
            out[g] = self.choices[g][int(np.clip(np.round((level + spread * rng.randn()) * (n - 1)), 0, n - 1))]
        return out

    def macs(self, widths):
        """MACs of the sub-network of ``widths`` (every layer counted)."""
        return int(self._macs(self._checked(widths)))

    def _checked(self, widths):
        widths = {int(g): int(c) for g, c in widths.items()}
        if set(widths) != set(self.gids):
            raise Tf1PruneError("widths must give every prunable group %s, got %s" % (self.gids, sorted(widths)))
        for g, c in widths.items():
            if c not in self.choices[g]:
                raise Tf1PruneError("group %d cannot keep %d channels (choices %s)" % (g, c, self.choices[g]))
        return widths

    def set_widths(self, widths, sess=None):
        """Make the graph compute the sub-network of ``widths`` (in ``sess``, default :attr:`sess`)."""
        widths = self._checked(widths)
        (sess or self.sess).run(self._assign, {self._widths_in: [widths[g] for g in self.gids]})

    # --- masks ------------------------------------------------------------
    def _splice(self):
        """Read every zeroed parameter through its width mask; returns the parameters that could not be."""
        a = self.analysis
        rank = np.zeros(a.num_units, np.int32)
        slot = np.full(a.num_units, len(self.gids), np.int32)
        for i, gid in enumerate(self.gids):
            rank[self.order[gid]] = np.arange(len(self.order[gid]))
            slot[self.order[gid]] = i
        elastic = np.zeros(a.num_units, bool)
        elastic[slot < len(self.gids)] = True
        forward = _ancestors(self.graph, self.pruner.output_node_names)
        unmasked = []
        with self.graph.as_default(), tf.name_scope(SCOPE + "/"):
            full = [self.choices[g][-1] for g in self.gids]
            self.widths = tf.Variable(full, dtype=tf.int32, trainable=False, name="widths",
                                      collections=[tf.GraphKeys.LOCAL_VARIABLES])
            self._widths_in = tf.placeholder(tf.int32, [len(self.gids)], name="widths_in")
            self._assign = self.widths.assign(self._widths_in)
            limits = tf.concat([self.widths, [np.iinfo(np.int32).max]], 0)
            keep = tf.less(tf.constant(rank), tf.gather(limits, tf.constant(slot)))
            for name, axes in sorted(a.bindings.items()):
                axes = {axis: a.unit_of[b.elems] for axis, b in axes.items()
                        if b.role in ZEROED and elastic[a.unit_of[b.elems]].any()}
                if not axes:
                    continue
                sources = _forward_reads(self.graph, name, forward)
                if sources is None:
                    unmasked.append(name)
                    continue
                for tensor, consumers in sources:
                    mask = None
                    for axis, units in sorted(axes.items()):
                        shape = [1] * tensor.shape.ndims
                        shape[axis] = -1
                        part = tf.reshape(tf.gather(keep, tf.constant(units.astype(np.int32))), shape)
                        mask = part if mask is None else tf.logical_and(mask, part)
                    masked = tf.multiply(tensor, tf.cast(mask, tensor.dtype), name="masked")
                    for op, index in consumers:
                        op._update_input(index, masked)  # pylint: disable=protected-access
        return unmasked

    def _new_session(self):
        """A session of the rewired graph with the old session's variable values."""
        old = self.pruner.sess
        with self.graph.as_default():
            report = tf.report_uninitialized_variables(self.model_variables)
        missing = {n.decode() if isinstance(n, bytes) else n for n in old.run(report)}
        ready = self.model_variables = [v for v in self.model_variables if v.op.name not in missing]
        values = dict(zip(ready, old.run(ready)))
        sess = tf.Session(graph=self.graph, config=calibrate.session_config(getattr(old, "_config", None)))
        tfcompat.VariableLoader(self.graph).load(sess, values)
        sess.run(self.widths.initializer)
        return sess

    def _check_masks(self, seed=0):
        """The masked network at the smallest and a random width equals the sparse graph of that width."""
        feeds = random_feeds(input_shapes(self.graph_def, self.pruner.input_specs, 2, self.pruner.output_node_names),
                             seed)
        outputs = [n + ":0" for n in self.pruner.output_node_names]
        frozen = self.frozen_graph_def()
        analysis = analyze(frozen, self.pruner.input_specs, self.pruner.output_node_names, self.analysis.excludes)
        for widths in (self.min_widths(), self.sample(np.random.RandomState(seed))):
            self.set_widths(widths)
            live = self.sess.run(outputs, feeds)
            keep = allocation.keep_mask(analysis, self.order, widths)
            sparse = _run(slim.apply_sparse(analysis.plan(keep)), outputs, feeds)
            for x, y in zip(live, sparse):
                if not np.allclose(x, y, rtol=1e-4, atol=1e-5):
                    raise Tf1PruneError("the elastic masks do not reproduce the sub-network (max |diff| %.3g)%s"
                                        % (np.max(np.abs(x - y)), "; parameters read where no mask can reach: "
                                           + ", ".join(self.unmasked[:5]) if self.unmasked else ""))
        self.set_widths(self.max_widths())

    def frozen_graph_def(self, sess=None):
        """The graph without masks, frozen with the current weights (all channels)."""
        return tfcompat.freeze_session(sess or self.sess, self.graph_def, self.pruner.output_node_names)

    # --- training ---------------------------------------------------------
    def sandwich_trainer(self, loss, optimizer, logits, num_random=2, temperature=1.0, var_list=None,
                         global_step=None, seed=0, distill_weight=None):
        """A :class:`SandwichTrainer`; build it before the graph is finalized."""
        return SandwichTrainer(self, loss, optimizer, logits, num_random, temperature, var_list, global_step, seed,
                               distill_weight)

    def keras_callback(self, num_random=2, seed=0):
        """A Keras callback for ``fit``: batch ``i`` trains the ``i``-th width of the cycle largest,
        smallest, ``num_random`` random (labels only); the largest is restored after training.
        Run ``fit`` in :attr:`sess`: ``with model.sess.as_default(): keras_model.fit(...)``."""
        model, rng = self, np.random.RandomState(seed)

        class SandwichCallback(tfcompat.keras_callback_class()):
            def on_train_batch_begin(self, batch, logs=None):
                turn = batch % (num_random + 2)
                model.set_widths(model.max_widths() if turn == 0 else model.min_widths() if turn == 1
                                 else model.sample(rng), tf.get_default_session())

            def on_train_end(self, logs=None):
                model.set_widths(model.max_widths(), tf.get_default_session())

        return SandwichCallback()

    # --- search and export ------------------------------------------------
    def evaluate(self, widths_list, eval_fn, calibration_data, executor=None):
        """``[(metric or None, error)]`` of each widths: BatchNorm re-estimated on
        ``calibration_data``, then ``eval_fn(frozen graph_def)`` of the sparse sub-network."""
        frozen = self.frozen_graph_def()
        analysis = analyze(frozen, self.pruner.input_specs, self.pruner.output_node_names, self.analysis.excludes)
        patcher = sensitivity.Patcher(analysis, self.order, calibration_data=calibration_data)
        try:
            tasks = ((i, patcher.keep_patches(allocation.keep_mask(analysis, self.order, self._checked(w))))
                     for i, w in enumerate(widths_list))
            out = [None] * len(widths_list)
            devices = ("/CPU:0",)
            for i, value, error in evaluate(tasks, frozen, eval_fn, devices, executor, analysis.digest(),
                                            self.pruner.workspace):
                out[i] = (value, error)
            return out
        finally:
            patcher.close()

    def search(self, eval_fn, calibration_data, min_macs, max_macs, population=16, generations=4,
               parents=0.25, mutate_prob=0.2, higher_is_better=True, seed=0, path=None, executor=None):
        """Evolutionary search in ``[min_macs, max_macs]``; returns the Pareto front (fewest MACs
        first, each :class:`Subnet` better than every cheaper one) and saves every evaluated
        candidate and the front to ``path`` (default ``<workspace>/<model>.ofa_search.json``)."""
        if not 0 <= min_macs <= max_macs:
            raise Tf1PruneError("need 0 <= min_macs <= max_macs, got %r and %r" % (min_macs, max_macs))
        calibration_data = calibrate.feed_batches(calibration_data)
        rng, seen, scored = np.random.RandomState(seed), set(), []
        sign = 1.0 if higher_is_better else -1.0

        def fits(w):
            key = tuple(w[g] for g in self.gids)
            if key in seen or not min_macs <= self.macs(w) <= max_macs:
                return False
            seen.add(key)
            return True

        def fill(make, count):
            out, tries = [], 0
            while len(out) < count and tries < 200 * count:
                tries += 1
                w = make()
                if fits(w):
                    out.append(w)
            return out

        batch = fill(lambda: self.sample(rng, level=rng.rand()), population)
        if not batch:
            raise Tf1PruneError("no sub-network found within [%d, %d] MACs (the widths span %d to %d)"
                                % (min_macs, max_macs, self.macs(self.min_widths()), self.full_macs))
        for generation in range(generations + 1):
            if not batch:
                break
            for w, (value, error) in zip(batch, self.evaluate(batch, eval_fn, calibration_data, executor)):
                if error is None and value is not None and np.isfinite(value):
                    scored.append(Subnet(self.macs(w), float(value), w))
            if generation == generations or not scored:
                break
            best = sorted(scored, key=lambda s: -sign * s.metric)[:max(2, int(parents * population))]

            def child():
                a, b = (best[i].widths for i in rng.choice(len(best), 2))
                w = {g: (a if rng.rand() < 0.5 else b)[g] for g in self.gids}
                return {g: self.choices[g][rng.randint(len(self.choices[g]))] if rng.rand() < mutate_prob else c
                        for g, c in w.items()}
            batch = fill(child, population)
        if not scored:
            raise Tf1PruneError("no sub-network in [%d, %d] MACs could be evaluated" % (min_macs, max_macs))
        front = pareto_front(scored, higher_is_better)
        path = path or os.path.join(self.pruner.workspace, "%s.ofa_search.json" % self.pruner.model_name)
        def as_json(subnets):
            return [dict(s._asdict(), widths={str(g): c for g, c in s.widths.items()}) for s in subnets]
        atomic_write(path, json.dumps({"format": FORMAT, "full_macs": self.full_macs, "higher_is_better": higher_is_better,
                                       "evaluated": as_json(scored), "front": as_json(front)}, indent=1))
        return front

    def get_static_subnet(self, widths, calibration_data=None, output_graph=None, output_dir=None):
        """The slim frozen GraphDef of ``widths`` (BatchNorm re-estimated on ``calibration_data`` when
        given).  ``output_graph`` also writes it; ``output_dir`` writes a slim checkpoint and meta
        graph (the model variables, to keep training: restore them, then build an optimizer)."""
        from tf1prune import checkpoint as ckpt_lib
        widths = self._checked(widths)
        frozen = self.frozen_graph_def()
        analysis = analyze(frozen, self.pruner.input_specs, self.pruner.output_node_names, self.analysis.excludes)
        keep = allocation.keep_mask(analysis, self.order, widths)
        patches = {}
        if calibration_data is not None:
            patcher = sensitivity.Patcher(analysis, self.order, calibration_data=calibration_data)
            try:
                patches = patcher.keep_patches(keep)
            finally:
                patcher.close()
            frozen = calibrate.apply_statistics(frozen, {n: v for n, v in patches.items()})
            analysis = analyze(frozen, self.pruner.input_specs, self.pruner.output_node_names, self.analysis.excludes)
        spec = spec_from_counts(analysis, self.order, widths, self.pruner.criterion)
        slim_gd = slim.apply_slim(analysis.plan(spec))
        if output_graph:
            save_graph_def(slim_gd, output_graph)
        if output_dir:
            values = {v.op.name: value for v, value in zip(self.model_variables, self.sess.run(self.model_variables))}
            values.update({n: v for n, v in patches.items() if n in values})
            with tempfile.TemporaryDirectory() as tmp:
                prefix = os.path.join(tmp, self.pruner.model_name)
                ckpt_lib.write_checkpoint(prefix, values)
                atomic_write(prefix + ".meta", self.meta_graph.SerializeToString())
                model = ckpt_lib.CheckpointModel(prefix + ".meta", prefix, self.pruner.output_node_names,
                                                 self.pruner.input_specs, self.analysis.excludes)
                ckpt_lib.strip_checkpoint(model, model.keep_mask(zeros=True), output_dir, progress=False)
        return slim_gd


class SandwichTrainer:
    """One sandwich-rule step per :meth:`step` (see the module docstring).

    Args:
      model: the :class:`ElasticModel`.
      loss: the user's loss on the labels (a scalar tensor of the rewired graph).
      optimizer: a ``tf.compat.v1.train`` optimizer (or anything with ``compute_gradients`` and
        ``apply_gradients``).
      logits: the output whose softmax the smaller sub-networks learn from the largest one.
      num_random: random sub-networks per step besides the largest and the smallest.
      temperature: distillation temperature (the loss is scaled by its square).
      distill_weight: weight of each distilled sub-network's loss in the summed gradient.  The
        default, ``1 / (1 + num_random)``, makes the distilled ones together weigh as much as the
        largest one's label loss.  At weight 1 they outweigh it 3 to 1 (``num_random=2``), and
        the largest sub-network ended 1.7 points *below* the model it started from (seed 1 of
        ``tools/bench_ofa.py``); at the default it ends 1.4–2.0 points above it (3 seeds).

    Attributes ``teacher`` (a placeholder for the teacher's logits) and ``distill_loss`` (the
    student's distillation loss) can be reused, e.g. to fine-tune one sub-network on
    ``loss + distill_loss`` with the largest sub-network's outputs fed as ``teacher``.
    """

    def __init__(self, model, loss, optimizer, logits, num_random=2, temperature=1.0, var_list=None,
                 global_step=None, seed=0, distill_weight=None):
        if isinstance(num_random, bool) or not isinstance(num_random, int) or num_random < 0:
            raise Tf1PruneError("num_random must be a non-negative integer, got %r" % (num_random,))
        if distill_weight is None:
            distill_weight = 1.0 / (1 + num_random)
        if isinstance(distill_weight, bool) or not isinstance(distill_weight, (int, float)) \
                or not 0 < distill_weight < float("inf"):
            raise Tf1PruneError("distill_weight must be a positive number, got %r" % (distill_weight,))
        self.distill_weight = float(distill_weight)
        self.model, self.loss, self.logits = model, loss, logits
        self.num_random, self.rng = num_random, np.random.RandomState(seed)
        graph = model.graph
        with graph.as_default(), tf.name_scope("tf1prune_sandwich/"):
            self.teacher = tf.placeholder(logits.dtype, logits.shape, name="teacher_logits")
            t = float(temperature)
            self.distill_loss = t * t * tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
                labels=tf.stop_gradient(tf.nn.softmax(self.teacher / t)), logits=logits / t))
            var_list = var_list or graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)
            updates = graph.get_collection(tf.GraphKeys.UPDATE_OPS)
            grads_label = optimizer.compute_gradients(loss, var_list)
            grads_distill = dict((v, g) for g, v in optimizer.compute_gradients(
                self.distill_weight * self.distill_loss, var_list))
            sums, add_label, add_distill = [], [], []
            for g, v in grads_label:
                if g is None and grads_distill.get(v) is None:
                    continue
                acc = tf.Variable(tf.zeros(v.shape, v.dtype.base_dtype), trainable=False,
                                  collections=[tf.GraphKeys.LOCAL_VARIABLES], name="sum")
                for grad, adds in ((g, add_label), (grads_distill.get(v), add_distill)):
                    if grad is not None:
                        adds.append(acc.assign_add(tf.convert_to_tensor(grad)))
                sums.append((acc, v))
            self.add_label = tf.group(*(add_label + updates))
            self.add_distill = tf.group(*(add_distill + updates))
            self.apply = optimizer.apply_gradients(sums, global_step=global_step)
            with tf.control_dependencies([self.apply]):
                self.reset = tf.group(*[acc.assign(tf.zeros_like(acc)) for acc, _ in sums])
            # made after the model: sums, optimizer slots, beta powers, the user's global step
            model_vars = set(model.model_variables)
            self._own = [acc for acc, _ in sums] + [v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
                                                    if v not in model_vars]
            self._report = tf.report_uninitialized_variables(self._own)
            self._ready = False

    def _initialize(self, sess):
        """Initialise the variables made after the model that are not yet (a ``MonitoredSession``
        has done it already); the model's own variables are left as they are."""
        names = {n.decode() if isinstance(n, bytes) else n for n in sess.run(self._report)}
        fresh = [v.initializer for v in self._own if v.op.name in names]
        if fresh:
            sess.run(fresh)
        self._ready = True

    def step(self, feed_dict, sess=None):
        """One sandwich step on the batch ``feed_dict``; returns ``{"loss": .., "distill": mean}``."""
        sess = sess or self.model.sess
        if not self._ready:
            self._initialize(sess)
        model = self.model
        model.set_widths(model.max_widths(), sess)
        teacher, loss, _ = sess.run([self.logits, self.loss, self.add_label], feed_dict)
        distill, feed = [], dict(feed_dict)
        feed[self.teacher] = teacher
        for widths in [model.min_widths()] + [model.sample(self.rng) for _ in range(self.num_random)]:
            model.set_widths(widths, sess)
            distill.append(sess.run([self.distill_loss, self.add_distill], feed)[0])
        sess.run(self.reset)   # applies the summed gradients first
        model.set_widths(model.max_widths(), sess)
        return {"loss": float(loss), "distill": float(np.mean(distill))}


def pareto_front(subnets, higher_is_better=True):
    """The subnets not beaten by a cheaper (or equally cheap) one, fewest MACs first."""
    sign = 1.0 if higher_is_better else -1.0
    front, best = [], -np.inf
    for s in sorted(subnets, key=lambda s: (s.macs, -sign * s.metric)):
        if sign * s.metric > best:
            front.append(s)
            best = sign * s.metric
    return front


def _ancestors(graph, output_node_names):
    """Names of the ops the outputs depend on (data inputs)."""
    todo = [graph.get_operation_by_name(n) for n in output_node_names]
    seen = {op.name for op in todo}
    while todo:
        op = todo.pop()
        for t in op.inputs:
            if t.op.name not in seen:
                seen.add(t.op.name)
                todo.append(t.op)
    return seen


def _forward_reads(graph, name, forward):
    """``[(tensor, [(consumer op, input index)])]``: where the forward pass reads parameter ``name``
    (a variable's read ops, or a constant itself); None when it reads it where no mask can go."""
    try:
        op = graph.get_operation_by_name(name)
    except KeyError:
        return None
    if not rules.is_variable(op.type):
        tensors = [op.outputs[0]]
    else:
        tensors = []
        for consumer in op.outputs[0].consumers():
            if consumer.name not in forward:
                continue
            if not rules.is_read(consumer.type):
                return None   # the handle goes on (into a function call): no mask can reach it
            tensors.append(consumer.outputs[0])
    out = []
    for t in tensors:
        uses = [(c, i) for c in t.consumers() if c.name in forward for i, x in enumerate(c.inputs) if x is t]
        if uses:
            out.append((t, uses))
    return out or None


def _run(graph_def, outputs, feeds):
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=calibrate.session_config()) as sess:
        return sess.run(outputs, feeds)
