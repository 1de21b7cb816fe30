"""Benchmark of checkpoint stripping on a full-size training checkpoint.

    python tools/benchmarks/checkpoint.py [--model ResNet50] [--ratio 0.5]

Builds a tf_keras application (weights=None, 224x224, learning phase 0) with a loss and
tf.train.AdamOptimizer, saves a training checkpoint (weights + Adam slots), then times
``CheckpointModel`` (read + analyse + cross-check) and ``strip_checkpoint`` (slim meta graph,
slim checkpoint, restore check, frozen .pb) for an L1 spec pruning ``--ratio`` of every group,
and prints file sizes and MACs/params before and after.
"""
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf1prune.apply import checkpoint
from tf1prune.choose import spec as spec_lib  # noqa: E402

flags.DEFINE_string("model", "ResNet50", "tf_keras.applications model name")
flags.DEFINE_float("ratio", 0.5, "fraction of the channels of every prunable group to remove")
FLAGS = flags.FLAGS


def _size(prefix):
    folder, base = os.path.split(prefix)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.startswith(base + ".data") or f == base + ".index")


def main(_):
    import tf_keras as keras
    tf.disable_eager_execution()
    tf.get_logger().setLevel("ERROR")
    work = tempfile.mkdtemp(prefix="bench_ckpt_")
    graph = tf.Graph()
    with graph.as_default():
        keras.backend.set_learning_phase(0)
        net = getattr(keras.applications, FLAGS.model)(weights=None, input_shape=(224, 224, 3), classes=1000)
        labels = tf.placeholder(tf.int64, [None], name="labels")
        logits = net.outputs[0].op.inputs[0]   # before the softmax
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        tf.train.AdamOptimizer().minimize(loss, global_step=tf.train.get_or_create_global_step())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            prefix = tf.train.Saver().save(sess, os.path.join(work, "train", "model.ckpt"), global_step=0)
    outputs = [logits.op.name, "loss"]
    t = time.time()
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, outputs)
    t_model = time.time() - t
    keep = spec_lib.make_spec(model.analysis, ratio=FLAGS.ratio, values=model.value)
    t = time.time()
    result = checkpoint.strip_checkpoint(model, keep, os.path.join(work, "slim"),
                                         output_graph=os.path.join(work, "slim.pb"))
    t_strip = time.time() - t
    print("%s, training checkpoint with Adam slots, %d entries" % (FLAGS.model, len(model.ckpt_shapes)))
    print("read + analyse + check: %.2f s; strip (meta graph, checkpoint, restore check, .pb): %.2f s"
          % (t_model, t_strip))
    print("checkpoint bytes: %d -> %d" % (_size(prefix), _size(result.checkpoint)))
    print("slim .pb bytes: %d" % os.path.getsize(result.graph))
    print("MACs:   %d -> %d" % (result.before.macs, result.after.macs))
    print("params: %d -> %d" % (result.before.params, result.after.params))
    shutil.rmtree(work)


if __name__ == "__main__":
    app.run(main)
