"""tf1prune: channel pruning for TensorFlow-1-style graphs.

Frozen graphs (pure GraphDef -> GraphDef functions)::

    import tf1prune
    specs = {"x:0": ((1, 28, 28, 1), "float32")}
    a = tf1prune.analyze(graph_def, specs, ["logits"])       # groups, blocks, layers
    spec = tf1prune.make_spec(a, sparsity=0.5)               # which channels each group keeps
    slim_gd = tf1prune.slim_graph_def(graph_def, spec, specs, ["logits"])
    print(tf1prune.count_macs(a).macs, tf1prune.count_macs(a, spec).macs)

Sessions (the Vitis AI TF1 runner API)::

    runner = tf1prune.IterativePruningRunner("mnist", sess, input_specs, ["dense/BiasAdd"])
    runner.ana(eval_fn)
    shape_tensors, masks = runner.prune(sparsity=0.5)
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)

Every workflow is a ``…Runner``: :class:`IterativePruningRunner`, :class:`OneStepPruningRunner`,
:class:`OnceForAllRunner`, :class:`WeightPruningRunner` (fine-grained sparsity, with
:class:`ConstantSparsity` / :class:`PolynomialDecay`) and :class:`SoftFilterPruningRunner`
(checkpoints).  Checkpoints are cut with :class:`CheckpointModel` and :func:`strip_checkpoint`.

Extension points live with their stage: op rules (``tf1prune.core.rules.register``), channel
criteria (``tf1prune.choose.criteria.register``) and cost models (``tf1prune.choose.costs.register``).

Names are imported lazily: ``import tf1prune`` loads no TensorFlow.  The names of tf1prune 0.1
(``OFAPruner``, ``SoftFilterPruner``, ``tf1prune.sparsity.WeightPruner``, ``tf1prune.runner``...)
still work for one release, with a ``DeprecationWarning``.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_EXPORTS = {
    "analyze": ("tf1prune.core.analysis", "analyze"),
    "make_spec": ("tf1prune.choose.spec", "make_spec"),
    "Spec": ("tf1prune.choose.spec", "Spec"),
    "slim_graph_def": ("tf1prune.apply.slim", "slim_graph_def"),
    "sparse_graph_def": ("tf1prune.apply.slim", "sparse_graph_def"),
    "recalibrate_batch_norm": ("tf1prune.apply.calibrate", "recalibrate_batch_norm"),
    "count_macs": ("tf1prune.core.flops", "count"),
    "IterativePruningRunner": ("tf1prune.workflows.iterative", "IterativePruningRunner"),
    "OneStepPruningRunner": ("tf1prune.workflows.onestep", "OneStepPruningRunner"),
    "OnceForAllRunner": ("tf1prune.workflows.ofa", "OnceForAllRunner"),
    "WeightPruningRunner": ("tf1prune.workflows.weights", "WeightPruningRunner"),
    "SoftFilterPruningRunner": ("tf1prune.workflows.sfp", "SoftFilterPruningRunner"),
    "ConstantSparsity": ("tf1prune.workflows.schedules", "ConstantSparsity"),
    "PolynomialDecay": ("tf1prune.workflows.schedules", "PolynomialDecay"),
    "CheckpointModel": ("tf1prune.apply.checkpoint", "CheckpointModel"),
    "strip_checkpoint": ("tf1prune.apply.checkpoint", "strip_checkpoint"),
    "write_report": ("tf1prune.report", "write_report"),
    "load_graph_def": ("tf1prune.files", "load_graph_def"),
    "save_graph_def": ("tf1prune.files", "save_graph_def"),
    "Tf1PruneError": ("tf1prune.errors", "Tf1PruneError"),
}
__all__ = sorted(_EXPORTS)

# tf1prune 0.1 names, kept for one release
_DEPRECATED = {
    "OFAPruner": ("tf1prune.workflows.ofa", "OnceForAllRunner"),
    "SoftFilterPruner": ("tf1prune.workflows.sfp", "SoftFilterPruningRunner"),
    "Plan": ("tf1prune.core.plan", "Plan"),
    "Role": ("tf1prune.core.rules", "Role"),
    "register": ("tf1prune.core.rules", "register"),
    "MaskHook": ("tf1prune.apply.masks", "MaskHook"),
    "parse_input_specs": ("tf1prune.core.graph", "parse_input_specs"),
}
_MOVED = {   # old module -> new module
    "names": "core.names", "graph": "core.graph", "context": "core.context", "analysis": "core.analysis",
    "blocks": "core.blocks", "plan": "core.plan", "flops": "core.flops", "zeros": "core.zeros", "rules": "core.rules",
    "importance": "choose.criteria", "allocation": "choose.allocation", "spec": "choose.spec",
    "divisible": "choose.divisible", "slim": "apply.slim", "masks": "apply.masks", "calibrate": "apply.calibrate",
    "checkpoint": "apply.checkpoint", "sparsity_masks": "apply.finegrained", "evaluate": "workflows.engine",
    "session": "workflows.session", "runner": "workflows.iterative", "sensitivity": "workflows.sensitivity",
    "onestep": "workflows.onestep", "ofa": "workflows.ofa", "sfp": "workflows.sfp", "sparsity": "workflows.weights",
    "latency": "measure.latency",
}


def _warn(old, new):
    warnings.warn("tf1prune.%s is deprecated: use %s" % (old, new), DeprecationWarning, stacklevel=3)


def __getattr__(name):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    if name in _DEPRECATED:
        module, attr = _DEPRECATED[name]
        _warn(name, "%s.%s" % (module, attr))
        return getattr(importlib.import_module(module), attr)
    if name in _MOVED:
        _warn(name, "tf1prune." + _MOVED[name])
        return importlib.import_module("tf1prune." + _MOVED[name])
    raise AttributeError("module 'tf1prune' has no attribute %r" % name)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import tf1prune.runner`` (a module of tf1prune 0.1) gives the module it moved to, with a warning."""

    def find_spec(self, fullname, path, target=None):
        parts = fullname.split(".")
        if len(parts) >= 2 and parts[0] == "tf1prune" and parts[1] in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        parts = module.__name__.split(".")
        new = ".".join(["tf1prune", _MOVED[parts[1]]] + parts[2:])
        _warn(".".join(parts[1:]), new)
        target = importlib.import_module(new)
        module.__getattr__ = lambda name: getattr(target, name)   # a proxy of the new module
        module.__doc__ = target.__doc__


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())   # first: the path finder would load a moved file twice
