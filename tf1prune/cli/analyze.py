"""tf1prune-analyze: channel groups, blocks and per-layer MACs/params of a frozen graph.

Example::

    tf1prune-analyze --input_graph model.pb --output_node_names logits/BiasAdd [--json]
"""
import json

from absl import flags

from tf1prune import cli

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared flags too
flags.DEFINE_bool("json", False, "Print one JSON document (macs, params, groups, blocks) instead of text.")


@cli.tool(required=("input_graph", "output_node_names"))
def main():
    """Analyse --input_graph and print the report."""
    from tf1prune import flops
    cli.refuse("output_graph", "spec")
    analysis = cli.load_and_analyze(FLAGS.input_graph, FLAGS.excludes)
    if FLAGS.json:
        print(json.dumps(analysis.to_dict(), indent=1))
        return
    groups = analysis.groups
    print("groups: %d (%d prunable)" % (len(groups), sum(g.prunable for g in groups)))
    print("%5s %8s %-8s %s" % ("id", "channels", "prunable", "nodes"))
    for g in groups:
        print("%5d %8d %-8s %s" % (g.id, g.channels, "yes" if g.prunable else "no", ", ".join(g.nodes)))
        if not g.prunable:
            print("%24s reason: %s" % ("", g.reason))
    print("\nblocks: %d" % len(analysis.blocks))
    for b in analysis.blocks:
        print("  %-20s %s" % (b.type, ", ".join(b.nodes)))
    print()
    print(flops.layer_table(flops.count(analysis)))


def run():
    """Console-script entry point."""
    cli.launch(main)


if __name__ == "__main__":
    run()
