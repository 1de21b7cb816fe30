"""Post-training refinement of a plan: what keeps a pruned graph accurate without any training.

:func:`refine` adds parameter updates to a plan:

- **no data**: ``data_free="compensate"`` (the default): bias compensation and BatchNorm variance
  correction from BatchNorm parameters (:mod:`tf1prune.apply.compensate`); ``"synthesize"``:
  calibration inputs made from the model's BatchNorm statistics
  (:mod:`tf1prune.apply.synthesize`, a minute or two on small models), then everything below;
  ``"none"``: nothing;
- **calibration data** (unlabelled inputs): bias compensation from the measured channel means,
  least-squares reconstruction of every layer that lost input channels
  (:mod:`tf1prune.apply.reconstruct`, unless ``reconstruct=False``), and every BatchNorm's
  statistics re-estimated for the result (without reconstruction, or after refitting all layers
  at once on big models: refitted one by one, the BatchNorms already see what they saw before);
- **distillation** (``distill=``, opt-in): then every kernel, bias and BatchNorm scale and offset
  trained towards the original graph's outputs on the calibration inputs, no labels
  (:mod:`tf1prune.apply.distill`, seconds on small models; on synthesized inputs it gains nothing).

Every applier applies the updates, so the sparse and the slim graph are the same model.

Example::

    plan, report = refine(analysis.plan(spec), calibration=batches)
    slim_gd = slim.apply_slim(plan)
"""
import collections

from tf1prune.apply import calibrate, compensate
from tf1prune.apply import reconstruct as reconstruct_lib
from tf1prune.core.rules import build
from tf1prune.errors import Tf1PruneError

Refinement = collections.namedtuple("Refinement", "compensated skipped reconstruction statistics distillation",
                                    defaults=(None,))
Refinement.__doc__ = ("What :func:`refine` did: parameters shifted by compensation, ``(layer, why)`` it skipped, the "
                      ":class:`~tf1prune.apply.reconstruct.Reconstruction` (or None), the BatchNorm statistics "
                      "re-estimated and the :class:`~tf1prune.apply.distill.Distillation` (or None).")


DATA_FREE = ("compensate", "synthesize", "none")


def refine(plan, calibration=None, data_free="compensate", reconstruct=True, graph_def=None, progress=None,
           compensate_bias=True, variance=True, synthetic=None, distill=None, **fit):
    """``(plan with updates, Refinement)`` (see the module docstring); ``graph_def``: the weights (default:
    the analysed graph); ``synthetic``: options of :func:`~tf1prune.apply.synthesize.synthesize_inputs`;
    ``distill``: None (no distillation) or options of :func:`~tf1prune.apply.distill.distill` (``{}``:
    its defaults); ``fit``: options of :func:`~tf1prune.apply.reconstruct.reconstruct`."""
    if data_free not in DATA_FREE:
        raise Tf1PruneError("data_free must be one of %s, got %r" % (", ".join(DATA_FREE), data_free))
    if distill is not None and calibration is None and data_free != "synthesize":
        raise Tf1PruneError("distillation needs inputs: calibration data or data_free='synthesize'")
    analysis = plan.analysis
    graph_def = graph_def or analysis.view.graph_def
    nodes = {n.name: n for n in graph_def.node}

    def values(name):
        return build.const_value(nodes[name])
    if not plan.pruned:
        return plan, Refinement([], [], None, {})
    batches = None if calibration is None else calibrate.feed_batches(calibration)
    if batches is None and data_free == "none":
        return plan, Refinement([], [], None, {})
    if batches is None and data_free == "synthesize":
        from tf1prune.apply.synthesize import synthesize_inputs
        batches = synthesize_inputs(analysis, graph_def=graph_def, progress=progress, **(synthetic or {}))
    updates, skipped = {}, []
    refitted = set(reconstruct_lib.refittable(plan)) if reconstruct and batches is not None else set()
    if compensate_bias:
        if batches is None:
            means = compensate.gaussian_moments(analysis, values)
        else:   # measured, for the layers reconstruction will not refit (it fits their shift itself)
            inputs = [compensate.input_tensor(analysis, layer) for layer in analysis.layers
                      if layer.kernel and layer.node not in refitted]
            means = compensate.measured_means(analysis, graph_def, batches, [t for t in inputs if t])
        updates, skipped = compensate.compensation(plan, means, values, variance, exclude=refitted)
    compensated = sorted(updates)
    plan = plan.with_updates(updates)
    if batches is None:
        return plan, Refinement(compensated, skipped, None, {})
    if reconstruct:
        result = reconstruct_lib.reconstruct(plan, batches, graph_def, values, progress=progress, **fit)
        plan, done = plan.with_updates(result.updates), Refinement(compensated, skipped, result, result.statistics)
    else:
        with calibrate.Calibrator(analysis, graph_def) as calibrator:
            statistics = calibrator.statistics(batches, plan.sparse_values(values, nodes))
        plan, done = plan.with_updates(statistics), Refinement(compensated, skipped, None, statistics)
    if distill is None:
        return plan, done
    from tf1prune.apply.distill import distill as distill_plan
    trained = distill_plan(plan, batches, graph_def, progress=progress, **distill)
    return plan.with_updates(trained.updates), done._replace(distillation=trained)

