"""Pruning specs: per group a ratio and the kept channel indices, tied to a graph digest.

Example::

    spec = make_spec(analysis, sparsity=0.5, channel_divisible=8)
    spec.save('model.spec')                      # JSON, written atomically
    keep = Spec.load('model.spec').keep_mask(analysis)
"""
import json
import math
import numbers

import numpy as np

from tf1prune import divisible, importance
from tf1prune.allocation import counts_for_ratio, keep_count, rank_units, solve_sparsity, target_problem
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write

FORMAT = "tf1prune-spec"
VERSION = 1


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


class Spec:
    """Which channels each prunable group keeps (JSON, tied to the graph's channel structure).

    Example::

        spec = tf1prune.make_spec(analysis, ratio=0.5)
        spec.save("model.spec")
        keep = tf1prune.Spec.load("model.spec").keep_mask(analysis)   # kept-unit mask
    """

    def __init__(self, digest, groups, criterion="l1", channel_divisible=1):
        self.warning = None   # set by make_spec(best_effort=True) when the target is missed
        self.digest = digest
        self.groups = groups  # list of {"id", "nodes", "channels", "ratio", "keep"}
        self.criterion = criterion
        self.channel_divisible = channel_divisible

    def to_dict(self):
        return {"format": FORMAT, "version": VERSION, "graph_digest": self.digest, "criterion": self.criterion,
                "channel_divisible": self.channel_divisible, "groups": self.groups}

    def save(self, path):
        atomic_write(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data, source="spec"):
        try:
            if data.get("format") != FORMAT:
                raise ValueError("not a tf1prune spec")
            if data.get("version", VERSION) != VERSION:
                raise ValueError("unsupported version %r (this tf1prune reads version %d)" % (data.get("version"), VERSION))
            groups = []
            for g in data["groups"]:
                if not all(_is_int(i) for i in g["keep"]) or not _is_int(g["channels"]) or not _is_int(g["id"]):
                    raise ValueError("group %r: ids, channels and kept indices must be integers" % g.get("id"))
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
            if not 0 <= g["id"] < len(analysis.groups) or analysis.groups[g["id"]].nodes != g["nodes"]:
                raise Tf1PruneError("spec group %s does not match the graph" % g["id"])
            group = analysis.groups[g["id"]]
            if g["channels"] != group.channels:
                raise Tf1PruneError("spec group %s has %d channels, the graph's has %d"
                                    % (g["id"], g["channels"], group.channels))
            if not group.prunable and len(g["keep"]) < group.channels:
                raise Tf1PruneError("spec prunes group %s, which is not prunable: %s" % (g["id"], group.reason))
            units = np.array(group.units)
            keep[units] = False
            keep[units[g["keep"]]] = True
            if any(not keep[segment].any() for segment in analysis.segments.get(group.id, ())):
                raise Tf1PruneError("spec group %s leaves a layer or split part without channels" % g["id"])
        return keep

    def ratios(self):
        return {g["id"]: g["ratio"] for g in self.groups}


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


def check_fraction(name, value, low_open=True):
    """``value`` as a float in (0, 1) ([0, 1) when not ``low_open``), or a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise Tf1PruneError("%s must be a number, got %r" % (name, value))
    if not (0 < value < 1 if low_open else 0 <= value < 1):
        raise Tf1PruneError("%s must be in %s0, 1), got %r" % (name, "(" if low_open else "[", value))
    return float(value)


def make_spec(analysis, ratio=None, sparsity=None, ratios=None, criterion="l1", channel_divisible=1,
              values=None, best_effort=False):
    """Spec from a uniform ``ratio``, a MACs ``sparsity`` target or per-group ``ratios``.

    Channels are ranked by ``criterion`` (``l1``, ``l2``, ``bn_gamma``; see :mod:`tf1prune.importance`,
    ``values`` maps a parameter name to its value, default: the graph's constants); kept counts are
    multiples of ``channel_divisible``.  A ``sparsity`` target that cannot be met within half a
    point (too little is prunable, the channel steps are too coarse, or the MACs total is
    incomplete) is an error; with ``best_effort`` the closest spec is returned and its
    ``warning`` says by how much it misses.

    Example::

        spec = tf1prune.make_spec(analysis, sparsity=0.5, channel_divisible=8)
        spec = tf1prune.make_spec(analysis, ratios={0: 0.25, 3: 0.5})
    """
    if sum(x is not None for x in (ratio, sparsity, ratios)) != 1:
        raise Tf1PruneError("give exactly one of ratio, sparsity or ratios")
    ratio = None if ratio is None else check_fraction("ratio", ratio)
    sparsity = None if sparsity is None else check_fraction("sparsity", sparsity)
    auto = divisible.is_auto(channel_divisible)
    channel_divisible = divisible.resolve(channel_divisible, analysis)
    scores = importance.unit_scores(analysis, criterion, values)
    order = rank_units(analysis, scores)
    warning = None
    if sparsity is not None:
        # "auto" steps down to finer roundings while the target is out of reach
        steps = [c for c in sorted(divisible.CANDIDATES, reverse=True) if c <= channel_divisible] if auto else []
        for channel_divisible in steps or [channel_divisible]:
            counts = solve_sparsity(analysis, order, sparsity, channel_divisible)
            warning = target_problem(analysis, order, counts, sparsity)
            if not warning:
                break
        if warning and not best_effort:
            raise Tf1PruneError(warning + " (best effort accepts the closest)")
    elif ratio is not None:
        counts = counts_for_ratio(analysis, ratio, channel_divisible)
    else:
        counts = {}
        for g in analysis.groups:
            r = ratios.get(g.id, 0.0)
            if r and not g.prunable:
                raise Tf1PruneError("group %d is not prunable: %s" % (g.id, g.reason))
            if g.prunable:
                counts[g.id] = keep_count(g.channels, check_fraction("ratio of group %d" % g.id, r, False),
                                          channel_divisible)
    spec = spec_from_counts(analysis, order, counts, criterion, channel_divisible)
    spec.warning = warning
    return spec
