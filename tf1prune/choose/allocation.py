"""Which channels to keep: importance ranking per group, and per-group counts for a MACs target.

Example::

    order = rank_units(analysis, criteria.unit_scores(analysis))
    counts = solve_sparsity(analysis, order, 0.5, divisible=8)   # per group: channels kept
"""
import itertools
import math

import numpy as np

from tf1prune.choose import costs
from tf1prune.core import flops


def keep_count(channels, ratio, divisible=1):
    """Channels kept when pruning ``ratio`` of ``channels``, a multiple of ``divisible``, at least 1."""
    kept = channels * (1.0 - ratio)
    if divisible > 1:
        kept = max(divisible, int(math.floor(kept / divisible + 0.5)) * divisible)
    else:
        kept = int(math.floor(kept + 0.5))
    return int(min(channels, max(1, kept)))


class Ranking(dict):
    """Per prunable group, its units from most to least important; ``minimum[gid]``: the fewest
    leading units that leave every segment (a producer, a split part) a channel; ``scores``: every
    unit's criterion score (None when not known)."""

    def __init__(self, order, minimum, scores=None):
        super().__init__(order)
        self.minimum, self.scores = minimum, scores


def rank_units(analysis, scores, pruned=None):
    """:class:`Ranking` of the units by score (already ``pruned`` units last).

    Each segment's best unit is moved to the front (smallest segments first; a
    segment that already has one needs none), so keeping at least
    ``minimum[gid]`` units never leaves a layer without a channel.
    """
    order, minimum = {}, {}
    for g in analysis.groups:
        if g.prunable:
            units = np.array(g.units)
            key = scores[units] if pruned is None else np.where(pruned[units], -np.inf, scores[units])
            ranked = units[np.argsort(-key, kind="stable")]
            position = {int(u): i for i, u in enumerate(ranked)}
            required = set()
            for seg in sorted(analysis.segments.get(g.id, []), key=len):
                slots = [position[int(u)] for u in seg]
                if not required.intersection(slots):
                    required.add(min(slots))
            required = sorted(required)
            rest = np.setdiff1d(np.arange(len(ranked)), required, assume_unique=True)
            order[g.id] = ranked[np.concatenate([required, rest]).astype(int)]
            minimum[g.id] = max(1, len(required))
    kept = np.asarray(scores, np.float64) if pruned is None else np.where(pruned, 0.0, scores)
    return Ranking(order, minimum, kept)


def unit_step(group, divisible):
    """The step in units that keeps ``group``'s channel counts multiples of ``divisible``: a unit of
    several channels (an attention head of 64) needs fewer units per step (1, not 8)."""
    return divisible // math.gcd(int(divisible), int(group.width)) if divisible > 1 else 1


def counts_for_ratio(analysis, ratio, divisible):
    return {g.id: keep_count(g.channels, ratio, unit_step(g, divisible)) for g in analysis.groups if g.prunable}


TOLERANCE = 0.005   # a MACs target is met within half a point
EXHAUSTIVE = 20000  # count combinations searched exhaustively when the bisection misses


