"""The typed choice a :class:`~tf1prune.core.plan.Plan` is made of: which channels each group keeps.

A :class:`Choice` maps prunable group ids to the indices (into the group's channels, in the
analysis' canonical order) they keep; groups it does not name keep everything.  It carries the
digest of the channel structure it was made for, so it never applies to another graph.  Every
way of choosing ends in one: a saved :class:`~tf1prune.choose.spec.Spec` is a Choice with its
metadata, a ranking and per-group counts give one (:meth:`Choice.from_counts`), and the kept-unit
masks of lower levels convert with :meth:`Choice.from_mask`.

Example::

    choice = Choice.from_counts(analysis, ranking, {0: 8, 3: 16})
    plan = analysis.plan(choice)
"""
import numpy as np

from tf1prune.errors import Tf1PruneError


class Choice:
    """Kept channel indices per prunable group, for the analysis of ``digest``."""

    def __init__(self, digest, kept=None):
        self.digest = str(digest)
        self.kept = {int(g): tuple(sorted(int(i) for i in idx)) for g, idx in (kept or {}).items()}

    # --- making one ---------------------------------------------------------
    @classmethod
    def everything(cls, analysis):
        """The choice that keeps every channel."""
        return cls(analysis.digest())

    @classmethod
    def from_mask(cls, analysis, keep):
        """The choice of a kept-unit mask (a bool array over the analysis' units)."""
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.shape != (analysis.num_units,):
            raise Tf1PruneError("a kept-unit mask must be a bool array of %d units" % analysis.num_units)
        kept = {}
        for g in analysis.groups:
            inside = keep[np.asarray(g.units, np.int64)]
            if inside.all():
                continue
            if not g.prunable:
                raise Tf1PruneError("group %d is not prunable: %s" % (g.id, g.reason))
            kept[g.id] = np.flatnonzero(inside).tolist()
        return cls(analysis.digest(), kept)

    @classmethod
    def from_counts(cls, analysis, ranking, counts):
        """Keep the first ``counts[gid]`` (at least ``ranking.minimum[gid]``) units of ``ranking[gid]``
        in every ranked group; unnamed groups keep everything."""
        kept = {}
        for gid, ranked in ranking.items():
            count = max(ranking.minimum[gid], int(counts.get(gid, len(ranked))))
            if count >= len(ranked):
                continue
            position = {int(u): i for i, u in enumerate(analysis.groups[gid].units)}
            kept[gid] = [position[int(u)] for u in ranked[:count]]
        return cls(analysis.digest(), kept)

    # --- reading one --------------------------------------------------------
    def counts(self, analysis):
        """``{group id: kept channels}`` of every prunable group of ``analysis``."""
        return {g.id: len(self.kept[g.id]) if g.id in self.kept else g.channels
                for g in analysis.groups if g.prunable}

    @property
    def pruned(self):
        """True when some group loses a channel."""
        return bool(self.kept)

    def check(self, analysis):
        """Raise unless this choice was made for ``analysis``' channel structure."""
        if self.digest != analysis.digest():
            raise Tf1PruneError("the choice was made for another graph (digest %s, this graph %s)"
                                % (self.digest, analysis.digest()))

    def mask(self, analysis):
        """The kept-unit mask of ``analysis`` (checked: digest, prunable groups, every layer keeps a channel)."""
        self.check(analysis)
        keep = analysis.full_keep()
        for gid, idx in self.kept.items():
            if not 0 <= gid < len(analysis.groups):
                raise Tf1PruneError("the choice names group %d; the graph has %d" % (gid, len(analysis.groups)))
            group = analysis.groups[gid]
            if idx and (idx[0] < 0 or idx[-1] >= group.channels or len(set(idx)) != len(idx)):
                raise Tf1PruneError("the choice keeps invalid channel indices of group %d" % gid)
            if len(idx) < group.channels and not group.prunable:
                raise Tf1PruneError("the choice prunes group %d, which is not prunable: %s" % (gid, group.reason))
            units = np.asarray(group.units, np.int64)
            keep[units] = False
            keep[units[list(idx)]] = True
            if any(not keep[segment].any() for segment in analysis.segments.get(gid, ())):
                raise Tf1PruneError("the choice leaves a layer or split part of group %d without channels" % gid)
        return keep

    def __eq__(self, other):
        return isinstance(other, Choice) and (self.digest, self.kept) == (other.digest, other.kept)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.digest, tuple(sorted(self.kept.items()))))

    def __repr__(self):
        return "Choice(%s, %d groups pruned)" % (self.digest, len(self.kept))
