"""Fine-grained (weight-level) masks and the schedules that drive them, with TFMOT's semantics.

- :class:`ConstantSparsity` and :class:`PolynomialDecay`: ``schedule(step) -> (prune now?, sparsity)``;
  a step prunes when it is in ``[begin_step, end_step]`` (``end_step=-1``: forever) and
  ``(step - begin_step) % frequency == 0``.
- :func:`magnitude_mask`: the 0/1 mask that keeps exactly ``round(n * (1 - sparsity))`` weights (at
  least one) by magnitude; with ``block_size`` the magnitudes are pooled (``AVG`` or ``MAX``) over
  blocks of the last two axes and whole blocks are kept; with ``m_by_n=(N, M)`` the N largest of
  every M consecutive weights along the input-channel axis are kept.

Example::

    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=1000, frequency=100)
    prune_now, s = schedule(500)
    mask = magnitude_mask(kernel, s)                        # unstructured
    mask = magnitude_mask(kernel, 0.5, m_by_n=(2, 4), in_axis=2)   # 2:4 along the input channels
"""
import copy

import numpy as np

from tf1prune.errors import Tf1PruneError

POOLING = ("AVG", "MAX")


def _fraction(name, value, closed_low=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not (0 <= value < 1 if closed_low else 0 < value < 1):
        raise Tf1PruneError("%s must be in [0, 1), got %r" % (name, value))
    return float(value)


def _step(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise Tf1PruneError("%s must be an integer >= %d, got %r" % (name, low, value))
    return int(value)


class PruningSchedule:
    """When to update the masks, and to what sparsity (see the module docstring)."""

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = _step("begin_step", begin_step)
        self.end_step = int(end_step) if end_step == -1 else _step("end_step", end_step)
        self.frequency = _step("frequency", frequency, 1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise Tf1PruneError("end_step (%d) must not be before begin_step (%d)" % (self.end_step, self.begin_step))

    def should_prune(self, step):
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return bool(in_range and (step - self.begin_step) % self.frequency == 0)

    def sparsity(self, step):
        raise NotImplementedError

    def __call__(self, step):
        return self.should_prune(step), self.sparsity(step)

    def with_target(self, target):
        """The same schedule ending at sparsity ``target`` (``sparsity_map``)."""
        raise NotImplementedError


class ConstantSparsity(PruningSchedule):
    """Sparsity ``target_sparsity`` from ``begin_step``, updated every ``frequency`` steps.

    Example::

        schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _fraction("target_sparsity", target_sparsity)

    def sparsity(self, step):
        return self.target_sparsity

    def with_target(self, target):
        out = copy.copy(self)
        out.target_sparsity = _fraction("target sparsity", target)
        return out


class PolynomialDecay(PruningSchedule):
    """``final + (initial - final) * (1 - p) ** power`` with ``p`` the progress from ``begin_step``
    to ``end_step``, updated every ``frequency`` steps.

    Example::

        schedule = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000, frequency=100)
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        if end_step == -1:
            raise Tf1PruneError("PolynomialDecay needs an end_step")
        super().__init__(begin_step, end_step, frequency)
        if self.end_step == self.begin_step:
            raise Tf1PruneError("end_step must be after begin_step")
        self.initial_sparsity = _fraction("initial_sparsity", initial_sparsity)
        self.final_sparsity = _fraction("final_sparsity", final_sparsity)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise Tf1PruneError("power must be positive, got %r" % (power,))
        self.power = float(power)

    def sparsity(self, step):
        p = min(1.0, max(0.0, (step - self.begin_step) / float(self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def with_target(self, target):
        out = copy.copy(self)
        out.final_sparsity = _fraction("target sparsity", target)
        return out


def keep_count(n, sparsity):
    """Weights kept out of ``n`` at ``sparsity``: ``round(n * (1 - sparsity))``, at least one."""
    return max(1, int(np.floor(n * (1.0 - sparsity) + 0.5)))


def _top(scores, keep):
    """0/1 mask of the ``keep`` largest scores (ties: the earlier position wins)."""
    order = np.argsort(-scores.reshape(-1), kind="stable")
    mask = np.zeros(scores.size, np.float32)
    mask[order[:keep]] = 1
    return mask.reshape(scores.shape)


def check_block(shape, block_size):
    """``block_size`` as a pair that fits the last two axes of ``shape``."""
    try:
        rows, cols = (int(b) for b in block_size)
    except (TypeError, ValueError):
        raise Tf1PruneError("block_size must be a pair of integers, got %r" % (block_size,))
    if rows < 1 or cols < 1:
        raise Tf1PruneError("block_size must be positive, got %r" % (block_size,))
    if (rows, cols) != (1, 1):
        last = ([1] + list(shape))[-2:] if len(shape) < 2 else list(shape[-2:])
        if rows > last[0] or cols > last[1]:
            raise Tf1PruneError("block %dx%d is larger than the weights' last two axes %s" % (rows, cols, last))
    return rows, cols


def check_m_by_n(m_by_n):
    """``(N, M)`` with 0 < N < M."""
    try:
        n, m = (int(v) for v in m_by_n)
    except (TypeError, ValueError):
        raise Tf1PruneError("m_by_n must be a pair (N, M), got %r" % (m_by_n,))
    if not 0 < n < m:
        raise Tf1PruneError("m_by_n=(N, M) needs 0 < N < M, got %r" % (m_by_n,))
    return n, m


def magnitude_mask(weights, sparsity, block_size=(1, 1), block_pooling="AVG", m_by_n=None, in_axis=-2):
    """The 0/1 mask of ``weights`` (see the module docstring); ``in_axis``: the input-channel axis
    of ``m_by_n`` groups (conv ``[kh, kw, in, out]``: 2; dense ``[in, out]``: 0)."""
    w = np.abs(np.asarray(weights, np.float64))
    if m_by_n is not None:
        n, m = check_m_by_n(m_by_n)
        axis = in_axis % w.ndim
        if w.shape[axis] % m:
            raise Tf1PruneError("m_by_n needs the input channels (%d) to be a multiple of %d" % (w.shape[axis], m))
        moved = np.moveaxis(w, axis, -1)
        groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
        order = np.argsort(-groups, axis=-1, kind="stable")
        mask = np.zeros(groups.shape, np.float32)
        np.put_along_axis(mask, order[..., :n], 1.0, axis=-1)
        return np.moveaxis(mask.reshape(moved.shape), -1, axis)
    sparsity = _fraction("sparsity", sparsity)
    rows, cols = check_block(w.shape, block_size)
    if (rows, cols) == (1, 1):
        return _top(w, keep_count(w.size, sparsity))
    if block_pooling not in POOLING:
        raise Tf1PruneError("block_pooling must be AVG or MAX, got %r" % (block_pooling,))
    shaped = w.reshape((-1,) + w.shape[-2:]) if w.ndim >= 2 else w.reshape(1, 1, -1)
    lead, height, width = shaped.shape
    bh, bw = -(-height // rows), -(-width // cols)
    padded = np.full((lead, bh * rows, bw * cols), np.nan)
    padded[:, :height, :width] = shaped
    blocks = padded.reshape(lead, bh, rows, bw, cols)
    pooled = np.nanmean(blocks, axis=(2, 4)) if block_pooling == "AVG" else np.nanmax(blocks, axis=(2, 4))
    keep_blocks = _top(pooled, keep_count(pooled.size, sparsity))
    mask = np.repeat(np.repeat(keep_blocks, rows, axis=1), cols, axis=2)[:, :height, :width]
    return mask.reshape(w.shape).astype(np.float32)


def satisfied_n_m(weights, in_axis=-2, sizes=(4, 8, 16)):
    """``[(N, M)]``: for each group size M dividing the input channels, the most non-zeros N of any
    group of M consecutive input-channel weights (a weight satisfies N:M when N < M)."""
    w = np.asarray(weights)
    axis = in_axis % w.ndim
    out = []
    for m in sizes:
        if w.shape[axis] % m == 0:
            moved = np.moveaxis(w != 0, axis, -1)
            groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
            out.append((int(groups.sum(-1).max()), m))
    return out
