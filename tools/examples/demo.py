"""The seed workflow on real data: Fashion-MNIST, a TF1 session runner, fine-tuning, slim export.

    python tools/examples/demo.py [--method ana|onestep|uniform] [--model resnet] [--epochs 2] [--output_dir demo_out]

Trains a baseline from ``example_models`` in a TF1 session with tf_keras (no learning phase set:
BatchNorm is an ``If`` op) and re-estimates its BatchNorm statistics exactly on 1,280 training
images.  Then, for 50% and then 70% fewer MACs: choose the channels (``--method``: ``ana`` with
adaptive BatchNorm and ``prune``; ``onestep``: a search of ``--num_subnet`` candidates; ``uniform``),
re-estimate BatchNorm, fine-tune one epoch, re-estimate BatchNorm.  Exports the slim frozen graph and
prints accuracy, MACs, params, file size and CPU latency of the baseline and the slim model.
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
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune.core import flops
from tf1prune.apply import slim  # noqa: E402
from tools.common import Frozen, latency_ms  # noqa: E402

flags.DEFINE_enum("method", "ana", ["ana", "onestep", "uniform"], "how the channels are chosen (see BENCHMARKS.md)")
flags.DEFINE_enum("model", "resnet", ["resnet", "mobilenet_v2_se", "mnist_convnet", "inception"], "baseline")
flags.DEFINE_integer("epochs", 2, "baseline training epochs")
flags.DEFINE_integer("finetune_epochs", 1, "fine-tuning epochs after each prune")
flags.DEFINE_list("sparsities", ["0.5", "0.7"], "MACs reductions, pruned in turn")
flags.DEFINE_integer("val_size", 2000, "training images held out to score candidates (ana, search)")
flags.DEFINE_integer("num_subnet", 20, "--method onestep: candidates per search")
flags.DEFINE_integer("channel_divisible", 1, "kept channel counts are multiples of this")
flags.DEFINE_string("output_dir", "demo_out", "slim .pb, specs and the sensitivity cache go here")
FLAGS = flags.FLAGS
# Test-accuracy change after one prune from the baseline and 1 epoch of fine-tuning, mean ± sd over seeds 0-2
# (python tools/benchmarks/quality.py --markdown; BENCHMARKS.md, "Pruning quality").
MEASURED_SPREAD = {
    ("resnet", "ana"): "+0.38 ± 0.73 points at 50%, -1.37 ± 1.17 at 70%",
    ("resnet", "onestep"): "+0.46 ± 0.85 points at 50%, -1.43 ± 1.03 at 70% (20 candidates)",
    ("resnet", "uniform"): "+0.20 ± 0.63 points at 50%, -1.49 ± 1.17 at 70%",
}


def main(_):
    import tf_keras as keras
    tf.disable_eager_execution()
    x_train, y_train, x_test, y_test, source = data.load()
    x_val, y_val = x_train[-FLAGS.val_size:], y_train[-FLAGS.val_size:]
    x_fit, y_fit = x_train[:-FLAGS.val_size], y_train[:-FLAGS.val_size]
    print("data:", source)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    started = time.time()
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph).as_default() as sess:
        info = example_models.build(FLAGS.model, learning_phase=None, seed=0)
        model, outs = info.model, info.output_node_names
        model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        sess.run(tf.global_variables_initializer())
        print("\n== baseline: %d epochs" % FLAGS.epochs)
        model.fit(x_fit, y_fit, batch_size=128, epochs=FLAGS.epochs, verbose=2)
        pick = np.random.RandomState(0).choice(len(y_fit), 1280, replace=False)
        batches = [{info.input_name: x_fit[pick[i:i + 128]]} for i in range(0, 1280, 128)]
        specs = {info.input_name: tf.TensorSpec((1,) + info.input_shape[1:], tf.float32)}
        runner_class = tf1prune.OneStepPruningRunner if FLAGS.method == "onestep" else tf1prune.IterativePruningRunner
        runner = runner_class(FLAGS.model, sess, specs, outs, workspace=FLAGS.output_dir,
                              channel_divisible=FLAGS.channel_divisible)
        runner.recalibrate(batches)   # Keras' moving averages lag behind 2 epochs of training
        baseline_gd = slim.strip_unused_functions(runner.frozen_graph_def())   # as the slim export does

        def eval_fn(frozen_graph_def):
            return Frozen(frozen_graph_def, info.input_name, outs[0]).accuracy(x_val, y_val)

        if FLAGS.method == "ana":
            print("\n== ana with adaptive BatchNorm: %d prunable groups" % sum(g.prunable for g in runner.analysis.groups))
            t = time.time()
            sens = runner.ana(eval_fn, progress=None, calibration_data=batches)
            print("ana: %d evaluations in %.1f s (baseline val accuracy %.4f)"
                  % (sum(len(v) for v in sens.results.values()), time.time() - t, sens.baseline))
        steps = []
        for sparsity in (float(s) for s in FLAGS.sparsities):
            t = time.time()
            if FLAGS.method == "onestep":
                search = runner.search(eval_fn, batches, num_subnet=FLAGS.num_subnet, sparsity=sparsity, progress=None)
                runner.prune(sparsity=sparsity)
                chosen = "best of %d candidates (val %.4f; uniform %.4f)" % (
                    len(search.candidates), search.candidates[search.ranked()[0]]["score"],
                    search.candidates[0]["score"] or float("nan"))
            else:
                runner.prune(sparsity=sparsity, strategy="sensitivity" if FLAGS.method == "ana" else "uniform")
                chosen = FLAGS.method
            runner.recalibrate(batches)
            before, after = runner.report()
            pruned_acc = eval_fn(runner.frozen_graph_def())
            print("\n== prune(sparsity=%g), %s, %.0f s: MACs %d -> %d (%.1f%% fewer), val accuracy %.4f after "
                  "BatchNorm re-estimation; fine-tune %d epoch(s)"
                  % (sparsity, chosen, time.time() - t, before.macs, after.macs, 100 * (1 - after.macs / before.macs),
                     pruned_acc, FLAGS.finetune_epochs))
            model.fit(x_fit, y_fit, batch_size=128, epochs=FLAGS.finetune_epochs, verbose=2)
            runner.recalibrate(batches)
            steps.append((sparsity, pruned_acc, eval_fn(runner.frozen_graph_def())))
        slim_gd = runner.get_slim_graph_def()
        session_out = sess.run(outs[0] + ":0", {info.input_name: x_test[:256]})

    paths = {k: os.path.join(FLAGS.output_dir, "%s_%s.pb" % (FLAGS.model, k)) for k in ("baseline", "slim")}
    tf1prune.save_graph_def(baseline_gd, paths["baseline"])
    tf1prune.save_graph_def(slim_gd, paths["slim"])
    models = {"baseline": Frozen(baseline_gd, info.input_name, outs[0]), "slim": Frozen(slim_gd, info.input_name, outs[0])}
    diff = float(np.abs(models["slim"].run(x_test[:256]) - session_out).max())
    specs = {info.input_name: ((1,) + info.input_shape[1:], "float32")}
    counts = {k: flops.count(tf1prune.analyze(gd, specs, outs)) for k, gd in (("baseline", baseline_gd), ("slim", slim_gd))}
    acc = {k: m.accuracy(x_test, y_test) for k, m in models.items()}
    lat = latency_ms([models["baseline"], models["slim"]], x_test[:1])

    print("\n== summary (%s, %.0f s in all)" % (FLAGS.model, time.time() - started))
    for sparsity, pruned, tuned in steps:
        print("sparsity %.2f: val accuracy %.4f after prune, %.4f after fine-tuning" % (sparsity, pruned, tuned))
    b, s = counts["baseline"], counts["slim"]
    print("%-24s %12s %12s" % ("", "baseline", "slim"))
    print("%-24s %12.4f %12.4f" % ("test accuracy (10k)" if len(y_test) == 10000 else "test accuracy", acc["baseline"], acc["slim"]))
    print("%-24s %12d %12d  (%.1f%% fewer)" % ("MACs", b.macs, s.macs, 100 * (1 - s.macs / b.macs)))
    print("%-24s %12d %12d" % ("params", b.params, s.params))
    print("%-24s %12d %12d" % ("file size (bytes)", os.path.getsize(paths["baseline"]), os.path.getsize(paths["slim"])))
    print("%-24s %12.3f %12.3f" % ("CPU latency ms (b=1)", lat[0], lat[1]))
    print("slim graph vs pruned session, max |diff| on 256 test images: %.2e" % diff)
    spread = MEASURED_SPREAD.get((FLAGS.model, FLAGS.method))
    print("this method's spread over seeds in tools/benchmarks/quality.py (one prune from the baseline, "
          "1 fine-tuning epoch; BENCHMARKS.md): %s"
          % (spread or "not measured for this model and method"))
    print("files: %s, %s" % (paths["baseline"], paths["slim"]))
    try:   # sensitivity curves, per-layer channels/MACs/params, blocks, unprunable groups, totals
        runner.report(os.path.join(FLAGS.output_dir, "report"), latency_ms=(lat[0], lat[1]),
                      sizes=(os.path.getsize(paths["baseline"]), os.path.getsize(paths["slim"])))
        print("report: %s" % os.path.join(FLAGS.output_dir, "report", "index.html"))
    except tf1prune.Tf1PruneError as e:
        print("report skipped: %s" % e)


if __name__ == "__main__":
    app.run(main)
