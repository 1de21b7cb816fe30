"""Demo on real data: train the seed's MNIST convnet on Fashion-MNIST, prune its frozen graph.

    python tools/demo.py [--epochs 2] [--sparsity 0.5] [--output_dir demo_out]

Trains the Keras convnet of the Vitis TF1 runner docs in a TF1 session (no
learning phase set, so BatchNorm and Dropout are ``If`` ops), freezes it, prunes
it without data to the MACs target, writes original/sparse/slim ``.pb`` files and
prints accuracy, MACs, params, file size and CPU latency before and after.
Without fine-tuning the pruned accuracy drops; the session-bound runner adds
sensitivity analysis and fine-tuning.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune import flops, slim, spec as spec_mod  # noqa: E402

flags.DEFINE_integer("epochs", 2, "training epochs")
flags.DEFINE_float("sparsity", 0.5, "MACs reduction target")
flags.DEFINE_integer("channel_divisible", 1, "round kept channels to a multiple of this")
flags.DEFINE_string("output_dir", "demo_out", "where the .pb files and the spec go")
FLAGS = flags.FLAGS


def train(x_train, y_train):
    """Train the seed convnet in a TF1 session and return its frozen graph."""
    import tf_keras as keras
    from tf_keras.src import backend as keras_backend  # get_session is not public in tf_keras
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("mnist_convnet", learning_phase=None, seed=0)
        info.model.compile(optimizer="adam", metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        info.model.fit(x_train, y_train, batch_size=128, epochs=FLAGS.epochs, verbose=2)
        sess = keras_backend.get_session()
        frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), info.output_node_names)
    return frozen, info


class Frozen:
    """A frozen graph in its own session."""

    def __init__(self, graph_def, input_name, output_name):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        config = tf.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
        self.sess = tf.Session(graph=self.graph, config=config)
        self.x, self.y = input_name, output_name + ":0"

    def accuracy(self, x, y, batch=500):
        hits = sum(int((self.sess.run(self.y, {self.x: x[i:i + batch]}).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(y), batch))
        return hits / len(y)

    def run(self, x):
        return self.sess.run(self.y, {self.x: x})


def latency_ms(models, x, runs=200):
    """Median latency (batch 1) of each model, runs interleaved so all see the same machine load."""
    times = [[] for _ in models]
    for m in models:
        m.run(x)
    for _ in range(runs):
        for t, m in zip(times, models):
            start = time.perf_counter()
            m.run(x)
            t.append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]


def main(_):
    tf.disable_eager_execution()
    x_train, y_train, x_test, y_test, source = data.load()
    print("data:", source)
    frozen, info = train(x_train, y_train)
    specs = {info.input_name: ((1,) + tuple(info.input_shape[1:]), "float32")}
    outs = info.output_node_names

    analysis = tf1prune.analyze(frozen, specs, outs)
    spec = spec_mod.make_spec(analysis, sparsity=FLAGS.sparsity, channel_divisible=FLAGS.channel_divisible)
    keep = spec.keep_mask(analysis)
    graphs = {"original": frozen, "sparse": slim.sparse_graph_def(analysis, keep),
              "slim": slim.slim_graph_def(analysis, keep)}
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    spec.save(os.path.join(FLAGS.output_dir, "mnist_convnet.spec"))
    sizes = {}
    for name, gd in graphs.items():
        path = os.path.join(FLAGS.output_dir, "mnist_convnet_%s.pb" % name)
        tf1prune.save_graph_def(gd, path)
        sizes[name] = os.path.getsize(path)

    models = {k: Frozen(gd, info.input_name, outs[0]) for k, gd in graphs.items()}
    slim_analysis = tf1prune.analyze(graphs["slim"], specs, outs)
    before, after = flops.count(analysis), flops.count(slim_analysis)
    diff = float(np.abs(models["slim"].run(x_test[:256]) - models["sparse"].run(x_test[:256])).max())
    lat = latency_ms([models["original"], models["slim"]], x_test[:1])
    acc = {k: m.accuracy(x_test, y_test) for k, m in models.items()}

    print("\ngroups: %d prunable of %d" % (sum(g.prunable for g in analysis.groups), len(analysis.groups)))
    for g in analysis.groups:
        kept = int(keep[g.units].sum())
        print("  %-28s %3d -> %3d channels %s" % (",".join(g.nodes), g.channels, kept,
                                                  "" if g.prunable else "(%s)" % g.reason))
    print("\n%-22s %12s %12s" % ("", "original", "slim"))
    print("%-22s %12.4f %12.4f" % ("test accuracy", acc["original"], acc["slim"]))
    print("%-22s %12d %12d  (%.1f%% fewer)" % ("MACs", before.macs, after.macs, 100 * (1 - after.macs / before.macs)))
    print("%-22s %12d %12d" % ("params", before.params, after.params))
    print("%-22s %12d %12d" % ("file size (bytes)", sizes["original"], sizes["slim"]))
    print("%-22s %12.3f %12.3f" % ("CPU latency ms (b=1)", lat[0], lat[1]))
    print("slim vs sparse max |diff| on 256 test images: %.2e (sparse accuracy %.4f)" % (diff, acc["sparse"]))
    print("files in %s/" % FLAGS.output_dir)


if __name__ == "__main__":
    app.run(main)
