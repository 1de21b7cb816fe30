"""Benchmark pruning quality: test accuracy after the same fine-tuning, per method, over seeds.

    python tools/benchmarks/quality.py [--model resnet] [--seeds 0,1,2] [--sparsities 0.5,0.7] [--markdown]

Per seed, a baseline is trained (``--epochs``, Adam, batch 128), its BatchNorm statistics are
re-estimated exactly on ``--calib_images`` training images, and it is checkpointed.  Every
(method, sparsity) run restores it into a fresh graph and session, prunes, re-estimates BatchNorm,
fine-tunes ``--finetune_epochs`` with the same optimizer, batch size and data order, re-estimates
BatchNorm again and is measured on the 10k test set (a run that keeps the same channels as an earlier
run of its seed reuses that run's figures: the fine-tuning is the same).  Methods:

* ``uniform-l1`` / ``uniform-bn``: one ratio for every group, channels ranked by L1 / BN gamma;
* ``ana``: last session's sensitivity allocation (equal metric drop per group, uncalibrated ``ana``);
* ``ana-cal``: ``ana`` with adaptive BatchNorm and ``prune(strategy="sensitivity")`` (drops traded
  against MACs within ``--max_shift`` of uniform, checked against uniform);
* ``onestep20`` / ``onestep50``: ``OneStepPruningRunner.search`` (adaptive BatchNorm) of 20 / 50
  candidates, then ``prune()``: the best candidate that beats uniform in a paired test over the
  validation images, else uniform (``Search.choice``);
* ``onestep20-best`` / ``onestep50-best``: the same searches, the best validation score applied
  (``prune(index=0)``: what one-step search did before the paired test);
* ``onestep20-burst``: the search, then ``rescore()``: uniform and the best ``--finalists``
  candidates each trained ``--burst_images`` images (NetAdapt's short-term fine-tuning) and scored
  again; ``prune()`` applies the finalist that beats uniform in a paired test after the burst.

``ana``/``search`` score on the last ``--val_size`` training images (held out from training; ``eval_fn``
returns each image's correctness, so comparisons with uniform are paired); BatchNorm
calibration uses ``--calib_images`` of the training images.  ``--correlation N`` also fine-tunes N
random candidates at 50% (seed 0) and prints the Spearman correlation of their scores (without and
with adaptive BatchNorm) with their fine-tuned accuracy.
"""
import os
import shlex
import shutil
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
from tf1prune.apply.patches import Patcher  # noqa: E402
from tf1prune.choose import allocation, criteria, spec as spec_lib  # noqa: E402
from tf1prune.choose.search import sample_candidates  # noqa: E402
from tf1prune.core import flops  # noqa: E402
from tf1prune.core.choice import Choice  # noqa: E402
from tf1prune.workflows.engine import Candidate, Engine  # noqa: E402

tf.disable_eager_execution()
tf.logging.set_verbosity(tf.logging.WARN)
from tensorflow.python.util import deprecation  # noqa: E402
deprecation._PRINT_DEPRECATION_WARNINGS = False   # this tool's own TF1 calls are deliberate

flags.DEFINE_enum("model", "resnet", list(example_models.MODEL_NAMES), "example model")
flags.DEFINE_list("seeds", ["0", "1", "2"], "model and data-order seeds")
flags.DEFINE_list("sparsities", ["0.5", "0.7"], "MACs reductions")
flags.DEFINE_list("methods", ["uniform-l1", "uniform-bn", "ana", "ana-cal", "onestep20", "onestep20-best"],
                  "methods")
flags.DEFINE_integer("epochs", 2, "baseline training epochs")
flags.DEFINE_integer("finetune_epochs", 1, "fine-tuning epochs (the same for every method)")
flags.DEFINE_integer("val_size", 2000, "last training images held out for ana and search scores")
flags.DEFINE_integer("calib_images", 1280, "training images for BatchNorm re-estimation (batches of 128)")
flags.DEFINE_integer("train_images", 0, "use only this many training images (0: all; for smoke tests)")
flags.DEFINE_float("max_shift", 0.1, "ana-cal: largest deviation from the uniform ratio")
flags.DEFINE_integer("finalists", 3, "onestep*-burst: candidates rescored after the burst (besides uniform)")
flags.DEFINE_integer("burst_images", 5800, "onestep*-burst: training images of each finalist's burst")
flags.DEFINE_integer("correlation", 0, "random candidates at 50% fine-tuned for the correlation study (0: none)")
flags.DEFINE_integer("threads", 2, "intra_op and inter_op threads")
flags.DEFINE_bool("markdown", False, "Markdown tables")
flags.DEFINE_string("workdir", None, "checkpoints and workspaces (default: a temporary folder)")
FLAGS = flags.FLAGS


def log(text):
    print(("- " if FLAGS.markdown else "") + text, flush=True)


