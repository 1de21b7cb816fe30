"""Sensitivity analysis: the metric with one group pruned at a time, cached and resumable.

The graph is frozen once; each candidate prunes one group at one ratio (its kernels, biases and
BatchNorm gamma/beta zeroed for the pruned channels, optionally with every BatchNorm recalibrated),
and the evaluation engine scores it.  Results live in a result store (``<workspace>/<model>.sens``)
tied to the graph's channel structure and weights, saved atomically every ``checkpoint_interval``
evaluations, so a killed run loses at most those; failed evaluations are retried by the next run.
"""
import collections

from tf1prune.choose.allocation import keep_count, unit_step
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows.store import ResultStore

KIND = "sensitivity"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _key(ratio):
    return "%.4g" % ratio


def entry_key(gid, ratio):
    """The store key of group ``gid`` at ``ratio``."""
    return "%d/%s" % (gid, _key(ratio))


class Sensitivity:
    """Metric per (group, ratio), the baseline, and failed evaluations: a view of a result store."""

    def __init__(self, store):
        self.store = store

    @classmethod
    def open(cls, path, digest, weights, ratios=DEFAULT_RATIOS, higher_is_better=True, recompute=False,
             calibrated=False):
        """Resume the analysis at ``path``; one made for another graph, other weights, other ratios, the
        other metric direction or with(out) BatchNorm calibration is refused unless ``recompute``."""
        settings = {"ratios": sorted(float(r) for r in ratios), "higher_is_better": bool(higher_is_better),
                    "calibrated": bool(calibrated)}
        return cls(ResultStore.open(path, KIND, {"graph": digest, "weights": weights}, settings,
                                    _keys(recompute)))

    @classmethod
    def load(cls, path, digest):
        """The analysis at ``path`` as it was made (for any weights); refused for another graph."""
        store = ResultStore.read(path, KIND)
        if store.identity.get("graph") != digest:
            raise Tf1PruneError("sensitivity file %r was made for another graph (digest %s, this graph %s): run "
                                "ana() again" % (path, store.identity.get("graph"), digest))
        return cls(store)

    # --- what was measured --------------------------------------------------
    path = property(lambda self: self.store.path)
    digest = property(lambda self: self.store.identity.get("graph"))
    ratios = property(lambda self: self.store.settings["ratios"])
    higher_is_better = property(lambda self: self.store.settings["higher_is_better"])
    calibrated = property(lambda self: self.store.settings["calibrated"])

    @property
    def baseline(self):
        return self.store.baseline

    @baseline.setter
    def baseline(self, value):
        self.store.baseline = value

    def record(self, gid, ratio, value, error=None):
        """Store the metric (or the error) of group ``gid`` pruned at ``ratio``."""
        self.store.record(entry_key(gid, ratio), value, error)

    def _split(self, field):
        out = collections.defaultdict(dict)
        for key, entry in self.store.entries.items():
            if entry.get(field) is not None:
                gid, ratio = key.split("/")
                out[gid][ratio] = entry[field]
        return out

    @property
    def results(self):
        """``{str(gid): {ratio key: value}}`` of the successful evaluations."""
        return self._split("value")

    @property
    def errors(self):
        """``{str(gid): {ratio key: message}}`` of the failed ones (retried by the next ``ana``)."""
        return self._split("error")

    def keys(self, group_ids):
        return [entry_key(g, r) for g in group_ids for r in self.ratios]

    def drop(self, gid, ratio):
        """Relative metric loss of pruning group ``gid`` at ``ratio`` (inf when it failed or is unknown)."""
        value = self.store.value(entry_key(gid, ratio))
        if value is None or self.baseline is None:
            return float("inf")
        delta = (self.baseline - value) if self.higher_is_better else (value - self.baseline)
        return delta / max(abs(self.baseline), 1e-12)

    def curve(self, gid):
        """``[(ratio, drop)]`` for the measured ratios, ascending."""
        return [(r, self.drop(gid, r)) for r in self.ratios]


def _keys(recompute):
    """``recompute`` for the store: True, False, or the keys of ``(gid, ratio)`` pairs."""
    if isinstance(recompute, bool) or recompute is None:
        return bool(recompute)
    return [entry_key(g, r) for g, r in recompute]


def run(sens, engine, patcher, ranking, channel_divisible=1, checkpoint_interval=10, progress=True):
    """Evaluate the baseline and every missing (group, ratio) of ``sens`` with ``engine``."""
    analysis = patcher.analysis
    prunable = [g.id for g in analysis.groups if g.prunable]

    def patches_of(key):
        gid, ratio = key.split("/")
        group = analysis.groups[int(gid)]
        count = keep_count(group.channels, float(ratio), unit_step(group, channel_divisible))
        return patcher.patches(Choice.from_counts(analysis, ranking, {group.id: count}))

    engine.fill(sens.store, sens.keys(prunable), patches_of, patcher.baseline, checkpoint_interval, progress, "ana",
                lambda key: "group %s ratio %s" % tuple(key.split("/")))
    return sens

