"""Sensitivity analysis: the metric with one group pruned at a time, cached and resumable.

The graph is frozen once; each evaluation only patches the constants of one
group (its kernels, biases and BN gamma/beta zeroed for the pruned channels),
runs ``eval_fn(graph_def)`` and restores them.  Results go to a JSON cache
(``<workspace>/<model>.sens``) tied to the graph digest and written atomically
every ``checkpoint_interval`` evaluations, so a killed run loses at most those.
"""
import collections
import json
import os
import time

import numpy as np

from tf1prune import _worker, calibrate, progress as progress_lib
from tf1prune.evaluate import evaluate
from tf1prune.allocation import keep_count
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write
from tf1prune.importance import const_values
from tf1prune.rules import ZEROED

FORMAT = "tf1prune-sens"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _key(ratio):
    return "%.4g" % ratio


class Sensitivity:
    """Metric per (group, ratio), the baseline, and failed evaluations."""

    def __init__(self, path, digest, ratios=DEFAULT_RATIOS, higher_is_better=True, calibrated=False):
        self.path, self.digest, self.calibrated = path, digest, calibrated
        self.ratios = sorted(float(r) for r in ratios)
        self.higher_is_better = higher_is_better
        self.baseline = None
        self.results = collections.defaultdict(dict)   # str(gid) -> {ratio key: value}
        self.errors = collections.defaultdict(dict)    # str(gid) -> {ratio key: message}

    @classmethod
    def open(cls, path, digest, ratios=DEFAULT_RATIOS, higher_is_better=True, recompute=False, calibrated=False):
        """Resume the cache at ``path``; a cache for another graph, or made with(out) BatchNorm
        calibration when this one is not, is refused unless ``recompute``."""
        sens = cls(path, digest, ratios, higher_is_better, calibrated)
        if recompute or not os.path.exists(path):
            return sens
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                raise ValueError("not a tf1prune sensitivity file")
        except (OSError, ValueError) as e:
            raise Tf1PruneError("sensitivity cache %r is unreadable (%s): delete it or pass recompute=True"
                                % (path, e))
        if data.get("graph_digest") != digest:
            raise Tf1PruneError("sensitivity cache %r was made for another graph (digest %s, this graph %s): "
                                "delete it or pass recompute=True" % (path, data.get("graph_digest"), digest))
        if bool(data.get("higher_is_better", True)) != higher_is_better:
            raise Tf1PruneError("sensitivity cache %r was made with higher_is_better=%s"
                                % (path, data.get("higher_is_better")))
        if bool(data.get("calibrated", False)) != calibrated:
            raise Tf1PruneError("sensitivity cache %r was made %s BatchNorm calibration: pass recompute=True to "
                                "start over" % (path, "with" if data.get("calibrated") else "without"))
        sens.baseline = data.get("baseline")
        for gid, values in data.get("results", {}).items():
            sens.results[gid].update(values)
        for gid, values in data.get("errors", {}).items():
            sens.errors[gid].update(values)
        return sens

    @classmethod
    def load(cls, path, digest):
        """The cache at ``path`` as it was made (its ratios, metric direction and calibration)."""
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise Tf1PruneError("sensitivity cache %r is unreadable (%s): run ana() again" % (path, e))
        return cls.open(path, digest, data.get("ratios", DEFAULT_RATIOS), bool(data.get("higher_is_better", True)),
                        calibrated=bool(data.get("calibrated", False)))

    def save(self):
        atomic_write(self.path, json.dumps({
            "format": FORMAT, "version": 1, "graph_digest": self.digest, "higher_is_better": self.higher_is_better,
            "calibrated": self.calibrated,
            "baseline": self.baseline, "ratios": self.ratios, "results": self.results, "errors": self.errors},
            indent=1, sort_keys=True))

    def missing(self, group_ids):
        return [(gid, r) for gid in group_ids for r in self.ratios
                if _key(r) not in self.results.get(str(gid), {}) and _key(r) not in self.errors.get(str(gid), {})]

    def record(self, gid, ratio, value, error):
        if error is None:
            self.results[str(gid)][_key(ratio)] = value
        else:
            self.errors[str(gid)][_key(ratio)] = error

    def drop(self, gid, ratio):
        """Relative metric loss of pruning group ``gid`` at ``ratio`` (inf when it failed or is unknown)."""
        value = self.results.get(str(gid), {}).get(_key(ratio))
        if value is None or self.baseline is None:
            return float("inf")
        delta = (self.baseline - value) if self.higher_is_better else (value - self.baseline)
        return delta / max(abs(self.baseline), 1e-12)

    def curve(self, gid):
        """``[(ratio, drop)]`` for the measured ratios, ascending."""
        return [(r, self.drop(gid, r)) for r in self.ratios]


