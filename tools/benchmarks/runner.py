"""Benchmark IterativePruningRunner: accuracy vs MACs, ``ana`` speed, achieved vs requested sparsity.

    python tools/benchmarks/runner.py [--parts 1,2,3] [--model resnet] [--markdown]

Part 1 -- accuracy vs MACs on Fashion-MNIST: one baseline is trained (``--epochs``)
and checkpointed; every (method, sparsity) run restores it into a fresh graph and
session, prunes, fine-tunes ``--finetune_epochs`` with the same optimizer, batch
size and data order, and is measured on the 10k test set.  Methods:

* ``sensitivity`` -- ``runner.ana`` on the last ``--val_size`` training images
  (held out from training), then ``runner.prune(sparsity=s)``;
* ``uniform-l1``  -- ``spec.make_spec(runner.analysis, sparsity=s)``: one L1 ratio
  for every group, solved for the same MACs target, loaded into the runner.

Achieved MACs reductions are measured on ``runner.get_slim_graph_def()``
re-analysed (``tf1prune.analyze`` + ``flops.count``).

Part 2 -- ``ana`` wall time and evaluations per second with a constant ``eval_fn``
for the seed MNIST convnet (9 ratios per group) and a Keras ResNet-50
(``--r50_ratios``), each in a fresh workspace.

Part 3 -- achieved vs requested MACs sparsity (``--targets``) of sensitivity-guided
``prune()``, each target from a fresh restore of the part-1 baseline, measured on
the slim graph.
"""
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune.core import flops
from tf1prune.choose import spec as spec_lib  # noqa: E402
from tf1prune.workflows.iterative import IterativePruningRunner  # noqa: E402

tf.disable_eager_execution()
try:  # the TF1 API calls of this tool are deliberate
    from tensorflow.python.util import deprecation
    deprecation._PRINT_DEPRECATION_WARNINGS = False
except ImportError:
    pass

flags.DEFINE_list("parts", ["1", "2", "3"], "parts to run: 1 accuracy vs MACs, 2 ana speed, 3 achieved sparsity")
flags.DEFINE_enum("model", "resnet", list(example_models.MODEL_NAMES), "example model of parts 1 and 3")
flags.DEFINE_integer("epochs", 2, "baseline training epochs")
flags.DEFINE_integer("finetune_epochs", 1, "fine-tuning epochs after pruning (same for every method)")
flags.DEFINE_list("sparsities", ["0.3", "0.5", "0.7"], "part 1: MACs reductions")
flags.DEFINE_list("methods", ["sensitivity", "uniform-l1"], "part 1: pruning methods")
flags.DEFINE_integer("val_size", 2000, "last training images held out for ana (never trained on)")
flags.DEFINE_integer("train_images", 0, "use only this many training images (0: all; for smoke tests)")
flags.DEFINE_integer("batch_size", 128, "training and fine-tuning batch size")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate of training and fine-tuning")
flags.DEFINE_integer("bn_recal_images", 5000,
                     "re-estimate BatchNorm statistics on this many training images after training and after "
                     "fine-tuning (0: keep Keras' moving averages)")
flags.DEFINE_bool("control", True, "part 1: also fine-tune the unpruned baseline with the same budget")
flags.DEFINE_integer("channel_divisible", 1, "kept channel counts are multiples of this")
flags.DEFINE_bool("group_ratios", True, "part 1: print the per-group ratios chosen by each method")
flags.DEFINE_list("r50_ratios", ["0.5"], "part 2: ana ratios of the ResNet-50")
flags.DEFINE_list("targets", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"],
                  "part 3: requested MACs sparsities")
flags.DEFINE_integer("threads", 2, "intra_op and inter_op parallelism threads of every session")
flags.DEFINE_integer("seed", 0, "model and data-order seed")
flags.DEFINE_bool("markdown", False, "print Markdown tables (for BENCHMARKS.md)")
flags.DEFINE_string("workdir", None, "checkpoint and workspaces (default: a fresh temporary folder)")
FLAGS = flags.FLAGS

