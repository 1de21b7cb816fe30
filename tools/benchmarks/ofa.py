"""Benchmark once-for-all: OFA sub-networks against separately pruned models at the same MACs.

    python tools/benchmarks/ofa.py [--model resnet] [--seeds 0,1] [--targets 0.3,0.5,0.7] [--markdown]

Per seed, the baseline of ``tools/benchmarks/quality.py`` is trained (``--epochs``, Adam, batch 128) and
checkpointed.  Then:

* **OFA**: the baseline is made elastic (``--expand_ratios``), trained ``--ofa_epochs`` with the
  sandwich rule (largest on labels; smallest and ``--num_random`` random ones distilled from the
  largest; one Adam update per step), and searched once per target (evolutionary, candidates
  within ±1 point of the target's MACs reduction, BatchNorm re-estimated, scored on the held-out
  training images).  Each best sub-network is measured on the test set after BatchNorm
  re-estimation only, and after ``--ofa_finetune_epochs`` of fine-tuning at its widths, on the labels
  plus the soft outputs of the trained elastic network's largest sub-network (``--ofa_distill``;
  the teacher's outputs are computed once, before fine-tuning, on the same batches).
* **Separately pruned**: ``IterativePruningRunner`` with adaptive-BatchNorm ``ana`` and
  ``prune(sparsity)`` per target (bench_quality's ``ana-cal``), fine-tuned ``--ofa_epochs +
  --ofa_finetune_epochs`` epochs: the same number of optimizer steps as one OFA sub-network got.

Training cost is reported as wall time and as forward/backward passes (a sandwich step runs
``2 + num_random`` sub-networks).
"""
import os
import shlex
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo
from tools.benchmarks import quality as bq  # noqa: E402  (its flags and helpers: data, baseline, ana-cal runs)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
from tf1prune.workflows.ofa import OnceForAllRunner  # noqa: E402

flags.DEFINE_list("targets", ["0.3", "0.5", "0.7"], "MACs reductions of the exported sub-networks")
flags.DEFINE_list("expand_ratios", ["0.375", "0.5", "0.625", "0.75", "0.875", "1.0"],
                  "OFA widths (the smallest sub-network, ~86% fewer MACs, lies beyond the largest target)")
flags.DEFINE_integer("ofa_epochs", 1, "sandwich-rule epochs of the elastic network")
flags.DEFINE_integer("ofa_finetune_epochs", 1, "fine-tuning epochs of each OFA sub-network")
flags.DEFINE_integer("num_random", 2, "random sub-networks per sandwich step")
flags.DEFINE_float("distill_weight", None, "weight of each distilled sub-network in the sandwich (default: "
                   "1 / (1 + num_random), SandwichTrainer's)")
flags.DEFINE_bool("ofa_distill", True, "fine-tune OFA sub-networks on labels + the largest network's soft outputs")
flags.DEFINE_bool("separate", True, "also prune and fine-tune separately (False: OFA figures only)")
flags.DEFINE_integer("population", 12, "search population")
flags.DEFINE_integer("generations", 3, "search generations")
FLAGS = flags.FLAGS
SPECS = {"input_1:0": ((1, 28, 28, 1), "float32")}


def batches(ds, epochs, seed):
    """(x, y) batches of 128 over ``epochs`` in a seeded order."""
    n = len(ds.y_fit)
    for e in range(epochs):
        order = np.random.RandomState(1000 * seed + e).permutation(n)
        for i in range(0, n - 127, 128):
            pick = order[i:i + 128]
            yield ds.x_fit[pick], ds.y_fit[pick]


class Elastic:
    """The seed's baseline made elastic, with a sandwich trainer and a plain fine-tuning op."""

    def __init__(self, seed):
        self.graph = tf.Graph()
        old = tf.Session(graph=self.graph, config=bq.config())
        with self.graph.as_default(), old.as_default():
            info = example_models.build(FLAGS.model, learning_phase=None, seed=seed.seed)
            old.run(tf.global_variables_initializer())
            tf.train.Saver(var_list=info.model.weights).restore(old, seed.ckpt)
            pruner = OnceForAllRunner(FLAGS.model, old, SPECS, info.output_node_names, workspace=seed.workdir)
            self.model = pruner.ofa_model([float(r) for r in FLAGS.expand_ratios])
            old.close()
            self.x = self.graph.get_tensor_by_name("input_1:0")
            self.labels = tf.placeholder(tf.int64, [None])
            self.phase = keras.backend.learning_phase()
            logits = info.model.outputs[0]
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.labels, logits=logits))
            self.trainer = self.model.sandwich_trainer(loss, tf.train.AdamOptimizer(1e-3), logits,
                                                       num_random=FLAGS.num_random, distill_weight=FLAGS.distill_weight)
            optimizer = tf.train.AdamOptimizer(1e-3)
            self.finetune_op = optimizer.minimize(loss + self.trainer.distill_loss if FLAGS.ofa_distill else loss)
            self.logits = logits
            self.finetune_reset = tf.variables_initializer(optimizer.variables())
            self.weights = info.model.weights
            self.saver = tf.train.Saver(var_list=self.weights)
        self.sess = self.model.sess

    def feed(self, x, y):
        return {self.x: x, self.labels: y, self.phase: True}


