"""One-step pruning (EagleEye, Li et al. 2020): whole candidates at a MACs target, each scored after
adaptive BatchNorm, the best one applied when it is better than uniform beyond noise.

The search samples per-group pruning allocations around the uniform one (candidate 0 is uniform):
each group's ratio is the uniform ratio scaled by a log-normal factor (``spread``), and the scale
is solved so that the slim MACs are within half a point of the target.  Every candidate's pruned
weights are zeroed in the frozen graph, its BatchNorm statistics are re-estimated exactly on the
calibration batches, and ``eval_fn`` scores it.  The candidates live in a result store in the
workspace (``<model>_sparsity_<s>.search``), tied to the graph and its weights; failed candidates
are retried by the next search.  When ``eval_fn`` returns per-example scores, the best candidate
replaces uniform only if a paired test over the examples says it is better (:meth:`Search.choice`):
a validation score's noise often exceeds the differences between candidates.
:meth:`OneStepPruningRunner.rescore` (optional, NetAdapt) scores uniform and the best finalists
again after a short training burst in the user's own loop; ``prune`` then follows those scores.
:meth:`OneStepPruningRunner.prune` applies a candidate to the
weights the search scored, whatever an earlier ``prune`` of the same search left in the session.

Example::

    runner = OneStepPruningRunner("resnet", sess, input_specs, ["logits"])
    runner.search(eval_fn, calibration_data, num_subnet=20, sparsity=0.5)
    runner.rescore(eval_fn, lambda: model.fit(x[:5000], y[:5000]), sparsity=0.5)   # optional
    shape_tensors, masks = runner.prune(sparsity=0.5)        # the best candidate (index=k: the k-th)
    ... fine-tune as with IterativePruningRunner ...
    slim_graph_def = runner.get_slim_graph_def()
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import progress as progress_lib, tfcompat
from tf1prune.apply import calibrate
from tf1prune.apply.patches import Patcher
from tf1prune.choose import compare, costs, spec as spec_lib
from tf1prune.choose.search import sample_candidates
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows.engine import Engine, default_devices
from tf1prune.workflows.session import SessionPruner
from tf1prune.workflows.store import ResultStore

KIND = "search"
BURST = "burst"


class Search:
    """The candidates of one MACs target: per-group kept counts, slim MACs and score (a view of a
    result store; :attr:`candidates` lists them as dicts)."""

    def __init__(self, store):
        self.store = store

    @classmethod
    def open(cls, path, digest, weights, sparsity, higher_is_better=True, recompute=False):
        """Resume the search at ``path`` (refused when made for another graph, weights or target)."""
        settings = {"sparsity": float(sparsity), "higher_is_better": bool(higher_is_better), "calibrated": True}
        keys = recompute if isinstance(recompute, bool) or recompute is None else [str(int(i)) for i in recompute]
        return cls(ResultStore.open(path, KIND, {"graph": digest, "weights": weights}, settings, keys))

    @classmethod
    def load(cls, path, digest):
        """The search at ``path`` as it was made; refused for another graph."""
        store = ResultStore.read(path, KIND)
        if store.identity.get("graph") != digest:
            raise Tf1PruneError("search file %r was made for another graph: search again" % path)
        search = cls(store)
        search.candidates   # checks every entry
        return search

    path = property(lambda self: self.store.path)
    sparsity = property(lambda self: self.store.settings["sparsity"])
    higher_is_better = property(lambda self: self.store.settings["higher_is_better"])
    baseline = property(lambda self: self.store.baseline)

    @property
    def cap(self):
        """Each group's kept count when the search began (channels pruned earlier), or None."""
        cap = self.store.extra.get("cap")
        return {int(g): int(n) for g, n in cap.items()} if cap else None

    @property
    def candidates(self):
        """``[{"counts": {gid: n}, "macs": int, "score": float|None, "error": str|None}]`` in sampling order."""
        out = []
        for i in range(len(self.store.entries)):
            entry = self.store.entries.get(str(i))
            try:
                out.append({"counts": {int(g): int(n) for g, n in entry["counts"].items()}, "macs": int(entry["macs"]),
                            "score": entry.get("value"), "error": entry.get("error")})
            except (AttributeError, KeyError, TypeError, ValueError):
                raise Tf1PruneError("search file %s (%s) is not usable: candidate %d is malformed; delete it or "
                                    "pass recompute=True" % (os.path.basename(self.path), self.path, i))
        return out

    def ranked(self):
        """Indices of the scored candidates, best first (ties: the earlier, uniform first)."""
        self.candidates   # checks every entry
        return ranked_keys(self.store, self.higher_is_better)

    def choice(self, level=compare.LEVEL):
        """``(index, why)``: the candidate :meth:`OneStepPruningRunner.prune` applies by default.  With
        per-example scores, the best-scoring candidate that beats uniform (candidate 0) in a paired
        test over the examples (:mod:`tf1prune.choose.compare`), else uniform; with one number per
        candidate, the best score."""
        return paired_choice(self.store, self.ranked(), self.higher_is_better, level)

    def top(self, k=5):
        """The best ``k`` candidates (dicts with their index), best first."""
        candidates = self.candidates
        return [dict(candidates[i], index=i) for i in self.ranked()[:k]]


