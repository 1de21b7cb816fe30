"""One-step pruning (EagleEye, Li et al. 2020): whole candidates at a MACs target, each scored after
adaptive BatchNorm, the best one applied.

The search samples per-group pruning allocations around the uniform one (candidate 0 is uniform):
each group's ratio is the uniform ratio scaled by a log-normal factor (``spread``), and the scale
is solved so that the slim MACs are within half a point of the target.  Every candidate's pruned
weights are zeroed in the frozen graph, its BatchNorm statistics are re-estimated exactly on the
calibration batches, and ``eval_fn`` scores it.  The candidates live in a resumable JSON search
file in the workspace, tied to the graph digest.

Example::

    runner = OneStepPruningRunner("resnet", sess, input_specs, ["logits"])
    runner.search(eval_fn, calibration_data, num_subnet=20, sparsity=0.5)
    shape_tensors, masks = runner.prune(sparsity=0.5)        # the best candidate (index=k: the k-th)
    ... fine-tune as with IterativePruningRunner ...
    slim_graph_def = runner.get_slim_graph_def()
"""
import json
import os
import time

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import allocation, calibrate, progress as progress_lib, sensitivity, spec as spec_lib
from tf1prune.errors import Tf1PruneError
from tf1prune.evaluate import default_devices, evaluate
from tf1prune.files import atomic_write
from tf1prune.session import SessionPruner

FORMAT = "tf1prune-search"


class Search:
    """The candidates of one MACs target: per-group kept counts, slim MACs and score."""

    def __init__(self, path, digest, sparsity, higher_is_better=True):
        self.path, self.digest, self.sparsity = path, digest, float(sparsity)
        self.higher_is_better = higher_is_better
        self.cap = None             # each group's kept count when the search began (channels pruned earlier)
        self.baseline = None        # the unpruned model's score (after calibration)
        self.candidates = []        # {"counts": {gid: n}, "macs": int, "score": float|None, "error": str|None}

    @classmethod
    def open(cls, path, digest, sparsity, higher_is_better=True, recompute=False):
        """Resume the search file at ``path`` (refused when made for another graph or target)."""
        search = cls(path, digest, sparsity, higher_is_better)
        if recompute or not os.path.exists(path):
            return search
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                raise ValueError("not a tf1prune search file")
        except (OSError, ValueError) as e:
            raise Tf1PruneError("search file %r is unreadable (%s): delete it or pass recompute=True" % (path, e))
        for key, want in (("graph_digest", digest), ("sparsity", float(sparsity)),
                          ("higher_is_better", higher_is_better)):
            if data.get(key) != want:
                raise Tf1PruneError("search file %r was made with %s=%r, not %r: delete it or pass recompute=True"
                                    % (path, key, data.get(key), want))
        search.baseline = data.get("baseline")
        search.cap = {int(g): n for g, n in data["cap"].items()} if data.get("cap") else None
        search.candidates = [dict(c, counts={int(g): n for g, n in c["counts"].items()}) for c in data["candidates"]]
        return search

    def save(self):
        atomic_write(self.path, json.dumps({
            "format": FORMAT, "version": 1, "graph_digest": self.digest, "sparsity": self.sparsity,
            "higher_is_better": self.higher_is_better, "calibrated": True, "baseline": self.baseline,
            "cap": {str(g): n for g, n in self.cap.items()} if self.cap else None,
            "candidates": self.candidates}, indent=1, sort_keys=True))

    def ranked(self):
        """Indices of the scored candidates, best first (ties: the earlier, uniform first)."""
        scored = [i for i, c in enumerate(self.candidates) if c.get("score") is not None]
        sign = -1 if self.higher_is_better else 1
        return sorted(scored, key=lambda i: (sign * self.candidates[i]["score"], i))

    def top(self, k=5):
        """The best ``k`` candidates (dicts with their index), best first."""
        return [dict(self.candidates[i], index=i) for i in self.ranked()[:k]]


