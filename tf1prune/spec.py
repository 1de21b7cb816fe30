"""Pruning specs: per group a ratio and the kept channel indices, tied to a graph digest.

Example::

    spec = make_spec(analysis, sparsity=0.5, channel_divisible=8)
    spec.save('model.spec')                      # JSON, written atomically
    keep = Spec.load('model.spec').keep_mask(analysis)
"""
import json
import math

import numpy as np

from tf1prune import importance
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import atomic_write

FORMAT = "tf1prune-spec"


def keep_count(channels, ratio, divisible=1):
    """Channels kept when pruning ``ratio`` of ``channels``, a multiple of ``divisible``, at least 1."""
    kept = channels * (1.0 - ratio)
    if divisible > 1:
        kept = max(divisible, int(math.floor(kept / divisible + 0.5)) * divisible)
    else:
        kept = int(math.floor(kept + 0.5))
    return int(min(channels, max(1, kept)))


class Spec:
    """Which channels each prunable group keeps."""

    def __init__(self, digest, groups, criterion="l1", channel_divisible=1):
        self.digest = digest
        self.groups = groups  # list of {"id", "nodes", "channels", "ratio", "keep"}
        self.criterion = criterion
        self.channel_divisible = channel_divisible

    def to_dict(self):
        return {"format": FORMAT, "version": 1, "graph_digest": self.digest, "criterion": self.criterion,
                "channel_divisible": self.channel_divisible, "groups": self.groups}

    def save(self, path):
        atomic_write(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data, source="spec"):
        try:
            if data.get("format") != FORMAT:
                raise ValueError("not a tf1prune spec")
            groups = []
            for g in data["groups"]:
                keep = [int(i) for i in g["keep"]]
                channels = int(g["channels"])
                if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= channels:
                    raise ValueError("group %s keeps invalid channel indices" % g.get("id"))
                groups.append({"id": int(g["id"]), "nodes": list(g["nodes"]), "channels": channels,
                               "ratio": float(g.get("ratio", 1 - len(keep) / channels)), "keep": sorted(keep)})
            return cls(str(data["graph_digest"]), groups, data.get("criterion", "l1"),
                       int(data.get("channel_divisible", 1)))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise Tf1PruneError("bad %s: %s" % (source, e))

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise Tf1PruneError("cannot read spec %r: %s" % (path, e.strerror or e))
        except ValueError as e:
            raise Tf1PruneError("spec %r is not valid JSON: %s" % (path, e))
        return cls.from_dict(data, "spec %r" % path)

    def keep_mask(self, analysis):
        """Kept-unit mask for ``analysis``; refuses a spec made for another graph."""
        if self.digest != analysis.digest():
            raise Tf1PruneError("spec was made for another graph (digest %s, this graph %s)"
                                % (self.digest, analysis.digest()))
        keep = analysis.full_keep()
        for g in self.groups:
            if g["id"] >= len(analysis.groups) or analysis.groups[g["id"]].nodes != g["nodes"]:
                raise Tf1PruneError("spec group %s does not match the graph" % g["id"])
            group = analysis.groups[g["id"]]
            if not group.prunable and len(g["keep"]) < group.channels:
                raise Tf1PruneError("spec prunes group %s, which is not prunable: %s" % (g["id"], group.reason))
            units = np.array(group.units)
            keep[units] = False
            keep[units[g["keep"]]] = True
        return keep

    def ratios(self):
        return {g["id"]: g["ratio"] for g in self.groups}


class Ranking(dict):
    """Per prunable group, its units from most to least important; ``minimum[gid]``: the fewest
    leading units that leave every segment (a producer, a split part) a channel."""

    def __init__(self, order, minimum):
        super().__init__(order)
        self.minimum = minimum


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
    return Ranking(order, minimum)


def _counts_for_ratio(analysis, ratio, divisible):
    return {g.id: keep_count(g.channels, ratio, divisible) for g in analysis.groups if g.prunable}


def _mask(analysis, order, counts):
    keep = analysis.full_keep()
    for gid, ranked in order.items():
        keep[ranked[counts[gid]:]] = False
    return keep


