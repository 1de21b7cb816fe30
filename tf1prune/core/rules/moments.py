"""What ops do to the distribution of a channel: the op facts behind data-free bias compensation.

A BatchNorm's output channel is about ``N(offset, scale**2)`` when its moving statistics describe
its input.  :func:`moments` says how an op maps per-channel ``(mean, std)`` arrays:

- ``("map", f)``: an elementwise activation; ``f(node, mean, std) -> (mean, std)`` of its output
  (closed forms for ReLU-like ops, Gauss–Hermite quadrature for smooth ones);
- ``("move", None)``: ops that only move or select channel positions (identity, reshape,
  transpose, concat, split, average pooling): each output position keeps its element's moments;
- ``("sum", None)``: the sum of channel tensors (a residual add): means add, variances add (the
  inputs taken as independent);
- ``None``: anything else (max pooling, padding, mixing ops): the moments are unknown.

Example::

    kind, f = moments("Relu6")
    mean, std = f(node, np.array([0.5]), np.array([1.0]))
"""
import math

import numpy as np


def _gauss_hermite(n):
    """Nodes and weights of n-point Gauss–Hermite quadrature (Golub–Welsch: the eigenvectors of the
    Jacobi matrix), for ``∫ exp(-t²) f(t) dt``."""
    off = np.sqrt(np.arange(1, n) / 2.0)
    nodes, vectors = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    return nodes, math.sqrt(math.pi) * vectors[0] ** 2


_NODES, _WEIGHTS = _gauss_hermite(64)


def _normal_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _cdf(z):
    return 0.5 * (1.0 + _ERF(np.asarray(z, np.float64) / math.sqrt(2.0)))


def relu_mean(mean, std):
    """``E[max(Y, 0)]`` for ``Y ~ N(mean, std**2)``: ``mean·Φ(mean/std) + std·φ(mean/std)``."""
    mean, std = np.asarray(mean, np.float64), np.maximum(np.asarray(std, np.float64), 1e-12)
    z = mean / std
    return mean * _cdf(z) + std * _normal_pdf(z)


def _quadrature(fn, mean, std):
    """``(E[fn(Y)], std of fn(Y))`` by Gauss–Hermite quadrature, per channel."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    y = mean[..., None] + math.sqrt(2.0) * std[..., None] * _NODES
    values = fn(y)
    m = (values * _WEIGHTS).sum(-1) / math.sqrt(math.pi)
    second = (values * values * _WEIGHTS).sum(-1) / math.sqrt(math.pi)
    return m, np.sqrt(np.maximum(second - m * m, 0.0))


def _relu(node, mean, std):
    m = relu_mean(mean, std)
    return m, _quadrature(lambda y: np.maximum(y, 0.0), mean, std)[1]


def _relu6(node, mean, std):
    m = relu_mean(mean, std) - relu_mean(np.asarray(mean) - 6.0, std)   # min(max(y, 0), 6) = relu(y) - relu(y - 6)
    return m, _quadrature(lambda y: np.clip(y, 0.0, 6.0), mean, std)[1]


def _leaky(node, mean, std):
    alpha = node.attr["alpha"].f if "alpha" in node.attr else 0.2
    m = relu_mean(mean, std) * (1 - alpha) + alpha * np.asarray(mean, np.float64)   # (1-a)·relu(y) + a·y
    return m, _quadrature(lambda y: np.where(y > 0, y, alpha * y), mean, std)[1]


def _smooth(fn):
    return lambda node, mean, std: _quadrature(fn, mean, std)


def _identity(node, mean, std):
    return np.asarray(mean, np.float64), np.asarray(std, np.float64)


def _selu(y):
    return 1.0507009873554805 * np.where(y > 0, y, 1.6732632423543772 * np.expm1(np.minimum(y, 0)))


_MAPS = {
    "Relu": _relu, "Relu6": _relu6, "LeakyRelu": _leaky,
    "Elu": _smooth(lambda y: np.where(y > 0, y, np.expm1(np.minimum(y, 0)))),
    "Selu": _smooth(_selu),
    "Sigmoid": _smooth(lambda y: 1.0 / (1.0 + np.exp(-y))),
    "Tanh": _smooth(np.tanh),
    "Softplus": _smooth(lambda y: np.logaddexp(0.0, y)),
    "Softsign": _smooth(lambda y: y / (1.0 + np.abs(y))),
    "Identity": _identity, "Snapshot": _identity, "StopGradient": _identity, "PreventGradient": _identity,
    "EnsureShape": _identity, "CheckNumerics": _identity,
}
_MOVES = frozenset("Reshape Transpose ConcatV2 Concat Split SplitV Squeeze ExpandDims AvgPool AvgPool3D "
                   "IdentityN".split())


_SUMS = frozenset("Add AddV2 AddN".split())


def moments(op_type):
    """How ``op_type`` maps per-channel moments (see the module docstring)."""
    if op_type in _SUMS:
        return "sum", None
    if op_type in _MAPS:
        return "map", _MAPS[op_type]
    if op_type in _MOVES:
        return "move", None
    return None
