"""``channel_divisible="auto"``: the channel rounding that turns a MACs cut into speed here.

CPU kernels (oneDNN, Eigen) run channel counts that are multiples of their vector width much
faster than the counts in between, so a slim graph with 37 channels can be no faster than one
with 48.  :func:`auto_divisible` times a representative 3×3 convolution at every channel count
from 65 to 128 once, and picks the smallest rounding (1, 4, 8, 16 or 32) whose counts run at
least ``tolerance`` of the best rounding's throughput.  The result is cached per machine,
TensorFlow version and thread count in ``~/.cache/tf1prune/channel_divisible.json``
(``TF1PRUNE_CACHE`` overrides the folder).  For a given model the rounding is capped so that its
median prunable group keeps at least four widths to choose from (a 32-channel model is rounded to
8, not 16), and :func:`tf1prune.make_spec` steps down to finer roundings when a MACs target cannot
be met with the coarse one.

Example::

    spec = tf1prune.make_spec(analysis, sparsity=0.5, channel_divisible="auto")
"""
import json
import os
import platform
import time

import numpy as np

from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write

CANDIDATES = (1, 4, 8, 16, 32)
COUNTS = tuple(range(65, 129))


def choose(throughput, candidates=CANDIDATES, tolerance=0.9):
    """The smallest rounding whose channel counts (keys of ``throughput``: count -> MACs/s) reach
    ``tolerance`` of the best rounding's mean throughput, each count's throughput taken relative to
    the linear trend over all counts."""
    counts = sorted(throughput)
    values = np.array([throughput[c] for c in counts], dtype=float)
    if len(counts) >= 3:   # larger layers run faster anyway: compare each count with the size trend
        values = values / np.maximum(np.polyval(np.polyfit(counts, values, 1), counts), 1e-12 * values.max())
    relative = dict(zip(counts, values))
    means = {}
    for r in candidates:
        values = [v for c, v in relative.items() if c % r == 0]
        if values:
            means[r] = float(np.mean(values))
    if not means:
        raise Tf1PruneError("no timed channel count is a multiple of %s" % (list(candidates),))
    best = max(means.values())
    return min(r for r, m in means.items() if m >= tolerance * best)


def measure(counts=COUNTS, size=14, runs=15, threads=0):
    """MACs per second of a 3×3 ``size``×``size`` convolution with ``c`` input and output channels,
    for every ``c`` of ``counts`` (median of ``runs``, the counts timed in turn)."""
    import tensorflow.compat.v1 as tf
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        cases = []
        for c in counts:
            x = tf.placeholder(tf.float32, [1, size, size, c])
            kernel = tf.constant(rng.standard_normal((3, 3, c, c)).astype(np.float32))
            y = tf.reduce_sum(tf.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME"))
            cases.append((c, x, y, rng.standard_normal((1, size, size, c)).astype(np.float32)))
    config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    times = {c: [] for c in counts}
    with tf.Session(graph=graph, config=config) as sess:
        runs_of = [(c, sess.make_callable(y, [x]), value) for c, x, y, value in cases]
        for _, run, value in runs_of:
            for _ in range(3):
                run(value)
        for _ in range(runs):   # round-robin: a burst of load hits every count alike
            for c, run, value in runs_of:
                start = time.perf_counter()
                run(value)
                times[c].append(time.perf_counter() - start)
    return {c: 9.0 * c * c * size * size / float(np.median(t)) for c, t in times.items()}


def _machine(threads):
    import tensorflow.compat.v1 as tf
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return "%s|%s|%d cpus|tf %s|onednn %s|threads %d" % (
        platform.machine(), cpu, os.cpu_count() or 0, tf.VERSION, os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        threads)


def cache_path():
    folder = os.environ.get("TF1PRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf1prune")
    return os.path.join(folder, "channel_divisible.json")


def auto_divisible(threads=0, refresh=False, measure_fn=measure):
    """The rounding :func:`choose` picks for this machine, measured once and then read from the cache."""
    path, key = cache_path(), _machine(threads)
    try:
        with open(path) as f:
            cache = json.load(f)
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and cache[key].get("choice") in CANDIDATES:
        return cache[key]["choice"]
    throughput = measure_fn(threads=threads)
    choice = choose(throughput)
    cache[key] = {"choice": choice, "throughput": {str(c): v for c, v in sorted(throughput.items())},
                  "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:   # a read-only home: measure again next time
        pass
    return choice


def is_auto(value):
    return isinstance(value, str) and value.strip().lower() == "auto"


def model_cap(analysis):
    """The largest rounding that leaves the median prunable group of ``analysis`` four widths."""
    sizes = sorted(g.channels for g in analysis.groups if g.prunable)
    if not sizes:
        return max(CANDIDATES)
    median = sizes[len(sizes) // 2]
    return max(c for c in CANDIDATES if c == 1 or 4 * c <= median)


def resolve(value, analysis=None):
    """``channel_divisible`` as an int: a positive integer as given, ``"auto"`` measured (and capped
    by :func:`model_cap` when ``analysis`` is given)."""
    if isinstance(value, str):
        if is_auto(value):
            choice = auto_divisible()
            return choice if analysis is None else min(choice, model_cap(analysis))
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise Tf1PruneError("channel_divisible must be a positive integer or 'auto', got %r" % (value,))
    return int(value)
