"""Workflows on a frozen graph alone (no session, no labels): the label-free one-step search and the
label-free sensitivity analysis.

Candidates at a budget are scored by their :class:`Agreement` with the original graph's outputs on
unlabelled calibration inputs, each with its BatchNorm re-estimated on those inputs.  What is
returned is what was scored: the best candidate's spec *and* its re-estimated statistics, which
:func:`tf1prune.apply.calibrate.apply_statistics` writes into the graph before it is slimmed.

Example::

    found = search_graph_def(tf1prune.analyze(gd, specs, ["logits"]), 0.5, batches, num_subnet=20)
    calibrated = calibrate.apply_statistics(gd, found.statistics)
    slim_gd = slim.apply_slim(analysis.plan(found.spec), graph_def=calibrated)

    curves, order = label_free_sensitivity(analysis, batches)      # then
    counts = allocation.sensitivity_allocation(analysis, order, curves, 0.2)
"""
import collections
import os
import tempfile

import numpy as np

from tf1prune import progress as progress_lib
from tf1prune.apply import calibrate
from tf1prune.apply.patches import Patcher
from tf1prune.choose import allocation, costs, criteria, divisible, spec as spec_lib
from tf1prune.choose.search import sample_candidates
from tf1prune.core.choice import Choice
from tf1prune.core.graph import run_on_batches
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows import sensitivity
from tf1prune.workflows.engine import Candidate, Engine

METRICS = ("kl", "top1", "mse")
FrozenSearch = collections.namedtuple("FrozenSearch", "spec results statistics warning")
FrozenSearch.__doc__ = ("The best candidate's ``spec`` and BatchNorm ``statistics`` (constant name -> value), every "
                        "candidate's ``(counts, score or None, error)``, and a ``warning`` when the target was "
                        "moved (best effort).")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Agreement:
    """A label-free score: how close a graph's outputs are to the original's on calibration inputs
    (higher is better): minus the mean KL divergence of the softmax of the first output (``kl``), the
    share of equal arg-max (``top1``), or minus the mean squared error relative to the original's
    mean square (``mse``)."""

    def __init__(self, graph_def, batches, output_node_names, metric="kl"):
        if metric not in METRICS:
            raise Tf1PruneError("unknown metric %r (choose from %s)" % (metric, ", ".join(METRICS)))
        self.batches, self.metric = batches, metric
        self.output = output_node_names[0] if ":" in output_node_names[0] else output_node_names[0] + ":0"
        self.reference = self.outputs(graph_def)
        if metric != "mse" and (self.reference.ndim != 2 or self.reference.shape[1] < 2):
            raise Tf1PruneError("metric %r needs a [batch, classes] output, %r is %s: use mse"
                                % (metric, self.output, list(self.reference.shape)))

    def outputs(self, graph_def):
        return run_on_batches(graph_def, [self.output], self.batches)[0].astype(np.float64)

    def __call__(self, graph_def):
        out, ref = self.outputs(graph_def), self.reference
        if self.metric == "top1":
            return float(np.mean(out.argmax(-1) == ref.argmax(-1)))
        if self.metric == "mse":
            return -float(np.mean((out - ref) ** 2) / max(np.mean(ref ** 2), 1e-12))
        p, q = _softmax(ref), _softmax(out)
        return -float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=-1)))


def _candidates(analysis, order, sparsity, count, requested, spread, seed, best_effort, cost):
    """``(candidates, rounding, sparsity, warning)``: the roundings of ``requested`` are tried coarsest
    first (``"auto"`` steps down); with ``best_effort`` an unreachable target moves to the closest
    reachable one."""
    problem = None
    for rounding in divisible.steps(requested, divisible.resolve(requested, analysis, divisible.ratio_for(sparsity))):
        try:
            return sample_candidates(analysis, order, sparsity, count, rounding, spread, seed, cost=cost), rounding, \
                sparsity, None
        except Tf1PruneError as e:
            problem = e
    if not best_effort:
        raise Tf1PruneError("%s (best effort searches at the closest reachable target)" % problem)
    model = costs.make(cost, analysis, order)
    if model.problem:
        raise Tf1PruneError(model.problem)
    closest = allocation.solve_sparsity(analysis, order, sparsity, rounding, cost=cost)
    reached = 1.0 - model(closest) / model.total
    return sample_candidates(analysis, order, reached, count, rounding, spread, seed, cost=cost), rounding, reached, \
        "%s; searched at %.2f%% instead" % (problem, 100 * reached)


