"""tf1prune: channel pruning for TensorFlow-1-style graphs.

Sessions (the Vitis AI TF1 runner API)::

    runner = tf1prune.IterativePruningRunner("mnist", sess, input_specs, ["dense/BiasAdd"])
    runner.ana(eval_fn)
    shape_tensors, masks = runner.prune(sparsity=0.5)
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)

Frozen graphs::

    import tf1prune
    from tf1prune import spec, slim
    a = tf1prune.analyze(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
    keep = spec.make_spec(a, sparsity=0.5).keep_mask(a)
    slim_graph_def = slim.slim_graph_def(a, keep)

Checkpoints (hard pruning, and soft filter pruning of inverted-residual / SE blocks)::

    model = tf1prune.CheckpointModel('m.ckpt.meta', 'm.ckpt', ['logits/BiasAdd'])
    tf1prune.strip_checkpoint(model, model.keep_mask(spec='m.spec'), 'slim/')
    sfp = tf1prune.SoftFilterPruner('m.ckpt.meta', 'm.ckpt', ['logits/BiasAdd'], output_dir='sfp')

Names are imported lazily, so ``import tf1prune.cli`` can configure TensorFlow's
logging before TensorFlow loads.
"""
import importlib

_EXPORTS = {
    "IterativePruningRunner": "tf1prune.runner",
    "MaskHook": "tf1prune.masks",
    "analyze": "tf1prune.analysis",
    "Tf1PruneError": "tf1prune.errors",
    "load_graph_def": "tf1prune.graph",
    "save_graph_def": "tf1prune.graph",
    "parse_input_specs": "tf1prune.graph",
    "CheckpointModel": "tf1prune.checkpoint",
    "strip_checkpoint": "tf1prune.checkpoint",
    "SoftFilterPruner": "tf1prune.sfp",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError("module 'tf1prune' has no attribute %r" % name)
