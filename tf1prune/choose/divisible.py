"""``channel_divisible="auto"``: the channel rounding that makes *this* model fastest on this machine.

CPU kernels (oneDNN, Eigen) run some channel counts much faster than their neighbours, so a MACs
cut can turn into little speed.  Which counts are fast depends on the machine and on the layer's
shape, so :func:`model_rounding` times the model's own heaviest prunable layers (conv, depthwise,
dense, with their real input sizes and attributes; :mod:`tf1prune.measure.layers`) at the widths a
prune would leave them with each candidate rounding (1, 4, 8, 16, 32) at 30%, 50% and 70% fewer
channels, all interleaved and repeated.  It picks the smallest rounding whose throughput (MACs per
second over those layers) is within ``tolerance`` of the best one's.

Measurements are robust: medians of interleaved runs; a measurement whose spread says the machine
was busy is repeated, and one that stays noisy is used for this run but never cached.  Results are
cached per machine, TensorFlow version, threads and model layer shapes in
``~/.cache/tf1prune/rounding-*.json`` (``TF1PRUNE_CACHE`` sets the folder);
``TF1PRUNE_CHANNEL_DIVISIBLE=N`` pins ``auto`` to N (reproducible runs, CI).  Whatever is measured,
a model's rounding is capped so that its median prunable group keeps four widths, and
:func:`steps` lets a budget that the rounding cannot reach step down to finer roundings.

Example::

    spec = tf1prune.make_spec(analysis, sparsity=0.5, channel_divisible="auto")
"""
import hashlib
import json
import os
import platform
import time

import numpy as np

from tf1prune.errors import Tf1PruneError

CANDIDATES = (1, 4, 8, 16, 32)
RATIOS = (0.3, 0.5, 0.7)
PIN = "TF1PRUNE_CHANNEL_DIVISIBLE"


def is_auto(value):
    return isinstance(value, str) and value.strip().lower() == "auto"


def check(value):
    """``value`` as a positive int, or ``"auto"``; a one-line error otherwise (nothing is measured)."""
    if is_auto(value):
        return "auto"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise Tf1PruneError("channel_divisible must be a positive integer or 'auto', got %r" % (value,))
    return int(value)


def steps(requested, resolved):
    """The roundings to try for a budget, coarsest first: ``"auto"`` steps down from ``resolved`` to every
    finer candidate while the budget is out of reach; a given integer is used as it is."""
    if is_auto(requested):
        return [c for c in sorted(CANDIDATES, reverse=True) if c <= resolved]
    return [resolved]


