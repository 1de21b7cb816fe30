"""What the session workflows share: :class:`SessionModel` (a session's model frozen and analysed)
and :class:`SessionPruner` (masks, specs in a workspace, BatchNorm recalibration, slim export).

The session's graph is frozen (``convert_variables_to_constants``) and analysed; a frozen
constant carries its variable's name, so bindings map to variables.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import tfcompat
from tf1prune.apply import calibrate, masks as masks_lib, slim
from tf1prune.choose import allocation, criteria, divisible, spec as spec_lib
from tf1prune.core import flops, zeros as zeros_lib
from tf1prune.core.analysis import analyze
from tf1prune.core.choice import Choice
from tf1prune.core.graph import normalize_input_specs
from tf1prune.core.names import node_of
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write

DEFAULT_WORKSPACE = ".tf1prune"


class SessionModel:
    """A model in a TF1 session: its inputs, outputs and variables, frozen and analysed on demand.

    Args:
      sess: a session holding the graph and initialised variables.
      input_specs: input tensor name -> ``tf.TensorSpec`` (or ``(shape, dtype)``).
      output_node_names: output nodes; their channels are never pruned.
      excludes: nodes whose output channels are not pruned.
    """

    def __init__(self, sess, input_specs, output_node_names, excludes=()):
        self.sess = sess
        self.input_specs = normalize_input_specs(input_specs)
        self.output_node_names = [node_of(n) for n in output_node_names]
        self.excludes = list(excludes or ())
        names = {op.name for op in sess.graph.get_operations()}
        for name in self.output_node_names + [node_of(n) for n in self.input_specs] + self.excludes:
            if node_of(name) not in names:
                raise Tf1PruneError("node %r is not in the graph" % name)
        self.variables = {v.op.name: v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}

    def frozen_graph_def(self, sess=None, graph_def=None):
        """The graph (default: the session's) frozen with the variables of ``sess`` as they are now."""
        graph_def = graph_def or (sess or self.sess).graph.as_graph_def()
        return tfcompat.freeze_session(sess or self.sess, graph_def, self.output_node_names)

    def analyze(self, frozen, excludes=None):
        """The analysis of a frozen graph of this model."""
        return analyze(frozen, self.input_specs, self.output_node_names, self.excludes if excludes is None else excludes)


class SessionPruner(SessionModel):
    """What the session runners share: the frozen analysis of the session, masks that keep pruned
    weights zero, specs in the workspace, BatchNorm recalibration and the slim export.

    Args:
      model_name: names the result and spec files in the workspace.
      sess, input_specs, output_node_names, excludes: as :class:`SessionModel`.
      workspace: folder of the result and ``.spec`` files (default ``./.tf1prune``).
      criterion: a channel criterion of :mod:`tf1prune.choose.criteria` (``l1`` default, ``l2``, ``bn_gamma``,
        ``contribution``; ``activation`` and ``reconstruction`` read the calibration batches last given
        to ``ana``, ``search`` or ``prune``).
      channel_divisible: kept channel counts are multiples of this; ``"auto"``: the rounding that
        runs fastest on this machine (:mod:`tf1prune.choose.divisible`).

    State (all public): ``spec`` (what is pruned now, or None), ``analysis`` and ``frozen`` (the
    session's graph at the last call), ``mask_set`` (the masks that keep pruned weights zero).
    """

    def __init__(self, model_name, sess, input_specs, output_node_names, excludes=(), workspace=None,
                 criterion="l1", channel_divisible=1):
        super().__init__(sess, input_specs, output_node_names, excludes)
        self.model_name = model_name
        self.workspace = workspace or os.path.join(os.getcwd(), DEFAULT_WORKSPACE)
        criteria.lookup(criterion)              # an unknown criterion fails before any work
        divisible.check(channel_divisible)      # so does a bad rounding
        self.criterion = criterion
        self.mask_set = None
        self.refinement = None   # what the last prune() wrote besides the masks (tf1prune.apply.refine)
        self.criterion_data = None   # the latest calibration batches: what data-driven criteria read
        self.frozen = self.analysis = None
        self._loader = None    # assigns variables (recalibrate, restored weights)
        masks_lib.install()
        self._refresh()
        self.requested_divisible = channel_divisible
        self.channel_divisible = divisible.resolve(channel_divisible, self.analysis)
        self.spec = self._recover_spec()
        if self.spec is not None:
            self._apply(self.spec)

    # --- graph ------------------------------------------------------------
    def _refresh(self):
        """Freeze the session as it is now and analyse it."""
        self.frozen = self.frozen_graph_def()
        self.analysis = self.analyze(self.frozen)
        return self.analysis

    def _path(self, name):
        return os.path.join(self.workspace, name)

    def _load(self, values):
        """Set variables ``{name: value}`` in the session."""
        if self._loader is None:
            self._loader = tfcompat.VariableLoader(self.sess.graph)
        self._loader.load(self.sess, {self.variables[n]: v for n, v in values.items()})

    def recalibrate(self, calibration_data):
        """Re-estimate the session's BatchNorm moving statistics exactly from ``calibration_data``
        (feed dicts, or a callable returning them): before fine-tuning a pruned model, or for a Keras
        model whose moving averages lag.  Returns the names of the variables set.

        Example::

            runner.prune(sparsity=0.5)
            runner.recalibrate([{"input_1:0": x[i:i + 128]} for i in range(0, 1280, 128)])
        """
        with calibrate.Calibrator(self._refresh()) as calibrator:
            stats = calibrator.statistics(calibration_data)
        values = {n: v for n, v in stats.items() if n in self.variables}
        self._load(values)
        return sorted(values)

    def _ranking(self, analysis, pruned=None):
        """The units of every prunable group by ``criterion``, already ``pruned`` ones last."""
        return allocation.rank_units(analysis, criteria.unit_scores(analysis, self.criterion,
                                                                    calibration=self.criterion_data), pruned)

    def _pruned_ranking(self, analysis):
        """The ranking with the channels pruned now last, and each group's cap (its kept count now)."""
        if self.spec is None:
            return self._ranking(analysis), None
        return self._ranking(analysis, ~self.spec.mask(analysis)), self.spec.counts(analysis)

    def apply_spec(self, spec, tag="spec"):
        """Prune the session to ``spec`` (a :class:`~tf1prune.Spec` or a spec file made for this graph),
        kept as ``<model>_<tag>.spec``; returns ``(shape_tensors, masks)`` like ``prune``.

        Example::

            runner.apply_spec("other_run/mnist_sparsity_0.5.spec")
        """
        if isinstance(spec, str):
            spec = spec_lib.Spec.load(spec)
        spec.mask(self._refresh())   # refuses a spec made for another graph
        return self._save_spec(spec, tag)

    def _refined(self, spec, calibration, data_free, reconstruct):
        """Write what keeps the pruned session accurate before training into its variables (bias
        compensation, reconstructed kernels, re-estimated BatchNorm: :func:`tf1prune.apply.refine.refine`
        on the session's weights now); returns what was done."""
        from tf1prune.apply.refine import refine
        plan, done = refine(self.analysis.plan(spec), calibration, data_free, reconstruct, graph_def=self.frozen)
        self._load({name: value for name, value in plan.updates.items() if name in self.variables})
        self.refinement = done
        return done

    def _save_spec(self, spec, tag):
        """Apply ``spec`` and keep it as ``<model>_<tag>.spec`` and the workspace's latest spec."""
        self.spec = spec
        os.makedirs(self.workspace, exist_ok=True)
        path = self._path("%s_%s.spec" % (self.model_name, tag))
        spec.save(path)
        atomic_write(self._path("latest_spec"), path + "\n")
        return self._apply(spec)

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
        pruned = zeros_lib.zeroed_units(self.analysis, criteria.const_values(self.analysis))
        if not pruned.any():
            return None
        order = self._ranking(self.analysis, pruned)
        counts = {gid: int((~pruned[np.array(self.analysis.groups[gid].units)]).sum()) for gid in order}
        return spec_lib.spec_from_counts(self.analysis, order, counts, self.criterion, self.channel_divisible)

    # --- export -----------------------------------------------------------
    def get_slim_graph_def(self, shape_tensors=None, masks=None):
        """Frozen slim GraphDef of the session now (fine-tuned weights included)."""
        analysis = self._refresh()
        if self.spec is None:
            raise Tf1PruneError("nothing is pruned: call prune() first")
        choice = self.spec
        if masks is not None:   # (variable -> 0/1), as prune() returned them: their zero channels go too
            shape_of = lambda n: self.variables[n].shape.as_list() if n in self.variables \
                else analysis.view.shape(n + ":0")  # noqa: E731
            values = zeros_lib.mask_values(analysis, masks, shape_of)
            keep = self.spec.mask(analysis) & zeros_lib.find_zero_channels(analysis, values).keep
            choice = Choice.from_mask(analysis, zeros_lib.keep_segments(analysis, keep))
        return slim.apply_slim(analysis.plan(choice))

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

    def report(self, directory=None, sensitivity=None, sizes=None, latency_ms=None, title=None):
        """MACs/params before and after the current spec: ``(before, after)`` reports.

        With ``directory``, also writes the visual report there (``index.html`` and its figures; needs
        ``pip install "tf1prune[report]"``): per-layer channels, MACs and params, blocks, unprunable groups,
        totals, and the sensitivity curves of ``sensitivity`` (Sensitivity objects or ``.sens`` paths;
        default: this runner's analysis, if any).  ``sizes`` (default: the frozen graph's serialized
        size before and after) and ``latency_ms``: ``(before, after)``, see :func:`tf1prune.write_report`.

        Example::

            before, after = runner.report("report/", latency_ms=(3.1, 1.7))
        """
        choice = self.spec if self.spec is not None else Choice.everything(self.analysis)
        before, after = flops.count(self.analysis), flops.count(self.analysis, choice)
        if directory is not None:
            from tf1prune import report as report_lib
            from tf1prune.workflows import sensitivity as sensitivity_lib
            report_lib.require_matplotlib()
            if sensitivity is None:
                sensitivity = self._report_sensitivity()
            digest = self.analysis.digest()
            sensitivity = [sensitivity_lib.Sensitivity.load(s, digest) if isinstance(s, str) else s
                           for s in (sensitivity if isinstance(sensitivity, (list, tuple)) else [sensitivity])]
            if any(s.digest != digest for s in sensitivity):
                raise Tf1PruneError("a sensitivity analysis given to report() was made for another graph")
            if sizes is None:
                sizes = {"frozen graph": tuple(slim.apply_slim(self.analysis.plan(c), validate=False).ByteSize()
                                               for c in (None, choice))}
            report_lib.write_report(directory, self.analysis, choice, sensitivity, before, after, sizes, latency_ms,
                                    title or "tf1prune pruning report: %s" % self.model_name)
        return before, after

    def _report_sensitivity(self):
        """The sensitivity analyses the report draws by default (none here)."""
        return []
