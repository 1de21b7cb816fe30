"""Session-bound pruning with the API of the Vitis AI TF1 optimizer (``IterativePruningRunner``).

Example::

    runner = IterativePruningRunner("mnist", sess, {"input_1:0": tf.TensorSpec((1, 28, 28, 1))},
                                    ["dense/BiasAdd"])
    runner.ana(eval_fn)                        # eval_fn(frozen_graph_def) -> float, cached
    shape_tensors, masks = runner.prune(sparsity=0.5)
    ... fine-tune with any tf.compat.v1.train optimizer: pruned weights stay zero ...
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)

The session's graph is frozen (``convert_variables_to_constants``) and analysed;
a frozen constant carries its variable's name, so bindings map to variables.
"""
import numbers
import os

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import allocation, flops, importance, masks as masks_lib, sensitivity, slim, spec as spec_lib
from tf1prune import tfcompat, zeros as zeros_lib
from tf1prune.analysis import analyze
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write
from tf1prune.graph import normalize_input_specs
from tf1prune.names import node_of

DEFAULT_WORKSPACE = ".tf1prune"


class IterativePruningRunner:
    """Analyse, prune in place, and export a session's model (see the module docstring).

    Args:
      model_name: names the cache and spec files in the workspace.
      sess: a session holding the graph and initialised variables.
      input_specs: input tensor name -> ``tf.TensorSpec`` (or ``(shape, dtype)``).
      output_node_names: output nodes; their channels are never pruned.
      excludes: nodes whose output channels are not pruned.
      workspace: folder of the ``.sens`` cache and ``.spec`` files (default ``./.tf1prune``).
      criterion: channel importance, ``l1`` (default), ``l2`` or ``bn_gamma``.
      channel_divisible: kept channel counts are multiples of this (16 suits x86 CPUs).
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1", channel_divisible=1):
        self.model_name, self.sess = model_name, sess
        self.input_specs = normalize_input_specs(input_specs)
        self.output_node_names = [node_of(n) for n in output_node_names]
        self.excludes = list(excludes or ())
        self.workspace = workspace or os.path.join(os.getcwd(), DEFAULT_WORKSPACE)
        self.criterion, self.channel_divisible = criterion, channel_divisible
        names = {op.name for op in sess.graph.get_operations()}
        for name in self.output_node_names + [node_of(n) for n in self.input_specs] + list(self.excludes):
            if node_of(name) not in names:
                raise Tf1PruneError("node %r is not in the graph" % name)
        self.variables = {v.op.name: v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
        self.sens = None       # the last sensitivity analysis (ana)
        self.mask_set = None   # the session's masks, once something is pruned
        self.frozen = self.analysis = None
        masks_lib.install()
        self._refresh()
        self.spec = self._recover_spec()
        if self.spec is not None:
            self._apply(self.spec)

    # --- graph ------------------------------------------------------------
    def frozen_graph_def(self):
        """The session's graph frozen as it is now (same shapes, current weights)."""
        return tfcompat.freeze_session(self.sess, self.sess.graph.as_graph_def(), self.output_node_names)

    def _refresh(self):
        """Freeze the session as it is now and analyse it."""
        self.frozen = self.frozen_graph_def()
        self.analysis = analyze(self.frozen, self.input_specs, self.output_node_names, self.excludes)
        return self.analysis

    def _path(self, name):
        return os.path.join(self.workspace, name)

    # --- ana --------------------------------------------------------------
    def ana(self, eval_fn, gpu_ids=None, checkpoint_interval=10, ratios=sensitivity.DEFAULT_RATIOS,
            higher_is_better=True, executor=None, recompute=False, progress=sensitivity.print_progress):
        """Sensitivity analysis: ``eval_fn(frozen_graph_def) -> float`` for every group and ratio.

        Results are cached in ``<workspace>/<model_name>.sens`` and resumed; ``gpu_ids`` with
        several devices (or an ``executor``) evaluates in parallel worker processes.
        """
        devices = list(gpu_ids) if gpu_ids else _default_devices()
        os.makedirs(self.workspace, exist_ok=True)
        analysis = self._refresh()
        sens = sensitivity.Sensitivity.open(self._path(self.model_name + ".sens"), analysis.digest(), ratios,
                                            higher_is_better, recompute)
        patcher = sensitivity.Patcher(analysis, self._order(analysis), self.channel_divisible)
        sens = sensitivity.run(sens, self.frozen, patcher, eval_fn, devices, executor, checkpoint_interval,
                               progress, self.workspace)
        failed = sum(len(v) for v in sens.errors.values())
        if failed:
            tf.logging.warning("ana: %d evaluations failed (see %s 'errors'): %s", failed, sens.path,
                               "; ".join("group %s ratio %s: %s" % (g, r, m)
                                         for g, errs in sens.errors.items() for r, m in errs.items())[:500])
        self.sens = sens
        return sens

    def _order(self, analysis, pruned=None):
        scores = importance.unit_scores(analysis, self.criterion, importance.const_values(analysis))
        return allocation.rank_units(analysis, scores, pruned)

    # --- prune ------------------------------------------------------------
    def prune(self, sparsity=None, threshold=None, max_attemp=10, max_attempt=None, strategy="sensitivity",
              best_effort=False):
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
            counts = allocation.solve_sparsity(analysis, order, sparsity, self.channel_divisible,
                                               sens and _sensitivity_counts(analysis, sens, self.channel_divisible),
                                               cap)
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
        self.spec = spec_lib.spec_from_counts(analysis, order, counts, self.criterion, self.channel_divisible)
        os.makedirs(self.workspace, exist_ok=True)
        path = self._path("%s_%s.spec" % (self.model_name, tag))
        self.spec.save(path)
        atomic_write(self._path("latest_spec"), path + "\n")
        return self._apply(self.spec)

    def _sensitivity(self, analysis):
        sens = self.sens
        if sens is None:
            path = self._path(self.model_name + ".sens")
            if not os.path.exists(path):
                raise Tf1PruneError("no sensitivity analysis for %r: call ana() first" % self.model_name)
            sens = sensitivity.Sensitivity.open(path, analysis.digest(), higher_is_better=_higher(path))
        if sens.digest != analysis.digest():
            raise Tf1PruneError("the sensitivity analysis was made for another graph: run ana() again")
        return sens

    def _apply(self, spec):
        """Zero the pruned channels in the session, keep them zero, and return (shape_tensors, masks)."""
        plan = self.analysis.plan(spec)
        masks = {name: plan.mask(name, self.variables[name].shape.as_list())
                 for name, slices in plan.params.items()
                 if name in self.variables and any(s.role.zeroed for s in slices)}
        mask_set = masks_lib.MaskSet.for_graph(self.sess.graph, {n: self.variables[n] for n in masks})
        mask_set.load(self.sess, masks)
        mask_set.attach(self.sess)
        self.mask_set = mask_set
        changed = plan.shape_nodes()
        shape_tensors = {n.name: n for n in slim.apply_slim(plan).node if n.name in changed}
        return shape_tensors, {n: m for n, m in masks.items() if not m.all()}

    def _recover_spec(self):
        """After a restart: the latest spec of this model if it fits the graph, else the zeroed channels."""
        latest = self._path("latest_spec")
        if os.path.exists(latest):
            with open(latest) as f:
                path = f.read().strip()
            if os.path.basename(path).startswith(self.model_name + "_") and os.path.exists(path):
                spec = spec_lib.Spec.load(path)
                if spec.digest == self.analysis.digest():
                    return spec
        pruned = zeros_lib.zeroed_units(self.analysis, importance.const_values(self.analysis))
        if not pruned.any():
            return None
        order = self._order(self.analysis, pruned)
        counts = {gid: int((~pruned[np.array(self.analysis.groups[gid].units)]).sum()) for gid in order}
        return spec_lib.spec_from_counts(self.analysis, order, counts, self.criterion, self.channel_divisible)

    # --- export -----------------------------------------------------------
    def get_slim_graph_def(self, shape_tensors=None, masks=None):
        """Frozen slim GraphDef of the session now (fine-tuned weights included)."""
        analysis = self._refresh()
        if self.spec is None:
            raise Tf1PruneError("nothing is pruned: call prune() first")
        keep = self.spec.keep_mask(analysis)
        if masks is not None:   # (variable -> 0/1), as prune() returned them: their zero channels go too
            shape_of = lambda n: self.variables[n].shape.as_list() if n in self.variables \
                else analysis.view.shape(n + ":0")  # noqa: E731
            values = zeros_lib.mask_values(analysis, masks, shape_of)
            keep = zeros_lib.keep_segments(analysis, keep & zeros_lib.find_zero_channels(analysis, values).keep)
        return slim.apply_slim(analysis.plan(keep))

    def _masks(self):
        if self.mask_set is None:
            raise Tf1PruneError("nothing is pruned: call prune() first")
        return self.mask_set

    def mask_hook(self):
        """A SessionRunHook that keeps pruned weights zero (MonitoredTrainingSession, Estimator)."""
        return masks_lib.MaskHook(self._masks())

    @property
    def apply_masks_op(self):
        """Op that zeroes the pruned weights again, for custom training loops."""
        return self._masks().apply_op

    def report(self):
        """MACs/params before and after the current spec."""
        keep = self.spec.keep_mask(self.analysis) if self.spec is not None else None
        return flops.count(self.analysis), flops.count(self.analysis, keep)