def run_seed(seed, ds, targets):
    """{target: row} for one seed."""
    out = {}
    t = time.time()
    el = Elastic(seed)
    model = el.model
    for x, y in batches(ds, FLAGS.ofa_epochs, seed.seed):
        el.trainer.step(el.feed(x, y))
    ofa_s = time.time() - t
    steps = FLAGS.ofa_epochs * (len(ds.y_fit) // 128)
    ckpt = el.saver.save(el.sess, os.path.join(seed.workdir, "ofa.ckpt"))
    bq.log("seed %d: OFA trained %d sandwich steps (%d sub-network passes) in %.0f s; baseline fit %d steps"
           % (seed.seed, steps, steps * (2 + FLAGS.num_random), ofa_s, FLAGS.epochs * (len(ds.y_fit) // 128)))
    largest = bq.accuracy(model.get_static_subnet(model.max_widths(), ds.calibration), seed.output,
                          ds.x_test, ds.y_test)
    bq.log("seed %d: the elastic network's largest sub-network: test %.4f (BatchNorm re-estimated; baseline %.4f)"
           % (seed.seed, largest, seed.test_acc))
    for target in targets:
        t = time.time()
        lo, hi = (1 - target - 0.01) * model.full_macs, (1 - target + 0.01) * model.full_macs
        front = model.search(seed.eval_fn, ds.calibration, lo, hi, population=FLAGS.population,
                             generations=FLAGS.generations, seed=seed.seed)
        best = max(front, key=lambda s: s.metric)
        search_s = time.time() - t
        slim = model.get_static_subnet(best.widths, ds.calibration)
        recal = bq.accuracy(slim, seed.output, ds.x_test, ds.y_test)
        el.saver.restore(el.sess, ckpt)
        el.sess.run(el.finetune_reset)
        feeds = [el.feed(x, y) for x, y in batches(ds, FLAGS.ofa_finetune_epochs, seed.seed + 7)]
        if FLAGS.ofa_distill:   # the largest network's training-mode outputs on each fine-tuning batch
            model.set_widths(model.max_widths())
            for feed in feeds:
                feed[el.trainer.teacher] = el.sess.run(el.logits, feed)
        model.set_widths(best.widths)
        for feed in feeds:
            el.sess.run(el.finetune_op, feed)
        tuned = bq.accuracy(model.get_static_subnet(best.widths, ds.calibration), seed.output, ds.x_test, ds.y_test)
        el.saver.restore(el.sess, ckpt)
        model.set_widths(model.max_widths())
        separate = bq.run(seed, "ana-cal", target) + seed.test_acc if FLAGS.separate else float("nan")
        out[target] = (1 - best.macs / model.full_macs, recal, tuned, separate)
        bq.log("seed %d target %g: OFA %.1f%% fewer MACs, test %.4f BN-recalibrated, %.4f fine-tuned; separately "
               "pruned %.4f (search %.0f s)" % (seed.seed, target, 100 * out[target][0], recal, tuned, separate, search_s))
    el.sess.close()
    return out, ofa_s


def main(argv):
    del argv
    print("$ " + " ".join(shlex.quote(a) for a in ["python"] + sys.argv))
    FLAGS.finetune_epochs = FLAGS.ofa_epochs + FLAGS.ofa_finetune_epochs   # the same optimizer steps
    ds = bq.Data()
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_ofa_")
    targets = [float(t) for t in FLAGS.targets]
    bq.log("data: %s; fit %d, val %d images; tensorflow %s" % (ds.source, len(ds.y_fit), len(ds.y_val), tf.__version__))
    rows, costs = {}, []
    for s in (int(x) for x in FLAGS.seeds):
        t = time.time()
        seed = bq.Seed(s, ds, workdir)
        base_s = time.time() - t
        result, ofa_s = run_seed(seed, ds, targets)
        costs.append((s, base_s, ofa_s))
        for target, r in result.items():
            rows.setdefault(target, []).append(r + (seed.test_acc,))
        shutil.rmtree(seed.workdir, ignore_errors=True)
    print()
    n = len(FLAGS.seeds)

    def stat(values):
        v = 100 * np.array(values)
        return "%.2f ± %.2f" % (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0)
    bq.table(["target", "OFA MACs cut %", "baseline %", "OFA, BN only %", "OFA + %d ep %%" % FLAGS.ofa_finetune_epochs,
              "separately pruned (ana-cal, %d ep) %%" % FLAGS.finetune_epochs, "OFA+ft − separate (pts)"],
             [["%g%%" % (100 * t)] + [stat([r[i] for r in rs]) for i in (0, 4, 1, 2, 3)]
              + [stat([r[2] - r[3] for r in rs])] for t, rs in sorted(rows.items())])
    bq.log("accuracy: mean ± sd over %d seeds (%s)" % (n, ", ".join(FLAGS.seeds)))
    bq.table(["seed", "baseline training s (%d epochs)" % FLAGS.epochs,
              "OFA training s (%d sandwich epochs, %d sub-networks per step)" % (FLAGS.ofa_epochs, 2 + FLAGS.num_random)],
             [[s, "%.0f" % b, "%.0f" % o] for s, b, o in costs])


if __name__ == "__main__":
    app.run(main)
