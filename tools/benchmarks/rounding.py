"""What ``channel_divisible="auto"`` picks for a model, and whether it is the fastest rounding.

For each model: the time ``auto`` takes to decide (timing the model's slim graphs, cache
cleared), what it picks, then the slim graph at ``--sparsity`` fewer MACs for every rounding of
``--divisible`` (``auto`` included), each timed against the original with interleaved runs
(``tf1prune.measure.latency``) at every ``--batches``.  The other flags are those of
``slimming.py`` (``--models``, ``--image_size``, ``--sparsity``, ``--runs``, ``--threads``, ``--markdown``).  Example::

    python tools/benchmarks/rounding.py --models resnet50,mobilenet_v2 --image_size 64 --batches 1,8 --runs 30
"""
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

from absl import app, flags  # noqa: E402

from tools.benchmarks import slimming  # noqa: E402  (its flags: models, image_size, sparsity, divisible, runs, threads...)

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["1", "8"], "Batch sizes of the latency runs.")
FLAGS.set_default("image_size", 64)
FLAGS.set_default("divisible", ["1", "auto", "8", "16"])
FLAGS.set_default("runs", 30)


def main(argv):
    del argv
    os.environ["TF1PRUNE_CACHE"] = tempfile.mkdtemp(prefix="tf1prune-rounding-")   # measure, do not read a cache
    os.environ.pop("TF1PRUNE_CHANNEL_DIVISIBLE", None)
    import tensorflow.compat.v1 as tf
    tf.disable_eager_execution()
    import tf1prune
    from tf1prune.choose import divisible
    from tf1prune.measure import latency
    from tf1prune.measure.rounding import model_rounding
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    rows = []
    for name in FLAGS.models:
        gd, inp, out = slimming.frozen_model(name, FLAGS.image_size)
        specs = {inp: ((1, FLAGS.image_size, FLAGS.image_size, 3), "float32")}
        analysis = tf1prune.analyze(gd, specs, [out])
        start = time.time()
        ratio = divisible.ratio_for(FLAGS.sparsity)
        chosen, record = model_rounding(analysis, ratio, threads=FLAGS.threads)
        decide = time.time() - start
        cached = time.time()
        model_rounding(analysis, ratio, threads=FLAGS.threads)
        print("%s: auto -> %d in %.1f s (noise %.0f%%; from the cache in %.2f s); MACs/s %s"
              % (name, chosen, decide, 100 * (record.get("noise") or 0), time.time() - cached,
                 {k: "%.3g" % v for k, v in record.get("throughput", {}).items()}))
        for text in FLAGS.divisible:
            rounding = chosen if divisible.is_auto(text) else int(text)
            spec = tf1prune.make_spec(analysis, sparsity=FLAGS.sparsity, channel_divisible=rounding,
                                      best_effort=True)
            slim = tf1prune.slim_graph_def(gd, spec, specs, [out])
            cut = 1 - tf1prune.count_macs(analysis, spec).macs / tf1prune.count_macs(analysis).macs
            for batch in (int(b) for b in FLAGS.batches):
                a, b = latency.measure([gd, slim], [out], specs, batch=batch, threads=FLAGS.threads,
                                       runs=FLAGS.runs, progress=None)
                label = "auto->%d" % rounding if divisible.is_auto(text) else str(rounding)
                rows.append([name, label, batch, "%.1f%%" % (100 * cut), "%.2f" % a.median, "%.2f" % b.median,
                             "%.2fx" % (a.median / b.median)])
                print("  ".join(str(c) for c in rows[-1]), flush=True)
    header = ["model", "div", "batch", "MACs cut", "orig ms", "slim ms", "speed-up"]
    if FLAGS.markdown:
        from tools.common import markdown_table
        print(markdown_table(header, rows))


if __name__ == "__main__":
    app.run(main)