METHODS = ("sensitivity", "uniform-l1")


# --- output ----------------------------------------------------------------
def heading(text):
    print("\n%s %s\n" % ("###" if FLAGS.markdown else "==", text), flush=True)


def note(text):
    print(text, flush=True)


def log(text):
    """A progress line (a list item in Markdown)."""
    print(("- " if FLAGS.markdown else "") + text, flush=True)


def table(header, rows):
    """A Markdown table, or aligned plain text."""
    rows = [[str(c) for c in r] for r in rows]
    if FLAGS.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
        for r in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(flush=True)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start


# --- sessions and models ---------------------------------------------------
def session_config():
    # TF's thread pools are process-wide, sized by the first session: every session uses this.
    return tf.ConfigProto(intra_op_parallelism_threads=FLAGS.threads, inter_op_parallelism_threads=FLAGS.threads)


class Frozen:
    """A frozen graph in its own session (closed by ``close``)."""

    def __init__(self, graph_def, input_name, output_name):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        self.sess = tf.Session(graph=self.graph, config=session_config())
        self.x, self.y = input_name, output_name + ":0"

    def accuracy(self, x, y, batch=500):
        hits = sum(int((self.sess.run(self.y, {self.x: x[i:i + batch]}).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(y), batch))
        return hits / len(y)

    def close(self):
        self.sess.close()


def accuracy(graph_def, info, x, y):
    f = Frozen(graph_def, info.input_name, info.output_node_names[0])
    try:
        return f.accuracy(x, y)
    finally:
        f.close()


def input_specs(info, as_tensor_spec=True):
    shape = (1,) + tuple(info.input_shape[1:])
    if as_tensor_spec:
        return {info.input_name: tf.TensorSpec(shape, tf.float32)}
    return {info.input_name: (shape, "float32")}


def slim_macs(graph_def, info):
    """MACs of a frozen graph, analysed from scratch."""
    return flops.count(tf1prune.analyze(graph_def, input_specs(info, False), info.output_node_names)).macs


def compile_model(model):
    model.compile(optimizer=keras.optimizers.legacy.Adam(FLAGS.lr), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def fit(model, x, y, epochs):
    np.random.seed(FLAGS.seed)   # same shuffling order for every run
    model.fit(x, y, batch_size=FLAGS.batch_size, epochs=epochs, verbose=0)


def bn_layers(model):
    """BatchNormalization layers in topological order (a functional model's ``layers`` are)."""
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def bn_state(sess, model):
    return sess.run([(l.moving_mean, l.moving_variance) for l in bn_layers(model)])


def set_bn_state(sess, model, state):
    for l, (mean, var) in zip(bn_layers(model), state):
        l.moving_mean.load(mean, sess)
        l.moving_variance.load(var, sess)


def recalibrate_bn(sess, info, x, batch=500):
    """Re-estimate every BN's moving mean/variance on ``x``: the moving averages are zeroed, the model runs
    in training mode (batch statistics) with only the BN updates, and the averages are bias-corrected,
    which makes them the mean of the per-batch statistics.

    Keras' moving averages (momentum 0.99, initial variance 1) still carry ~1% of their initial value after
    one epoch of 453 steps, which on these small activations is large: the inference-mode accuracy of a
    1-2 epoch baseline is far below its training-mode accuracy without this."""
    bns = bn_layers(info.model)
    if not bns:
        return
    for l in bns:
        l.moving_mean.load(np.zeros(l.moving_mean.shape, np.float32), sess)
        l.moving_variance.load(np.zeros(l.moving_variance.shape, np.float32), sess)
    updates = [op for l in bns for op in l.updates]
    feed_x, phase = sess.graph.get_tensor_by_name(info.input_name), keras.backend.learning_phase()
    steps = 0
    for i in range(0, len(x), batch):
        sess.run(updates, {feed_x: x[i:i + batch], phase: True})
        steps += 1
    for l, (mean, var) in zip(bns, bn_state(sess, info.model)):
        correction = 1.0 - float(l.momentum) ** steps
        l.moving_mean.load(mean / correction, sess)
        l.moving_variance.load(var / correction, sess)


class Data:
    def __init__(self):
        x_train, y_train, self.x_test, self.y_test, self.source = data.load()
        n = FLAGS.val_size
        self.x_val, self.y_val = x_train[-n:], y_train[-n:]
        self.x_fit, self.y_fit = x_train[:-n], y_train[:-n]
        if FLAGS.train_images:
            self.x_fit, self.y_fit = self.x_fit[:FLAGS.train_images], self.y_fit[:FLAGS.train_images]
        m = min(FLAGS.bn_recal_images, len(self.y_fit))
        self.x_recal = self.x_fit[np.random.RandomState(FLAGS.seed).choice(len(self.y_fit), m, replace=False)]

    def recalibrate(self, sess, info):
        """Recalibrate BN (if enabled); returns the seconds taken."""
        t = Timer()
        if len(self.x_recal):
            recalibrate_bn(sess, info, self.x_recal)
        return t()


class Baseline:
    """The trained checkpoint of ``--model`` and its sensitivity cache, made once and shared by parts 1 and 3."""

    def __init__(self, workdir, ds):
        self.workdir, self.ds = workdir, ds
        self.ckpt = None
        self.sens_path = None
        self.info = None

    def train(self):
        if self.ckpt is not None:
            return
        t = Timer()
        graph = tf.Graph()
        with graph.as_default(), tf.Session(graph=graph, config=session_config()).as_default() as sess:
            info = example_models.build(FLAGS.model, learning_phase=None, seed=FLAGS.seed)
            compile_model(info.model)
            sess.run(tf.global_variables_initializer())
            fit(info.model, self.ds.x_fit, self.ds.y_fit, FLAGS.epochs)
            train_s = t()
            if len(self.ds.x_recal):
                frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(),
                                                                      info.output_node_names)
                self.raw_test_acc = accuracy(frozen, info, self.ds.x_test, self.ds.y_test)
                self.recal_s = self.ds.recalibrate(sess, info)
            saver = tf.train.Saver(var_list=info.model.weights)
            os.makedirs(os.path.join(self.workdir, "baseline"), exist_ok=True)
            self.ckpt = saver.save(sess, os.path.join(self.workdir, "baseline", "model.ckpt"))
            frozen = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(),
                                                                  info.output_node_names)
        self.info = info
        self.macs = slim_macs(frozen, info)
        self.test_acc = accuracy(frozen, info, self.ds.x_test, self.ds.y_test)
        self.val_acc = accuracy(frozen, info, self.ds.x_val, self.ds.y_val)
        self.train_s = train_s
        log("baseline %s: %d epoch(s) on %d images in %.1f s; test accuracy %.4f, val accuracy %.4f, MACs %d"
             % (FLAGS.model, FLAGS.epochs, len(self.ds.y_fit), train_s, self.test_acc, self.val_acc, self.macs))
        if len(self.ds.x_recal):
            log("(BN statistics re-estimated on %d training images in %.1f s; with Keras' moving averages "
                 "the test accuracy was %.4f)" % (len(self.ds.x_recal), self.recal_s, self.raw_test_acc))

    def restore(self, workspace):
        """A fresh graph + session holding the baseline, and its runner on ``workspace``.

        Returns (graph, sess, info, runner); the caller closes the session."""
        graph = tf.Graph()
        sess = tf.Session(graph=graph, config=session_config())
        with graph.as_default(), sess.as_default():
            info = example_models.build(FLAGS.model, learning_phase=None, seed=FLAGS.seed)
            compile_model(info.model)
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(var_list=info.model.weights).restore(sess, self.ckpt)
            runner = IterativePruningRunner(FLAGS.model, sess, input_specs(info), info.output_node_names,
                                            workspace=workspace, channel_divisible=FLAGS.channel_divisible)
        return graph, sess, info, runner

    def eval_fn(self, graph_def):
        return accuracy(graph_def, self.info, self.ds.x_val, self.ds.y_val)

    def sensitivity(self):
        """Run ana once (on a fresh restore); later runs copy the cache into their own workspace."""
        self.train()
        if self.sens_path is not None:
            return
        workspace = tempfile.mkdtemp(prefix="ana_", dir=self.workdir)
        graph, sess, info, runner = self.restore(workspace)
        with graph.as_default(), sess.as_default():
            t = Timer()
            sens = runner.ana(self.eval_fn, progress=None)
            self.ana_s = t()
            self.ana_evals = sum(len(v) for v in sens.results.values())
            self.analysis = runner.analysis
        sess.close()
        self.sens = sens
        self.sens_path = sens.path
        log("ana: %d prunable groups, %d evaluations on %d val images in %.1f s (%.1f evals/s), baseline %.4f"
             % (sum(g.prunable for g in runner.analysis.groups), self.ana_evals, len(self.ds.y_val), self.ana_s,
                self.ana_evals / self.ana_s, sens.baseline))

    def fresh_workspace(self, with_sens):
        workspace = tempfile.mkdtemp(prefix="run_", dir=self.workdir)
        if with_sens:
            shutil.copy(self.sens_path, workspace)
        return workspace


