"""Benchmark fine-grained sparsity: test accuracy, compressed size and CPU latency per pattern.

    python tools/benchmarks/sparsity.py [--model resnet] [--seeds 0,1] [--markdown]

Per seed a dense baseline is trained (``--epochs``, Adam, batch 128) and checkpointed.  Every
configuration restores it and fine-tunes ``--finetune_epochs`` with the same optimizer, batch size
and data order while a ``WeightPruningRunner`` (``PolynomialDecay`` from 0 over the first 2/3 of the
fine-tuning steps for unstructured and block sparsity; ``ConstantSparsity`` from step 0 for N:M)
keeps its masks; ``dense`` fine-tunes without one (the control).  ``channels50+2:4`` first prunes
50% of the MACs by channels (uniform L1, multiples of 4 channels), then fine-tunes with 2:4.  Each
result is measured on the 10k test set after an exact BatchNorm re-estimation; the frozen graph's
gzip size and its batch-1 CPU latency (median of interleaved runs against dense) are reported too.
"""
import gzip
import os
import shlex
import sys
import tempfile
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
from tf1prune import ConstantSparsity, PolynomialDecay, WeightPruningRunner  # noqa: E402
from tools.common import Frozen, latency_ms  # noqa: E402

tf.disable_eager_execution()
tf.logging.set_verbosity(tf.logging.WARN)
from tensorflow.python.util import deprecation  # noqa: E402
deprecation._PRINT_DEPRECATION_WARNINGS = False   # this tool's own TF1 calls are deliberate

CONFIGS = {   # name -> (schedule kind, target, m_by_n, block, channels)
    "dense": (None, 0.0, None, (1, 1), False),
    "unstructured 50%": ("poly", 0.5, None, (1, 1), False),
    "unstructured 75%": ("poly", 0.75, None, (1, 1), False),
    "unstructured 90%": ("poly", 0.9, None, (1, 1), False),
    "2:4": ("nm", 0.5, (2, 4), (1, 1), False),
    "1:4": ("nm", 0.75, (1, 4), (1, 1), False),
    "block 1x4 75%": ("poly", 0.75, None, (1, 4), False),
    "channels50+2:4": ("nm", 0.5, (2, 4), (1, 1), True),
}
flags.DEFINE_enum("model", "resnet", list(example_models.MODEL_NAMES), "example model")
flags.DEFINE_list("seeds", ["0", "1"], "model and data-order seeds")
flags.DEFINE_list("configs", list(CONFIGS), "configurations")
flags.DEFINE_integer("epochs", 2, "baseline training epochs")
flags.DEFINE_integer("finetune_epochs", 1, "fine-tuning epochs of every configuration")
flags.DEFINE_integer("train_images", 0, "use only this many training images (0: all)")
flags.DEFINE_integer("runs", 50, "timed latency runs per graph")
flags.DEFINE_bool("markdown", False, "Markdown tables")
FLAGS = flags.FLAGS
SPECS = {"input_1:0": ((1, 28, 28, 1), "float32")}


def log(text):
    print(("- " if FLAGS.markdown else "") + text, flush=True)


def accuracy(graph_def, output, x, y):
    f = Frozen(graph_def, "input_1:0", output)
    try:
        return f.accuracy(x, y)
    finally:
        f.sess.close()


def build(seed):
    graph = tf.Graph()
    sess = tf.Session(graph=graph)
    with graph.as_default(), sess.as_default():
        info = example_models.build(FLAGS.model, learning_phase=None, seed=seed)
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        sess.run(tf.global_variables_initializer())
    return graph, sess, info


def fit(model, x, y, epochs, seed, callbacks=()):
    np.random.seed(seed)
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=list(callbacks))


