"""Latency as the budget, accuracy: at the same measured latency, which allocation keeps more?

    python tools/benchmarks/latency_quality.py [--models resnet,mobilenet_v2_se] [--seeds 0,1,2] \\
        [--target 0.7] [--latency_batch 128] [--markdown]

Per example model and seed, a baseline is trained as in ``posttraining.py`` (its flags: ``--epochs``,
``--finetune_epochs``, ``--calib_images``) and its sensitivity analysed in a session
(``IterativePruningRunner.ana`` on 2,000 held-out training images, BatchNorm re-estimated per
candidate).  Then per allocation the slim graph is brought to ``--target`` of the original's
latency at ``--latency_batch`` by the measure-and-re-fit loop of ``prune_to_latency``
(``meet_latency``), channels ranked by L1:

* ``uniform``: the same share of every group.  A uniform MACs-targeted prune at the same measured
  latency is this same allocation (uniform is one family whichever cost it is solved on);
* ``sensitivity``: each group's measured drop traded against the *time* it saves (``prune(latency=)``
  with the default strategy);
* ``sensitivity@macs``: the same trade against the *MACs* it saves, its MACs target solved so that
  the latency model predicts the target (a MACs-targeted ``prune(sparsity=)`` at the same latency);
* ``importance``: each group's share of L1 importance removed traded against the time it saves
  (``allocation="importance"``, no evaluation).

Each spec is applied to the restored baseline in a session (``apply_spec``), BatchNorm re-estimated
on ``--calib_images`` unlabelled images, test accuracy taken, the model fine-tuned
``--finetune_epochs`` (masks kept), BatchNorm re-estimated again and test accuracy taken.
"""
import os
import shlex
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune.choose import allocation, costs, divisible  # noqa: E402
from tf1prune.choose.spec import spec_from_counts  # noqa: E402
from tf1prune.workflows.latency_target import meet_latency  # noqa: E402
from tools.benchmarks import posttraining as pt  # noqa: E402  (its flags: models, seeds, epochs...)
from tools.common import Frozen  # noqa: E402

flags.DEFINE_float("target", 0.7, "latency target (share of the original's)")
flags.DEFINE_integer("latency_batch", 128, "batch the latency is measured at")
flags.DEFINE_list("allocations", ["uniform", "sensitivity", "sensitivity@macs", "importance"], "allocations")
flags.DEFINE_float("tolerance", 0.07, "measured latency within this share of the target (prune_to_latency's 0.07)")
flags.DEFINE_integer("attempts", 3, "measure-and-re-fit attempts (prune_to_latency's 3)")
flags.DEFINE_string("divisible", "auto", "channel_divisible of every allocation ('auto': timed at --latency_batch)")
FLAGS = flags.FLAGS


def allocate(analysis, order, curves, method, sparsity, cost, rounding):
    if method == "uniform":
        return allocation.solve_sparsity(analysis, order, sparsity, rounding, cost=cost)
    if method == "importance":
        return allocation.importance_allocation(analysis, order, sparsity, rounding, cost=cost)
    return allocation.sensitivity_allocation(analysis, order, curves, sparsity, rounding, cost=cost)


def chooser(analysis, order, curves, method, rounding):
    """``choose(cost, sparsity)`` for :func:`meet_latency` of one allocation."""
    base, _, on = method.partition("@")

    def choose(cost, sparsity):
        if not on:
            counts = allocate(analysis, order, curves, base, sparsity, cost, rounding)
        else:   # the MACs allocation whose predicted latency is the target
            model = costs.make(cost, analysis, order)
            lo, hi = 0.0, 0.99
            for _ in range(14):
                mid = (lo + hi) / 2
                counts = allocate(analysis, order, curves, base, mid, on, rounding)
                lo, hi = (mid, hi) if model(counts) > (1 - sparsity) * model.total else (lo, mid)
            counts = allocate(analysis, order, curves, base, hi, on, rounding)
        return spec_from_counts(analysis, order, counts, "l1", rounding)
    return choose


def session(name, seed, prefix, workspace):
    """A restored baseline in a new graph: ``(graph, sess, info, runner)``."""
    import tf_keras as keras
    graph = tf.Graph()
    sess = tf.Session(graph=graph)
    with graph.as_default(), sess.as_default():
        info = example_models.build(name, learning_phase=None, seed=seed)
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        tf.train.Saver().restore(sess, prefix)
        runner = tf1prune.IterativePruningRunner(name, sess, pt.specs_of(info), info.output_node_names,
                                                 workspace=workspace)
    return graph, sess, info, runner


