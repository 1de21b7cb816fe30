"""Once-for-all on Fashion-MNIST: train one elastic network, export slim ones at 30/50/70% fewer MACs.

    python tools/examples/ofa_example.py [--model resnet] [--epochs 2] [--ofa_epochs 2] [--output_dir ofa_out]

Trains the example model (``--epochs``), makes it elastic with :class:`tf1prune.OnceForAllRunner`
(``--expand_ratios``), trains it with the sandwich rule and in-place distillation in a plain TF1
loop, searches each target's MACs range (±1 point) on held-out training images with BatchNorm
re-estimated per candidate, and writes per target the slim ``.pb`` and a slim checkpoint that
keeps training (``<output_dir>/macs<N>/``), the Pareto fronts (``<output_dir>/*.ofa_search.json``)
and a table of MACs, parameters, test accuracy and CPU latency.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tools.common import Frozen, latency_ms  # noqa: E402

tf.disable_eager_execution()
tf.logging.set_verbosity(tf.logging.WARN)
flags.DEFINE_enum("model", "resnet", list(example_models.MODEL_NAMES), "example model")
flags.DEFINE_integer("epochs", 2, "training epochs of the original model")
flags.DEFINE_integer("ofa_epochs", 2, "sandwich-rule epochs of the elastic network")
flags.DEFINE_list("expand_ratios", ["0.375", "0.5", "0.625", "0.75", "0.875", "1.0"],
                  "widths per group (the smallest sub-network lies beyond the largest target)")
flags.DEFINE_list("targets", ["0.3", "0.5", "0.7"], "MACs reductions to export")
flags.DEFINE_integer("num_random", 2, "random sub-networks per sandwich step")
flags.DEFINE_integer("population", 12, "search population per generation")
flags.DEFINE_integer("generations", 3, "search generations")
flags.DEFINE_integer("val_size", 2000, "last training images held out for the search")
flags.DEFINE_integer("train_images", 0, "use only this many training images (0: all)")
flags.DEFINE_integer("seed", 0, "model and data-order seed")
flags.DEFINE_string("output_dir", "ofa_out", "slim graphs, checkpoints and search files go here")
FLAGS = flags.FLAGS
INPUT = "input_1:0"


def accuracy(graph_def, output, x, y):
    f = Frozen(graph_def, INPUT, output)
    try:
        return f.accuracy(x, y)
    finally:
        f.sess.close()


class ValAccuracy:
    """eval_fn of the search: accuracy on the held-out training images."""

    def __init__(self, output, x, y):
        self.output, self.x, self.y = output, x, y

    def __call__(self, graph_def):
        return accuracy(graph_def, self.output, self.x, self.y)


def main(argv):
    del argv
    x, y, x_test, y_test, source = data.load()
    x_val, y_val, x_fit, y_fit = x[-FLAGS.val_size:], y[-FLAGS.val_size:], x[:-FLAGS.val_size], y[:-FLAGS.val_size]
    if FLAGS.train_images:
        x_fit, y_fit = x_fit[:FLAGS.train_images], y_fit[:FLAGS.train_images]
    calibration = [{INPUT: x_fit[i:i + 128]} for i in range(0, 1280, 128)]
    print("data: %s, %d training images" % (source, len(y_fit)))
    graph = tf.Graph()
    sess = tf.Session(graph=graph)
    with graph.as_default(), sess.as_default():
        info = example_models.build(FLAGS.model, learning_phase=None, seed=FLAGS.seed)
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        sess.run(tf.global_variables_initializer())
        t = time.time()
        np.random.seed(FLAGS.seed)
        info.model.fit(x_fit, y_fit, batch_size=128, epochs=FLAGS.epochs, verbose=0)
        print("original model trained in %.0f s" % (time.time() - t))
        specs = {INPUT: ((1, 28, 28, 1), "float32")}
        output = info.output_node_names[0]
        pruner = tf1prune.OnceForAllRunner(FLAGS.model, sess, specs, info.output_node_names, workspace=FLAGS.output_dir)
        model = pruner.ofa_model([float(r) for r in FLAGS.expand_ratios])
        original = model.get_static_subnet(model.max_widths(), calibration)
        sess = model.sess   # the graph now reads its weights through the width masks
        labels = tf.placeholder(tf.int64, [None])
        logits = info.model.outputs[0]
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        trainer = model.sandwich_trainer(loss, tf.train.AdamOptimizer(1e-3), logits, num_random=FLAGS.num_random)
        feed = {keras.backend.learning_phase(): True}
        t, steps = time.time(), 0
        for epoch in range(FLAGS.ofa_epochs):
            order = np.random.RandomState(FLAGS.seed * 1000 + epoch).permutation(len(y_fit))
            for i in range(0, len(order) - 127, 128):
                feed.update({graph.get_tensor_by_name(INPUT): x_fit[order[i:i + 128]], labels: y_fit[order[i:i + 128]]})
                losses = trainer.step(feed)
                steps += 1
            print("sandwich epoch %d: loss %.3f (largest), distillation %.3f (%.0f s)"
                  % (epoch + 1, losses["loss"], losses["distill"], time.time() - t))
        eval_fn = ValAccuracy(output, x_val, y_val)
        rows = [("original", model.full_macs, tf1prune.count_macs(tf1prune.analyze(original, specs, [output])).params,
                 accuracy(original, output, x_test, y_test), original)]
        for target in (float(v) for v in FLAGS.targets):
            lo, hi = (1 - target - 0.01) * model.full_macs, (1 - target + 0.01) * model.full_macs
            front = model.search(eval_fn, calibration, lo, hi, population=FLAGS.population,
                                 generations=FLAGS.generations, seed=FLAGS.seed,
                                 path=os.path.join(FLAGS.output_dir, "macs%d.ofa_search.json" % round(100 * target)))
            best = max(front, key=lambda s: s.metric)
            folder = os.path.join(FLAGS.output_dir, "macs%d" % round(100 * target))
            slim = model.get_static_subnet(best.widths, calibration, output_graph=os.path.join(folder, "slim.pb"),
                                           output_dir=os.path.join(folder, "checkpoint"))
            params = tf1prune.count_macs(tf1prune.analyze(slim, specs, [output])).params
            rows.append(("%d%% fewer MACs" % round(100 * target), best.macs, params,
                         accuracy(slim, output, x_test, y_test), slim))
    frozen = [Frozen(r[4], INPUT, output) for r in rows]
    ms = latency_ms(frozen, x_test[:1], runs=100)
    for f in frozen:
        f.sess.close()
    print("\n%-16s %12s %10s %9s %11s" % ("model", "MACs", "params", "test acc", "latency ms"))
    for (name, macs, params, acc, _), lat in zip(rows, ms):
        print("%-16s %12d %10d %9.4f %11.2f" % (name, macs, params, acc, lat))
    print("\n%d sandwich steps (%d sub-networks each), one training run; outputs in %s/"
          % (steps, 2 + FLAGS.num_random, FLAGS.output_dir))


if __name__ == "__main__":
    app.run(main)
