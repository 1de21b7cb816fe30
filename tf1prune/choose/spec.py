"""Pruning specs: per group a ratio and the kept channel indices, tied to a graph digest.

Example::

    spec = make_spec(analysis, sparsity=0.5, channel_divisible=8)
    spec.save('model.spec')                      # JSON, written atomically
    plan = analysis.plan(Spec.load('model.spec'))
"""
import collections
import json
import warnings

from tf1prune.choose import criteria, divisible
from tf1prune.choose.allocation import (counts_for_ratio, importance_allocation, keep_count, rank_units, solve_sparsity,
                                       target_problem)
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError, check_fraction  # noqa: F401  (check_fraction: used by the runners)
from tf1prune.files import atomic_write

FORMAT = "tf1prune-spec"
VERSION = 1


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


class SpecGroup(collections.namedtuple("SpecGroup", "id nodes channels ratio keep")):
    """One group of a :class:`Spec`: its id, producer nodes, channel count, pruned ratio and kept
    channel indices (sorted)."""

    def __getitem__(self, key):
        if isinstance(key, str):   # the dict groups of tf1prune 0.1 (``g["keep"]``)
            warnings.warn("spec groups are SpecGroup tuples: use g.%s, not g[%r]" % (key, key), DeprecationWarning,
                          stacklevel=2)
            return getattr(self, key)
        return super().__getitem__(key)


class Spec(Choice):
    """A :class:`~tf1prune.core.choice.Choice` with what it takes to save it and check it against a graph:
    per group its nodes, channel count and ratio, the criterion and the rounding (JSON, tied to the
    graph's channel structure).

    Example::

        spec = tf1prune.make_spec(analysis, ratio=0.5)
        spec.save("model.spec")
        plan = analysis.plan(tf1prune.Spec.load("model.spec"))
    """

    def __init__(self, digest, groups, criterion="l1", channel_divisible=1):
        self.groups = [SpecGroup(int(g[0]), list(g[1]), int(g[2]), float(g[3]), sorted(int(i) for i in g[4]))
                       if not isinstance(g, dict) else SpecGroup(int(g["id"]), list(g["nodes"]), int(g["channels"]),
                                                                 float(g.get("ratio", 0.0)), sorted(g["keep"]))
                       for g in groups]
        super().__init__(digest, {g.id: g.keep for g in self.groups if len(g.keep) < g.channels})
        self.warning = None   # set by make_spec(best_effort=True) when the target is missed
        self.criterion = criterion
        self.channel_divisible = channel_divisible

    @classmethod
    def of(cls, analysis, choice, criterion="l1", channel_divisible=1):
        """The spec of ``choice`` (every prunable group listed)."""
        choice.check(analysis)
        groups = []
        for g in analysis.groups:
            if g.prunable:
                keep = list(choice.kept.get(g.id, range(g.channels)))
                groups.append(SpecGroup(g.id, list(g.nodes), g.channels, round(1 - len(keep) / g.channels, 6), keep))
        return cls(choice.digest, groups, criterion, channel_divisible)

    def to_dict(self):
        return {"format": FORMAT, "version": VERSION, "graph_digest": self.digest, "criterion": self.criterion,
                "channel_divisible": self.channel_divisible, "groups": [g._asdict() for g in self.groups]}

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
                groups.append(SpecGroup(int(g["id"]), list(g["nodes"]), channels,
                                        float(g.get("ratio", 1 - len(keep) / channels)), sorted(keep)))
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

    def check(self, analysis):
        """Raise unless this spec was made for ``analysis``: digest, and each group's nodes and channels."""
        if self.digest != analysis.digest():
            raise Tf1PruneError("spec was made for another graph (digest %s, this graph %s)"
                                % (self.digest, analysis.digest()))
        for g in self.groups:
            if not 0 <= g.id < len(analysis.groups) or analysis.groups[g.id].nodes != g.nodes:
                raise Tf1PruneError("spec group %s does not match the graph" % g.id)
            if g.channels != analysis.groups[g.id].channels:
                raise Tf1PruneError("spec group %s has %d channels, the graph's has %d"
                                    % (g.id, g.channels, analysis.groups[g.id].channels))

    def keep_mask(self, analysis):
        """Kept-unit mask for ``analysis`` (as :meth:`mask`); refuses a spec made for another graph."""
        return self.mask(analysis)

    def ratios(self):
        return {g.id: g.ratio for g in self.groups}


def spec_from_counts(analysis, order, counts, criterion="l1", channel_divisible=1):
    """Spec keeping the first ``counts[gid]`` units of ``order[gid]`` in every prunable group."""
    return Spec.of(analysis, Choice.from_counts(analysis, order, counts), criterion, channel_divisible)


ALLOCATIONS = ("uniform", "importance")


def make_spec(analysis, ratio=None, sparsity=None, ratios=None, criterion="l1", channel_divisible=1,
              values=None, best_effort=False, cost="macs", calibration=None, allocation="uniform", batch=1):
    """Spec from a uniform ``ratio``, a ``sparsity`` target (the share of the ``cost`` model to remove:
    MACs by default, ``"params"``...) or per-group ``ratios``.

    Channels are ranked by ``criterion`` (a name of :mod:`tf1prune.choose.criteria`: ``l1``, ``l2``,
    ``bn_gamma``...; ``values`` maps a parameter name to its value, default: the graph's constants;
    ``calibration``: feed dicts, for criteria that read activations); kept counts are multiples of
    ``channel_divisible``.  A ``sparsity`` target that cannot be met within half a point (too
    little is prunable, the channel steps are too coarse, or the MACs total is incomplete) is an
    error; with ``best_effort`` the closest spec is returned and its ``warning`` says by how much
    it misses.  ``allocation`` spreads a ``sparsity`` over the groups: ``"uniform"`` (the same
    share of every group) or ``"importance"`` (each group's share of criterion importance removed
    traded against the cost it saves, within 0.1 of uniform:
    :func:`~tf1prune.choose.allocation.importance_allocation`).  ``channel_divisible="auto"`` is
    timed at ``batch`` (some kernels run odd channel counts slowly only on large batches).

    Example::

        spec = tf1prune.make_spec(analysis, sparsity=0.5, channel_divisible=8)
        spec = tf1prune.make_spec(analysis, ratios={0: 0.25, 3: 0.5})
    """
    if sum(x is not None for x in (ratio, sparsity, ratios)) != 1:
        raise Tf1PruneError("give exactly one of ratio, sparsity or ratios")
    if allocation not in ALLOCATIONS:
        raise Tf1PruneError("allocation must be one of %s, got %r" % (", ".join(ALLOCATIONS), allocation))
    ratio = None if ratio is None else check_fraction("ratio", ratio)
    sparsity = None if sparsity is None else check_fraction("sparsity", sparsity)
    hint = ratio if ratio is not None else divisible.ratio_for(sparsity) if sparsity is not None else 0.5
    requested, channel_divisible = channel_divisible, divisible.resolve(channel_divisible, analysis, hint, batch)
    scores = criteria.unit_scores(analysis, criterion, values, calibration)
    order = rank_units(analysis, scores)
    warning = None
    if sparsity is not None:
        for channel_divisible in divisible.steps(requested, channel_divisible):   # "auto" steps down
            if allocation == "importance":
                counts = importance_allocation(analysis, order, sparsity, channel_divisible, cost=cost)
            else:
                counts = solve_sparsity(analysis, order, sparsity, channel_divisible, cost=cost)
            warning = target_problem(analysis, order, counts, sparsity, cost=cost)
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