def prune(runner, method, sparsity):
    """Prune the runner's session to ``sparsity`` with ``method``; returns the spec."""
    if method == "sensitivity":
        runner.prune(sparsity=sparsity)
    elif method == "uniform-l1":
        runner.prune(sparsity=sparsity, strategy="uniform")
    else:
        raise ValueError("unknown method %r (choose from %s)" % (method, ", ".join(METHODS)))
    return runner.spec


def pct(x):
    return "%.1f%%" % (100 * x)


def short(name):
    return name.rsplit("/", 1)[0] if "/" in name else name


# --- part 1 ----------------------------------------------------------------
def part1(base):
    heading("Part 1: accuracy vs MACs on Fashion-MNIST (%s)" % FLAGS.model)
    ds = base.ds
    base.train()
    if "sensitivity" in FLAGS.methods:
        base.sensitivity()
    rows, specs = [], {}
    recal = len(ds.x_recal) > 0
    control = None
    if FLAGS.control:
        control = finetune_run(base, None, 0.0)
        rows.append(control["row"])
    for sparsity in (float(s) for s in FLAGS.sparsities):
        for method in FLAGS.methods:
            r = finetune_run(base, method, sparsity, control)
            specs[(method, sparsity)] = r["spec"]
            rows.append(r["row"])
    print()
    note("Baseline: %s, %d epoch(s) on %d images (%.1f s), test accuracy %.4f (10k), MACs %d. "
         "Fine-tuning: %d epoch(s), Adam(%g), batch %d, identical data order for every run."
         % (FLAGS.model, FLAGS.epochs, len(ds.y_fit), base.train_s, base.test_acc, base.macs,
            FLAGS.finetune_epochs, FLAGS.lr, FLAGS.batch_size))
    if recal:
        note("BN statistics re-estimated on %d training images after training and after fine-tuning "
             "(Keras' moving averages gave the baseline %.4f test accuracy); 'pruned' is without, "
             "'pruned+BN' with re-estimation right after pruning." % (len(ds.x_recal), base.raw_test_acc))
    if control is not None:
        note("Control: the unpruned baseline fine-tuned with the same budget reaches %.4f; "
             "'Δ vs control' isolates the cost of pruning from the extra training." % control["tuned"])
    if "sensitivity" in FLAGS.methods:
        note("ana: %d evaluations on the last %d training images (held out) in %.1f s."
             % (base.ana_evals, len(ds.y_val), base.ana_s))
    print()
    table(["method", "target", "achieved (slim)", "MACs", "test acc pruned"] + (["pruned+BN"] if recal else [])
          + ["test acc fine-tuned", "Δ vs baseline (pts)", "Δ vs control (pts)", "prune s", "fine-tune s", "run s"],
          [r if recal else r[:5] + r[6:] for r in rows])
    for r in rows:
        if r[1] == "50.0%":
            drop = -float(r[7])
            log("goal at 50%% (drop <= 1 point vs baseline) %s: drop %.2f points -> %s"
                 % (r[0], drop, "met" if drop <= 1 else "MISSED"))
    if FLAGS.group_ratios and specs:
        print()
        group_table(base, specs)