def run(name, seed, ckpt, ds, calibration):
    kind, target, m_by_n, block, channels = CONFIGS[name]
    graph, sess, info = build(seed)
    output = info.output_node_names[0]
    steps = FLAGS.finetune_epochs * -(-len(ds[1]) // 128)
    with graph.as_default(), sess.as_default():
        tf.train.Saver(var_list=info.model.weights).restore(sess, ckpt)
        callbacks = []
        if channels:
            runner = tf1prune.IterativePruningRunner(FLAGS.model, sess, SPECS, [output], workspace=tempfile.mkdtemp(),
                                                     channel_divisible=4)   # N:M needs whole groups of 4 inputs
            runner.prune(sparsity=0.5, strategy="uniform")
        if kind is not None:
            schedule = ConstantSparsity(target, 0, frequency=100) if kind == "nm" else \
                PolynomialDecay(0.0, target, 0, max(1, 2 * steps // 3), frequency=max(1, steps // 30))
            pruner = WeightPruningRunner(sess, [output], schedule, block_size=block, m_by_n=m_by_n)
            callbacks.append(pruner.keras_callback())
        fit(info.model, ds[0], ds[1], FLAGS.finetune_epochs, seed, callbacks)
        runner = tf1prune.IterativePruningRunner(FLAGS.model, sess, SPECS, [output], workspace=tempfile.mkdtemp())
        runner.recalibrate(calibration)
        frozen = runner.get_slim_graph_def() if channels else runner.frozen_graph_def()
        if kind is not None:
            frozen = pruner.strip([output]) if not channels else frozen
    sess.close()
    rows = tf1prune.workflows.weights.sparsity_report(tf1prune.analyze(frozen, SPECS, [output]))
    zeros = sum(r.zeros * r.weights for r in rows) / max(sum(r.weights for r in rows), 1)
    return frozen, output, zeros


def main(argv):
    del argv
    print("$ " + " ".join(shlex.quote(a) for a in ["python"] + sys.argv))
    x_train, y_train, x_test, y_test, source = data.load()
    if FLAGS.train_images:
        x_train, y_train = x_train[:FLAGS.train_images], y_train[:FLAGS.train_images]
    pick = np.random.RandomState(0).choice(len(y_train), min(1280, len(y_train)), False)
    calibration = [{"input_1:0": x_train[pick[i:i + 128]]} for i in range(0, len(pick), 128)]
    log("data: %s; tensorflow %s" % (source, tf.__version__))
    results = {}
    for seed in (int(s) for s in FLAGS.seeds):
        t = time.time()
        graph, sess, info = build(seed)
        with graph.as_default(), sess.as_default():
            fit(info.model, x_train, y_train, FLAGS.epochs, seed)
            ckpt = tf.train.Saver(var_list=info.model.weights).save(sess, os.path.join(tempfile.mkdtemp(), "base"))
        sess.close()
        log("seed %d: baseline trained %d epochs in %.0f s" % (seed, FLAGS.epochs, time.time() - t))
        graphs = {}
        for name in FLAGS.configs:
            t = time.time()
            frozen, output, zeros = run(name, seed, ckpt, (x_train, y_train), calibration)
            acc = accuracy(frozen, output, x_test, y_test)
            graphs[name] = (frozen, output)
            results.setdefault(name, []).append((acc, zeros, len(gzip.compress(frozen.SerializeToString(), 9)),
                                                 len(frozen.SerializeToString())))
            log("seed %d %s: test %.4f, %.1f%% zero weights (%.0f s)" % (seed, name, acc, 100 * zeros,
                                                                         time.time() - t))
        if "dense" in graphs:
            x = x_test[:1]
            dense = Frozen(graphs["dense"][0], "input_1:0", graphs["dense"][1])
            for name, (gd, output) in graphs.items():
                other = Frozen(gd, "input_1:0", output)
                ms = latency_ms([dense, other], x, runs=FLAGS.runs)
                results[name][-1] += (ms[1] / ms[0],)
                other.sess.close()
            dense.sess.close()
    header = ["configuration", "zero weights", "test acc (mean ± sd, %d seeds)" % len(FLAGS.seeds),
              "Δ vs dense (pts)", ".pb bytes", "gzip bytes", "latency vs dense"]
    dense_acc = np.mean([r[0] for r in results.get("dense", [(np.nan,)])])
    rows = []
    for name in FLAGS.configs:
        r = np.array(results[name], dtype=float)
        rows.append([name, "%.1f%%" % (100 * r[:, 1].mean()), "%.4f ± %.4f" % (r[:, 0].mean(), r[:, 0].std(ddof=1)
                                                                                if len(r) > 1 else 0.0),
                     "%+.2f" % (100 * (r[:, 0].mean() - dense_acc)), "%d" % r[-1, 3], "%d" % r[-1, 2],
                     "%.2fx" % r[:, 4].mean() if r.shape[1] > 4 else "-"])
    if FLAGS.markdown:
        print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [header] + rows:
            print("  ".join(row))


if __name__ == "__main__":
    app.run(main)
