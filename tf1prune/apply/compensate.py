"""Bias compensation: a removed channel's expected contribution moves into the next layer's bias.

When a layer loses input channel ``i``, its output channel ``j`` loses ``x_i * sum(W[..., i, j])``
on average ``E[x_i] * sum over taps W[..., i, j]``.  Adding that to a bias right after the layer
(or subtracting it from the moving mean of a BatchNorm right after it) keeps the layer's output
mean (Nagel et al. 2019, data-free quantization).  It is exact for dense layers; for convolutions,
positions whose window reaches into zero padding see fewer taps, so the correction there is
slightly too large.

``E[x_i]`` comes from:

- **no data** (:func:`gaussian_moments`): a BatchNorm's output channel is about
  ``N(offset, scale**2)``; activations map that through their Gaussian moments (``E[ReLU(y)] =
  m·Φ(m/s) + s·φ(m/s)``...), ops that only move channels keep them and residual adds sum them
  (:mod:`tf1prune.core.rules.moments`).  A channel whose path from a BatchNorm holds another op
  (max pooling, say) gets no correction;
- **calibration data** (:func:`measured_means`): the mean of the consumer's input over the
  batches, for every channel whatever its path.

The corrections are parameter updates that :meth:`~tf1prune.core.plan.Plan.with_updates` carries,
so the sparse and the slim graph get the same ones and ``slim(x) == sparse(x)`` still holds.

Example::

    updates, skipped = compensation(plan, gaussian_moments(analysis, values), values)
    slim_gd = slim.apply_slim(plan.with_updates(updates))
"""
import collections

import numpy as np

from tf1prune.core.activations import gaussian_moments, input_tensor, measured_means  # noqa: F401
from tf1prune.core.names import tensor_name
from tf1prune.core.rules import Role


Absorber = collections.namedtuple("Absorber", "param sign kind variance")
Absorber.__doc__ = ("Where a shift of a layer's output goes: ``param`` plus ``sign`` times the shift (a bias: +1; a "
                    "BatchNorm's moving mean: -1), and the BatchNorm's moving variance (None for a bias).")


def absorber(analysis, layer, values):
    """The :class:`Absorber` right after ``layer`` (a BatchNorm on its output, else a bias added to
    it), or None."""
    view = analysis.view
    out = layer.node + ":0"
    readers = {c for c, _ in view.consumers.get(layer.node, [])}
    for site in analysis.batch_norms:
        if site.x is not None and tensor_name(site.x) == out and site.mean:
            return Absorber(site.mean, -1.0, "BatchNorm mean", site.variance)
    for name, axes in analysis.bindings.items():
        for axis, binding in axes.items():
            if binding.role is Role.BIAS and any(
                    view.read_source(t) == name for r in readers for t in view.data_inputs(r)):
                return Absorber(name, 1.0, "bias", None)
    return None


def compensation(plan, means, values, variance=True, exclude=()):
    """``({param: new value}, [(layer, why not)])``: for every conv or dense layer that loses input
    channels, the expected contribution of those channels moved into its bias or its BatchNorm's
    moving mean.  ``means``: tensor -> per-position means (:func:`measured_means`), or ``(mean, std)``
    pairs (:func:`gaussian_moments`): then a BatchNorm right after the layer also has its moving
    variance scaled by the share of its input's variance the kept channels carry (channels and
    taps taken as independent), so it keeps normalising to the same scale.  Layers in ``exclude``
    are left alone (reconstruction refits them)."""
    analysis = plan.analysis
    updates, skipped = {}, []
    for layer in analysis.layers:
        if layer.kernel is None or layer.in_axis is None or layer.path or layer.kind not in ("conv", "dense") \
                or layer.node in exclude:
            continue
        kept = plan.kept_positions(layer.kernel).get(layer.in_axis)
        roles = {s.axis: s.role for s in plan.params.get(layer.kernel, ())}
        if kept is None or kept.all() or roles.get(layer.in_axis) is not Role.KERNEL_IN:
            continue
        x = input_tensor(analysis, layer)
        moments = means.get(x) if x else None
        if moments is None:
            skipped.append((layer.node, "no expected value for its input (%s)" % (x or "unknown input")))
            continue
        mean, std = moments if isinstance(moments, tuple) else (moments, None)
        target = absorber(analysis, layer, values)
        if target is None:
            skipped.append((layer.node, "no bias or BatchNorm right after it"))
            continue
        if len(mean) != len(kept):
            skipped.append((layer.node, "its input has %d positions, the kernel %d" % (len(mean), len(kept))))
            continue
        kernel = np.asarray(values(layer.kernel), np.float64)
        out_axis = next((s.axis for s in plan.params[layer.kernel] if s.role is Role.FILTER), kernel.ndim - 1)
        taps = tuple(a for a in range(kernel.ndim) if a not in (layer.in_axis, out_axis))
        summed, squares = kernel.sum(axis=taps), (kernel * kernel).sum(axis=taps)
        if layer.in_axis > out_axis:
            summed, squares = summed.T, squares.T
        pruned = ~kept
        shift = np.asarray(mean)[pruned] @ summed[pruned]
        current = np.asarray(updates.get(target.param, values(target.param)), np.float64)
        if current.reshape(-1).shape != shift.shape:
            skipped.append((layer.node, "its %s has %d values, the layer %d outputs" % (target.kind, current.size,
                                                                                        shift.size)))
            continue
        updates[target.param] = (current.reshape(-1) + target.sign * shift).reshape(current.shape).astype(
            np.asarray(values(target.param)).dtype)
        if variance and std is not None and target.variance:
            spread = np.asarray(std, np.float64) ** 2
            total, kept_part = spread @ squares, spread[kept] @ squares[kept]
            old = np.asarray(updates.get(target.variance, values(target.variance)), np.float64)
            ratio = np.where(total > 0, kept_part / np.maximum(total, 1e-12), 1.0)
            updates[target.variance] = (old.reshape(-1) * ratio).reshape(old.shape).astype(
                np.asarray(values(target.variance)).dtype)
    return updates, skipped
