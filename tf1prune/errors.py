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


def tf_error_line(error):
    """The one line of a TensorFlow error that says what went wrong (TF 2.x puts "Graph execution
    error:" and the node's Python traceback first), with the failing node when known."""
    text = getattr(error, "message", None) or str(error)
    skip = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Traceback")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith((" ", "\t"))]
    line = next((l for l in lines if not l.startswith(skip)), lines[0] if lines else type(error).__name__)
    op = getattr(error, "op", None)
    return "%s (node %r)" % (line, op.name) if op is not None and op.name not in line else line
