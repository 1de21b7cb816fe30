"""Once-for-all (OFA) for TF1 graphs: train one elastic-width network, deploy many slim ones.

Every prunable group's channels are ranked once by importance, so a width ``k`` means "the first
``k`` channels".  :meth:`OnceForAllRunner.ofa_model` splices a forward-pass mask into the session's graph:
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

    ofa = tf1prune.OnceForAllRunner("resnet", sess, {"input_1:0": ((1, 28, 28, 1), "float32")}, ["logits"])
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
import os
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import tfcompat
from tf1prune.apply import calibrate, elastic, slim
from tf1prune.apply.patches import Patcher
from tf1prune.choose import allocation, costs, criteria, divisible
from tf1prune.choose.search import Subnet, pareto_front  # noqa: F401  (Subnet, pareto_front: compatibility)
from tf1prune.choose.spec import spec_from_counts
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def
from tf1prune.measure.latency import input_shapes, random_feeds
from tf1prune.workflows.engine import Candidate, Engine
from tf1prune.workflows.session import DEFAULT_WORKSPACE, SessionModel
from tf1prune.workflows.store import ResultStore

KIND = "ofa-search"
SCOPE = elastic.SCOPE


class OnceForAllRunner(SessionModel):
    """Once-for-all pruning of a TF1 session's model (see the module docstring).

    Args:
      model_name: names the search files in the workspace.
      sess: a session holding the trained graph; its weights rank the channels.
      input_specs: input tensor name -> ``tf.TensorSpec`` (or ``(shape, dtype)``).
      output_node_names: output nodes; their channels are never pruned.
      excludes: nodes whose output channels are not pruned.
      workspace: folder of the search files (default ``./.tf1prune``).
      criterion: a channel criterion of :mod:`tf1prune.choose.criteria` (``l1`` default).
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1"):
        super().__init__(sess, input_specs, output_node_names, excludes)
        criteria.lookup(criterion)
        self.model_name, self.criterion = model_name, criterion
        self.workspace = workspace or os.path.join(os.getcwd(), DEFAULT_WORKSPACE)

    def ofa_model(self, expand_ratios=(0.5, 0.75, 1.0), channel_divisible=1, excludes=None):
        """Make the session's graph elastic; returns the :class:`ElasticModel` (with a new session).

        ``expand_ratios``: the widths every group may take, as fractions of its channels (1.0 is
        added when missing); each is rounded to a multiple of ``channel_divisible``.
        """
        ratios = sorted({float(r) for r in expand_ratios} | {1.0})
        if any(not 0 < r <= 1 for r in ratios):
            raise Tf1PruneError("expand_ratios must be in (0, 1], got %r" % (list(expand_ratios),))
        if any(op.name.startswith(SCOPE + "/") for op in self.sess.graph.get_operations()):
            raise Tf1PruneError("the graph is already elastic (ofa_model was called on it)")
        excludes = self.excludes if excludes is None else list(excludes)
        graph_def = self.sess.graph.as_graph_def()
        meta_graph = tf.train.export_meta_graph(graph=self.sess.graph)
        analysis = self.analyze(self.frozen_graph_def(graph_def=graph_def), excludes)
        if analysis.uncounted:   # MACs ranges and figures would leave layers out
            raise Tf1PruneError("the MACs total is incomplete (%s), so sub-networks cannot be searched by MACs"
                                % analysis.uncounted[0][1])
        channel_divisible = divisible.resolve(channel_divisible, analysis)
        order = allocation.rank_units(analysis, criteria.unit_scores(analysis, self.criterion))
        choices = {}
        for g in analysis.groups:
            if g.prunable:
                step = allocation.unit_step(g, channel_divisible)
                counts = {max(order.minimum[g.id], allocation.keep_count(g.channels, 1 - r, step)) for r in ratios}
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
        self._macs = costs.make("macs", analysis, order)
        self.full_macs = self.macs(self.max_widths())
        self.model_variables = list(self.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES))
        self.widths, self._assign, self._widths_in, self.unmasked = elastic.splice(
            self.graph, analysis, order, self.gids, [choices[g][-1] for g in self.gids], pruner.output_node_names)
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
        if not isinstance(widths, dict):
            raise Tf1PruneError("widths must be a dict {group id: channels}, got %s" % type(widths).__name__)
        for g, c in widths.items():
            if not _integral(g) or not _integral(c):
                raise Tf1PruneError("widths must map integer group ids to integer channel counts, got %r: %r" % (g, c))
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
        for widths in (self.min_widths(), self.sample(np.random.RandomState(seed))):
            self.set_widths(widths)
            live = self.sess.run(outputs, feeds)
            sparse = _run(slim.apply_sparse(self.analysis.plan(self.choice(widths)), frozen), outputs, feeds)
            for x, y in zip(live, sparse):
                if not np.allclose(x, y, rtol=1e-4, atol=1e-5):
                    raise Tf1PruneError("the elastic masks do not reproduce the sub-network (max |diff| %.3g)%s"
                                        % (np.max(np.abs(x - y)), "; parameters read where no mask can reach: "
                                           + ", ".join(self.unmasked[:5]) if self.unmasked else ""))
        self.set_widths(self.max_widths())

    def choice(self, widths):
        """The :class:`~tf1prune.core.choice.Choice` of the sub-network of ``widths``."""
        return Choice.from_counts(self.analysis, self.order, self._checked(widths))

    def frozen_graph_def(self, sess=None):
        """The graph without masks, frozen with the current weights (all channels)."""
        return self.pruner.frozen_graph_def(sess or self.sess, self.graph_def)

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
    def _budget(self, min_macs, max_macs, latency, batch):
        """The search's budget test ``within(widths)`` (with ``within.text`` for messages)."""
        if latency is not None:
            low, high = latency
            if not 0 < low <= high <= 1 or min_macs is not None or max_macs is not None:
                raise Tf1PruneError("latency is a (low, high) share of the full network's, 0 < low <= high <= 1, "
                                    "given instead of min_macs/max_macs; got %r" % (latency,))
            model = costs.make(costs.latency_model(batch), self.analysis, self.order)

            def within(w):
                return low <= model(self._checked(w)) / model.total <= high
            within.text = "%.2f-%.2f of the full network's latency" % (low, high)
            return within
        if min_macs is None or max_macs is None or not 0 <= min_macs <= max_macs:
            raise Tf1PruneError("need 0 <= min_macs <= max_macs, got %r and %r" % (min_macs, max_macs))

        def within(w):
            return min_macs <= self.macs(w) <= max_macs
        within.text = "[%d, %d] MACs" % (min_macs, max_macs)
        return within

    def evaluate(self, widths_list, eval_fn, calibration_data, executor=None):
        """``[(metric or None, error)]`` of each widths: BatchNorm re-estimated on
        ``calibration_data``, then ``eval_fn(frozen graph_def)`` of the sparse sub-network (the weights
        as they are now)."""
        frozen = self.frozen_graph_def()
        engine = Engine(frozen, eval_fn, executor=executor, workdir=self.pruner.workspace)
        out = [None] * len(widths_list)
        with Patcher(self.analysis, frozen, calibration_data) as patcher:
            for i, value, error in engine.run(Candidate(i, patcher.patches(self.choice(w)))
                                              for i, w in enumerate(widths_list)):
                out[i] = (value, error)
        return out

    def _key(self, widths):
        return ",".join(str(widths[g]) for g in self.gids)

    def search(self, eval_fn, calibration_data, min_macs=None, max_macs=None, population=16, generations=4,
               parents=0.25, mutate_prob=0.2, higher_is_better=True, seed=0, path=None, executor=None,
               recompute=False, latency=None, batch=1):
        """Evolutionary search in ``[min_macs, max_macs]`` (or, with ``latency=(low, high)``, among the
        sub-networks whose predicted latency on this machine at ``batch`` is that share of the full
        network's: :mod:`tf1prune.measure.layer_latency`); returns the Pareto front (fewest MACs
        first, each :class:`Subnet` better than every cheaper one).  Every evaluated sub-network and the
        front are kept in a result store at ``path`` (default ``<workspace>/<model>.ofa_search.json``),
        tied to the graph and its weights: a rerun does not evaluate a sub-network twice, retries
        failed ones, and ``recompute=True`` starts over."""
        within = self._budget(min_macs, max_macs, latency, batch)
        calibration_data = calibrate.feed_batches(calibration_data)
        rng, seen, scored = np.random.RandomState(seed), set(), []
        sign = 1.0 if higher_is_better else -1.0
        frozen = self.frozen_graph_def()
        engine = Engine(frozen, eval_fn, executor=executor, workdir=self.pruner.workspace)
        path = path or os.path.join(self.pruner.workspace, "%s.ofa_search.json" % self.pruner.model_name)
        store = ResultStore.open(path, KIND, {"graph": self.analysis.digest(), "weights": engine.weights},
                                 {"higher_is_better": bool(higher_is_better), "calibrated": True}, recompute)

        def fits(w):
            key = tuple(w[g] for g in self.gids)
            if key in seen or not within(w):
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
            raise Tf1PruneError("no sub-network found within %s (the widths span %d to %d MACs)"
                                % (within.text, self.macs(self.min_widths()), self.full_macs))
        with Patcher(self.analysis, frozen, calibration_data) as patcher:
            for generation in range(generations + 1):
                if not batch:
                    break
                of_key = {self._key(w): w for w in batch}
                for key, w in of_key.items():
                    if store.value(key) is None:
                        store.record(key, None, None, widths={str(g): c for g, c in w.items()}, macs=self.macs(w))
                engine.fill(store, list(of_key), lambda key: patcher.patches(self.choice(of_key[key])), progress=None)
                scored += [Subnet(self.macs(w), float(store.value(k)), w) for k, w in of_key.items()
                           if store.value(k) is not None]
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
            raise Tf1PruneError("no sub-network within %s could be evaluated" % within.text)
        front = pareto_front(scored, higher_is_better)
        store.extra.update(full_macs=self.full_macs, front=[
            {"macs": s.macs, "metric": s.metric, "widths": {str(g): c for g, c in s.widths.items()}} for s in front])
        store.save()
        return front

    def get_static_subnet(self, widths, calibration_data=None, output_graph=None, output_dir=None):
        """The slim frozen GraphDef of ``widths`` (BatchNorm re-estimated on ``calibration_data`` when
        given).  ``output_graph`` also writes it; ``output_dir`` writes a slim checkpoint and meta
        graph (the model variables, to keep training: restore them, then build an optimizer)."""
        from tf1prune.apply import checkpoint as ckpt_lib
        from tf1prune.files import atomic_write
        choice = self.choice(widths)
        frozen = self.frozen_graph_def()
        patches = {}
        if calibration_data is not None:
            with Patcher(self.analysis, frozen, calibration_data) as patcher:
                patches = patcher.patches(choice)
            frozen = calibrate.apply_statistics(frozen, patches)
        spec = spec_from_counts(self.analysis, self.order, self._checked(widths), self.pruner.criterion)
        slim_gd = slim.apply_slim(self.analysis.plan(spec), graph_def=frozen)
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
                ckpt_lib.strip_checkpoint(model, model.choice(zeros=True), output_dir, progress=False)
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


def _integral(value):
    """An int (or numpy integer), or a float with an integer value; never a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def _run(graph_def, outputs, feeds):
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=calibrate.session_config()) as sess:
        return sess.run(outputs, feeds)


OFAPruner = OnceForAllRunner   # the name of tf1prune 0.1 (deprecated alias, see tf1prune.__init__)
