"""Session-bound pruning with the API of the Vitis AI TF1 optimizer (``IterativePruningRunner``).

Example::

    runner = IterativePruningRunner("mnist", sess, {"input_1:0": tf.TensorSpec((1, 28, 28, 1))},
                                    ["dense/BiasAdd"])
    runner.ana(eval_fn)                        # eval_fn(frozen_graph_def) -> float, cached
    shape_tensors, masks = runner.prune(sparsity=0.5)
    ... fine-tune with any tf.compat.v1.train optimizer: pruned weights stay zero ...
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)
"""
import collections
import numbers
import os

import tensorflow.compat.v1 as tf

from tf1prune.apply import calibrate
from tf1prune.apply.patches import Patcher
from tf1prune.choose import allocation, compare, divisible, spec as spec_lib
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows import sensitivity
from tf1prune.workflows.engine import Candidate, Engine, default_devices
from tf1prune.workflows.session import DEFAULT_WORKSPACE, SessionPruner  # noqa: F401  (DEFAULT_WORKSPACE: compatibility)

STRATEGIES = ("sensitivity", "uniform", "importance")

Validation = collections.namedtuple("Validation", "eval_fn calibration_data higher_is_better")
Validation.__doc__ = ("What prune() scores an allocation with against the uniform one: the metric, the "
                      "calibration batches of adaptive BatchNorm, and the metric's direction.")


