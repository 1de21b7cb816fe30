"""Tensor and node names, and static sizes (no TensorFlow import)."""
import numpy as np


def tensor_name(ref):
    """Canonical ``node:index`` for an input reference (``n``, ``n:1``, ``^n``)."""
    ref = ref.lstrip("^")
    return ref if ":" in ref else ref + ":0"


def node_of(ref):
    """Node name of a tensor or input reference."""
    return ref.lstrip("^").split(":")[0]


def output_index(ref):
    """Output index of a tensor reference (0 when it has none)."""
    return int(ref.split(":")[1]) if ":" in ref else 0


def static_size(shape):
    """Number of elements of a fully known static shape, else None."""
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))