class _MacsModel:
    """MACs of the slim graph as a function of per-group kept counts (top-ranked units kept)."""

    def __init__(self, analysis, order):
        rank = np.full(analysis.num_units, -1)
        group = np.full(analysis.num_units, -1)
        for gid, ranked in order.items():
            rank[ranked] = np.arange(len(ranked))
            group[ranked] = gid
        self.layers = []
        for layer in analysis.layers:
            dims = []
            for d in layer.dims:
                if np.isscalar(d):
                    dims.append((int(d), {}))
                    continue
                units = analysis.unit_of[d]
                g = group[units]
                dims.append((int(np.count_nonzero(g < 0)),
                             {int(gid): np.sort(rank[units[g == gid]]) for gid in np.unique(g[g >= 0])}))
            self.layers.append((layer.factor, dims))

    def __call__(self, counts):
        total = 0
        for factor, dims in self.layers:
            m = factor
            for fixed, per_group in dims:
                m *= fixed + sum(int(np.searchsorted(r, counts[g])) for g, r in per_group.items())
            total += m
        return total


def solve_sparsity(analysis, order, sparsity, divisible=1, counts_at=None, cap=None):
    """Per-group kept counts whose slim MACs are closest to ``(1 - sparsity) * MACs``.

    ``counts_at(t)`` maps ``t`` in [0, 1] to per-group counts, fewer as ``t``
    grows (default: a uniform ratio ``t``); ``t`` is bisected, then single
    groups move by one channel step while that brings the MACs closer to the
    target.  ``cap`` bounds each group's count (channels already pruned stay so).
    """
    macs = _MacsModel(analysis, order)
    channels = {g.id: g.channels for g in analysis.groups if g.prunable}
    cap = {gid: min(channels[gid], (cap or {}).get(gid, channels[gid])) for gid in channels}
    counts_at = counts_at or (lambda t: _counts_for_ratio(analysis, t, divisible))
    capped = lambda t: {gid: max(order.minimum[gid], min(c, cap[gid])) for gid, c in counts_at(t).items()}
    target = (1.0 - sparsity) * macs(channels)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if macs(capped(mid)) > target:
            lo = mid
        else:
            hi = mid
    best = min((capped(t) for t in (lo, hi)), key=lambda c: abs(macs(c) - target))
    best_err = abs(macs(best) - target)
    for _ in range(4 * len(best) + 10):
        moves = []
        for gid, k in best.items():
            for new in (k - divisible, k + divisible, cap[gid]):
                new = min(cap[gid], new)
                if new >= max(min(divisible, channels[gid]), order.minimum[gid]) and new != k:
                    moves.append({**best, gid: new})
        scored = [(abs(macs(c) - target), c) for c in moves]
        err, cand = min(scored, key=lambda x: x[0]) if scored else (best_err, best)
        if err >= best_err:
            break
        best, best_err = cand, err
    return best


def spec_from_counts(analysis, order, counts, criterion="l1", channel_divisible=1):
    """Spec keeping the first ``counts[gid]`` units of ``order[gid]`` in every prunable group."""
    groups = []
    for g in analysis.groups:
        if not g.prunable:
            continue
        count = max(order.minimum[g.id], counts.get(g.id, g.channels))
        kept_units = set(order[g.id][:count].tolist())
        keep = [i for i, u in enumerate(g.units) if u in kept_units]
        groups.append({"id": g.id, "nodes": g.nodes, "channels": g.channels,
                       "ratio": round(1 - len(keep) / g.channels, 6), "keep": keep})
    return Spec(analysis.digest(), groups, criterion, channel_divisible)


def make_spec(analysis, ratio=None, sparsity=None, ratios=None, criterion="l1", channel_divisible=1,
              values=None):
    """Spec from a uniform ``ratio``, a MACs ``sparsity`` target or per-group ``ratios``."""
    if sum(x is not None for x in (ratio, sparsity, ratios)) != 1:
        raise Tf1PruneError("give exactly one of ratio, sparsity or ratios")
    for name, x in (("ratio", ratio), ("sparsity", sparsity)):
        if x is not None and not 0 < x < 1:
            raise Tf1PruneError("%s must be in (0, 1), got %r" % (name, x))
    if channel_divisible < 1:
        raise Tf1PruneError("channel_divisible must be >= 1")
    scores = importance.unit_scores(analysis, criterion, values)
    order = rank_units(analysis, scores)
    if sparsity is not None:
        counts = solve_sparsity(analysis, order, sparsity, channel_divisible)
    elif ratio is not None:
        counts = _counts_for_ratio(analysis, ratio, channel_divisible)
    else:
        counts = {}
        for g in analysis.groups:
            r = ratios.get(g.id, 0.0)
            if r and not g.prunable:
                raise Tf1PruneError("group %d is not prunable: %s" % (g.id, g.reason))
            if g.prunable:
                counts[g.id] = keep_count(g.channels, r, channel_divisible)
    return spec_from_counts(analysis, order, counts, criterion, channel_divisible)
