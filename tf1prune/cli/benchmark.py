"""tf1prune-benchmark: CPU latency of a frozen graph, or of two compared run for run.

Example::

    tf1prune-benchmark --input_graph model.pb --compare slim.pb --output_node_names logits/BiasAdd \\
        --batch 1,8 --threads 2 --runs 100
"""
from absl import flags

from tf1prune import cli

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared flags too
flags.DEFINE_string("compare", None, "A second frozen graph (e.g. the slim one), timed in turn with --input_graph.")
flags.DEFINE_integer("runs", 50, "Timed runs of each graph per batch size.", lower_bound=1)
flags.DEFINE_integer("warmup", 5, "Untimed runs of each graph first.", lower_bound=0)


@cli.tool(required=("input_graph", "output_node_names"))
def main():
    """Time the graphs and print median, p10, p90 and the speed-up."""
    from tf1prune.measure import latency
    from tf1prune.files import load_graph_def
    cli.refuse("output_graph", "spec", "excludes", "report")
    batches = cli.batches()
    paths = [FLAGS.input_graph] + ([FLAGS.compare] if FLAGS.compare else [])
    graphs = [load_graph_def(p) for p in paths]
    outputs = cli.names(FLAGS.output_node_names)
    print("%s; %d timed runs after %d warm-up%s; threads: %s"
          % ("; ".join("%s: %s" % (k, p) for k, p in zip("AB", paths)), FLAGS.runs, FLAGS.warmup,
             ", A and B interleaved" if len(paths) > 1 else "", FLAGS.threads or "default"))
    print("%5s %5s %10s %10s %10s" % ("batch", "graph", "median ms", "p10 ms", "p90 ms"))
    for batch in batches:
        stats = latency.measure(graphs, outputs, cli.input_specs(), batch, FLAGS.threads, FLAGS.runs, FLAGS.warmup)
        for name, s in zip("AB", stats):
            print("%5d %5s %10.3f %10.3f %10.3f" % (batch, name, s.median, s.p10, s.p90))
        if len(stats) > 1:
            print("%5d speed-up B over A: %.2fx (median A / median B)" % (batch, stats[0].median / stats[1].median))


def run():
    """Console-script entry point."""
    cli.launch(main)


if __name__ == "__main__":
    run()