def finetune_run(base, method, sparsity, control=None):
    """Restore the baseline, prune with ``method`` (None: not at all), fine-tune, measure on the test set."""
    ds = base.ds
    t_all = Timer()
    workspace = base.fresh_workspace(method == "sensitivity")
    graph, sess, info, runner = base.restore(workspace)
    restore_s = t_all()
    spec, pruned_acc, recal_acc, prune_s, eval_s = None, base.test_acc, base.test_acc, 0.0, 0.0
    with graph.as_default(), sess.as_default():
        if method is not None:
            t = Timer()
            spec = prune(runner, method, sparsity)
            prune_s = t()
            t = Timer()
            pruned_acc = accuracy(runner.get_slim_graph_def(), info, ds.x_test, ds.y_test)
            if len(ds.x_recal):
                state = bn_state(sess, info.model)
                ds.recalibrate(sess, info)
                recal_acc = accuracy(runner.get_slim_graph_def(), info, ds.x_test, ds.y_test)
                set_bn_state(sess, info.model, state)   # fine-tuning starts from the pruned session as is
            eval_s = t()
        t = Timer()
        fit(info.model, ds.x_fit, ds.y_fit, FLAGS.finetune_epochs)
        finetune_s = t()
        t = Timer()
        ds.recalibrate(sess, info)
        if method is None:
            final_gd = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(),
                                                                    info.output_node_names)
        else:
            final_gd = runner.get_slim_graph_def()
        tuned_acc = accuracy(final_gd, info, ds.x_test, ds.y_test)
        macs = slim_macs(final_gd, info)
        eval_s += t()
    sess.close()
    achieved = 1 - macs / base.macs
    total_s = t_all()
    name = method or "none (control)"
    vs_control = "%+.2f" % (100 * (tuned_acc - control["tuned"])) if control else "-"
    shown = (lambda a: "-") if method is None else (lambda a: "%.4f" % a)
    row = [name, pct(sparsity), pct(achieved), "%d" % macs, shown(pruned_acc), shown(recal_acc),
           "%.4f" % tuned_acc, "%+.2f" % (100 * (tuned_acc - base.test_acc)), vs_control,
           "%.1f" % prune_s, "%.1f" % finetune_s, "%.1f" % total_s]
    log("%s @ %g: slim MACs %d (%.1f%% fewer), test %.4f pruned, %.4f pruned+BN, %.4f fine-tuned; "
         "restore %.1f s, prune %.1f s, evals %.1f s, fine-tune %.1f s, run %.1f s"
         % (name, sparsity, macs, 100 * achieved, pruned_acc, recal_acc, tuned_acc, restore_s, prune_s, eval_s,
            finetune_s, total_s))
    return dict(row=row, spec=spec, tuned=tuned_acc)


