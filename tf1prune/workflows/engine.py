"""The evaluation engine: every workflow scores its candidates here.

A :class:`Candidate` is a key and the constants to patch into one frozen base graph (pruned weights
zeroed, BatchNorm statistics re-estimated...).  :class:`Engine` runs ``eval_fn`` on each patched
graph: in this process (the graph is patched and restored around every call), in one worker
process per device, or on any ``concurrent.futures.Executor`` (a thread pool, a Dask client's).

Workers never see stale weights: what they evaluate is keyed by the SHA-256 of the base graph's
bytes (weights included), not by its channel structure.  The graph travels through a file of the
engine's own in ``workdir`` (on a cluster, a folder the workers share), removed when the run ends.

Example::

    engine = Engine(frozen_graph_def, eval_fn, executor=pool, workdir=".")
    baseline = engine.baseline()
    for key, value, error in engine.run(Candidate(k, patches) for k, patches in ...):
        ...
"""
import collections
import concurrent.futures
import hashlib
import multiprocessing
import os
import pickle
import sys
import uuid

from tf1prune import progress as progress_lib
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def
from tf1prune.workflows import _worker

Candidate = collections.namedtuple("Candidate", "key patches")
Candidate.__doc__ = "One thing to score: a key, and the constants (name -> value) patched into the base graph."


def content_digest(graph_def):
    """SHA-256 (16 hex digits) of a GraphDef's bytes: it changes with any weight."""
    return hashlib.sha256(graph_def.SerializeToString(deterministic=True)).hexdigest()[:16]


def weights_digest(graph_def):
    """SHA-256 (16 hex digits) of a frozen graph's weights: every constant of the main graph, by name.
    Unlike :func:`content_digest` it does not see names a process makes up (Keras ``If`` function
    names), so the same model rebuilt in another process has the same weights digest."""
    from tf1prune.core.rules import build, is_const
    h = hashlib.sha256()
    for node in sorted((n for n in graph_def.node if is_const(n.op)), key=lambda n: n.name):
        h.update(node.name.encode() + b"\0" + build.const_bytes(node) + b"\0")
    return h.hexdigest()[:16]


def default_devices():
    """Every GPU, one worker each; else the CPU, in this process."""
    import tensorflow.compat.v1 as tf
    gpus = tf.config.experimental.list_physical_devices("GPU")
    return ["/GPU:%d" % i for i in range(len(gpus))] or ["/CPU:0"]


class Engine:
    """``eval_fn(graph_def) -> float`` (or per-example scores: a 1-D array, whose mean is the score and
    which the store keeps for paired comparisons) on patched copies of ``graph_def`` (see the module docstring).

    Args:
      graph_def: the frozen base graph.
      eval_fn: the user's metric; its failures and non-finite results are recorded, not raised.
      devices: one worker process per device when there are several (default: this process).
      executor: any ``concurrent.futures.Executor``; wins over ``devices``.
      workdir: where the graph file for workers is written (default: the current folder).
    """

    def __init__(self, graph_def, eval_fn, devices=None, executor=None, workdir=None):
        if not callable(eval_fn):
            raise Tf1PruneError("eval_fn must be callable, got %r" % (eval_fn,))
        self.graph_def, self.eval_fn = graph_def, eval_fn
        self.devices = list(devices) if devices else ["/CPU:0"]
        self.executor, self.workdir = executor, workdir or os.getcwd()
        self.content = content_digest(graph_def)
        self.weights = weights_digest(graph_def)
        self._nodes = None

    @property
    def parallel(self):
        """True when candidates run outside this process."""
        return self.executor is not None or len(self.devices) > 1

    def score(self, patches=None):
        """``(value, error)`` of one patched graph, in this process."""
        if self._nodes is None:
            self._nodes = {n.name: n for n in self.graph_def.node}
        return _worker.evaluate_on(self.graph_def, self._nodes, self.eval_fn, patches or {})

    def baseline(self, patches=None):
        """The score of the base graph (with ``patches``, e.g. recalibrated statistics); a failure is
        a :class:`Tf1PruneError`, since nothing can be compared with it."""
        value, error = self.score(patches)
        if error is not None:
            raise Tf1PruneError("baseline evaluation failed: %s" % error)
        return value

    def run(self, candidates):
        """Yield ``(key, value, error)`` for every :class:`Candidate`, as they finish."""
        if not self.parallel:
            for key, patches in candidates:
                yield (key,) + self.score(patches)
            return
        try:
            pickle.dumps(self.eval_fn)
        except Exception as e:
            raise Tf1PruneError("eval_fn cannot be sent to worker processes (%s): define it at module level "
                                "or use a single device" % e)
        path = os.path.abspath(os.path.join(self.workdir, ".tf1prune-%s-%s.pb" % (self.content, uuid.uuid4().hex[:8])))
        save_graph_def(self.graph_def, path)
        executor, own = self.executor, self.executor is None
        if own:
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            for device in self.devices:
                queue.put(device)
            executor = concurrent.futures.ProcessPoolExecutor(len(self.devices), mp_context=context,
                                                              initializer=_worker.init, initargs=(queue,))
        try:
            candidates, pending = iter(candidates), {}
            window = max(4, 2 * len(self.devices))   # patches are made as workers free up, not all at once
            while True:
                for key, patches in candidates:
                    pending[executor.submit(_worker.evaluate, path, self.content, self.eval_fn, patches)] = key
                    if len(pending) >= window:
                        break
                if not pending:
                    break
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except Exception as e:  # a worker died
                        result = (None, "%s: %s" % (type(e).__name__, e))
                    yield (pending.pop(future),) + tuple(result)
        finally:
            if own:   # cancel_futures: Python 3.9+ (TF 1.15 runs on 3.7)
                executor.shutdown(wait=True, **({"cancel_futures": True} if sys.version_info >= (3, 9) else {}))
            try:
                os.remove(path)
            except OSError:
                pass

    def fill(self, store, keys, patches_of, baseline=None, checkpoint_interval=1, progress=True, label="evaluate",
             describe=str):
        """Score every key of ``keys`` that ``store`` lacks (failed ones included) and record it there.

        ``patches_of(key)`` makes a candidate's patches when a worker is ready for it; ``baseline()``, when
        given, the unpruned candidate's (scored first when the store has no baseline).  The store is saved every
        ``checkpoint_interval`` results and at the end; ``progress`` as in :mod:`tf1prune.progress`.
        Returns the store."""
        if baseline is not None and store.baseline is None:
            store.baseline = float(self.baseline(baseline()))
            store.save()
        todo = store.missing(keys)
        steps = progress_lib.Steps(len(todo), progress, label)
        done = 0
        try:
            for key, value, error in self.run(Candidate(k, patches_of(k)) for k in todo):
                store.record_score(key, value, error)
                done += 1
                if done % max(1, checkpoint_interval) == 0:
                    store.save()
                steps.tick(describe(key) + (": " + error if error else ""))
        finally:
            store.save()
        return store
