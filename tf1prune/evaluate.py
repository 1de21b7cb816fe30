"""Evaluate ``eval_fn`` on one frozen graph with constants patched in, here or in worker processes.

Each task is ``(key, patches)``: the constants to replace (pruned weights, recalibrated BatchNorm
statistics).  In this process the graph is patched and restored around every call; with several
devices or an ``executor`` (any ``concurrent.futures.Executor``, e.g. a Dask client's), the graph
is written once to ``<workdir>/<digest>.frozen.pb`` and every worker reads it once (on a cluster,
put the workdir on a filesystem the workers share).

Example::

    for key, value, error in evaluate(tasks, graph_def, eval_fn, digest=a.digest(), workdir="."):
        ...
"""
import concurrent.futures
import multiprocessing
import os
import pickle
import sys

from tf1prune import _worker
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def


def default_devices():
    """Every GPU, one worker each; else the CPU, in this process."""
    import tensorflow.compat.v1 as tf
    gpus = tf.config.experimental.list_physical_devices("GPU")
    return ["/GPU:%d" % i for i in range(len(gpus))] or ["/CPU:0"]


def evaluate(tasks, graph_def, eval_fn, devices=("/CPU:0",), executor=None, digest="graph", workdir="."):
    """Yield ``(key, value, error)`` for every ``(key, patches)`` of ``tasks`` (as they finish)."""
    if executor is None and len(devices) <= 1:
        nodes = {n.name: n for n in graph_def.node}
        for key, patches in tasks:
            yield (key,) + _worker.evaluate_on(graph_def, nodes, eval_fn, patches)
        return
    try:
        pickle.dumps(eval_fn)
    except Exception as e:
        raise Tf1PruneError("eval_fn cannot be sent to worker processes (%s): define it at module level "
                            "or use a single device" % e)
    path = os.path.abspath(os.path.join(workdir, "%s.frozen.pb" % digest))
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
        pending = {executor.submit(_worker.evaluate, path, digest, eval_fn, patches): key for key, patches in tasks}
        for future in concurrent.futures.as_completed(pending):
            try:
                result = future.result()
            except Exception as e:  # a worker died
                result = (None, "%s: %s" % (type(e).__name__, e))
            yield (pending[future],) + tuple(result)
    finally:
        if own:   # cancel_futures: Python 3.9+ (TF 1.15 runs on 3.7)
            executor.shutdown(wait=True, **({"cancel_futures": True} if sys.version_info >= (3, 9) else {}))