def model_cap(analysis):
    """The largest rounding that leaves the median prunable group of ``analysis`` four widths."""
    sizes = sorted(g.channels for g in analysis.groups if g.prunable)
    if not sizes:
        return max(CANDIDATES)
    median = sizes[len(sizes) // 2]
    return max(c for c in CANDIDATES if c == 1 or 4 * c <= median)


def choose(throughput, tolerance=0.95):
    """The smallest rounding whose throughput (``{rounding: MACs/s}``) is within ``tolerance`` of the best."""
    if not throughput:
        raise Tf1PruneError("no rounding was timed")
    best = max(throughput.values())
    return min(r for r, v in throughput.items() if v >= tolerance * best)


# --- the model's own layers -------------------------------------------------------------------
def _width(analysis, dim, ratio, rounding):
    """The kept size of a layer dimension when every prunable group loses ``ratio`` of its channels."""
    from tf1prune.choose.allocation import keep_count
    units = analysis.unit_of[dim.elems]
    groups = [analysis.group_of_unit.get(int(u)) for u in units]
    prunable = [g for g in groups if g is not None and analysis.groups[g].prunable]
    if not prunable:
        return dim.size
    return dim.fixed + (len(groups) - len(prunable)) + keep_count(len(prunable), ratio, rounding)


def representative_layers(analysis, coverage=0.9, limit=12):
    """The heaviest conv, depthwise and dense layers with prunable channels, distinct by shape, until
    they hold ``coverage`` of those layers' MACs (at most ``limit``)."""
    from tf1prune.core import flops
    from tf1prune.measure.layers import LayerConfig
    candidates = []
    for layer in analysis.layers:
        if layer.path or not any(len(d.elems) and _width(analysis, d, 0.5, 1) < d.size for d in layer.dims):
            continue
        config = LayerConfig.of(analysis, layer)
        if config is not None:
            candidates.append((flops.layer_macs(analysis, layer), config, layer))
    candidates.sort(key=lambda c: -c[0])
    total = sum(m for m, _, _ in candidates)
    out, seen, held = [], set(), 0
    for macs, config, layer in candidates:
        if held >= coverage * total or len(out) >= limit:
            break
        held += macs
        if config not in seen:
            seen.add(config)
            out.append(layer)
    return out


def configs(analysis, layers, rounding, batch=1):
    """The :class:`~tf1prune.measure.layers.LayerConfig` of ``layers`` at every ratio of :data:`RATIOS`."""
    from tf1prune.measure.layers import LayerConfig
    out = []
    for layer in layers:
        for ratio in RATIOS:
            widths = [_width(analysis, d, ratio, rounding) for d in layer.dims]
            if layer.kind == "depthwise":
                mult = layer.dims[0].size // max(analysis.view.shape(layer.kernel + ":0")[2], 1)
                out.append(LayerConfig.of(analysis, layer, max(1, widths[0] // max(mult, 1)), batch=batch))
            else:
                out.append(LayerConfig.of(analysis, layer, widths[0], widths[1], batch=batch))
    return [c for c in out if c is not None]


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
    folder = os.environ.get("TF1PRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf1prune")
    return os.path.join(folder, "rounding-%s.json" % hashlib.sha256(_machine(threads).encode()).hexdigest()[:12])


def model_rounding(analysis, batch=1, threads=0, refresh=False, time_fn=None, tolerance=0.95, attempts=3,
                   progress=None):
    """``(rounding, record)``: the rounding :func:`choose` picks from this model's timed layers (see the
    module docstring), capped by :func:`model_cap`; ``record`` holds the throughputs, the noise and
    whether the result came from the cache."""
    import tensorflow.compat.v1 as tf
    from tf1prune.measure.layers import time_layers
    from tf1prune.workflows.store import ResultStore
    time_fn = time_fn or time_layers
    cap = model_cap(analysis)
    roundings = [r for r in CANDIDATES if r <= cap]
    layers = representative_layers(analysis)
    if len(roundings) == 1 or not layers:
        return 1, {"why": "nothing to round" if layers else "no prunable conv, depthwise or dense layer to time"}
    per_rounding = {r: configs(analysis, layers, r, batch) for r in roundings}
    signature = hashlib.sha256("\n".join(
        [str(batch)] + sorted(c.signature() for c in per_rounding[1])).encode()).hexdigest()[:16]
    path, key = cache_path(threads), "%s|%s" % (signature, ",".join(map(str, roundings)))
    identity, settings = {"machine": _machine(threads)}, {"ratios": list(RATIOS), "tolerance": tolerance}
    try:
        store = ResultStore.open(path, "rounding", identity, settings)
    except Tf1PruneError as e:   # a cache: a broken one is measured again, not an error
        tf.logging.warning("channel_divisible auto: %s; measuring again", e)
        store = ResultStore(path, "rounding", identity, settings)
    if not refresh and store.value(key) is not None:
        entry = store.entries[key]
        return int(entry["value"]), dict(entry, cached=True)
    everything = [c for r in roundings for c in per_rounding[r]]
    noise = None
    for _ in range(max(1, attempts)):
        timings = time_fn(everything)
        noise = timings.noise
        if not timings.busy:
            break
    throughput = {r: sum(c.macs for c in per_rounding[r]) / max(sum(timings.median(c) for c in per_rounding[r]),
                                                                  1e-12) for r in roundings}
    choice = choose(throughput, tolerance)
    record = {"throughput": {str(r): v for r, v in throughput.items()}, "noise": noise, "layers": len(layers),
              "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "cached": False}
    if timings.busy:
        tf.logging.warning("channel_divisible auto: the machine was busy (run-to-run spread %.0f%%): rounding %d is "
                           "used for this run, not cached", 100 * noise, choice)
    else:
        store.record(key, float(choice), **{k: v for k, v in record.items() if k != "cached"})
        try:
            store.save()
        except OSError:   # a read-only home: measure again next time
            pass
    return choice, record


def resolve(value, analysis):
    """``channel_divisible`` as an int for ``analysis``: a positive integer as given; ``"auto"`` pinned by
    ``TF1PRUNE_CHANNEL_DIVISIBLE`` or measured (:func:`model_rounding`), capped by :func:`model_cap`."""
    value = check(value)
    if value != "auto":
        return value
    pinned = os.environ.get(PIN)
    if pinned:
        try:
            return min(check(pinned), model_cap(analysis))
        except Tf1PruneError:
            raise Tf1PruneError("%s must be a positive integer, got %r" % (PIN, pinned))
    if analysis is None:
        raise Tf1PruneError("channel_divisible='auto' is measured on a model: analyse it first")
    return model_rounding(analysis)[0]
