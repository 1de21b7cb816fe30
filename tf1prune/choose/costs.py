"""Cost models: what a budget is counted in.  One registry, like the criteria and the op rules.

A cost model is made for an analysis and a ranking of its units, and maps per-group kept counts
(the top-ranked units kept) to the slim graph's cost: ``model(counts)``.  ``model.total`` is the
unpruned cost and ``model.problem`` says why a target on it cannot be measured (None when it can).
Allocation, the one-step search and once-for-all ask a model by name (``cost="macs"``), never a
class.

Built in:

- ``macs``: multiply-accumulates of every counted layer (the costlier branch of an ``If``); a layer
  that cannot be counted makes targets unmeasurable;
- ``params``: every floating-point parameter the outputs need;
- ``latency``: milliseconds on this machine (:mod:`tf1prune.measure.layer_latency`: each layer
  timed at a grid of widths, the rest end to end); ``latency_model(batch, threads)`` makes one
  for another batch or thread count.

Example::

    model = costs.make("macs", analysis, ranking)
    print(model(counts) / model.total)
"""
import numpy as np

from tf1prune.core import flops
from tf1prune.errors import Tf1PruneError

REGISTRY = {}


def register(name, model_class):
    """Make ``model_class(analysis, ranking)`` (a :class:`CostModel`) available as ``cost=name``."""
    if not (isinstance(model_class, type) and issubclass(model_class, CostModel)):
        raise Tf1PruneError("cost model %r must be a CostModel subclass, got %r" % (name, model_class))
    REGISTRY[name] = model_class
    return model_class


def names():
    return sorted(REGISTRY)


def make(name, analysis, ranking):
    """The cost model ``name`` (or a factory ``name(analysis, ranking)``) of ``analysis`` for ``ranking``."""
    if callable(name):
        return name(analysis, ranking)
    if name not in REGISTRY:
        raise Tf1PruneError("unknown cost model %r (choose from %s)" % (name, ", ".join(names())))
    return REGISTRY[name](analysis, ranking)


class CostModel:
    """Cost of the slim graph as a function of per-group kept counts (see the module docstring)."""

    unit = "cost"

    def __init__(self, analysis, ranking):
        self.analysis, self.ranking = analysis, ranking
        self._total = None

    def __call__(self, counts):
        raise NotImplementedError

    @property
    def total(self):
        """The cost with every channel kept."""
        if self._total is None:
            self._total = self({g.id: g.channels for g in self.analysis.groups if g.prunable})
        return self._total

    @property
    def problem(self):
        """Why a target on this cost cannot be measured, or None."""
        return None


class Products(CostModel):
    """A sum of terms, each a factor times a product of dimensions whose sizes follow the kept counts."""

    def _compile(self, terms):
        """``terms``: ``[(factor, [(elems, fixed)])]``; per dimension, each group's kept positions for
        every count are tabulated once."""
        rank = np.full(self.analysis.num_units, -1)
        group = np.full(self.analysis.num_units, -1)
        for gid, ranked in self.ranking.items():
            rank[ranked] = np.arange(len(ranked))
            group[ranked] = gid
        compiled = []
        for factor, dims in terms:
            out = []
            for elems, fixed in dims:
                units = self.analysis.unit_of[np.asarray(elems, np.int64)]
                g = group[units]
                # per group: kept[c] = positions of this dim kept when the group keeps its first c units
                kept = {int(gid): np.searchsorted(np.sort(rank[units[g == gid]]),
                                                  np.arange(len(self.ranking[int(gid)]) + 1)).tolist()
                        for gid in np.unique(g[g >= 0])}
                out.append((fixed + int(np.count_nonzero(g < 0)), list(kept.items())))
            compiled.append((factor, out))
        return compiled

    def terms_at(self, counts):
        values = []
        for factor, dims in self.terms:
            m = factor
            for fixed, per_group in dims:
                m *= fixed + sum(kept[counts[g]] for g, kept in per_group)
            values.append(m)
        return values


class MacsModel(Products):
    """MACs of the slim graph (every counted layer; an ``If`` counts its costlier branch)."""

    unit = "MACs"

    def __init__(self, analysis, ranking):
        super().__init__(analysis, ranking)
        self.layers = analysis.layers
        self.branched = any(layer.path for layer in self.layers)
        self.terms = self._compile([(layer.factor, [(d.elems, d.fixed) for d in layer.dims]) for layer in self.layers])

    def __call__(self, counts):
        per_layer = self.terms_at(counts)
        return flops.total(self.layers, per_layer) if self.branched else sum(per_layer)

    @property
    def problem(self):
        uncounted = self.analysis.uncounted
        if not uncounted:
            return None
        return ("the MACs total is incomplete (%s%s), so a MACs target cannot be measured"
                % (uncounted[0][1], " and %d more" % (len(uncounted) - 1) if len(uncounted) > 1 else ""))


class ParamsModel(Products):
    """Floating-point parameters of the slim graph (those the outputs need)."""

    unit = "params"

    def __init__(self, analysis, ranking):
        super().__init__(analysis, ranking)
        terms = []
        for name in flops.param_nodes(analysis):
            shape = analysis.view.shape(name + ":0")
            bound = analysis.bindings.get(name, {})
            terms.append((1, [(bound[a].elems, 0) if a in bound else ((), int(n)) for a, n in enumerate(shape)]))
        self.terms = self._compile(terms)

    def __call__(self, counts):
        return sum(self.terms_at(counts))


class LatencyModel(MacsModel):
    """Predicted latency of the slim graph in milliseconds (a :class:`~tf1prune.measure.layer_latency.
    LatencyProfile` of the model, built once per analysis, batch and threads)."""

    unit = "latency"
    batch, threads = 1, 0
    _profiles = {}

    def __init__(self, analysis, ranking):
        super().__init__(analysis, ranking)
        self.full = self.terms_at({g.id: g.channels for g in analysis.groups if g.prunable})

    @property
    def profile(self):
        return self.profile_of(self.analysis)

    @classmethod
    def profile_of(cls, analysis):
        """The model's :class:`~tf1prune.measure.layer_latency.LatencyProfile` (built once per analysis,
        batch and threads, and kept while the analysis is the one in use)."""
        from tf1prune.measure.layer_latency import LatencyProfile
        key = (id(analysis), analysis.digest(), cls.batch, cls.threads)
        if key not in cls._profiles:
            LatencyModel._profiles.clear()   # one model at a time: profiles hold the analysis
            LatencyModel._profiles[key] = LatencyProfile.build(analysis, cls.batch, cls.threads)
        return LatencyModel._profiles[key]

    def shares(self, counts):
        """Per layer, its kept MACs share at ``counts``."""
        return {layer.node: m / f if f else 1.0 for layer, m, f in zip(self.layers, self.terms_at(counts), self.full)}

    def __call__(self, counts):
        return self.profile.predict(self.shares(counts))


def latency_model(batch=1, threads=0):
    """A :class:`LatencyModel` factory for ``batch`` and ``threads`` (0: TensorFlow's default)."""
    return type("LatencyModel_b%d_t%d" % (batch, threads), (LatencyModel,), {"batch": batch, "threads": threads})


register("macs", MacsModel)
register("params", ParamsModel)
register("latency", LatencyModel)
