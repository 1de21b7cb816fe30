"""Latency as the budget: measured latency ratio of ``tf1prune-convert --latency_target`` and of a
MACs-targeted prune removing the same MACs, per model, input size, batch and target.

For each model (Keras applications with random weights) and size: the latency profile is built
(each layer timed at a grid of widths, cache cleared first: the seconds it takes) and built again
(from the cache); then per batch and ``--targets``: ``prune_to_latency`` (measured ratio, predicted
ratio, attempts, MACs removed), and the uniform MACs-targeted prune at the same MACs reduction,
timed against the original with interleaved runs.  Example::

    python tools/benchmarks/latency_target.py --models resnet50,mobilenet_v2 --sizes 224,64 --batches 1,8 \\
        --targets 0.5,0.7 --markdown
"""
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet50", "mobilenet_v2"], "Keras applications")
flags.DEFINE_list("sizes", ["224", "64"], "input sizes")
flags.DEFINE_list("batches", ["1", "8"], "batch sizes")
flags.DEFINE_list("targets", ["0.5", "0.7"], "latency targets (share of the original's)")
flags.DEFINE_integer("runs", 30, "timed runs per graph")
flags.DEFINE_string("divisible", "auto", "channel_divisible of both prunes (tf1prune-convert's default: auto)")
flags.DEFINE_bool("markdown", False, "Markdown table")


def main(argv):
    del argv
    os.environ["TF1PRUNE_CACHE"] = tempfile.mkdtemp(prefix="tf1prune-latency-")   # time, do not read a cache
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    tf.logging.set_verbosity(tf.logging.ERROR)
    import tf1prune
    from tf1prune.choose import costs
    from tf1prune.measure import latency
    from tf1prune.workflows.latency_target import prune_to_latency
    from tools.common import keras_application
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    rows = []
    for name in FLAGS.models:
        for size in (int(s) for s in FLAGS.sizes):
            gd, inp, out = keras_application(name, size)
            specs = {inp: ((1, size, size, 3), "float32")}
            for batch in (int(b) for b in FLAGS.batches):
                analysis = tf1prune.analyze(gd, specs, [out])
                model = costs.latency_model(batch)
                start = time.time()
                profile = model.profile_of(analysis)
                built = time.time() - start
                start = time.time()
                costs.LatencyModel._profiles.clear()
                model.profile_of(tf1prune.analyze(gd, specs, [out]))
                again = time.time() - start
                analysis = tf1prune.analyze(gd, specs, [out])
                print("%s %d batch %d: profile %.1f s (cached=%s), again %.1f s (cached); original %.2f ms"
                      % (name, size, batch, built, profile.cached, again, profile.total), flush=True)
                for target in (float(t) for t in FLAGS.targets):
                    start = time.time()
                    rounding = FLAGS.divisible if FLAGS.divisible == "auto" else int(FLAGS.divisible)
                    found = prune_to_latency(analysis, target, batch=batch, runs=FLAGS.runs,
                                             channel_divisible=rounding)
                    seconds = time.time() - start
                    cut = 1 - found.macs_ratio
                    spec = tf1prune.make_spec(analysis, sparsity=min(max(cut, 0.01), 0.99), best_effort=True,
                                              channel_divisible=found.spec.channel_divisible)
                    macs_slim = tf1prune.slim_graph_def(gd, spec, specs, [out])
                    a, b = latency.measure([gd, macs_slim], [out], specs, batch=batch, runs=FLAGS.runs,
                                           progress=None)
                    row = [name, size, batch, found.spec.channel_divisible, "%.2f" % target, "%.3f" % found.measured, "%.3f" % found.predicted,
                           len(found.attempts), "%.1f%%" % (100 * cut), "%.3f" % (b.median / a.median),
                           "%.0f" % seconds]
                    rows.append(row)
                    print("  ".join(str(c) for c in row), flush=True)
    header = ["model", "size", "batch", "rounding", "target", "measured", "predicted", "attempts", "MACs removed",
              "MACs-targeted at the same MACs", "seconds"]
    if FLAGS.markdown:
        from tools.common import markdown_table
        print(markdown_table(header, rows))


if __name__ == "__main__":
    app.run(main)