def paired_choice(store, ranked, higher_is_better=True, level=compare.LEVEL):
    """``(key, why)``: of the keys ``ranked`` (best first) of ``store``, the best that beats uniform
    (key 0) in a paired test over its per-example scores, else uniform; the best when the scores
    are single numbers."""
    if not ranked:
        return None, "no candidate was scored"
    uniform = store.examples("0")
    if uniform is None:
        return ranked[0], ("the best score (eval_fn returns one number: return per-example scores to keep "
                           "uniform unless a candidate is better beyond noise)")
    rivals = [i for i in ranked if i != 0 and store.examples(str(i)) is not None]
    for i in rivals:
        if compare.significantly_better(store.examples(str(i)), uniform, higher_is_better, len(rivals), level):
            p = compare.paired_p_value(store.examples(str(i)), uniform, higher_is_better)
            return i, "candidate %d beats uniform over %d examples (paired p = %.2g, %d compared)" % (
                i, len(uniform), p, len(rivals))
    return 0, "uniform: no candidate beats it beyond noise over %d examples (%d compared)" % (len(uniform),
                                                                                           len(rivals))


def ranked_keys(store, higher_is_better=True):
    """The integer keys of ``store``'s scored entries, best first (ties: the lower key)."""
    scored = [int(k) for k, e in store.entries.items() if e.get("value") is not None]
    sign = -1 if higher_is_better else 1
    return sorted(scored, key=lambda i: (sign * store.value(str(i)), i))


