"""Soft filter pruning (seed 002's workflow) on Fashion-MNIST with the MobileNetV2-style SE model.

    python tools/examples/sfp_example.py [--epochs 2] [--thresholds 0.8,0.7,0.6] [--output_dir sfp_out]

A checkpoint pipeline, as with Estimators: every round builds the full-width model from code
and restores a checkpoint.  Pretrain -> for each threshold: soft-prune the block-internal
filters into a checkpoint, retrain from it (with --zero_every N, a hook zeroes the selection every
N steps), read the summary, re-prune while the failure rate is above --max_failure -> strip the
selected channels (slim checkpoint + meta graph) -> keep training the *slim* model from its
checkpoint -> export the slim .pb.  Prints accuracy, MACs, params and CPU latency before/after.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
from tools.common import Frozen, latency_ms  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune.files import save_graph_def
from tf1prune.apply import checkpoint  # noqa: E402
from tf1prune.workflows.sfp import METHODS, SoftFilterPruningRunner  # noqa: E402

flags.DEFINE_integer("epochs", 2, "pretraining epochs")
flags.DEFINE_list("thresholds", ["0.8", "0.7", "0.6"], "soft-pruning thresholds, in turn (lower prunes more)")
flags.DEFINE_enum("method", "magnitude", METHODS, "filter selection")
flags.DEFINE_integer("retrain_steps", 400, "training steps after each soft pruning")
flags.DEFINE_integer("zero_every", 0, "a hook zeroes the selection every N steps while retraining (0: never)")
flags.DEFINE_float("max_failure", 0.1, "re-prune while the failure rate is above this")
flags.DEFINE_integer("max_tries", 2, "soft prunings per threshold at most")
flags.DEFINE_integer("finetune_steps", 400, "training steps of the slim model")
flags.DEFINE_integer("batch", 128, "batch size")
flags.DEFINE_string("output_dir", "sfp_out", "checkpoints, summaries and .pb files go here")
FLAGS = flags.FLAGS
LOGITS = "logits/BiasAdd"


def build_full_model():
    """The training graph, from code: model, loss, Adam, global step, Saver."""
    info = example_models.build("mobilenet_v2_se", learning_phase=0, seed=0)
    labels = tf.placeholder(tf.int64, [None], name="labels")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=info.model.outputs[0]),
                          name="loss")
    step = tf.train.get_or_create_global_step()
    train_op = tf.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)
    return info.input_name, train_op


def train(build, steps, x, y, output_dir, start=None, hooks=(), seed=0):
    """Train ``steps`` from checkpoint ``start`` (fresh if None) in a new graph; return the saved checkpoint."""
    graph = tf.Graph()
    with graph.as_default():
        input_name, train_op = build()
        saver = tf.train.Saver(max_to_keep=1)
        init_fn = (lambda scaffold, sess: saver.restore(sess, start)) if start else None
        rng = np.random.RandomState(seed)
        scaffold = tf.train.Scaffold(init_fn=init_fn, saver=saver)
        with tf.train.SingularMonitoredSession(scaffold=scaffold, hooks=list(hooks)) as sess:
            for _ in range(steps):
                idx = rng.randint(0, len(y), FLAGS.batch)
                sess.run(train_op, {input_name: x[idx], "labels:0": y[idx]})
            os.makedirs(output_dir, exist_ok=True)
            return saver.save(sess.raw_session(), os.path.join(output_dir, "model.ckpt"),
                              global_step=tf.train.get_global_step())


def slim_builder(meta_graph):
    """Build function of the slim model: its meta graph, re-imported, plus a fresh Adam."""
    def build():
        tf.train.import_meta_graph(meta_graph)
        graph = tf.get_default_graph()
        step = tf.train.get_global_step()
        return "input_1:0", tf.train.AdamOptimizer(1e-3).minimize(graph.get_tensor_by_name("loss:0"),
                                                                    global_step=step)
    return build


def accuracy_of(meta_graph, ckpt, x, y):
    return Frozen(checkpoint.freeze(meta_graph, ckpt, [LOGITS]), "input_1:0", LOGITS).accuracy(x, y)


def main(_):
    tf.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    x_train, y_train, x_test, y_test, source = data.load()
    print("data:", source)
    out = FLAGS.output_dir
    started = time.time()
    steps_per_epoch = len(y_train) // FLAGS.batch
    pre = train(build_full_model, FLAGS.epochs * steps_per_epoch, x_train, y_train, os.path.join(out, "pretrained"))
    base_acc = accuracy_of(pre + ".meta", pre, x_test, y_test)
    print("pretrained %d epochs: test accuracy %.4f (%s)" % (FLAGS.epochs, base_acc, pre))

    pruner = SoftFilterPruningRunner(pre + ".meta", pre, [LOGITS, "loss"], method=FLAGS.method)
    print("blocks: %s" % ", ".join(pruner.blocks))
    for name, why in pruner.skipped:
        print("skipped block %s: %s" % (name, why))
    history = []
    for threshold in (float(t) for t in FLAGS.thresholds):
        pruner.set_threshold(threshold)
        for attempt in range(FLAGS.max_tries):
            pruner.set_output_dir(os.path.join(out, "TH%g" % threshold + ("_repruned%d" % attempt if attempt else "")))
            soft = pruner.soft_prune()
            hooks = [pruner.hook(FLAGS.zero_every)] if FLAGS.zero_every else []
            retrained = train(build_full_model, FLAGS.retrain_steps, x_train, y_train, pruner.output_dir, soft, hooks,
                              seed=len(history) + 1)
            summary = pruner.summary(retrained)
            selected = sum(b.selected for b in summary.blocks)
            acc = accuracy_of(pre + ".meta", retrained, x_test, y_test)
            history.append((threshold, attempt, selected, summary.failure_rate, acc))
            print("threshold %.2f try %d: %d filters selected, failure rate %.3f, test accuracy %.4f"
                  % (threshold, attempt, selected, summary.failure_rate, acc))
            if summary.failure_rate <= FLAGS.max_failure:
                break
    print(summary)

    result = pruner.strip(os.path.join(out, "slim"), output_graph=os.path.join(out, "slim_stripped.pb"))
    stripped_acc = Frozen(_read(result.graph), "input_1:0", LOGITS).accuracy(x_test, y_test)
    tuned = train(slim_builder(result.meta_graph), FLAGS.finetune_steps, x_train, y_train,
                  os.path.join(out, "slim_finetuned"), result.checkpoint, seed=99)
    final = checkpoint.freeze(result.meta_graph, tuned, [LOGITS])
    save_graph_def(final, os.path.join(out, "slim.pb"))
    extra = len(history) * FLAGS.retrain_steps + FLAGS.finetune_steps
    longer = train(build_full_model, extra, x_train, y_train, os.path.join(out, "baseline_longer"), pre, seed=7)
    longer_acc = accuracy_of(pre + ".meta", longer, x_test, y_test)
    baseline = checkpoint.freeze(pre + ".meta", pre, [LOGITS])
    save_graph_def(baseline, os.path.join(out, "baseline.pb"))
    models = [Frozen(baseline, "input_1:0", LOGITS), Frozen(final, "input_1:0", LOGITS)]
    final_acc = models[1].accuracy(x_test, y_test)
    lat = latency_ms(models, x_test[:1])

    print("\n== summary (%.0f s in all)" % (time.time() - started))
    for threshold, attempt, selected, failure, acc in history:
        print("threshold %.2f try %d: %3d filters selected, failure rate %.3f, retrained accuracy %.4f"
              % (threshold, attempt, selected, failure, acc))
    print("stripped (no fine-tuning): test accuracy %.4f" % stripped_acc)
    print("baseline trained %d more steps (as many as soft pruning + fine-tuning): test accuracy %.4f"
          % (extra, longer_acc))
    print("%-24s %12s %12s" % ("", "baseline", "slim"))
    print("%-24s %12.4f %12.4f" % ("test accuracy", base_acc, final_acc))
    print("%-24s %12d %12d  (%.1f%% fewer)" % ("MACs", result.before.macs, result.after.macs,
                                               100 * (1 - result.after.macs / result.before.macs)))
    print("%-24s %12d %12d" % ("params", result.before.params, result.after.params))
    print("%-24s %12.3f %12.3f" % ("CPU latency ms (b=1)", lat[0], lat[1]))
    print("files: %s, %s" % (os.path.join(out, "baseline.pb"), os.path.join(out, "slim.pb")))


def _read(path):
    graph_def = tf.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return graph_def


if __name__ == "__main__":
    app.run(main)
