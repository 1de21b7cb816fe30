"""Session-bound pruning with the API of the Vitis AI TF1 optimizer (``IterativePruningRunner``).

Example::

    runner = IterativePruningRunner("mnist", sess, {"input_1:0": tf.TensorSpec((1, 28, 28, 1))},
                                    ["dense/BiasAdd"])
    runner.ana(eval_fn)                        # eval_fn(frozen_graph_def) -> float, cached
    shape_tensors, masks = runner.prune(sparsity=0.5)
    ... fine-tune with any tf.compat.v1.train optimizer: pruned weights stay zero ...
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)
"""
import numbers
import os

import tensorflow.compat.v1 as tf

from tf1prune import allocation, calibrate, sensitivity, spec as spec_lib
from tf1prune.errors import Tf1PruneError
from tf1prune.evaluate import default_devices, evaluate
from tf1prune.session import DEFAULT_WORKSPACE, SessionPruner  # noqa: F401  (DEFAULT_WORKSPACE: compatibility)


class IterativePruningRunner(SessionPruner):
    """Analyse, prune in place, and export a session's model (see the module docstring).

    Args: as :class:`~tf1prune.session.SessionPruner`.
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1", channel_divisible=1):
        self.sens = None          # the last sensitivity analysis (ana)
        self._validation = None   # (eval_fn, calibration batches, higher_is_better) of ana, to check prune
        super().__init__(model_name, sess, input_specs, output_node_names, excludes, workspace, criterion,
                         channel_divisible)

    # --- ana --------------------------------------------------------------
    def ana(self, eval_fn, gpu_ids=None, checkpoint_interval=10, ratios=sensitivity.DEFAULT_RATIOS,
            higher_is_better=True, executor=None, recompute=False, progress=True,
            calibration_data=None):
        """Sensitivity analysis: ``eval_fn(frozen_graph_def) -> float`` for every group and ratio.

        Results are cached in ``<workspace>/<model_name>.sens`` and resumed; ``gpu_ids`` with
        several devices (or an ``executor``) evaluates in parallel worker processes.  With
        ``calibration_data`` (feed dicts, or a callable returning them) every candidate's
        BatchNorm statistics are re-estimated on it before ``eval_fn`` sees it (adaptive BatchNorm,
        as in EagleEye); the baseline too.  ``progress``: a bar with an ETA on a terminal (see
        :mod:`tf1prune.progress`).
        """
        devices = list(gpu_ids) if gpu_ids else default_devices()
        os.makedirs(self.workspace, exist_ok=True)
        analysis = self._refresh()
        sens = sensitivity.Sensitivity.open(self._path(self.model_name + ".sens"), analysis.digest(), ratios,
                                            higher_is_better, recompute, calibrated=calibration_data is not None)
        if calibration_data is not None:
            calibration_data = calibrate.feed_batches(calibration_data)
            self._validation = (eval_fn, calibration_data, higher_is_better)
        patcher = sensitivity.Patcher(analysis, self._order(analysis), self.channel_divisible,
                                      calibration_data=calibration_data)
        try:
            sens = sensitivity.run(sens, self.frozen, patcher, eval_fn, devices, executor, checkpoint_interval,
                                   progress, self.workspace)
        finally:
            patcher.close()
        failed = sum(len(v) for v in sens.errors.values())
        if failed:
            tf.logging.warning("ana: %d evaluations failed (see %s 'errors'): %s", failed, sens.path,
                               "; ".join("group %s ratio %s: %s" % (g, r, m)
                                         for g, errs in sens.errors.items() for r, m in errs.items())[:500])
        self.sens = sens
        return sens

    # --- prune ------------------------------------------------------------
    def prune(self, sparsity=None, threshold=None, max_attemp=10, max_attempt=None, strategy="sensitivity",
              best_effort=False, max_shift=0.1):
        """Prune in place to a MACs ``sparsity`` or a relative metric-drop ``threshold``.

        ``sparsity`` wins over ``threshold``.  ``strategy="sensitivity"`` (default) prunes the
        groups that ``ana`` found least sensitive most; ``"uniform"`` prunes the same ratio of
        every group (no ``ana`` needed; see BENCHMARKS.md for when it fine-tunes better).  ``max_attemp``/``max_attempt`` are accepted for
        compatibility: the MACs target is solved on an exact model of the slim graph, no retries.
        Returns ``(shape_tensors, masks)``: node name -> NodeDef of the slim graph's rewritten
        shape nodes, and variable name -> 0/1 mask.  Channels pruned earlier stay pruned.

        A ``sparsity`` target missed by more than half a point (too little is prunable, channel
        steps too coarse, channels already pruned further, an incomplete MACs total) raises a
        ``Tf1PruneError`` that gives the closest reachable figure; with ``best_effort`` the closest
        is applied and a warning logged.
        """
        if sparsity is None and threshold is None:
            raise Tf1PruneError("prune() needs sparsity or threshold")
        if sparsity is not None:
            sparsity = spec_lib.check_fraction("sparsity", sparsity)
        elif isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
            raise Tf1PruneError("threshold must be a number in [0, 1], got %r" % (threshold,))
        if strategy not in ("sensitivity", "uniform") or (strategy == "uniform" and sparsity is None):
            raise Tf1PruneError("strategy must be 'sensitivity', or 'uniform' with a sparsity")
        analysis = self._refresh()
        sens = self._sensitivity(analysis) if strategy == "sensitivity" else None
        pruned = None if self.spec is None else ~self.spec.keep_mask(analysis)
        order = self._order(analysis, pruned)
        cap = {g["id"]: len(g["keep"]) for g in self.spec.groups} if self.spec is not None else None
        if sparsity is not None:
            if sens is None:
                counts = allocation.solve_sparsity(analysis, order, sparsity, self.channel_divisible, cap=cap)
            else:
                curves = {g.id: sens.curve(g.id) for g in analysis.groups if g.prunable}
                counts = allocation.sensitivity_allocation(analysis, order, curves, sparsity, self.channel_divisible,
                                                           cap, max_shift)
                counts = self._checked_against_uniform(analysis, order, counts, sparsity, cap)
            problem = allocation.target_problem(analysis, order, counts, sparsity, cap)
            if problem and not best_effort:
                raise Tf1PruneError(problem + " (prune(..., best_effort=True) accepts the closest)")
            if problem:
                tf.logging.warning("prune: %s", problem)
            tag = "sparsity_%g" % sparsity
        else:
            counts = _threshold_counts(analysis, sens, threshold, self.channel_divisible)
            counts = {gid: min(c, (cap or {}).get(gid, c)) for gid, c in counts.items()}
            tag = "threshold_%g" % threshold
        return self._save_spec(spec_lib.spec_from_counts(analysis, order, counts, self.criterion,
                                                         self.channel_divisible), tag)

    def _checked_against_uniform(self, analysis, order, counts, sparsity, cap):
        """With the eval_fn and calibration data of ``ana`` (this process), score the allocation and the
        uniform one, each after adaptive BatchNorm, and keep uniform unless the allocation scores better."""
        uniform = allocation.solve_sparsity(analysis, order, sparsity, self.channel_divisible, cap=cap)
        if self._validation is None or uniform == counts:
            return counts
        eval_fn, batches, higher = self._validation
        patcher = sensitivity.Patcher(analysis, order, self.channel_divisible, calibration_data=batches)
        try:
            tasks = ((k, patcher.keep_patches(allocation.keep_mask(analysis, order, c)))
                     for k, c in (("allocation", counts), ("uniform", uniform)))
            scores = {k: v for k, v, _ in evaluate(tasks, self.frozen, eval_fn)}
        finally:
            patcher.close()
        better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
        if scores["allocation"] is not None and (scores["uniform"] is None
                                                 or better(scores["allocation"], scores["uniform"])):
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
            counts[g.id] = allocation.keep_count(g.channels, best, divisible)
    return counts
