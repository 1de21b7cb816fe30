"""Sensitivity analysis: the metric with one group pruned at a time, cached and resumable.

The graph is frozen once; each evaluation only patches the constants of one
group (its kernels, biases and BN gamma/beta zeroed for the pruned channels),
runs ``eval_fn(graph_def)`` and restores them.  Results go to a JSON cache
(``<workspace>/<model>.sens``) tied to the graph digest and written atomically
every ``checkpoint_interval`` evaluations, so a killed run loses at most those.
"""
import collections
import concurrent.futures
import json
import multiprocessing
import os
import pickle
import sys
import time

import numpy as np

from tf1prune import _worker
from tf1prune.allocation import keep_count
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write, save_graph_def
from tf1prune.importance import const_values
from tf1prune.rules import ZEROED

FORMAT = "tf1prune-sens"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _key(ratio):
    return "%.4g" % ratio


class Sensitivity:
    """Metric per (group, ratio), the baseline, and failed evaluations."""

    def __init__(self, path, digest, ratios=DEFAULT_RATIOS, higher_is_better=True):
        self.path, self.digest = path, digest
        self.ratios = sorted(float(r) for r in ratios)
        self.higher_is_better = higher_is_better
        self.baseline = None
        self.results = collections.defaultdict(dict)   # str(gid) -> {ratio key: value}
        self.errors = collections.defaultdict(dict)    # str(gid) -> {ratio key: message}

    @classmethod
    def open(cls, path, digest, ratios=DEFAULT_RATIOS, higher_is_better=True, recompute=False):
        """Resume the cache at ``path``; a cache for another graph is refused unless ``recompute``."""
        sens = cls(path, digest, ratios, higher_is_better)
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
        sens.baseline = data.get("baseline")
        for gid, values in data.get("results", {}).items():
            sens.results[gid].update(values)
        for gid, values in data.get("errors", {}).items():
            sens.errors[gid].update(values)
        return sens

    def save(self):
        atomic_write(self.path, json.dumps({
            "format": FORMAT, "version": 1, "graph_digest": self.digest, "higher_is_better": self.higher_is_better,
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
    graph's constants of the plan that prunes that group only."""

    def __init__(self, analysis, order, channel_divisible=1, values=None):
        self.analysis, self.order, self.divisible = analysis, order, channel_divisible
        self.values = values or const_values(analysis)
        self.originals = {}

    def _original(self, name):
        if name not in self.originals:
            self.originals[name] = np.asarray(self.values(name))
        return self.originals[name]

    def patches(self, gid, ratio):
        group = self.analysis.groups[gid]
        keep = self.analysis.full_keep()
        keep[self.order[gid][keep_count(group.channels, ratio, self.divisible):]] = False
        plan = self.analysis.plan(keep)
        return {name: plan.zero(name, self._original(name)) for name in plan.changed(ZEROED)}


def print_progress(done, total, elapsed, what):
    """The default progress report of ``ana``: one line on stderr per evaluation."""
    eta = elapsed / done * (total - done) if done else float("nan")
    sys.stderr.write("ana: %d/%d evaluations (%s), %.1f s elapsed, ETA %.1f s\n" % (done, total, what, elapsed, eta))


def run(sens, graph_def, patcher, eval_fn, devices=("/CPU:0",), executor=None, checkpoint_interval=10,
        progress=print_progress, workdir="."):
    """Evaluate the baseline and every missing (group, ratio) of ``sens``; save as it goes."""
    nodes = {n.name: n for n in graph_def.node}
    if sens.baseline is None:
        value, error = _worker.evaluate_on(graph_def, nodes, eval_fn, {})
        if error is not None:
            raise Tf1PruneError("baseline evaluation failed: %s" % error)
        sens.baseline = value
        sens.save()
    prunable = [g.id for g in patcher.analysis.groups if g.prunable]
    tasks = sens.missing(prunable)
    start, done = time.time(), 0
    for gid, ratio, value, error in _evaluate_all(tasks, graph_def, nodes, patcher, eval_fn, devices, executor,
                                                  sens.digest, workdir):
        sens.record(gid, ratio, value, error)
        done += 1
        if done % max(1, checkpoint_interval) == 0:
            sens.save()
        if progress:
            progress(done, len(tasks), time.time() - start,
                     "group %d ratio %s%s" % (gid, _key(ratio), ": " + error if error else ""))
    sens.save()
    return sens


def _evaluate_all(tasks, graph_def, nodes, patcher, eval_fn, devices, executor, digest, workdir):
    if executor is None and len(devices) <= 1:
        for gid, ratio in tasks:
            yield (gid, ratio) + _worker.evaluate_on(graph_def, nodes, eval_fn, patcher.patches(gid, ratio))
        return
    try:
        pickle.dumps(eval_fn)
    except Exception as e:
        raise Tf1PruneError("eval_fn cannot be sent to worker processes (%s): define it at module level "
                            "or use a single device" % e)
    path = os.path.join(workdir, "%s.frozen.pb" % digest)
    if not os.path.exists(path):
        save_graph_def(graph_def, path)
    own = executor is None
    if own:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        executor = concurrent.futures.ProcessPoolExecutor(len(devices), mp_context=context,
                                                          initializer=_worker.init, initargs=(queue,))
    try:
        pending = {}
        for gid, ratio in tasks:
            future = executor.submit(_worker.evaluate, path, digest, eval_fn, patcher.patches(gid, ratio))
            pending[future] = (gid, ratio)
        for future in concurrent.futures.as_completed(pending):
            gid, ratio = pending[future]
            try:
                result = future.result()
            except Exception as e:  # a worker died
                result = (None, "%s: %s" % (type(e).__name__, e))
            yield (gid, ratio) + tuple(result)
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