class OneStepPruningRunner(SessionPruner):
    """Search whole candidates with adaptive BatchNorm, prune to the best (see the module docstring).

    Args: as :class:`~tf1prune.workflows.session.SessionPruner`.
    """

    def __init__(self, *args, **kwargs):
        self._searched = {}   # search path -> (spec when it began, the weights it scored)
        super().__init__(*args, **kwargs)

    def _search_path(self, sparsity, latency=None):
        if latency is not None:
            return self._path("%s_latency_%g.search" % (self.model_name, latency))
        return self._path("%s_sparsity_%g.search" % (self.model_name, sparsity))

    @staticmethod
    def _target(sparsity, latency, batch):
        """``(share of the cost to remove, cost model, tag)`` of a MACs ``sparsity`` or a ``latency``."""
        if latency is not None:
            latency = spec_lib.check_fraction("latency", latency)
            return 1.0 - latency, costs.latency_model(batch), "latency_%g" % latency
        if sparsity is None:
            raise Tf1PruneError("give a sparsity or a latency")
        sparsity = spec_lib.check_fraction("sparsity", sparsity)
        return sparsity, "macs", "sparsity_%g" % sparsity

    def search(self, eval_fn, calibration_data, num_subnet=20, sparsity=0.5, gpu_ids=None, executor=None,
               higher_is_better=True, spread=0.3, seed=0, max_rejections=None, recompute=False,
               progress=True, latency=None, batch=1):
        """Sample ``num_subnet`` candidates at a MACs ``sparsity`` (or, with ``latency``, at that share of
        the original's latency on this machine at ``batch``, on the latency cost model), recalibrate each one's BatchNorm on
        ``calibration_data`` (feed dicts, or a callable returning them), score it with
        ``eval_fn(frozen_graph_def)`` (a float, or per-example scores as a 1-D array: then :meth:`prune`
        keeps uniform unless a candidate is better beyond noise), and keep them in
        ``<workspace>/<model>_sparsity_<s>.search``.

        Resumes an earlier search of the same graph, weights and target, retrying failed candidates;
        ``recompute``: True starts over, a list of candidate indices scores those again.  ``executor``
        (any ``concurrent.futures.Executor``) or several ``gpu_ids`` evaluate in worker processes;
        ``progress``: a bar with an ETA on a terminal (see :mod:`tf1prune.progress`).
        Returns the :class:`Search`.
        """
        share, cost, _ = self._target(sparsity, latency, batch)
        if isinstance(num_subnet, bool) or not isinstance(num_subnet, int) or num_subnet < 1:
            raise Tf1PruneError("num_subnet must be a positive integer, got %r" % (num_subnet,))
        calibration_data = self.criterion_data = calibrate.feed_batches(calibration_data)
        os.makedirs(self.workspace, exist_ok=True)
        analysis = self._refresh()
        order, cap = self._pruned_ranking(analysis)
        devices = list(gpu_ids) if gpu_ids else default_devices()
        engine = Engine(self.frozen, eval_fn, devices, executor, self.workspace)
        path = self._search_path(sparsity, latency)
        done = self._finished(path, analysis, engine.weights, num_subnet, recompute)
        if done is not None:
            return done
        search = Search.open(path, analysis.digest(), engine.weights, share, higher_is_better, recompute)
        store = search.store
        if store.entries and search.cap is not None:   # resuming: the constraints the search began with
            cap = search.cap
        store.extra["cap"] = {str(g): n for g, n in cap.items()} if cap else None
        known = len(search.candidates)
        if known < num_subnet:
            wanted = sample_candidates(analysis, order, share, num_subnet, self.channel_divisible, spread, seed,
                                       max_rejections, cap, cost=cost)
            macs = costs.make("macs", analysis, order)
            for i, counts in enumerate(wanted[known:], known):
                store.record(i, None, None, counts={str(g): n for g, n in counts.items()}, macs=int(macs(counts)))
        self._searched[path] = (self.spec, {name: np.array(value) for name, value in self._weights(analysis).items()})
        keys = [str(i) for i in range(min(num_subnet, len(store.entries)))]
        candidates = search.candidates
        with Patcher(analysis, calibration_data=calibration_data) as patcher:
            engine.fill(store, keys, lambda key: patcher.patches(Choice.from_counts(analysis, order,
                                                                                    candidates[int(key)]["counts"])),
                        patcher.baseline, 1, progress, "search", lambda key: "candidate %s" % key)
        return search

    def _finished(self, path, analysis, weights, num_subnet, recompute):
        """The search at ``path`` when it is complete and the session holds one of its candidates (a
        script run again after ``prune``: the weights changed by that prune only), else None."""
        if recompute or not os.path.exists(path) or self.spec is None:
            return None
        search = Search.load(path, analysis.digest())
        candidates = search.candidates
        if search.store.identity.get("weights") == weights or len(candidates) < num_subnet \
                or any(c["score"] is None for c in candidates[:num_subnet]):
            return None
        if any(c["counts"] == self.spec.counts(analysis) for c in candidates):
            return search
        return None

    def _weights(self, analysis):
        """The session's values of every variable a candidate may change (zeroed, compensated,
        reconstructed, recalibrated: every bound parameter), from the frozen graph."""
        from tf1prune.core.rules import build
        nodes = analysis.view.nodes
        return {name: build.const_value(nodes[name]) for name in analysis.bindings if name in self.variables}

    def prune(self, sparsity=None, index=None, calibration=None, data_free="compensate", reconstruct=True,
              latency=None):
        """Prune in place to the searched candidate at ``sparsity`` (or ``latency``) that :meth:`Search.choice` picks (the
        best one that beats uniform beyond noise, given per-example scores), or the ``index``-th best;
        returns ``(shape_tensors, masks)`` with the masks semantics of :class:`IterativePruningRunner`.

        The candidate is applied to the weights the search scored: after another ``prune`` of the
        same search in this process, the channels that one removed are restored first.  Without them
        (a new process), a candidate that keeps channels the session has lost is refused.
        ``calibration``, ``data_free``, ``reconstruct``: as :meth:`IterativePruningRunner.prune`."""
        _, _, tag = self._target(sparsity, latency, 1)
        path = self._search_path(sparsity, latency)
        if not os.path.exists(path):
            raise Tf1PruneError("no search at %s for %r: call search() first"
                                % ("%.1f%% fewer MACs" % (100 * sparsity) if latency is None
                                   else "a latency of %g" % latency, self.model_name))
        analysis = self._refresh()
        if calibration is not None:
            calibration = calibrate.feed_batches(calibration)
            self.criterion_data = self.criterion_data or calibration   # the search's, when it ran here
        search = Search.load(path, analysis.digest())
        ranked = search.ranked()
        if not ranked:
            raise Tf1PruneError("no candidate of the search in %r was scored" % path)
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(ranked)):
            raise Tf1PruneError("index must be in [0, %d), got %r" % (len(ranked), index))
        if index is None:
            picked, why = self._choice(path, search)
            tf.logging.info("prune: candidate %d of the search at %s: %s", picked, tag, why)
        else:
            picked = ranked[index]
        return self._save_spec(self._candidate_spec(path, search, picked, calibration, data_free, reconstruct), tag)

    def _candidate_spec(self, path, search, picked, calibration, data_free, reconstruct):
        """The spec of candidate ``picked`` of ``search``, its refinement written into the session's
        weights as the search scored them (the spec is not applied yet)."""
        counts = search.candidates[picked]["counts"]
        analysis = self.analysis
        if path in self._searched and self.spec != self._searched[path][0]:
            start, weights = self._searched[path]
            self._restore(start, weights)
            analysis = self._refresh()
        order, cap = self._pruned_ranking(analysis)
        lost = sorted(g for g, n in counts.items() if cap and n > cap.get(g, n))
        if lost:
            raise Tf1PruneError("candidate %d keeps channels of group %d that an earlier prune() removed from the "
                                "session's weights: restore the weights the search scored (e.g. reload the "
                                "checkpoint) and prune again" % (picked, lost[0]))
        spec = spec_lib.spec_from_counts(analysis, order, counts, self.criterion, self.channel_divisible)
        self._refined(spec, calibration, data_free, reconstruct)
        return spec

    # --- finalists after a training burst (NetAdapt) ----------------------------
    @staticmethod
    def _burst_path(path):
        return path[:-len(".search")] + ".burst"

    def _burst_store(self, path, search, finalists=None, recompute=False):
        identity = {"graph": search.store.identity.get("graph"), "search": search.store.identity.get("weights")}
        if finalists is None:   # reading: a file of this search, else nothing
            if not os.path.exists(self._burst_path(path)):
                return None
            store = ResultStore.read(self._burst_path(path), BURST)
            return store if store.identity == identity else None
        return ResultStore.open(self._burst_path(path), BURST, identity, {"finalists": int(finalists)}, recompute)

    def choice(self, sparsity=None, latency=None):
        """``(index, why)``: the candidate of the search at ``sparsity`` (or ``latency``) that
        :meth:`prune` applies by default."""
        path = self._search_path(sparsity, latency)
        if not os.path.exists(path):
            raise Tf1PruneError("no search at %s: call search() first" % path)
        return self._choice(path, Search.load(path, self._refresh().digest()))

    def _choice(self, path, search):
        """After :meth:`rescore` of this search: the finalist that wins after the burst; else
        :meth:`Search.choice`."""
        store = self._burst_store(path, search)
        if store is None or store.value("0") is None:
            return search.choice()
        picked, why = paired_choice(store, ranked_keys(store, search.higher_is_better), search.higher_is_better)
        return picked, "after the training burst of rescore(): " + why

    def rescore(self, eval_fn, train_fn, sparsity=0.5, finalists=3, latency=None, calibration=None,
                data_free="compensate", reconstruct=True, recompute=False, progress=True):
        """Score the best ``finalists`` candidates of this process's search at ``sparsity`` (or
        ``latency``), and uniform, after a short training burst (NetAdapt, Yang et al. 2018): each one is
        applied to the weights the search scored (as :meth:`prune` would, with ``calibration``,
        ``data_free`` and ``reconstruct``), ``train_fn()`` trains it (a few hundred steps of the
        user's own loop: the masks keep it pruned), its BatchNorm is re-estimated on the search's
        calibration data and ``eval_fn(frozen_graph_def)`` scores it.  Between finalists and at the
        end every global variable (optimiser slots too; ones the burst created are re-initialised)
        is restored, so the session is as it was.  :meth:`prune` then picks among these scores: the
        best finalist that beats uniform in a paired test (per-example scores), else uniform.
        Scores are kept in ``<model>_sparsity_<s>.burst``; a changed ``train_fn`` needs
        ``recompute=True``.  Returns ``{candidate index: score or None}``."""
        if not callable(train_fn) or not callable(eval_fn):
            raise Tf1PruneError("rescore() needs callables eval_fn(graph_def) and train_fn()")
        if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
            raise Tf1PruneError("finalists must be a positive integer, got %r" % (finalists,))
        _, _, tag = self._target(sparsity, latency, 1)
        path = self._search_path(sparsity, latency)
        if path not in self._searched:
            raise Tf1PruneError("rescore() trains from the weights the search scored: call search() for %s in "
                                "this process first" % tag)
        calibration = calibrate.feed_batches(calibration) if calibration is not None else None
        search = Search.load(path, self._refresh().digest())
        if search.store.value("0") is None:
            raise Tf1PruneError("uniform (candidate 0) of the search at %s was not scored: search again" % tag)
        picks = [0] + [i for i in search.ranked() if i != 0][:finalists]
        store = self._burst_store(path, search, finalists, recompute)
        graph = self.sess.graph
        saved = dict(zip(graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES),
                         self.sess.run(graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES))))
        start = (self.spec, self.refinement)
        loader = tfcompat.VariableLoader(graph)
        loader.prepare(saved)
        steps = progress_lib.Steps(len(store.missing([str(i) for i in picks])), progress, "rescore")

        def reset(spec):
            if self.mask_set is not None:   # masks off: they would zero the restored weights
                self.mask_set.load(self.sess, {n: np.ones(m.shape.as_list()) for n, m in self.mask_set.masks.items()})
            loader.load(self.sess, saved)
            new = [v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES) if v not in saved]
            if new:
                self.sess.run(tf.variables_initializer(new))
            self.spec = spec
            if spec is not None:
                self._refresh()
                self._apply(spec)
        try:
            for i in picks:
                if store.value(str(i)) is not None:
                    continue
                reset(start[0])
                self._refresh()
                self.spec = self._candidate_spec(path, search, i, calibration, data_free, reconstruct)
                self._apply(self.spec)   # not saved as the workspace's latest spec: it is undone below
                try:
                    train_fn()
                    self.recalibrate(self.criterion_data or calibration)
                    value, error = Engine(self.frozen_graph_def(), eval_fn).score()
                except Exception as e:  # the user's train_fn: recorded, the session restored below
                    value, error = None, "%s: %s" % (type(e).__name__, e)
                store.record_score(i, value, error)
                store.save()
                steps.tick("candidate %d" % i + (": " + error if error else ""))
        finally:
            reset(start[0])
            self.refinement = start[1]
            self._refresh()
        return {i: store.value(str(i)) for i in picks}

    def _restore(self, spec, weights):
        """Back to the state a search began in: ``spec`` pruned, the other channels with ``weights``."""
        current = self._weights(self.analysis)
        if self.spec is not None:
            plan = self.analysis.plan(self.spec)
            touched = set(self.refinement.compensated) if self.refinement is not None else set()
            if self.refinement is not None and self.refinement.reconstruction is not None:
                touched |= set(self.refinement.reconstruction.updates)
            changed = [n for n in weights if n in current and n not in touched and not np.allclose(
                plan.zero(n, weights[n]), plan.zero(n, current[n]))]
            if changed:
                tf.logging.warning("prune: %d weights changed since the search (e.g. %r, fine-tuning?): the candidate "
                                   "is applied to the weights the search scored", len(changed), changed[0])
        if self.mask_set is not None:   # masks off first: they would zero the restored weights again
            self.mask_set.load(self.sess, {n: np.ones(m.shape.as_list()) for n, m in self.mask_set.masks.items()})
        self._load(weights)
        self.spec = spec
        if spec is not None:
            self._apply(spec)