def table(header, rows):
    rows = [[str(c) for c in r] for r in rows]
    if FLAGS.markdown:
        print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        for r in [header] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(flush=True)


def config():
    return tf.ConfigProto(intra_op_parallelism_threads=FLAGS.threads, inter_op_parallelism_threads=FLAGS.threads)


class Data:
    def __init__(self):
        x, y, self.x_test, self.y_test, self.source = data.load()
        n = FLAGS.val_size
        self.x_val, self.y_val, self.x_fit, self.y_fit = x[-n:], y[-n:], x[:-n], y[:-n]
        if FLAGS.train_images:
            self.x_fit, self.y_fit = self.x_fit[:FLAGS.train_images], self.y_fit[:FLAGS.train_images]
        pick = np.random.RandomState(0).choice(len(self.y_fit), min(FLAGS.calib_images, len(self.y_fit)), False)
        self.calibration = [{"input_1:0": self.x_fit[pick[i:i + 128]]} for i in range(0, len(pick), 128)]


def correct(graph_def, output, x, y, batch=500):
    """Each image's correctness (1.0 or 0.0)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=config()) as sess:
        out = output + ":0"
        return np.concatenate([(sess.run(out, {"input_1:0": x[i:i + batch]}).argmax(1) == y[i:i + batch])
                               for i in range(0, len(y), batch)]).astype(np.float64)


def accuracy(graph_def, output, x, y):
    return float(correct(graph_def, output, x, y).mean())


class ValAccuracy:
    """eval_fn: per-image correctness on the held-out training images (picklable); its mean is the accuracy."""

    def __init__(self, output, x, y):
        self.output, self.x, self.y = output, x, y

    def __call__(self, graph_def):
        return correct(graph_def, self.output, self.x, self.y)


class Seed:
    """One seed's trained baseline (checkpoint), and what its runs share (ana caches, searches)."""

    def __init__(self, seed, ds, workdir):
        self.seed, self.ds, self.workdir = seed, ds, os.path.join(workdir, "seed%d" % seed)
        os.makedirs(self.workdir, exist_ok=True)
        t = time.time()
        graph, sess, info, runner = self.session(train=True)
        with graph.as_default(), sess.as_default():
            keras_fit(info.model, ds, FLAGS.epochs, seed)
            runner.recalibrate(ds.calibration)
            self.ckpt = tf.train.Saver(var_list=info.model.weights).save(sess, os.path.join(self.workdir, "base.ckpt"))
            frozen = runner.frozen_graph_def()
        sess.close()
        self.output = info.output_node_names[0]
        self.macs = flops.count(tf1prune.analyze(frozen, {"input_1:0": ((1, 28, 28, 1), "float32")},
                                                 [self.output])).macs
        self.test_acc = accuracy(frozen, self.output, ds.x_test, ds.y_test)
        self.eval_fn = ValAccuracy(self.output, ds.x_val, ds.y_val)
        self.cache = {}
        log("seed %d: baseline %s trained in %.0f s, test accuracy %.4f, MACs %d"
            % (seed, FLAGS.model, time.time() - t, self.test_acc, self.macs))

    def session(self, train=False, cls=tf1prune.IterativePruningRunner, criterion="l1", workspace=None):
        graph = tf.Graph()
        sess = tf.Session(graph=graph, config=config())
        with graph.as_default(), sess.as_default():
            info = example_models.build(FLAGS.model, learning_phase=None, seed=self.seed)
            info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            sess.run(tf.global_variables_initializer())
            if not train:
                tf.train.Saver(var_list=info.model.weights).restore(sess, self.ckpt)
            runner = cls(FLAGS.model, sess, {"input_1:0": ((1, 28, 28, 1), "float32")}, info.output_node_names,
                         workspace=workspace or tempfile.mkdtemp(dir=self.workdir), criterion=criterion)
        return graph, sess, info, runner


def keras_fit(model, ds, epochs, seed):
    np.random.seed(seed)   # the same data order for every run of a seed
    model.fit(ds.x_fit, ds.y_fit, batch_size=128, epochs=epochs, verbose=0)


def equal_drop_counts(analysis, sens):
    """Last session's allocation: each group pruned as far as its drop stays within a common level."""
    curves = {g.id: sens.curve(g.id) for g in analysis.groups if g.prunable}
    top = max([d for c in curves.values() for _, d in c if np.isfinite(d)] + [1e-9])

    def counts_at(t):
        out = {}
        for gid, curve in curves.items():
            ratios, drops = [0.0], [0.0]
            for r, d in curve:
                drops.append(max(drops[-1], d) + 1e-9 * r)
                ratios.append(r)
            ok = np.isfinite(drops)
            r = float(np.interp(t * top, np.array(drops)[ok], np.array(ratios)[ok])) if ok.sum() > 1 else 0.0
            out[gid] = allocation.keep_count(analysis.groups[gid].channels, r)
        return out
    return counts_at