def sample_candidates(analysis, order, sparsity, count, divisible=1, spread=0.3, seed=0, max_rejections=None,
                      cap=None):
    """Up to ``count`` distinct per-group kept counts within half a point of ``sparsity``: the uniform
    allocation first, then log-normal perturbations of it (deterministic for a ``seed``); ``cap``
    bounds each group's count (channels pruned earlier stay pruned).  Fewer are returned, with a
    warning, after ``max_rejections`` rejected samples in all; an unreachable target raises."""
    rng = np.random.RandomState(seed)
    gids = sorted(order)
    out, seen, rejected = [], set(), 0
    limit = max_rejections if max_rejections is not None else 10 * count + 20
    weights = {g: 1.0 for g in gids}
    while len(out) < count:
        def counts_at(t, w=weights):
            mean = np.mean(list(w.values()))
            return {g: allocation.keep_count(analysis.groups[g].channels, min(0.98, t * w[g] / mean), divisible)
                    for g in gids}
        counts = allocation.solve_sparsity(analysis, order, sparsity, divisible, counts_at, cap)
        problem = allocation.target_problem(analysis, order, counts, sparsity, cap)
        key = tuple(counts[g] for g in gids)
        if problem or key in seen:
            rejected += 1
            if problem and not out:
                raise Tf1PruneError(problem)
            if rejected > limit:   # the space is exhausted (few groups, or a tight cap): search what exists
                tf.logging.warning("search: found %d of %d distinct candidates within half a point of %.1f%% fewer "
                                   "MACs after %d rejections (%s)", len(out), count, 100 * sparsity, rejected,
                                   problem or "duplicates")
                break
        else:
            seen.add(key)
            out.append(counts)
        weights = {g: float(np.exp(spread * rng.randn())) for g in gids}
    return out


class OneStepPruningRunner(SessionPruner):
    """Search whole candidates with adaptive BatchNorm, prune to the best (see the module docstring).

    Args: as :class:`~tf1prune.session.SessionPruner`.
    """

    def _search_path(self, sparsity):
        return self._path("%s_sparsity_%g.search" % (self.model_name, sparsity))

    def search(self, eval_fn, calibration_data, num_subnet=20, sparsity=0.5, gpu_ids=None, executor=None,
               higher_is_better=True, spread=0.3, seed=0, max_rejections=None, recompute=False,
               progress=True):
        """Sample ``num_subnet`` candidates at a MACs ``sparsity``, recalibrate each one's BatchNorm on
        ``calibration_data`` (feed dicts, or a callable returning them), score it with
        ``eval_fn(frozen_graph_def) -> float``, and keep them in ``<workspace>/<model>_sparsity_<s>.search``.

        Resumes an earlier search of the same graph and target; ``executor`` (any
        ``concurrent.futures.Executor``) or several ``gpu_ids`` evaluate in worker processes;
        ``progress``: a bar with an ETA on a terminal (see :mod:`tf1prune.progress`).
        Returns the :class:`Search`.
        """
        sparsity = spec_lib.check_fraction("sparsity", sparsity)
        if isinstance(num_subnet, bool) or not isinstance(num_subnet, int) or num_subnet < 1:
            raise Tf1PruneError("num_subnet must be a positive integer, got %r" % (num_subnet,))
        calibration_data = calibrate.feed_batches(calibration_data)
        os.makedirs(self.workspace, exist_ok=True)
        analysis = self._refresh()
        order, cap = self._pruned_order(analysis)
        search = Search.open(self._search_path(sparsity), analysis.digest(), sparsity, higher_is_better, recompute)
        if search.candidates and search.cap is not None:   # resuming: the constraints the search began with
            cap = search.cap
        search.cap = cap
        if len(search.candidates) < num_subnet:
            wanted = sample_candidates(analysis, order, sparsity, num_subnet, self.channel_divisible, spread, seed,
                                       max_rejections, cap)
            macs = allocation.MacsModel(analysis, order)
            for counts in wanted[len(search.candidates):]:
                search.candidates.append({"counts": counts, "score": None, "error": None, "macs": int(macs(counts))})
        patcher = sensitivity.Patcher(analysis, order, self.channel_divisible, calibration_data=calibration_data)
        try:
            if search.baseline is None:
                value, error = next(evaluate([(None, patcher.baseline())], self.frozen, eval_fn))[1:]
                if error is not None:
                    raise Tf1PruneError("baseline evaluation failed: %s" % error)
                search.baseline = value
                search.save()
            todo = [i for i, c in enumerate(search.candidates[:num_subnet]) if c["score"] is None and not c["error"]]
            tasks = ((i, patcher.keep_patches(allocation.keep_mask(analysis, order, search.candidates[i]["counts"])))
                     for i in todo)
            start, done = time.time(), 0
            progress = progress_lib.resolve(progress, "search")
            devices = list(gpu_ids) if gpu_ids else default_devices()
            for i, value, error in evaluate(tasks, self.frozen, eval_fn, devices, executor, analysis.digest(),
                                            self.workspace):
                search.candidates[i].update(score=value, error=error)
                search.save()
                done += 1
                if progress:
                    progress(done, len(todo), time.time() - start, "candidate %d%s" % (i, ": " + error if error else ""))
        finally:
            patcher.close()
        search.save()
        return search

    def _pruned_order(self, analysis):
        """The ranking with channels pruned earlier last, and each group's cap (its kept count)."""
        if self.spec is None:
            return self._order(analysis), None
        return self._order(analysis, ~self.spec.keep_mask(analysis)), {g["id"]: len(g["keep"]) for g in self.spec.groups}

    def prune(self, sparsity, index=None):
        """Prune in place to the best searched candidate at ``sparsity`` (or the ``index``-th best);
        returns ``(shape_tensors, masks)`` with the masks semantics of :class:`IterativePruningRunner`."""
        sparsity = spec_lib.check_fraction("sparsity", sparsity)
        path = self._search_path(sparsity)
        if not os.path.exists(path):
            raise Tf1PruneError("no search at %.1f%% fewer MACs for %r: call search() first"
                                % (100 * sparsity, self.model_name))
        analysis = self._refresh()
        with open(path) as f:
            higher = bool(json.load(f).get("higher_is_better", True))
        search = Search.open(path, analysis.digest(), sparsity, higher)
        ranked = search.ranked()
        if not ranked:
            raise Tf1PruneError("no candidate of the search in %r was scored" % path)
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(ranked)):
            raise Tf1PruneError("index must be in [0, %d), got %r" % (len(ranked), index))
        counts = search.candidates[ranked[index or 0]]["counts"]
        order = self._pruned_order(analysis)[0]
        return self._save_spec(spec_lib.spec_from_counts(analysis, order, counts, self.criterion,
                                                         self.channel_divisible), "sparsity_%g" % sparsity)


