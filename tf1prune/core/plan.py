"""A pruning plan: what one kept-channel choice does to an analysed graph.

Per bound parameter, the kept positions of every bound axis and the axis' :class:`~tf1prune.core.rules.Role`;
the shape rewrites with the kept counts they need.  Every back-end is a short applier of a plan:
the slim and sparse graphs (:mod:`tf1prune.apply.slim`), session masks (:mod:`tf1prune.workflows.iterative`),
sensitivity patches (:mod:`tf1prune.workflows.sensitivity`), checkpoint slices (:mod:`tf1prune.apply.checkpoint`)
and soft-pruning masks (:mod:`tf1prune.workflows.sfp`).

Example::

    plan = analysis.plan(choice)            # a Choice (a Spec is one)
    plan.slice("conv1/kernel", value)       # the kept channels only
    plan.zero("conv1/kernel", value)        # same shape, pruned channels zeroed
    plan.unslice("conv1/kernel", small, value.shape)   # kept channels back in place, zeros elsewhere
"""
import collections
import copy

import numpy as np

from tf1prune.core.choice import Choice
from tf1prune.core.rules import ZEROED
from tf1prune.errors import Tf1PruneError

ParamSlice = collections.namedtuple("ParamSlice", "axis kept role units")
ParamSlice.__doc__ = ("One bound axis of a parameter: the ``axis``, which positions are ``kept``, its :class:`Role`, "
                      "and the unit each position carries (``units``, for masks that follow any choice).")


class Plan:
    """The plan of a :class:`~tf1prune.core.choice.Choice` for ``analysis`` (see the module docstring)."""

    def __init__(self, analysis, choice):
        if not isinstance(choice, Choice):
            raise Tf1PruneError("a plan is made of a Choice (or a Spec), got %s" % type(choice).__name__)
        self.analysis, self.choice = analysis, choice
        self.keep = keep = choice.mask(analysis)   # the kept-unit mask, one level down
        self.params = {name: [ParamSlice(axis, analysis.kept_positions(b.elems, keep), b.role, analysis.unit_of[b.elems])
                              for axis, b in sorted(axes.items())]
                       for name, axes in analysis.bindings.items()}
        self.rewrites = [(r, [int(np.count_nonzero(analysis.kept_positions(p, keep))) for p in r.parts])
                         for r in analysis.rewrites]
        self.updates = {}   # parameter -> new full-shape value (bias compensation, reconstruction)

    def with_updates(self, updates):
        """This plan with parameters replaced before they are sliced or zeroed: ``{name: full-shape
        value}`` (compensated biases, reconstructed kernels).  Every applier applies them, so the sparse
        and the slim graph stay equal."""
        plan = copy.copy(self)
        plan.updates = dict(self.updates, **updates)
        return plan

    def value(self, name, original):
        """Parameter ``name``'s value under this plan (its update, else ``original``), full shape."""
        return self.updates.get(name, original)

    def sparse_values(self, values, present=None):
        """``{name: value}`` of every parameter the sparse model changes (zeroed or updated), full
        shape, from ``values(name)`` (the original value); only the names in ``present`` when given."""
        return {name: self.zero(name, self.value(name, values(name)))
                for name in sorted(set(self.changed(ZEROED)) | set(self.updates))
                if present is None or name in present}

    @property
    def pruned(self):
        """True when some channel is removed."""
        return not self.keep.all()

    def changed(self, roles=None):
        """Parameter nodes with a pruned position on an axis of one of ``roles`` (default: any)."""
        return [name for name, slices in self.params.items()
                if any((roles is None or s.role in roles) and not s.kept.all() for s in slices)]

    def shape(self, name, shape):
        """``shape`` of parameter ``name`` with its bound axes shrunk to the kept channels."""
        shape = list(shape)
        for s in self.params.get(name, ()):
            shape[s.axis] = int(np.count_nonzero(s.kept))
        return shape

    def slice(self, name, value):
        """The kept channels of ``value`` (parameter ``name``'s value, or a slot of its shape)."""
        for s in self.params.get(name, ()):
            value = np.compress(s.kept, value, axis=s.axis)
        return value

    def unslice(self, name, value, shape):
        """The inverse of :meth:`slice`: an array of ``shape`` with ``value`` at the kept positions, zeros
        at the pruned ones."""
        kept = self.kept_positions(name)
        out = np.zeros(shape, np.asarray(value).dtype)
        out[np.ix_(*[np.flatnonzero(kept[a]) if a in kept else np.arange(n) for a, n in enumerate(shape)])] = value
        return out

    def kept_positions(self, name):
        """``{axis: bool array}`` of parameter ``name``'s bound axes."""
        return {s.axis: s.kept for s in self.params.get(name, ())}

    def zero(self, name, value, roles=ZEROED):
        """A copy of ``value`` with the pruned positions of the axes of ``roles`` set to zero."""
        value = np.array(value, copy=True)
        for s in self.params.get(name, ()):
            if s.role in roles and not s.kept.all():
                index = [slice(None)] * value.ndim
                index[s.axis] = ~s.kept
                value[tuple(index)] = 0
        return value

    def mask(self, name, shape, roles=ZEROED, dtype=np.float32):
        """A 0/1 array of ``shape``: 0 at the pruned positions of the axes of ``roles``."""
        return self.zero(name, np.ones(shape, dtype), roles)

    def apply_rewrites(self, graph_def):
        """Rewrite the shape tensors of ``graph_def`` in place (nodes it lacks are skipped)."""
        nodes = {n.name: n for n in graph_def.node}
        for rewrite, counts in self.rewrites:
            if rewrite.touched()[0] in nodes:
                rewrite.apply(graph_def, nodes, counts)
        return graph_def

    def shape_nodes(self):
        """Names of the nodes the shape rewrites change or add."""
        return {name for rewrite, _ in self.rewrites for name in rewrite.touched()}