def group_table(base, specs):
    """Per-group pruning ratio chosen by each method at each sparsity, with the ana drops."""
    heading("Part 1: per-group ratios chosen by each method")
    analysis = getattr(base, "analysis", None)
    sens = getattr(base, "sens", None)
    first = next(iter(specs.values()))
    header = ["group", "channels"]
    if analysis is not None:
        total = flops.count(analysis).macs
        header += ["MACs cut if pruned alone @ r=0.5"]
    if sens is not None:
        header += ["ana val acc drop (pts) @ r=0.3/0.5/0.7/0.9"]
    header += ["%s @ %g" % ("sens" if m == "sensitivity" else "unif", s) for m, s in specs]
    rows = []
    for g in first.groups:
        nodes = g.nodes
        label = "%d: %s%s" % (g.id, short(nodes[0]), " +%d" % (len(nodes) - 1) if len(nodes) > 1 else "")
        row = [label, g.channels]
        if analysis is not None:
            alone = spec_lib.make_spec(analysis, ratios={g.id: 0.5})
            row.append(pct(1 - flops.count(analysis, alone).macs / total))
        if sens is not None:
            res = sens.results.get(str(g.id), {})
            row.append(" / ".join("%.1f" % (100 * (sens.baseline - res[k])) if k in res else "-"
                                  for k in ("0.3", "0.5", "0.7", "0.9")))
        for spec in specs.values():
            sg = next(x for x in spec.groups if x.id == g.id)
            row.append("%.2f" % sg.ratio)
        rows.append(row)
    table(header, rows)
    if analysis is not None:
        note("(%d prunable groups; baseline MACs %d. 'ana val acc drop' is the baseline's val accuracy minus "
             "its accuracy with only that group pruned at that ratio, in points; chance is 10%%.)"
             % (len(first.groups), total))