def specs(name, seed, prefix, ds, workspace):
    """Per allocation, the :class:`LatencyPrune` at the target (sensitivity analysed first)."""
    graph, sess, info, runner = session(name, seed, prefix, workspace)
    with graph.as_default(), sess.as_default():
        def eval_fn(graph_def):
            return Frozen(graph_def, info.input_name, info.output_node_names[0]).accuracy(ds["x_val"], ds["y_val"])
        runner.ana(eval_fn, calibration_data=pt.batches_of(info, ds), progress=False)
        analysis = runner._refresh()
        sens = runner._sensitivity(analysis)
        curves = {g.id: sens.curve(g.id) for g in analysis.groups if g.prunable}
        order = runner._ranking(analysis)
        rounding = divisible.resolve(FLAGS.divisible, analysis, divisible.ratio_for(1 - FLAGS.target),
                                     FLAGS.latency_batch)
        pt.log("%s seed %d: channel_divisible %s -> %d" % (name, seed, FLAGS.divisible, rounding))
        found = {m: meet_latency(analysis, FLAGS.target, chooser(analysis, order, curves, m, rounding),
                                 FLAGS.latency_batch, tolerance=FLAGS.tolerance, attempts=FLAGS.attempts)
                 for m in FLAGS.allocations}
    sess.close()
    return found


def finetuned(name, seed, prefix, ds, spec, workspace):
    """``(pruned, fine-tuned)`` test accuracy of ``spec`` applied to the restored baseline."""
    graph, sess, info, runner = session(name, seed, prefix, workspace)
    with graph.as_default(), sess.as_default():
        runner.apply_spec(spec)
        result = pt.tune_and_measure(runner, info, ds, pt.batches_of(info, ds))
    sess.close()
    return result


def main(argv):
    del argv
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    os.environ["TF1PRUNE_CACHE"] = tempfile.mkdtemp(prefix="tf1prune-latency-")   # time, do not read a cache
    x_train, y_train, x_test, y_test, source = data.load()
    pt.log("data: %s; latency at batch %d, target %.2f" % (source, FLAGS.latency_batch, FLAGS.target))
    workdir = tempfile.mkdtemp(prefix="tf1prune-latency-quality-")
    results = {}
    for name in FLAGS.models:
        for seed in (int(s) for s in FLAGS.seeds):
            pick = np.random.RandomState(seed).choice(len(y_train) - 2000, FLAGS.calib_images, replace=False)
            ds = {"x_fit": x_train[:-2000], "y_fit": y_train[:-2000], "x_cal": x_train[:-2000][pick],
                  "x_val": x_train[-2000:], "y_val": y_train[-2000:], "x_test": x_test, "y_test": y_test}
            frozen, prefix, info = pt.train(name, seed, ds, workdir)
            base = Frozen(frozen, info.input_name, info.output_node_names[0]).accuracy(x_test, y_test)
            pt.log("%s seed %d: baseline test %.4f" % (name, seed, base))
            workspace = tempfile.mkdtemp(dir=workdir)
            for method, found in specs(name, seed, prefix, ds, workspace).items():
                pruned, tuned = finetuned(name, seed, prefix, ds, found.spec, workspace)
                results.setdefault((name, method), []).append((found.measured, 1 - found.macs_ratio, pruned - base,
                                                               tuned - base))
                pt.log("%s seed %d %s: latency %.3f (predicted %.3f, %d attempt(s)), %.1f%% fewer MACs, pruned "
                       "%.4f, fine-tuned %.4f" % (name, seed, method, found.measured, found.predicted,
                                                  len(found.attempts), 100 * (1 - found.macs_ratio), pruned, tuned))
    fmt = lambda v: "%+.2f ± %.2f" % (100 * np.mean(v), 100 * np.std(v))   # noqa: E731
    rows = [[name, method, "%.3f ± %.3f" % (np.mean([r[0] for r in v]), np.std([r[0] for r in v])),
             "%.1f%%" % (100 * np.mean([r[1] for r in v])), fmt([r[2] for r in v]), fmt([r[3] for r in v]),
             " / ".join("%+.2f" % (100 * r[3]) for r in v)] for (name, method), v in sorted(results.items())]
    pt.table(["model", "allocation", "measured latency", "fewer MACs", "pruned, BN re-estimated (pts)",
              "after fine-tuning (pts)", "per seed"], rows)


if __name__ == "__main__":
    app.run(main)