def search_graph_def(analysis, sparsity, calibration_data, num_subnet=20, metric="kl", criterion="l1",
                     channel_divisible=1, spread=0.3, seed=0, progress=None, best_effort=False, cost="macs"):
    """Label-free one-step search on a frozen graph: candidates at ``sparsity`` fewer ``cost``, each
    with its BatchNorm recalibrated on ``calibration_data`` and scored by :class:`Agreement` with the
    original outputs.  Returns a :class:`FrozenSearch`: the best spec and its statistics (what was
    scored), and every candidate's result."""
    batches = calibrate.feed_batches(calibration_data)
    order = allocation.rank_units(analysis, criteria.unit_scores(analysis, criterion, calibration=batches))
    candidates, rounding, _, warning = _candidates(analysis, order, sparsity, num_subnet, channel_divisible,
                                                         spread, seed, best_effort, cost)
    score = Agreement(analysis.view.graph_def, batches, analysis.view.output_node_names, metric)
    engine = Engine(analysis.view.graph_def, score)
    results, best = [None] * len(candidates), (None, None, None)   # (score, -index, statistics) of the best
    wanted = set(_statistics(analysis))
    steps = progress_lib.Steps(len(candidates), progress, "search")
    with Patcher(analysis, calibration_data=batches) as patcher:
        made = {}

        def patch(i):
            made[i] = patcher.patches(Choice.from_counts(analysis, order, candidates[i]))
            return made[i]
        for i, value, error in engine.run(Candidate(i, patch(i)) for i in range(len(candidates))):
            results[i] = (candidates[i], value, error)
            patches = made.pop(i)
            if value is not None and (best[0] is None or (value, -i) > best[:2]):
                best = (value, -i, {n: v for n, v in patches.items() if n in wanted})
            steps.tick("candidate %d" % i)
    if best[0] is None:
        raise Tf1PruneError("no candidate could be scored: %s" % results[0][2])
    spec = spec_lib.spec_from_counts(analysis, order, candidates[-best[1]], criterion, rounding)
    return FrozenSearch(spec, results, best[2], warning)


def _statistics(analysis):
    """The moving-statistics constants of the analysed BatchNorms."""
    return [name for site in analysis.batch_norms for name in (site.mean, site.variance) if name]


def label_free_sensitivity(analysis, calibration_data, metric="kl", criterion="l1", channel_divisible=1,
                           ratios=sensitivity.DEFAULT_RATIOS, progress=None):
    """Each prunable group pruned alone at each of ``ratios`` (BatchNorm re-estimated on
    ``calibration_data``) and scored by its :class:`Agreement` with the original outputs: no labels.
    Returns ``(curves, ranking)``: per group ``[(ratio, relative agreement lost)]`` for
    :func:`~tf1prune.choose.allocation.sensitivity_allocation`, and the ``criterion`` ranking used."""
    batches = calibrate.feed_batches(calibration_data)
    order = allocation.rank_units(analysis, criteria.unit_scores(analysis, criterion, calibration=batches))
    engine = Engine(analysis.view.graph_def, Agreement(analysis.view.graph_def, batches,
                                                       analysis.view.output_node_names, metric))
    with tempfile.TemporaryDirectory(prefix="tf1prune-sensitivity-") as folder:
        sens = sensitivity.Sensitivity.open(os.path.join(folder, "model.sens"), analysis.digest(), engine.weights,
                                            ratios, calibrated=True)
        with Patcher(analysis, calibration_data=batches) as patcher:
            sensitivity.run(sens, engine, patcher, order, channel_divisible, progress=progress)
    return {g.id: sens.curve(g.id) for g in analysis.groups if g.prunable}, order