# --- part 2 ----------------------------------------------------------------
def constant_eval(graph_def):
    return 0.5


def time_ana(build, ratios):
    """Build a model in a fresh graph, then time the runner and ana with a constant eval_fn."""
    workspace = tempfile.mkdtemp(prefix="ana_speed_")
    try:
        graph = tf.Graph()
        with graph.as_default(), tf.Session(graph=graph, config=session_config()).as_default() as sess:
            t = Timer()
            inputs, outputs, specs = build()
            sess.run(tf.global_variables_initializer())
            build_s = t()
            t = Timer()
            runner = IterativePruningRunner("speed", sess, specs, outputs, workspace=workspace)
            init_s = t()
            groups = sum(g.prunable for g in runner.analysis.groups)
            t = Timer()
            sens = runner.ana(constant_eval, ratios=ratios, progress=None)
            ana_s = t()
        evals = sum(len(v) for v in sens.results.values()) + 1   # + the baseline
        failed = sum(len(v) for v in sens.errors.values())
        return dict(build_s=build_s, init_s=init_s, groups=groups, evals=evals + failed, failed=failed,
                    ana_s=ana_s, ops=len(runner.frozen.node))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def build_mnist():
    info = example_models.build("mnist_convnet", learning_phase=None, seed=0)
    return info.input_name, info.output_node_names, input_specs(info)


def build_resnet50():
    with warnings.catch_warnings():   # "set_learning_phase is deprecated"
        warnings.simplefilter("ignore")
        keras.backend.set_learning_phase(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classes=1000)
    name = model.inputs[0].name
    return name, [model.outputs[0].op.name], {name: tf.TensorSpec((1, 224, 224, 3), tf.float32)}


def part2():
    heading("Part 2: ana speed with a constant eval_fn")
    runs = [("mnist_convnet (seed)", build_mnist, sensitivity_ratios(), "< 3 s"),
            ("Keras ResNet-50 224x224", build_resnet50, [float(r) for r in FLAGS.r50_ratios], "")]
    rows = []
    for label, build, ratios, goal in runs:
        r = time_ana(build, ratios)
        ok = ""
        if goal:
            ok = "met" if r["ana_s"] < 3 else "MISSED"
        shown = ",".join("%g" % x for x in ratios) if len(ratios) <= 3 else "%g..%g (%d)" % (
            min(ratios), max(ratios), len(ratios))
        rows.append([label, r["ops"], r["groups"], shown, r["evals"] if not r["failed"] else
                     "%d (%d failed)" % (r["evals"], r["failed"]),
                     "%.2f" % r["init_s"], "%.2f" % r["ana_s"], "%.1f" % (r["evals"] / r["ana_s"]),
                     (goal + " " + ok).strip() or "-"])
        log("%s: built in %.1f s, runner init (freeze + analyze) %.2f s, ana %.2f s for %d evaluations"
             % (label, r["build_s"], r["init_s"], r["ana_s"], r["evals"]))
    print()
    table(["model", "frozen nodes", "prunable groups", "ratios", "evaluations (incl. baseline)",
           "runner init s", "ana wall s", "evals/s", "goal"], rows)
    note("ana wall time includes its own freeze + analyze of the session; fresh workspace, nothing cached.")


