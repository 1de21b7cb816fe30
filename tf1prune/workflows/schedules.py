"""Pruning schedules with TFMOT's semantics: when to update fine-grained masks, and to what sparsity.

``schedule(step) -> (prune now?, sparsity)``; a step prunes when it is in ``[begin_step, end_step]``
(``end_step=-1``: forever) and ``(step - begin_step) % frequency == 0``.

Example::

    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=1000, frequency=100)
    prune_now, sparsity = schedule(500)
"""
import copy

import numpy as np

from tf1prune.errors import Tf1PruneError, check_fraction


def _fraction(name, value):
    return check_fraction(name, value, low_open=False)


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
