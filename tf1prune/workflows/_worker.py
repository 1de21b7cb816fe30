"""Evaluation in worker processes (no TensorFlow import at module level).

The frozen graph is read once per worker from a file, and again only for another content
(weights included); each task carries only the constants to patch.  ``init`` pins a worker to one device before
TensorFlow loads.
"""
import math
import os
import threading

_STATE = threading.local()   # per worker thread: a user's executor may be a thread pool


def init(device_queue):
    """Pool initializer: take one device from the queue and make it the only visible GPU."""
    device = device_queue.get()
    kind, _, index = device.strip("/").partition(":")
    os.environ["CUDA_VISIBLE_DEVICES"] = index if kind.upper() == "GPU" else ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _graph(path, content):
    """The graph at ``path``, read once per worker thread for each ``content`` (the SHA-256 of its bytes:
    a graph with other weights is another content)."""
    if getattr(_STATE, "content", None) != content:
        import tensorflow.compat.v1 as tf
        tf.disable_eager_execution()
        graph_def = tf.GraphDef()
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
        _STATE.content, _STATE.graph_def, _STATE.nodes = content, graph_def, {n.name: n for n in graph_def.node}
    return _STATE.graph_def, _STATE.nodes


def evaluate(path, content, eval_fn, patches):
    """Worker task: ``evaluate_on`` the graph stored at ``path`` (of SHA-256 ``content``)."""
    try:
        graph_def, nodes = _graph(path, content)
    except Exception as e:  # unreadable graph file
        return None, "%s: %s" % (type(e).__name__, e)
    return evaluate_on(graph_def, nodes, eval_fn, patches)


def evaluate_on(graph_def, nodes, eval_fn, patches):
    """Run ``eval_fn(graph_def)`` with ``patches`` (Const name -> array) applied, then restore.

    Returns ``(value, None)`` or ``(None, error message)``; never raises.
    """
    try:
        from tf1prune.core.rules import build
        saved = {name: build.const_bytes(nodes[name]) for name in patches}
        try:
            for name, value in patches.items():
                build.set_const_value(nodes[name], value)
            return check(eval_fn(graph_def))
        finally:
            for name, data in saved.items():
                build.restore_const(nodes[name], data)
    except Exception as e:  # the user's eval_fn may raise anything: record it, go on
        from tf1prune.errors import tf_error_line
        return None, "%s: %s" % (type(e).__name__, tf_error_line(e) if str(e).strip() else "")


class Scores(float):
    """A score that is the mean of per-example scores (``examples``, a float64 array): what ``eval_fn``
    returns as an array.  It is a float everywhere; paired comparisons read the examples."""

    def __new__(cls, examples):
        self = super().__new__(cls, float(examples.mean()))
        self.examples = examples
        return self

    def __reduce__(self):
        return Scores, (self.examples,)


def check(value):
    """``(float, None)`` for a finite number (a Python or numpy scalar), ``(Scores, None)`` for a 1-D
    array or list of finite per-example scores, else ``(None, why)``."""
    import numbers
    import numpy as np
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Real) for v in value):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        value = value.reshape(-1)[0]
    elif isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "fiub":
        examples = value.astype(np.float64)
        if not np.isfinite(examples).all():
            return None, "eval_fn returned %d non-finite per-example scores" % int((~np.isfinite(examples)).sum())
        return Scores(examples), None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        return None, "eval_fn returned %r, not a number" % (value,)
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return None, "eval_fn returned %r" % value
    return value, None
