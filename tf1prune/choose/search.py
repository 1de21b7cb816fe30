"""Candidate allocations for a search: samples around the uniform allocation at a budget, and the
Pareto front of scored candidates.

Example::

    candidates = sample_candidates(analysis, ranking, 0.5, count=20, divisible=8)   # per-group counts
    front = pareto_front(scored)                     # fewest MACs first, each better than the cheaper
"""
import collections

import numpy as np

from tf1prune.choose import allocation
from tf1prune.errors import Tf1PruneError

Subnet = collections.namedtuple("Subnet", "macs metric widths")


def sample_candidates(analysis, order, sparsity, count, divisible=1, spread=0.3, seed=0, max_rejections=None,
                      cap=None, cost="macs"):
    """Up to ``count`` distinct per-group kept counts within half a point of ``sparsity`` fewer
    ``cost``: the uniform allocation first, then log-normal perturbations of it (deterministic for a
    ``seed``); ``cap`` bounds each group's count (channels pruned earlier stay pruned).  Fewer are
    returned, with a warning, after ``max_rejections`` rejected samples in all; an unreachable target
    raises."""
    rng = np.random.RandomState(seed)
    gids = sorted(order)
    out, seen, rejected = [], set(), 0
    limit = max_rejections if max_rejections is not None else 10 * count + 20
    weights = {g: 1.0 for g in gids}
    while len(out) < count:
        def counts_at(t, w=weights):
            mean = np.mean(list(w.values()))
            return {g: allocation.keep_count(analysis.groups[g].channels, min(0.98, t * w[g] / mean),
                                             allocation.unit_step(analysis.groups[g], divisible))
                    for g in gids}
        counts = allocation.solve_sparsity(analysis, order, sparsity, divisible, counts_at, cap, cost=cost)
        problem = allocation.target_problem(analysis, order, counts, sparsity, cap, cost=cost)
        key = tuple(counts[g] for g in gids)
        if problem or key in seen:
            rejected += 1
            if problem and not out:
                raise Tf1PruneError(problem)
            if rejected > limit:   # the space is exhausted (few groups, or a tight cap): search what exists
                import tensorflow.compat.v1 as tf
                tf.logging.warning(
                    "search: found %d of %d distinct candidates within half a point of %.1f%% fewer %s after %d "
                    "rejections (%s)", len(out), count, 100 * sparsity, cost, rejected, problem or "duplicates")
                break
        else:
            seen.add(key)
            out.append(counts)
        weights = {g: float(np.exp(spread * rng.randn())) for g in gids}
    return out


def pareto_front(subnets, higher_is_better=True):
    """The :class:`Subnet` s not beaten by a cheaper (or equally cheap) one, fewest MACs first."""
    sign = 1.0 if higher_is_better else -1.0
    front, best = [], -np.inf
    for s in sorted(subnets, key=lambda s: (s.macs, -sign * s.metric)):
        if sign * s.metric > best:
            front.append(s)
            best = sign * s.metric
    return front