def sensitivity_ratios():
    from tf1prune.workflows import sensitivity
    return list(sensitivity.DEFAULT_RATIOS)


# --- part 3 ----------------------------------------------------------------
def part3(base):
    heading("Part 3: achieved vs requested MACs sparsity (%s, sensitivity-guided prune)" % FLAGS.model)
    base.sensitivity()
    rows, errors = [], []
    for target in (float(s) for s in FLAGS.targets):
        t = Timer()
        graph, sess, info, runner = base.restore(base.fresh_workspace(True))
        with graph.as_default(), sess.as_default():
            runner.prune(sparsity=target)
            before, after = runner.report()
            slim_gd = runner.get_slim_graph_def()
        sess.close()
        macs = slim_macs(slim_gd, info)
        achieved = 1 - macs / base.macs
        predicted = 1 - after.macs / before.macs
        err = 100 * (achieved - target)
        errors.append(err)
        verdict = "ok" if abs(err) <= 0.5 else ("within ±1" if abs(err) <= 1 else "OUT")
        rows.append([pct(target), "%.2f%%" % (100 * achieved), "%+.2f" % err, "%.2f%%" % (100 * predicted),
                     "%d" % macs, verdict, "%.1f" % t()])
    note("each target from a fresh restore of the trained baseline (MACs %d); sensitivity from ana on %d "
         "val images; achieved measured on the re-analysed slim graph" % (base.macs, len(base.ds.y_val)))
    print()
    table(["requested", "achieved (slim)", "error (pts)", "runner.report()", "slim MACs", "±0.5 goal",
           "run s"], rows)
    note("max |error| %.2f points (goal ±0.5, must be within ±1)" % max(abs(e) for e in errors))


# --- main ------------------------------------------------------------------
def main(argv):
    del argv
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    if FLAGS.markdown:
        print("```\n%s\n```" % command)
    else:
        print("$ " + command)
    print("tensorflow %s, %d CPU(s), %d threads per session, %s"
          % (tf.__version__, os.cpu_count(), FLAGS.threads, time.strftime("%Y-%m-%d %H:%M")), flush=True)
    parts = {p.strip() for p in FLAGS.parts}
    unknown = parts - {"1", "2", "3"}
    if unknown:
        raise app.UsageError("unknown parts: %s" % ", ".join(sorted(unknown)))
    for m in FLAGS.methods:
        if m not in METHODS:
            raise app.UsageError("unknown method %r (choose from %s)" % (m, ", ".join(METHODS)))
    started = Timer()
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="bench_runner_")
    os.makedirs(workdir, exist_ok=True)
    phases = []
    try:
        base = None
        if parts & {"1", "3"}:
            ds = Data()
            note("data: %s; %d for training, last %d held out for ana" % (ds.source, len(ds.y_fit), len(ds.y_val)))
            base = Baseline(workdir, ds)
        for part, fn in (("1", lambda: part1(base)), ("2", part2), ("3", lambda: part3(base))):
            if part in parts:
                t = Timer()
                fn()
                phases.append(("part %s" % part, t()))
    finally:
        if FLAGS.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    heading("Wall time")
    rows = [[name, "%.1f" % s] for name, s in phases]
    if base is not None and base.ckpt is not None:
        rows.insert(0, ["baseline training (in part %s)" % min(parts & {"1", "3"}), "%.1f" % base.train_s])
    if base is not None and base.sens_path is not None:
        rows.insert(1, ["ana on val split (in part %s)" % min(parts & {"1", "3"}), "%.1f" % base.ana_s])
    rows.append(["total", "%.1f" % started()])
    table(["phase", "seconds"], rows)


if __name__ == "__main__":
    app.run(main)
