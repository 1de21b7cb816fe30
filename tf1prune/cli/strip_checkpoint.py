"""tf1prune-strip-checkpoint: remove pruned channels from a checkpoint and its meta graph.

Example::

    tf1prune-strip-checkpoint --input_meta_graph train/model.ckpt-1000.meta \\
        --input_checkpoint train/model.ckpt-1000 --output_dir slim \\
        --spec model.spec --output_node_names logits/BiasAdd,loss [--output_graph slim/model.pb] [--report report/]

``--zeros`` removes the channels whose kernels are all zero (after soft pruning or masked
training) instead of applying a spec.
"""
import glob
import os

from absl import flags

from tf1prune import cli
from tf1prune.errors import Tf1PruneError

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)
flags.DEFINE_string("input_meta_graph", None, "Meta graph (.meta) of the model.")
flags.DEFINE_string("input_checkpoint", None, "Checkpoint prefix, or a folder (its latest checkpoint).")
flags.DEFINE_string("output_dir", None, "Folder of the slim checkpoint and meta graph (not the input's).")
flags.DEFINE_bool("zeros", False, "Remove the channels whose kernels are all zero.")


@cli.tool(required=("input_meta_graph", "input_checkpoint", "output_dir"))
def main():
    """Strip the checkpoint and print what was removed."""
    from tf1prune.apply import checkpoint
    cli.refuse("input_graph")
    if bool(FLAGS.spec) == bool(FLAGS.zeros):
        raise Tf1PruneError("give exactly one of --spec or --zeros")
    cli.report_dir(FLAGS.input_meta_graph, FLAGS.output_graph, FLAGS.spec)
    model = checkpoint.CheckpointModel(FLAGS.input_meta_graph, FLAGS.input_checkpoint,
                                       cli.names(FLAGS.output_node_names) or None,
                                       cli.input_specs(), cli.names(FLAGS.excludes))
    if FLAGS.zeros:
        found = model.zero_channels()
        choice = model.choice(zeros=True)
        if found.groups:
            print(found.report())
        if not found.removed:
            print("warning: no channel is provably zero: nothing is removed")
    else:
        choice = model.choice(spec=FLAGS.spec)
    result = checkpoint.strip_checkpoint(model, choice, FLAGS.output_dir, FLAGS.output_graph)
    removed = sum(model.analysis.groups[gid].channels - len(kept) for gid, kept in choice.kept.items())
    print("checkpoint:    %s" % result.checkpoint)
    print("meta graph:    %s" % result.meta_graph)
    if result.graph:
        print("slim graph:    %s" % result.graph)
    print("channels removed: %d" % removed)
    print("MACs:   %d -> %d" % (result.before.macs, result.after.macs))
    print("params: %d -> %d" % (result.before.params, result.after.params))
    if FLAGS.report:
        _report(model, choice, result)


def _checkpoint_bytes(prefix):
    return sum(os.path.getsize(p) for p in glob.glob(glob.escape(prefix) + ".data-*") + [prefix + ".index"]
               if os.path.exists(p))


def _report(model, choice, result):
    """Write the --report folder (after the checkpoint: a failure says that the checkpoint is written)."""
    from tf1prune.report import write_report
    sizes = {"checkpoint": (_checkpoint_bytes(model.prefix), _checkpoint_bytes(result.checkpoint)),
             "meta graph": (os.path.getsize(model.meta_path), os.path.getsize(result.meta_graph))}
    try:
        write_report(FLAGS.report, model.analysis, choice, before=result.before, after=result.after, sizes=sizes,
                     title="tf1prune-strip-checkpoint: %s" % os.path.basename(model.prefix))
    except (OSError, Tf1PruneError) as e:
        raise Tf1PruneError("cannot write report %r (the slim checkpoint is written): %s"
                            % (FLAGS.report, getattr(e, "strerror", None) or e))
    print("report:        %s" % FLAGS.report)


def run():
    """Console-script entry point."""
    cli.launch(main)


if __name__ == "__main__":
    run()
