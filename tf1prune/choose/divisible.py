"""``channel_divisible="auto"``: the channel rounding that makes *this* model fastest on this machine.

CPU kernels (oneDNN, Eigen) run some channel counts much faster than their neighbours, and the
gain depends on the model: layer shapes, and the layout changes between consecutive layers that
an isolated layer never shows.  So ``auto`` is measured on the model itself
(:func:`tf1prune.measure.rounding.model_rounding`): its slim graph at 50% fewer channels with
each candidate rounding (1, 4, 8, 16, 32), all timed end to end with interleaved runs, and the
smallest rounding whose MACs per second are within ``tolerance`` of the best one's wins.  A
measurement whose spread says the machine was busy is repeated, and one that stays noisy is used
but never cached; good ones are cached per machine, TensorFlow version, threads, batch and model
(``~/.cache/tf1prune/rounding-*.json``; ``TF1PRUNE_CACHE`` sets the folder).
``TF1PRUNE_CHANNEL_DIVISIBLE=N`` pins ``auto`` to N (reproducible runs, CI).  Whatever is
measured, a model's rounding is capped so that its median prunable group keeps four widths, and
:func:`steps` lets a budget that the rounding cannot reach step down to finer roundings.

Example::

    spec = tf1prune.make_spec(analysis, sparsity=0.5, channel_divisible="auto")
"""
import os

import numpy as np

from tf1prune.errors import Tf1PruneError

CANDIDATES = (1, 4, 8, 16, 32)
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


def ratio_for(sparsity):
    """The uniform channel ratio that removes about ``sparsity`` of the MACs of chained layers (each
    loses its inputs and outputs): ``1 - sqrt(1 - sparsity)``."""
    return 1.0 - (1.0 - sparsity) ** 0.5


def resolve(value, analysis, ratio=0.5, batch=1, threads=0):
    """``channel_divisible`` as an int for ``analysis``: a positive integer as given; ``"auto"`` pinned by
    ``TF1PRUNE_CHANNEL_DIVISIBLE`` or measured (:func:`tf1prune.measure.rounding.model_rounding`) at
    ``batch`` and ``threads``, capped by :func:`model_cap`; ``ratio``: the channel ratio the model will
    be pruned at (where it is timed)."""
    value = check(value)
    if value != "auto":
        return value
    pinned = os.environ.get(PIN)
    if pinned:
        try:
            rounding = int(pinned)
            assert rounding >= 1
        except (ValueError, AssertionError):
            raise Tf1PruneError("%s must be a positive integer, got %r" % (PIN, pinned))
        return min(rounding, model_cap(analysis))
    if analysis is None:
        raise Tf1PruneError("channel_divisible='auto' is measured on a model: analyse it first")
    from tf1prune.measure.rounding import model_rounding
    return model_rounding(analysis, ratio, batch, threads)[0]
