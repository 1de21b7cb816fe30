"""Prune to a measured latency: the slim graph runs in ``target`` of the original's time here.

The channels are allocated on the ``latency`` cost model (:mod:`tf1prune.measure.layer_latency`:
each layer's time at its kept widths, so the budget is spent where the time is), the slim graph is
built and timed end to end against the original, interleaved.  A miss beyond ``tolerance``
re-fits the model on that measurement and tries again, at most ``attempts`` times; the closest
slim graph is returned with every attempt's predicted and measured ratio.

Example::

    found = prune_to_latency(analysis, 0.6, batch=1)
    print(found.measured, found.predicted)
    slim_gd = found.slim_graph_def
"""
import collections

from tf1prune.choose import costs, divisible
from tf1prune.choose.spec import make_spec
from tf1prune.core import flops
from tf1prune.errors import Tf1PruneError, check_fraction
from tf1prune.measure.layer_latency import layer_shares

Attempt = collections.namedtuple("Attempt", "predicted measured millis")
Attempt.__doc__ = "One slim graph: predicted and measured latency ratios, and its milliseconds (slim, original)."


class LatencyPrune(collections.namedtuple("LatencyPrune", "spec plan slim_graph_def predicted measured attempts "
                                                          "profile macs_ratio")):
    """The closest slim graph to the target: its ``spec``, ``plan`` (refinements not applied),
    ``slim_graph_def``, ``predicted`` and ``measured`` latency ratios, every :class:`Attempt`, the
    :class:`~tf1prune.measure.layer_latency.LatencyProfile` and the MACs ratio."""

    def summary(self, target):
        """One line: target, predicted, measured (milliseconds), attempts and MACs share."""
        millis = next(a.millis for a in self.attempts if a.measured == self.measured)
        return ("latency target %.2f: predicted %.3f, measured %.3f (%.3f -> %.3f ms), attempt %d of %d; "
                "MACs %.1f%% of the original" % (target, self.predicted, self.measured, millis[0], millis[1],
                                                  [a.measured for a in self.attempts].index(self.measured) + 1,
                                                  len(self.attempts), 100 * self.macs_ratio))


def prune_to_latency(analysis, target, batch=1, threads=0, criterion="l1", channel_divisible=1, tolerance=0.07,
                     attempts=3, runs=30, values=None, calibration=None, progress=None, allocation="uniform"):
    """The :class:`LatencyPrune` nearest ``target`` (the slim graph's share of the original's latency,
    in (0, 1)) at ``batch``, channels allocated on the latency model (``allocation`` as in
    :func:`~tf1prune.choose.spec.make_spec`); see the module docstring."""
    target = check_fraction("latency target", target)
    # "auto": the rounding timed at this batch (a kernel's slow channel counts depend on it)
    channel_divisible = divisible.resolve(channel_divisible, analysis, divisible.ratio_for(1.0 - target), batch,
                                          threads)

    def choose(cost, sparsity):
        return make_spec(analysis, sparsity=sparsity, criterion=criterion, channel_divisible=channel_divisible,
                         cost=cost, best_effort=True, values=values, calibration=calibration, allocation=allocation)
    return meet_latency(analysis, target, choose, batch, threads, tolerance, attempts, runs, progress)


def meet_latency(analysis, target, choose, batch=1, threads=0, tolerance=0.07, attempts=3, runs=30, progress=None):
    """The measure-and-re-fit loop of :func:`prune_to_latency` around ``choose(cost, sparsity)``, which
    returns a spec removing ``sparsity`` of the ``cost`` model (any allocation: uniform, by
    sensitivity...)."""
    from tf1prune.apply import slim
    from tf1prune.measure.latency import measure_settled
    target = check_fraction("latency target", target)
    if attempts < 1:
        raise Tf1PruneError("attempts must be at least 1")
    model = costs.latency_model(batch, threads)
    profile = model.profile_of(analysis)
    best, tried = None, []
    for _ in range(attempts):
        spec = choose(model, 1.0 - target)
        plan = analysis.plan(spec)
        slim_gd = slim.apply_slim(plan)
        shares = layer_shares(analysis, plan.choice)
        predicted = profile.predict(shares) / profile.total
        stats, _ = measure_settled([analysis.view.graph_def, slim_gd], analysis.view.output_node_names,
                                   analysis.view.input_specs, batch=batch, threads=threads, runs=runs,
                                   progress=progress)
        measured = stats[1].median / stats[0].median
        tried.append(Attempt(predicted, measured, (stats[0].median, stats[1].median)))
        macs = flops.count(analysis, plan.choice).macs / max(flops.count(analysis).macs, 1)
        if best is None or abs(measured - target) < abs(best.measured - target):
            best = LatencyPrune(spec, plan, slim_gd, predicted, measured, tried, profile, macs)
        if abs(measured / target - 1.0) <= tolerance:
            break
        profile.add_point(shares, measured * profile.total)   # the model's error at this point, re-fitted
    return best._replace(attempts=tried)