def _higher(path):
    import json
    with open(path) as f:
        return bool(json.load(f).get("higher_is_better", True))


def _envelope(sens, gid):
    """Ratios and the running maximum of their drops, starting at (0, 0), strictly increasing."""
    ratios, drops, worst = [0.0], [0.0], 0.0
    for r, d in sens.curve(gid):
        worst = max(worst, d)
        ratios.append(r)
        drops.append(worst + 1e-9 * r)
    return np.array(ratios), np.array(drops)


def _sensitivity_counts(analysis, sens, divisible):
    """``t`` in [0, 1] -> per-group counts: each group pruned as far as its drop stays within ``t``-scaled level."""
    envelopes = {g.id: _envelope(sens, g.id) for g in analysis.groups if g.prunable}
    finite = [d[np.isfinite(d)].max() for _, d in envelopes.values()]
    top = max(finite) if finite else 1.0

    def counts_at(t):
        level = t * top
        out = {}
        for g in analysis.groups:
            if g.prunable:
                ratios, drops = envelopes[g.id]
                ok = np.isfinite(drops)
                r = float(np.interp(level, drops[ok], ratios[ok])) if ok.sum() > 1 else 0.0
                out[g.id] = allocation.keep_count(g.channels, r, divisible)
        return out
    return counts_at


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


def _default_devices():
    gpus = tf.config.experimental.list_physical_devices("GPU")
    return ["/GPU:%d" % i for i in range(len(gpus))] or ["/CPU:0"]
