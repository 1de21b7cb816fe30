"""tf1prune: channel pruning for TensorFlow-1-style graphs.

Frozen graphs (pure GraphDef -> GraphDef functions)::

    import tf1prune
    specs = {"x:0": ((1, 28, 28, 1), "float32")}
    slim_gd = tf1prune.slim_graph_def(graph_def, 0.5, specs, ["logits"])          # half the channels
    slim_gd = tf1prune.slim_graph_def(graph_def, sparsity=0.5, input_specs=specs,
                                      output_node_names=["logits"])               # half the MACs
    a = tf1prune.analyze(graph_def, specs, ["logits"])       # groups, blocks, layers
    spec = tf1prune.make_spec(a, sparsity=0.5)               # which channels each group keeps
    print(tf1prune.count_macs(a).macs, tf1prune.count_macs(a, spec).macs)

Sessions (the Vitis AI TF1 runner API)::

    runner = tf1prune.IterativePruningRunner("mnist", sess, input_specs, ["dense/BiasAdd"])
    runner.ana(eval_fn)
    shape_tensors, masks = runner.prune(sparsity=0.5)
    slim_graph_def = runner.get_slim_graph_def(shape_tensors, masks)

Checkpoints (hard pruning, and soft filter pruning of inverted-residual / SE blocks)::

    model = tf1prune.CheckpointModel('m.ckpt.meta', 'm.ckpt', ['logits/BiasAdd'])
    tf1prune.strip_checkpoint(model, model.keep_mask(spec='m.spec'), 'slim/')
    sfp = tf1prune.SoftFilterPruner('m.ckpt.meta', 'm.ckpt', ['logits/BiasAdd'], output_dir='sfp')

Fine-grained (weight-level) sparsity in sessions, with TFMOT's names::

    pruner = tf1prune.sparsity.WeightPruner(sess, ["logits"], tf1prune.sparsity.ConstantSparsity(0.5, 0),
                                            m_by_n=(2, 4))

Once-for-all: one elastic network trained with the sandwich rule, many slim ones::

    model = tf1prune.OFAPruner("resnet", sess, input_specs, ["logits"]).ofa_model((0.5, 0.75, 1.0))
    trainer = model.sandwich_trainer(loss, tf.train.AdamOptimizer(1e-3), logits)   # trainer.step(feed)
    front = model.search(eval_fn, calibration_data, min_macs, max_macs)
    slim_graph_def = model.get_static_subnet(front[-1].widths, calibration_data, output_dir="slim/")

New ops: one :func:`register` call (see :mod:`tf1prune.rules`).  One level down,
``analysis.plan(spec)`` gives the :class:`Plan` that every back-end applies.

Names are imported lazily: ``import tf1prune`` loads no TensorFlow.
"""
import importlib

_EXPORTS = {
    "analyze": "tf1prune.analysis",
    "make_spec": "tf1prune.spec",
    "Spec": "tf1prune.spec",
    "slim_graph_def": "tf1prune.slim",
    "sparse_graph_def": "tf1prune.slim",
    "count_macs": ("tf1prune.flops", "count"),
    "Plan": "tf1prune.plan",
    "recalibrate_batch_norm": "tf1prune.calibrate",
    "register": "tf1prune.rules",
    "Role": "tf1prune.rules",
    "IterativePruningRunner": "tf1prune.runner",
    "OneStepPruningRunner": "tf1prune.onestep",
    "OFAPruner": "tf1prune.ofa",
    "MaskHook": "tf1prune.masks",
    "CheckpointModel": "tf1prune.checkpoint",
    "strip_checkpoint": "tf1prune.checkpoint",
    "SoftFilterPruner": "tf1prune.sfp",
    "Tf1PruneError": "tf1prune.errors",
    "load_graph_def": "tf1prune.files",
    "save_graph_def": "tf1prune.files",
    "parse_input_specs": "tf1prune.graph",
    "write_report": "tf1prune.report",
}
_MODULES = ("divisible", "latency", "progress", "rules", "sparsity")   # submodules used as namespaces: tf1prune.sparsity.WeightPruner
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module("tf1prune." + name)
    if name in _EXPORTS:
        module, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError("module 'tf1prune' has no attribute %r" % name)