METRICS = ("kl", "top1", "mse")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Agreement:
    """A label-free score: how close a graph's outputs are to the original's on calibration inputs
    (higher is better): minus the mean KL divergence of the softmax of the first output (``kl``), the
    share of equal arg-max (``top1``), or minus the mean squared error relative to the original's
    mean square (``mse``)."""

    def __init__(self, graph_def, batches, output_node_names, metric="kl"):
        if metric not in METRICS:
            raise Tf1PruneError("unknown metric %r (choose from %s)" % (metric, ", ".join(METRICS)))
        self.batches, self.metric = batches, metric
        self.output = output_node_names[0] if ":" in output_node_names[0] else output_node_names[0] + ":0"
        self.reference = self.outputs(graph_def)
        if metric != "mse" and (self.reference.ndim != 2 or self.reference.shape[1] < 2):
            raise Tf1PruneError("metric %r needs a [batch, classes] output, %r is %s: use mse"
                                % (metric, self.output, list(self.reference.shape)))

    def outputs(self, graph_def):
        import tensorflow.compat.v1 as tf
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=graph, config=calibrate.session_config()) as sess:
            return np.concatenate([sess.run(self.output, feed) for feed in self.batches]).astype(np.float64)

    def __call__(self, graph_def):
        out, ref = self.outputs(graph_def), self.reference
        if self.metric == "top1":
            return float(np.mean(out.argmax(-1) == ref.argmax(-1)))
        if self.metric == "mse":
            return -float(np.mean((out - ref) ** 2) / max(np.mean(ref ** 2), 1e-12))
        p, q = _softmax(ref), _softmax(out)
        return -float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=-1)))


def search_graph_def(analysis, sparsity, calibration_data, num_subnet=20, metric="kl", criterion="l1",
                     channel_divisible=1, spread=0.3, seed=0, progress=None):
    """Label-free one-step search on a frozen graph: candidates at ``sparsity``, each with its
    BatchNorm recalibrated on ``calibration_data`` and scored by :class:`Agreement` with the
    original outputs.  Returns ``(best spec, [(candidate counts, score or None, error)])``.

    Example::

        spec, results = search_graph_def(tf1prune.analyze(gd, specs, ["logits"]), 0.5, batches, num_subnet=20)
    """
    from tf1prune import importance
    batches = calibrate.feed_batches(calibration_data)
    order = allocation.rank_units(analysis, importance.unit_scores(analysis, criterion))
    candidates = sample_candidates(analysis, order, sparsity, num_subnet, channel_divisible, spread, seed)
    score = Agreement(analysis.view.graph_def, batches, analysis.view.output_node_names, metric)
    patcher = sensitivity.Patcher(analysis, order, channel_divisible, calibration_data=batches)
    results = []
    try:
        tasks = ((i, patcher.keep_patches(allocation.keep_mask(analysis, order, c)))
                 for i, c in enumerate(candidates))
        start, progress = time.time(), progress_lib.resolve(progress, "search")
        for i, value, error in evaluate(tasks, analysis.view.graph_def, score):
            results.append((candidates[i], value, error))
            if progress:
                progress(len(results), len(candidates), time.time() - start, "candidate %d" % i)
    finally:
        patcher.close()
    scored = [(value, i) for i, (_, value, _) in enumerate(results) if value is not None]
    if not scored:
        raise Tf1PruneError("no candidate could be scored: %s" % results[0][2])
    best = results[max(scored, key=lambda x: (x[0], -x[1]))[1]][0]
    return spec_lib.spec_from_counts(analysis, order, best, criterion, channel_divisible), results
