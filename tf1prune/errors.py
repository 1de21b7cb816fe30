"""Errors raised for bad user input (one readable line each)."""


class Tf1PruneError(Exception):
    """A user-facing error: bad graph, bad spec, unknown node, bad argument."""


def check_fraction(name, value, low_open=True):
    """``value`` as a float in (0, 1) ([0, 1) when not ``low_open``), or a one-line error."""
    import math
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise Tf1PruneError("%s must be a number, got %r" % (name, value))
    if not (0 < value < 1 if low_open else 0 <= value < 1):
        raise Tf1PruneError("%s must be in %s0, 1), got %r" % (name, "(" if low_open else "[", value))
    return float(value)