def prune(seed, method, sparsity, runner, model):
    """Prune ``runner``'s session (``model``'s) with ``method``; returns the seconds spent choosing."""
    t = time.time()
    if method.startswith("uniform"):
        runner.prune(sparsity=sparsity, strategy="uniform")
    elif method in ("ana", "ana-cal"):
        calibrated = method == "ana-cal"
        t0 = time.time()   # resumed from the workspace's cache after the first sparsity
        sens = runner.ana(seed.eval_fn, calibration_data=seed.ds.calibration if calibrated else None, progress=None)
        seed.cache.setdefault(("sens", calibrated), time.time() - t0)
        if calibrated:
            runner.prune(sparsity=sparsity, max_shift=FLAGS.max_shift)
        else:
            analysis = runner.analysis
            order = allocation.rank_units(analysis, criteria.unit_scores(analysis))
            counts = allocation.solve_sparsity(analysis, order, sparsity, 1, equal_drop_counts(analysis, sens))
            runner.apply_spec(spec_lib.spec_from_counts(analysis, order, counts), "sparsity_%g" % sparsity)
    else:
        t0 = time.time()   # resumed from the workspace's search file by the -best variant
        size = int(method[len("onestep"):].split("-")[0])
        search = runner.search(seed.eval_fn, seed.ds.calibration, num_subnet=size, sparsity=sparsity, progress=None)
        seed.cache.setdefault(("search", size, sparsity), time.time() - t0)
        picked, why = search.choice()
        if method.endswith("-burst"):
            t0 = time.time()

            def burst():
                np.random.seed(seed.seed)
                n = FLAGS.burst_images
                model.fit(seed.ds.x_fit[:n], seed.ds.y_fit[:n], batch_size=128, epochs=1, verbose=0)
            scores = runner.rescore(seed.eval_fn, burst, sparsity=sparsity, finalists=FLAGS.finalists, progress=None)
            picked, why = runner.choice(sparsity)
            rounded = {k: None if v is None else round(v, 4) for k, v in scores.items()}
            log("seed %d %s @ %g: rescored %s in %.0f s" % (seed.seed, method, sparsity, rounded, time.time() - t0))
        log("seed %d %s @ %g: %s" % (seed.seed, method, sparsity, why))
        runner.prune(sparsity=sparsity, index=0 if method.endswith("-best") else None)
    return time.time() - t


def finetuned(seed, graph, sess, info, runner):
    """Recalibrate, fine-tune, recalibrate: the slim graph's test accuracy and MACs."""
    with graph.as_default(), sess.as_default():
        runner.recalibrate(seed.ds.calibration)
        pruned_acc = accuracy(runner.get_slim_graph_def(), seed.output, seed.ds.x_test, seed.ds.y_test)
        keras_fit(info.model, seed.ds, FLAGS.finetune_epochs, seed.seed)
        runner.recalibrate(seed.ds.calibration)
        slim = runner.get_slim_graph_def()
    sess.close()
    macs = flops.count(tf1prune.analyze(slim, {"input_1:0": ((1, 28, 28, 1), "float32")}, [seed.output])).macs
    return pruned_acc, accuracy(slim, seed.output, seed.ds.x_test, seed.ds.y_test), macs


def run(seed, method, sparsity):
    cls = tf1prune.OneStepPruningRunner if method.startswith("onestep") else tf1prune.IterativePruningRunner
    workspace = os.path.join(seed.workdir, "ws_" + method.split("-best")[0])
    os.makedirs(workspace, exist_ok=True)
    if os.path.exists(os.path.join(workspace, "latest_spec")):   # every run prunes once from the baseline;
        os.remove(os.path.join(workspace, "latest_spec"))        # only the caches are shared
    graph, sess, info, runner = seed.session(cls=cls, criterion="bn_gamma" if method == "uniform-bn" else "l1",
                                             workspace=workspace)
    with graph.as_default(), sess.as_default():
        prune_s = prune(seed, method, sparsity, runner, info.model)
        key = ("tuned", runner.spec.criterion, tuple(sorted((g.id, tuple(g.keep)) for g in runner.spec.groups)))
    if key in seed.cache:   # the same channels as an earlier method: the same (deterministic) fine-tuning
        sess.close()
        pruned, tuned, macs = seed.cache[key]
    else:
        pruned, tuned, macs = seed.cache[key] = finetuned(seed, graph, sess, info, runner)
    log("seed %d %s @ %g: %.1f%% fewer MACs; test %.4f pruned+BN, %.4f fine-tuned (baseline %.4f); prune %.0f s"
        % (seed.seed, method, sparsity, 100 * (1 - macs / seed.macs), pruned, tuned, seed.test_acc, prune_s))
    return tuned - seed.test_acc