class IterativePruningRunner(SessionPruner):
    """Analyse, prune in place, and export a session's model (see the module docstring).

    Args: as :class:`~tf1prune.workflows.session.SessionPruner`.

    State besides the session pruner's: ``sens`` (the last :meth:`ana`'s
    :class:`~tf1prune.workflows.sensitivity.Sensitivity`) and ``validation`` (a :class:`Validation`, set by
    ``ana(..., calibration_data=...)``: :meth:`prune` then keeps the uniform allocation unless the
    sensitivity-driven one scores better, in a paired test when ``eval_fn`` returns per-example
    scores; set it to None to skip that check).
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1", channel_divisible=1):
        self.sens = None
        self.validation = None
        self.latency_result = None   # the last prune(latency=...): a LatencyPrune
        super().__init__(model_name, sess, input_specs, output_node_names, excludes, workspace, criterion,
                         channel_divisible)

    # --- ana --------------------------------------------------------------
    def ana(self, eval_fn, gpu_ids=None, checkpoint_interval=10, ratios=sensitivity.DEFAULT_RATIOS,
            higher_is_better=True, executor=None, recompute=False, progress=True,
            calibration_data=None):
        """Sensitivity analysis: ``eval_fn(frozen_graph_def) -> float`` for every group and ratio.

        Results are kept in ``<workspace>/<model_name>.sens`` (tied to the graph and its weights) and
        resumed; failed evaluations are retried.  ``recompute``: True starts over, a list of
        ``(group id, ratio)`` pairs measures those again.  ``gpu_ids`` with several devices (or an
        ``executor``) evaluates in parallel worker processes.  With ``calibration_data`` (feed dicts,
        or a callable returning them) every candidate's BatchNorm statistics are re-estimated on it
        before ``eval_fn`` sees it (adaptive BatchNorm, as in EagleEye); the baseline too.
        ``progress``: a bar with an ETA on a terminal (see :mod:`tf1prune.progress`).
        """
        devices = list(gpu_ids) if gpu_ids else default_devices()
        os.makedirs(self.workspace, exist_ok=True)
        analysis = self._refresh()
        if calibration_data is not None:
            calibration_data = self.criterion_data = calibrate.feed_batches(calibration_data)
        engine = Engine(self.frozen, eval_fn, devices, executor, self.workspace)
        sens = sensitivity.Sensitivity.open(self._path(self.model_name + ".sens"), analysis.digest(), engine.weights,
                                            ratios, higher_is_better, recompute, calibrated=calibration_data is not None)
        with Patcher(analysis, calibration_data=calibration_data) as patcher:
            sensitivity.run(sens, engine, patcher, self._ranking(analysis), self.channel_divisible,
                            checkpoint_interval, progress)
        failures = sens.store.failures()
        if failures:
            tf.logging.warning("ana: %d evaluations failed (retried by the next ana; see %s): %s", len(failures),
                               sens.path, "; ".join("%s: %s" % kv for kv in sorted(failures.items()))[:500])
        self.sens = sens
        self.validation = None if calibration_data is None else Validation(eval_fn, calibration_data,
                                                                           higher_is_better)
        return sens

    # --- prune ------------------------------------------------------------
    def prune(self, sparsity=None, threshold=None, max_attemp=10, max_attempt=None, strategy="sensitivity",
              best_effort=False, max_shift=0.1, calibration=None, data_free="compensate", reconstruct=True,
              latency=None, batch=1):
        """Prune in place to a MACs ``sparsity``, a measured ``latency`` (the slim graph's share of the
        original's time on this machine at ``batch``) or a relative metric-drop ``threshold``.

        ``sparsity`` wins over ``threshold``.  ``strategy="sensitivity"`` (default) prunes the
        groups that ``ana`` found least sensitive most; ``"uniform"`` prunes the same ratio of
        every group (no ``ana`` needed; see BENCHMARKS.md for when it fine-tunes better);
        ``"importance"`` (no ``ana`` needed either) trades each group's share of criterion importance
        removed against the MACs (or time) it saves, within ``max_shift`` of uniform.  ``max_attemp``/``max_attempt`` are accepted for
        compatibility: the MACs target is solved on an exact model of the slim graph, no retries.
        Returns ``(shape_tensors, masks)``: node name -> NodeDef of the slim graph's rewritten
        shape nodes, and variable name -> 0/1 mask.  Channels pruned earlier stay pruned.

        A ``sparsity`` target missed by more than half a point (too little is prunable, channel
        steps too coarse, channels already pruned further, an incomplete MACs total) raises a
        ``Tf1PruneError`` that gives the closest reachable figure; with ``best_effort`` the closest
        is applied and a warning logged.

        Before the masks, the session's weights get what keeps the pruned model accurate without
        training (:func:`tf1prune.apply.refine.refine`): with ``calibration`` (feed dicts), bias
        compensation, least-squares reconstruction (``reconstruct``) and BatchNorm re-estimation, so
        fine-tuning starts from them; without, ``data_free`` (``"compensate"``, ``"synthesize"``,
        ``"none"``).  :attr:`refinement` says what was done.
        """
        if sum(x is not None for x in (sparsity, latency)) > 1:
            raise Tf1PruneError("give prune() a sparsity or a latency, not both")
        if latency is not None:
            return self._prune_to_latency(latency, batch, strategy, best_effort, max_shift, calibration, data_free,
                                          reconstruct)
        if sparsity is None and threshold is None:
            raise Tf1PruneError("prune() needs sparsity, latency or threshold")
        if sparsity is not None:
            sparsity = spec_lib.check_fraction("sparsity", sparsity)
        elif isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
            raise Tf1PruneError("threshold must be a number in [0, 1], got %r" % (threshold,))
        if strategy not in STRATEGIES or (strategy != "sensitivity" and sparsity is None):
            raise Tf1PruneError("strategy must be 'sensitivity', or 'uniform' or 'importance' with a sparsity")
        analysis, calibration, sens, order, cap = self._prepare(strategy, calibration)
        if sparsity is not None:
            counts = self._allocate(analysis, order, cap, sens, sparsity, max_shift, best_effort, strategy=strategy)
            tag = "sparsity_%g" % sparsity
        else:
            counts = _threshold_counts(analysis, sens, threshold, self.channel_divisible)
            counts = {gid: min(c, (cap or {}).get(gid, c)) for gid, c in counts.items()}
            tag = "threshold_%g" % threshold
        spec = spec_lib.spec_from_counts(analysis, order, counts, self.criterion, self.channel_divisible)
        self._refined(spec, calibration, data_free, reconstruct)
        return self._save_spec(spec, tag)

    def _prepare(self, strategy, calibration):
        """``(analysis, calibration batches, sensitivity or None, ranking, cap)`` for a prune."""
        analysis = self._refresh()
        if calibration is not None:
            calibration = self.criterion_data = calibrate.feed_batches(calibration)
        sens = self._sensitivity(analysis) if strategy == "sensitivity" else None
        order, cap = self._pruned_ranking(analysis)
        return analysis, calibration, sens, order, cap

    def _allocate(self, analysis, order, cap, sens, sparsity, max_shift, best_effort, cost="macs", strategy="uniform",
                  rounding=None):
        """Per-group counts removing ``sparsity`` of ``cost``: uniform, by criterion importance, or by
        sensitivity (kept only when it scores at least as well as uniform); multiples of ``rounding``
        (default: the runner's ``channel_divisible``)."""
        rounding = rounding or self.channel_divisible
        if strategy == "importance":
            counts = allocation.importance_allocation(analysis, order, sparsity, rounding, cap, max_shift, cost=cost)
        elif sens is None:
            counts = allocation.solve_sparsity(analysis, order, sparsity, rounding, cap=cap, cost=cost)
        else:
            curves = {g.id: sens.curve(g.id) for g in analysis.groups if g.prunable}
            counts = allocation.sensitivity_allocation(analysis, order, curves, sparsity, rounding, cap, max_shift,
                                                       cost=cost)
            counts = self._checked_against_uniform(analysis, order, counts, sparsity, cap, cost)
        problem = allocation.target_problem(analysis, order, counts, sparsity, cap, cost=cost)
        if problem and not best_effort:
            raise Tf1PruneError(problem + " (prune(..., best_effort=True) accepts the closest)")
        if problem:
            tf.logging.warning("prune: %s", problem)
        return counts

    def _prune_to_latency(self, latency, batch, strategy, best_effort, max_shift, calibration, data_free,
                          reconstruct):
        """``prune(latency=...)``: the allocation on the latency model of this session's graph, its slim
        graph measured against the original and re-fitted on a miss (:mod:`tf1prune.workflows.latency_target`)."""
        from tf1prune.workflows.latency_target import meet_latency
        if strategy not in STRATEGIES:
            raise Tf1PruneError("strategy must be one of %s" % ", ".join(STRATEGIES))
        latency = spec_lib.check_fraction("latency", latency)
        analysis, calibration, sens, order, cap = self._prepare(strategy, calibration)
        # "auto": the rounding timed at this batch (a kernel's slow channel counts depend on it)
        rounding = divisible.resolve(self.requested_divisible, analysis, divisible.ratio_for(1.0 - latency), batch)

        def choose(cost, sparsity):
            counts = self._allocate(analysis, order, cap, sens, sparsity, max_shift, True, cost, strategy, rounding)
            return spec_lib.spec_from_counts(analysis, order, counts, self.criterion, rounding)
        found = meet_latency(analysis, latency, choose, batch)
        self.latency_result = found
        tf.logging.info("prune: %s", found.summary(latency))
        if abs(found.measured / latency - 1) > 0.07:
            message = "latency %.3f of the original's, not %.2f" % (found.measured, latency)
            if not best_effort:
                raise Tf1PruneError("prune: the closest slim graph runs in " + message +
                                    " (prune(..., best_effort=True) accepts the closest)")
            tf.logging.warning("prune: %s", message)
        self._refined(found.spec, calibration, data_free, reconstruct)
        return self._save_spec(found.spec, "latency_%g" % latency)

    def _checked_against_uniform(self, analysis, order, counts, sparsity, cap, cost="macs"):
        """With :attr:`validation`, score the allocation and the uniform one, each after adaptive
        BatchNorm, and keep uniform unless the allocation scores better (given per-example scores:
        better in a paired test over the examples, :mod:`tf1prune.choose.compare`)."""
        uniform = allocation.solve_sparsity(analysis, order, sparsity, self.channel_divisible, cap=cap, cost=cost)
        if self.validation is None or uniform == counts:
            return counts
        engine = Engine(self.frozen, self.validation.eval_fn)
        with Patcher(analysis, calibration_data=self.validation.calibration_data) as patcher:
            candidates = (Candidate(k, patcher.patches(Choice.from_counts(analysis, order, c)))
                          for k, c in (("allocation", counts), ("uniform", uniform)))
            scores = {k: v for k, v, _ in engine.run(candidates)}
        mine, theirs = scores["allocation"], scores["uniform"]
        higher = self.validation.higher_is_better
        if mine is not None and theirs is None:
            return counts
        if mine is not None:
            examples = getattr(mine, "examples", None), getattr(theirs, "examples", None)
            if (compare.significantly_better(*examples, higher) if None not in examples
                    else (mine > theirs if higher else mine < theirs)):
                return counts
        tf.logging.info("prune: the uniform allocation scores %s, the sensitivity one %s: uniform kept",
                        scores["uniform"], scores["allocation"])
        return uniform

    def _sensitivity(self, analysis):
        sens = self.sens
        if sens is None:
            path = self._path(self.model_name + ".sens")
            if not os.path.exists(path):
                raise Tf1PruneError("no sensitivity analysis for %r: call ana() first" % self.model_name)
            sens = sensitivity.Sensitivity.load(path, analysis.digest())
        if sens.digest != analysis.digest():
            raise Tf1PruneError("the sensitivity analysis was made for another graph: run ana() again")
        return sens

    def _report_sensitivity(self):
        """This runner's last ``ana``, or its cached analysis when it fits the graph."""
        if self.sens is None and not os.path.exists(self._path(self.model_name + ".sens")):
            return []
        try:
            return [self._sensitivity(self.analysis)]
        except Tf1PruneError as e:
            tf.logging.warning("report: the sensitivity cache is left out: %s", e)
            return []


def _threshold_counts(analysis, sens, threshold, divisible):
    """Per group: the largest measured ratio whose drop (and every smaller one's) is within ``threshold``."""
    counts = {}
    for g in analysis.groups:
        if g.prunable:
            best = 0.0
            for r, d in sens.curve(g.id):
                if d > threshold:
                    break
                best = r
            counts[g.id] = allocation.keep_count(g.channels, best, allocation.unit_step(g, divisible))
    return counts