class Patcher:
    """Zeroed constants of one group at one ratio, for a frozen graph's analysis: the sparse
    graph's constants of the plan that prunes that group only; with ``calibration_data``, also
    the BatchNorm statistics re-estimated for that candidate (adaptive BatchNorm)."""

    def __init__(self, analysis, order, channel_divisible=1, values=None, calibration_data=None):
        self.analysis, self.order, self.divisible = analysis, order, channel_divisible
        self.values = values or const_values(analysis)
        self.originals = {}
        self.batches = None if calibration_data is None else calibrate.feed_batches(calibration_data)
        self.calibrator = None if self.batches is None else calibrate.Calibrator(analysis)

    def calibrated(self, patches):
        """``patches`` with the BatchNorm statistics of the graph they make (when calibrating)."""
        if self.calibrator is None:
            return patches
        return dict(patches, **self.calibrator.statistics(self.batches, patches))

    def baseline(self):
        """Patches of the unpruned candidate: none, or its recalibrated statistics."""
        return self.calibrated({})

    def close(self):
        if self.calibrator is not None:
            self.calibrator.close()

    def _original(self, name):
        if name not in self.originals:
            self.originals[name] = np.asarray(self.values(name))
        return self.originals[name]

    def patches(self, gid, ratio):
        """Patches of the candidate that prunes group ``gid`` at ``ratio`` only."""
        group = self.analysis.groups[gid]
        keep = self.analysis.full_keep()
        keep[self.order[gid][keep_count(group.channels, ratio, self.divisible):]] = False
        return self.keep_patches(keep)

    def keep_patches(self, keep):
        """Patches of the candidate that keeps the units of ``keep`` (a kept-unit mask or a spec)."""
        plan = self.analysis.plan(keep)
        return self.calibrated({name: plan.zero(name, self._original(name)) for name in plan.changed(ZEROED)})


def run(sens, graph_def, patcher, eval_fn, devices=("/CPU:0",), executor=None, checkpoint_interval=10,
        progress=True, workdir="."):
    """Evaluate the baseline and every missing (group, ratio) of ``sens``; save as it goes."""
    nodes = {n.name: n for n in graph_def.node}
    if sens.baseline is None:
        value, error = _worker.evaluate_on(graph_def, nodes, eval_fn, patcher.baseline())
        if error is not None:
            raise Tf1PruneError("baseline evaluation failed: %s" % error)
        sens.baseline = value
        sens.save()
    prunable = [g.id for g in patcher.analysis.groups if g.prunable]
    tasks = sens.missing(prunable)
    start, done = time.time(), 0
    progress = progress_lib.resolve(progress, "ana")
    patched = (((gid, ratio), patcher.patches(gid, ratio)) for gid, ratio in tasks)
    for (gid, ratio), value, error in evaluate(patched, graph_def, eval_fn, devices, executor, sens.digest, workdir):
        sens.record(gid, ratio, value, error)
        done += 1
        if done % max(1, checkpoint_interval) == 0:
            sens.save()
        if progress:
            progress(done, len(tasks), time.time() - start,
                     "group %d ratio %s%s" % (gid, _key(ratio), ": " + error if error else ""))
    sens.save()
    return sens