def _options(channels, minimum, cap, divisible):
    """The counts a group may keep: multiples of ``divisible`` from its minimum up to ``cap``, and ``cap``."""
    low = max(min(divisible, channels), minimum)
    counts = set(range(-(-low // divisible) * divisible, cap + 1, divisible)) | {cap}
    return sorted(c for c in counts if low <= c <= cap)


def _search(macs, target, start, options, tolerance):
    """Among the counts within ``tolerance`` of ``target`` MACs, the nearest to ``start`` (the
    allocation's intent); when none is, the closest to the target.  Exhaustive over small
    problems; else a line search per group (a few steps around its count) until nothing improves."""
    def score(counts):
        err = abs(macs(counts) - target)
        shift = sum(abs(counts[g] - start[g]) / max(opts[-1], 1) for g, opts in options.items())
        return (0, shift) if err <= tolerance else (1, err)
    gids = list(options)
    size = 1
    for gid in gids:
        size *= len(options[gid])
    if size <= EXHAUSTIVE:
        return min(({g: c for g, c in zip(gids, combo)} for combo in itertools.product(*(options[g] for g in gids))),
                   key=score)
    best, best_score = dict(start), score(start)
    improved = True
    while improved:
        improved = False
        for gid in gids:
            opts = options[gid]
            at = opts.index(best[gid]) if best[gid] in opts else 0
            for c in opts[max(0, at - 16):at + 17]:
                cand = {**best, gid: c}
                cand_score = score(cand)
                if cand_score < best_score:
                    best, best_score, improved = cand, cand_score, True
    return best


def solve_sparsity(analysis, order, sparsity, divisible=1, counts_at=None, cap=None, floor=None, refine=True,
                   cost="macs"):
    """Per-group kept counts whose slim cost (the ``cost`` model of :mod:`tf1prune.choose.costs`, MACs
    by default) is closest to ``(1 - sparsity)`` of the original.

    ``counts_at(t)`` maps ``t`` in [0, 1] to per-group counts, fewer as ``t`` grows (default: a
    uniform ratio ``t``); ``t`` is bisected, then single groups move by one channel step while
    that brings the MACs closer to the target.  When that misses the target by more than half a
    point, the counts are searched (exhaustively for few groups) for the closest reachable point,
    as near the bisected allocation as the target allows.  ``cap`` and ``floor`` bound each group's
    count from above (channels already pruned stay so) and below.  Without ``refine`` the bisected
    allocation is kept as it is when it is within half a point.
    """
    macs = costs.make(cost, analysis, order)
    channels = {g.id: g.channels for g in analysis.groups if g.prunable}
    step = {g.id: unit_step(g, divisible) for g in analysis.groups if g.prunable}
    cap = {gid: min(channels[gid], (cap or {}).get(gid, channels[gid])) for gid in channels}
    low = {gid: min(cap[gid], max(order.minimum[gid], (floor or {}).get(gid, 1))) for gid in channels}
    counts_at = counts_at or (lambda t: counts_for_ratio(analysis, t, divisible))
    capped = lambda t: {gid: max(low[gid], min(c, cap[gid])) for gid, c in counts_at(t).items()}
    full = macs(channels)
    target = (1.0 - sparsity) * full
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if macs(capped(mid)) > target:
            lo = mid
        else:
            hi = mid
    best = min((capped(t) for t in (lo, hi)), key=lambda c: abs(macs(c) - target))
    best_err = abs(macs(best) - target)
    for _ in range(4 * len(best) + 10 if refine or best_err > TOLERANCE * full else 0):
        moves = []
        for gid, k in best.items():
            for new in (k - step[gid], k + step[gid], cap[gid]):
                new = min(cap[gid], new)
                if new >= max(min(step[gid], channels[gid]), low[gid]) and new != k:
                    moves.append({**best, gid: new})
        scored = [(abs(macs(c) - target), c) for c in moves]
        err, cand = min(scored, key=lambda x: x[0]) if scored else (best_err, best)
        if err >= best_err:
            break
        best, best_err = cand, err
    if best and best_err > TOLERANCE * full:
        options = {gid: _options(channels[gid], low[gid], cap[gid], step[gid]) for gid in best}
        best = _search(macs, target, best, options, TOLERANCE * full)
    return best


def blocked_macs(analysis):
    """``[(MACs, group)]`` of the unprunable groups, most first: the MACs of the layers they touch."""
    per_group = {}
    for layer in analysis.layers:
        macs = flops.layer_macs(analysis, layer)
        touched = {analysis.group_of_unit.get(int(u)) for d in layer.dims for u in np.unique(analysis.unit_of[d.elems])}
        for gid in touched - {None}:
            if not analysis.groups[gid].prunable:
                per_group[gid] = per_group.get(gid, 0) + macs
    return sorted(((m, analysis.groups[gid]) for gid, m in per_group.items()), key=lambda x: -x[0])


def target_problem(analysis, order, counts, sparsity, cap=None, cost="macs"):
    """Why ``counts`` do not meet a ``sparsity`` target on ``cost`` within half a point (None when they
    do): the closest reachable reduction, the most that can be removed, and what blocks the most MACs.
    A cost that cannot be measured (a MACs total with layers not counted) is a problem too."""
    macs = costs.make(cost, analysis, order)
    if macs.problem:
        return macs.problem
    channels = {g.id: g.channels for g in analysis.groups if g.prunable}
    full = macs.total
    achieved = 1.0 - macs(counts) / full if full else 0.0
    if abs(achieved - sparsity) <= TOLERANCE:
        return None
    floor = {gid: max(order.minimum[gid], 1) for gid in channels}
    most = 1.0 - macs(floor) / full if full else 0.0
    blockers = "; ".join("group %d (%d MACs): %s" % (g.id, m, g.reason) for m, g in blocked_macs(analysis)[:3])
    return ("cannot remove %.1f%% of the %s: the closest reachable is %.1f%% (at most %.1f%% can be removed%s)"
            % (100 * sparsity, macs.unit, 100 * achieved, 100 * most,
               "; the most MACs are held by " + blockers if blockers else ""))


MAX_RATIO = 0.95


IMPORTANCE_RATIOS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


def importance_curves(order):
    """Per group, ``[(ratio, share of the group's importance removed)]``: the criterion's scores of the
    units a ratio removes (the last-ranked ones) over the group's total, the data-free stand-in for a
    measured sensitivity curve.  Units already pruned count nothing."""
    if order.scores is None:
        raise ValueError("the ranking has no scores")
    curves = {}
    for gid, ranked in order.items():
        s = order.scores[ranked]
        s = np.where(np.isfinite(s) & (s > 0), s, 0.0)
        total = s.sum()
        tail = np.concatenate([np.cumsum(s[::-1])[::-1], [0.0]])   # tail[k]: the score removed keeping k
        curves[gid] = [(r, float(tail[len(s) - int(round(r * len(s)))] / total) if total > 0 else r)
                       for r in IMPORTANCE_RATIOS]
    return curves


def importance_allocation(analysis, order, sparsity, divisible=1, cap=None, max_shift=0.1, cost="macs"):
    """Per-group kept counts for a ``sparsity`` of ``cost`` that trade each group's share of criterion
    importance removed against the cost it saves (:func:`sensitivity_allocation` on
    :func:`importance_curves`): with ``cost="latency"`` the channels go where the time is."""
    return sensitivity_allocation(analysis, order, importance_curves(order), sparsity, divisible, cap, max_shift,
                                  cost)


def sensitivity_allocation(analysis, order, curves, sparsity, divisible=1, cap=None, max_shift=0.1, cost="macs"):
    """Per-group kept counts for a MACs ``sparsity`` that trade each group's measured metric drop
    against the MACs it saves, never farther than ``max_shift`` from the uniform ratio.

    ``curves``: group id -> ``[(ratio, relative metric drop)]`` (a failed point is ``inf``).  The
    drops are made monotone; for a Lagrange multiplier the best ratio of every group minimises
    ``drop(r) - multiplier * (MACs share of the group) * r`` within ``[u - max_shift, u + max_shift]``
    around the uniform ratio ``u``, and the multiplier is solved for the target.  Groups whose curves
    say nothing stay near uniform; ``max_shift=0`` is the uniform allocation.
    """
    channels = {gid: analysis.groups[gid].channels for gid in order}
    uniform = solve_sparsity(analysis, order, sparsity, divisible, cap=cap, cost=cost)
    macs = costs.make(cost, analysis, order)
    full = macs(channels)
    share = {gid: (full - macs({**channels, gid: order.minimum[gid]})) / max(full, 1) for gid in order}
    finite = [d for c in curves.values() for _, d in c if np.isfinite(d)]
    failed = 2 * max(finite + [0.5])
    grid = np.linspace(0.0, MAX_RATIO, 96)
    drops = {}
    for gid in order:
        points = sorted((r, d if np.isfinite(d) else failed) for r, d in curves.get(gid, ()))
        ratios = np.array([0.0] + [r for r, _ in points])
        values = np.maximum.accumulate(np.array([0.0] + [d for _, d in points]))
        drops[gid] = np.interp(grid, ratios, values)
    window, floor, top = {}, {}, {}
    for gid in order:
        u = 1.0 - uniform[gid] / channels[gid]
        window[gid] = (grid >= u - max_shift - 1e-9) & (grid <= u + max_shift + 1e-9)
        if not window[gid].any():
            window[gid] = np.abs(grid - u) == np.abs(grid - u).min()
        step = unit_step(analysis.groups[gid], divisible)
        floor[gid] = min(uniform[gid], keep_count(channels[gid], min(MAX_RATIO, u + max_shift), step))
        top[gid] = max(uniform[gid], keep_count(channels[gid], max(0.0, u - max_shift), step))
    cap = {gid: min(top[gid], (cap or {}).get(gid, top[gid])) for gid in order}

    def counts_at(t):
        multiplier = np.tan(min(t, 1.0 - 1e-9) * np.pi / 2)
        out = {}
        for gid in order:
            r = grid[window[gid]]
            cost = drops[gid][window[gid]] - multiplier * share[gid] * r
            out[gid] = keep_count(channels[gid], float(r[int(np.argmin(cost))]),
                                  unit_step(analysis.groups[gid], divisible))
        return out
    return solve_sparsity(analysis, order, sparsity, divisible, counts_at, cap, floor, refine=False, cost=cost)