def spearman(a, b):
    ra, rb = (np.argsort(np.argsort(v)) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def correlation(seed):
    """Random candidates at 50%: scores without and with adaptive BatchNorm vs fine-tuned accuracy."""
    graph, sess, info, runner = seed.session()
    with graph.as_default(), sess.as_default():
        analysis = runner.analysis
        order = allocation.rank_units(analysis, criteria.unit_scores(analysis))
        candidates = sample_candidates(analysis, order, 0.5, FLAGS.correlation, spread=0.5, seed=1)
        scores = {}
        for calibrated in (False, True):
            with Patcher(analysis, calibration_data=seed.ds.calibration if calibrated else None) as patcher:
                tasks = (Candidate(i, patcher.patches(Choice.from_counts(analysis, order, c)))
                         for i, c in enumerate(candidates))
                scores[calibrated] = dict((i, v) for i, v, _ in Engine(runner.frozen, seed.eval_fn).run(tasks))
    sess.close()
    tuned = []
    for i, counts in enumerate(candidates):
        graph, sess, info, runner = seed.session()
        with graph.as_default(), sess.as_default():
            analysis = runner.analysis
            order = allocation.rank_units(analysis, criteria.unit_scores(analysis))
            runner.apply_spec(spec_lib.spec_from_counts(analysis, order, counts), "candidate")
        tuned.append(finetuned(seed, graph, sess, info, runner)[1])
        log("candidate %d: score %.4f plain, %.4f with adaptive BN; fine-tuned %.4f"
            % (i, scores[False][i], scores[True][i], tuned[-1]))
    plain = [scores[False][i] for i in range(len(candidates))]
    calibrated = [scores[True][i] for i in range(len(candidates))]
    table(["score", "Spearman ρ with fine-tuned accuracy (%d candidates at 50%%, seed %d)" % (len(candidates), seed.seed)],
          [["plain (zeroed, stale BN)", "%.2f" % spearman(plain, tuned)],
           ["adaptive BN (exact re-estimation)", "%.2f" % spearman(calibrated, tuned)]])
    log("fine-tuned accuracy of the candidates: %.4f-%.4f; best-scored (adaptive BN) one: %.4f"
        % (min(tuned), max(tuned), tuned[int(np.argmax(calibrated))]))


def main(argv):
    del argv
    print("$ " + " ".join(shlex.quote(a) for a in ["python"] + sys.argv))
    ds = Data()
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_quality_")
    log("data: %s; fit %d, val %d, calibration %d images; tensorflow %s"
        % (ds.source, len(ds.y_fit), len(ds.y_val), FLAGS.calib_images, tf.__version__))
    results = {}
    costs = []
    for s in (int(x) for x in FLAGS.seeds):
        seed = Seed(s, ds, workdir)
        for sparsity in (float(x) for x in FLAGS.sparsities):
            for method in FLAGS.methods:
                results.setdefault((method, sparsity), []).append(run(seed, method, sparsity))
        costs += [("ana with calibration (seed %d)" % s, seed.cache[("sens", True)])] if ("sens", True) in seed.cache else []
        costs += [("ana without calibration (seed %d)" % s, seed.cache[("sens", False)])] \
            if ("sens", False) in seed.cache else []
        costs += [("search of %d candidates at %g (seed %d)" % (k[1], k[2], s), v) for k, v in seed.cache.items()
                  if k[0] == "search"]
        if FLAGS.correlation and s == int(FLAGS.seeds[0]):
            correlation(seed)
        shutil.rmtree(seed.workdir, ignore_errors=True)
    print()
    sparsities = [float(x) for x in FLAGS.sparsities]
    header = ["method"] + ["Δ test acc @ %g%% (pts, mean ± sd over %d seeds)" % (100 * x, len(FLAGS.seeds))
                           for x in sparsities]
    paired = "uniform-l1" in FLAGS.methods
    header += ["vs uniform-l1 @ %g%% (per seed; mean)" % (100 * x) for x in sparsities] if paired else []
    rows = []
    for method in FLAGS.methods:
        row = [method]
        for sparsity in sparsities:
            d = 100 * np.array(results[(method, sparsity)])
            row.append("%+.2f ± %.2f" % (d.mean(), d.std(ddof=1) if len(d) > 1 else 0.0))
        for sparsity in sparsities if paired else ():
            d = 100 * (np.array(results[(method, sparsity)]) - np.array(results[("uniform-l1", sparsity)]))
            row.append("" if method == "uniform-l1" else " ".join("%+.2f" % v for v in d) + "; %+.2f" % d.mean())
        rows.append(row)
    table(header, rows)
    if costs:
        table(["cost", "wall s"], [[name, "%.0f" % sec] for name, sec in costs])


if __name__ == "__main__":
    app.run(main)
