"""Measuring ``channel_divisible="auto"``: the rounding that makes this model's slim graph fastest here.

For every candidate rounding up to the model's cap, the model's slim graph at ``ratio`` fewer
channels in every prunable group (L1 ranking) is built, and all of them are timed end to end with
interleaved runs (:func:`tf1prune.measure.latency.measure`), so a burst of load hits every
candidate alike.  Each rounding's throughput is its MACs over its median latency; the smallest
rounding within ``tolerance`` of the best wins (:func:`tf1prune.choose.divisible.choose`).  A
measurement whose run-to-run spread says the machine was busy is repeated up to ``attempts``
times; one that stays noisy is used for this run but not cached.

Example::

    rounding, record = model_rounding(analysis, batch=1)
"""
import hashlib
import os
import platform
import time

from tf1prune.choose import allocation, criteria, divisible
from tf1prune.core import flops
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError

from tf1prune.measure.latency import BUSY, noise  # noqa: F401  (noise: also this module's, as before)


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


def cache_path(threads=0):
    """The cache file of this machine (``TF1PRUNE_CACHE`` sets the folder)."""
    folder = os.environ.get("TF1PRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf1prune")
    return os.path.join(folder, "rounding-%s.json" % hashlib.sha256(_machine(threads).encode()).hexdigest()[:12])


def candidate_graphs(analysis, ratio=0.5, roundings=None):
    """``{rounding: (slim GraphDef, MACs)}``: the model at ``ratio`` fewer channels per group, L1-ranked."""
    from tf1prune.apply import slim
    roundings = roundings or [r for r in divisible.CANDIDATES if r <= divisible.model_cap(analysis)]
    ranking = allocation.rank_units(analysis, criteria.unit_scores(analysis))
    out = {}
    for r in roundings:
        choice = Choice.from_counts(analysis, ranking, allocation.counts_for_ratio(analysis, ratio, r))
        out[r] = (slim.apply_slim(analysis.plan(choice), validate=False), flops.count(analysis, choice).macs)
    return out


def model_rounding(analysis, ratio=0.5, batch=1, threads=0, refresh=False, measure_fn=None, tolerance=0.95,
                   attempts=3, runs=15, warmup=3):
    """``(rounding, record)`` for ``analysis`` on this machine (see the module docstring); ``record`` holds
    the throughputs, the noise, the seconds it took and whether it came from the cache.  ``measure_fn``
    (for tests) replaces :func:`tf1prune.measure.latency.measure`."""
    import tensorflow.compat.v1 as tf
    from tf1prune.measure import latency
    from tf1prune.workflows.store import ResultStore
    measure_fn = measure_fn or latency.measure
    roundings = [r for r in divisible.CANDIDATES if r <= divisible.model_cap(analysis)]
    if len(roundings) == 1 or not any(g.prunable for g in analysis.groups):
        return 1, {"why": "no rounding to choose: the groups are too small or none is prunable"}
    if analysis.uncounted:
        return 1, {"why": "the MACs total is incomplete (%s)" % analysis.uncounted[0][1]}
    key = "%s|%s|batch %d|ratio %g|%s" % (analysis.digest(), latency.graph_fingerprint(analysis.view.graph_def),
                                          batch, ratio, ",".join(map(str, roundings)))
    identity, settings = {"machine": _machine(threads)}, {"tolerance": tolerance}
    path = cache_path(threads)
    try:
        store = ResultStore.open(path, "rounding", identity, settings)
    except Tf1PruneError as e:   # a cache: a broken one is measured again, not an error
        tf.logging.warning("channel_divisible auto: %s; measuring again", e)
        store = ResultStore(path, "rounding", identity, settings)
    if not refresh and store.value(key) is not None:
        return int(store.value(key)), dict(store.entries[key], cached=True)
    start = time.time()
    graphs = candidate_graphs(analysis, ratio, roundings)
    outputs = analysis.view.output_node_names
    for _ in range(max(1, attempts)):
        stats = measure_fn([graphs[r][0] for r in roundings], outputs, analysis.view.input_specs, batch=batch,
                           threads=threads, runs=runs, warmup=warmup, progress=None)
        spread = noise(stats)
        if spread <= BUSY:
            break
    throughput = {r: graphs[r][1] / max(s.median / 1000.0, 1e-12) for r, s in zip(roundings, stats)}   # MACs/s
    choice = divisible.choose(throughput, tolerance)
    record = {"throughput": {str(r): v for r, v in throughput.items()}, "noise": spread,
              "seconds": time.time() - start, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "cached": False}
    if spread > BUSY:
        tf.logging.warning("channel_divisible auto: the machine was busy (run-to-run spread %.0f%%): rounding %d is "
                           "used for this run, not cached", 100 * spread, choice)
        return choice, record
    store.record(key, float(choice), **{k: v for k, v in record.items() if k != "cached"})
    try:
        store.save()
    except OSError:   # a read-only home: measure again next time
        pass
    return choice, record
