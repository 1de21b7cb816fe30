"""tf1prune-analyze: channel groups, blocks and per-layer MACs/params of a frozen graph.

Example::

    tf1prune-analyze --input_graph model.pb --output_node_names logits/BiasAdd [--json]
"""
import json

from absl import flags

from tf1prune import cli
from tf1prune.errors import Tf1PruneError

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared flags too
flags.DEFINE_bool("json", False, "Print one JSON document (macs, params, groups, blocks; with --sparsity_report, "
                  "the sparsity rows and file sizes) instead of text.")
flags.DEFINE_bool("latency", False, "Also time every conv, depthwise and dense layer on this machine at --batch and "
                  "--threads (cached) and print each one's milliseconds, with the graph's end-to-end latency.")
flags.DEFINE_bool("sparsity_report", False, "Print per layer the share of zero weights and the N:M patterns "
                  "they satisfy, and the file's raw and gzip-compressed sizes.")


@cli.tool(required=("input_graph", "output_node_names"))
def main():
    """Analyse --input_graph and print the report."""
    from tf1prune.core import flops
    cli.refuse("output_graph", "spec", "report")
    if (FLAGS["batch"].present or FLAGS["threads"].present) and not FLAGS.latency:
        raise Tf1PruneError("--batch and --threads apply to --latency")
    if FLAGS.latency and (FLAGS.json or FLAGS.sparsity_report):
        raise Tf1PruneError("--latency prints a table: not with --json or --sparsity_report")
    analysis = cli.load_and_analyze(FLAGS.input_graph, FLAGS.excludes, note=not FLAGS.json)
    if FLAGS.sparsity_report:
        import gzip
        from tf1prune.apply import finegrained
        rows = finegrained.sparsity_report(analysis)
        data = open(FLAGS.input_graph, "rb").read()
        if FLAGS.json:
            print(json.dumps({"sparsity": [dict(r._asdict(), n_m=[list(nm) for nm in r.n_m]) for r in rows],
                              "bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9))}, indent=1))
            return
        print(finegrained.report_table(rows))
        print("file: %d bytes, %d gzip-compressed" % (len(data), len(gzip.compress(data, 9))))
        print("Zero weights shrink the compressed file, not the latency: TensorFlow's CPU kernels do not skip "
              "unstructured zeros or N:M patterns.")
        return
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
    if FLAGS.latency:
        from tf1prune.choose import costs
        profile = costs.latency_model(cli.batches(one=True)[0], FLAGS.threads).profile_of(analysis)
        print("\nlatency (batch %d, %s): %.3f ms end to end" % (profile.batch, "cached layer timings" if profile.cached
                                                                else "timed in %.1f s" % profile.seconds,
                                                                profile.total))
        print(profile.table())


def run():
    """Console-script entry point."""
    cli.launch(main)


if __name__ == "__main__":
    run()
