"""Errors raised for bad user input (one readable line each)."""


class Tf1PruneError(Exception):
    """A user-facing error: bad graph, bad spec, unknown node, bad argument."""
