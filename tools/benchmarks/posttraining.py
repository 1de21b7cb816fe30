"""Benchmark post-training pruning: test accuracy with no fine-tuning, per method, over seeds.

    python tools/benchmarks/posttraining.py [--models resnet,mobilenet_v2_se] [--seeds 0,1,2] \\
        [--sparsities 0.2,0.3,0.5] [--finetune_sparsities 0.5,0.7] [--markdown]

Per model and seed, a baseline is trained (``--epochs``, Adam, batch 128; its BatchNorm statistics
re-estimated on ``--calib_images`` training images) and frozen.  Then, with no fine-tuning, at every
``--sparsities`` (uniform allocation, the slim graph measured on the 10k test set):

* ``plain``: L1 channels, nothing else (data-free);
* ``compensate``: L1 + bias compensation and BatchNorm variance correction from the BatchNorm
  parameters (data-free, ``tf1prune-convert``'s default without data);
* ``synthesize``: L1 + inputs synthesized from the BatchNorm statistics, reconstruction and
  BatchNorm re-estimation on them (data-free, ``--data_free synthesize``);
* ``bn``: L1 + BatchNorm re-estimated on ``--calib_images`` unlabelled training images;
* ``recon``: L1 + measured bias compensation, least-squares reconstruction and BatchNorm
  re-estimation on them (``tf1prune-convert --calibration_data``'s default);
* ``act+recon``: ``recon`` with channels chosen by the measured ``activation`` criterion;
* ``greedy+recon``: ``recon`` with channels chosen by the ``reconstruction`` criterion (ThiNet-style
  greedy on the readers' output error).
* ``sens+act+recon``: ``act+recon`` with the groups' ratios from a label-free sensitivity analysis
  (each group pruned alone, scored by its KL agreement with the original outputs on the calibration
  images: ``tf1prune-convert --allocation sensitivity``);
* ``synth+...``: the steps after it on the synthesized inputs instead of the calibration images
  (data-free: ``synth+sens+act+recon`` is ``tf1prune-convert --data_free synthesize --allocation
  sensitivity --criterion activation``);
* ``...+kd``: then label-free distillation on the same inputs for ``--distill_epochs``
  (``tf1prune-convert --distill_epochs``).

With ``--finetune_sparsities``, the baseline is restored in a session and pruned by
``IterativePruningRunner.prune(strategy="uniform")`` from two starts, ``bn`` (BatchNorm re-estimated,
the earlier recipe) and ``recon`` (``calibration=`` batches: reconstruction written into the session),
then BatchNorm is re-estimated, the model fine-tuned ``--finetune_epochs`` and re-estimated again.

``--resnet50`` instead measures the cost of reconstruction on the Keras ResNet-50 at 224×224 (random
weights, ``--calib_images`` random inputs): seconds and peak memory; ``--resnet50_distill N`` then
times one distillation epoch over N of those inputs.
"""
import os
import resource
import shlex
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import example_models  # noqa: E402
import tf1prune  # noqa: E402
from example_models import data  # noqa: E402
from tf1prune.apply import refine, slim  # noqa: E402
from tf1prune.choose import allocation as tf1prune_allocation  # noqa: E402
from tf1prune.choose.spec import spec_from_counts  # noqa: E402
from tools.common import Frozen, keras_application  # noqa: E402

tf.disable_eager_execution()
tf.logging.set_verbosity(tf.logging.ERROR)

flags.DEFINE_list("models", ["resnet", "mobilenet_v2_se"], "example models")
flags.DEFINE_list("seeds", ["0", "1", "2"], "model and data-order seeds")
flags.DEFINE_list("sparsities", ["0.2", "0.3", "0.5"], "MACs reductions with no fine-tuning")
flags.DEFINE_list("methods", ["plain", "compensate", "synthesize", "bn", "recon", "act+recon",
                                    "greedy+recon"], "methods")
flags.DEFINE_list("finetune_sparsities", ["0.5", "0.7"], "MACs reductions fine-tuned from each start ('' none)")
flags.DEFINE_integer("epochs", 2, "baseline training epochs")
flags.DEFINE_integer("finetune_epochs", 1, "fine-tuning epochs")
flags.DEFINE_integer("calib_images", 1280, "unlabelled training images for calibration (batches of 128)")
flags.DEFINE_integer("distill_epochs", 40, "epochs of the +kd methods")
flags.DEFINE_integer("synth_steps", 500, "optimisation steps of the synthesized inputs (the default of synthesize_inputs)")
flags.DEFINE_bool("resnet50", False, "measure the reconstruction cost on ResNet-50 at 224x224 instead")
flags.DEFINE_integer("resnet50_distill", 0, "with --resnet50: also time one distillation epoch over this many inputs")
flags.DEFINE_bool("markdown", False, "Markdown tables")
FLAGS = flags.FLAGS


def log(text):
    print(("- " if FLAGS.markdown else "") + text, flush=True)


def table(header, rows):
    if FLAGS.markdown:
        print("| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
    else:
        for r in [header] + rows:
            print("  ".join("%-14s" % c for c in r))


def train(name, seed, ds, workdir):
    """Train, re-estimate BatchNorm, checkpoint and freeze: ``(frozen graph, checkpoint, info)``."""
    import tf_keras as keras
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph).as_default() as sess:
        info = example_models.build(name, learning_phase=None, seed=seed)
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        sess.run(tf.global_variables_initializer())
        info.model.fit(ds["x_fit"], ds["y_fit"], batch_size=128, epochs=FLAGS.epochs, verbose=0, shuffle=True)
        runner = tf1prune.IterativePruningRunner(name, sess, specs_of(info), info.output_node_names,
                                                 workspace=os.path.join(workdir, "ws"))
        runner.recalibrate(batches_of(info, ds))
        prefix = tf.train.Saver().save(sess, os.path.join(workdir, "%s_%d.ckpt" % (name, seed)))
        frozen = slim.strip_unused_functions(runner.frozen_graph_def())
    return frozen, prefix, info


def specs_of(info):
    return {info.input_name: ((1,) + info.input_shape[1:], "float32")}


def batches_of(info, ds):
    return [{info.input_name: ds["x_cal"][i:i + 128]} for i in range(0, len(ds["x_cal"]), 128)]


def _steps(method):
    """The set of steps a method name asks for; an unknown or incomplete one is an error."""
    steps = set(method.replace("synthesize", "synth+recon").split("+"))
    unknown = steps - {"plain", "compensate", "bn", "recon", "synth", "act", "greedy", "sens", "kd"}
    finals = steps & {"plain", "compensate", "bn", "recon"}
    if unknown or len(finals) != 1 or ("kd" in steps and not finals & {"bn", "recon"}):
        raise app.UsageError("unknown method %r: steps [synth+][sens+][act|greedy+](plain|compensate|bn|recon)[+kd]"
                             % method)
    return steps


def no_finetuning(frozen, info, ds, seed):
    """``{(method, sparsity): (test accuracy, seconds)}`` of the slim graphs, no training."""
    out_name = info.output_node_names[0]
    analysis = tf1prune.analyze(frozen, specs_of(info), info.output_node_names)
    batches, synthetic, curves = batches_of(info, ds), None, {}
    out = {}
    for sparsity in (float(s) for s in FLAGS.sparsities):
        for method in FLAGS.methods:
            start = time.time()
            steps = _steps(method)
            if "synth" in steps and synthetic is None:
                from tf1prune.apply.synthesize import synthesize_inputs
                t = time.time()
                synthetic = synthesize_inputs(analysis, count=256, steps=FLAGS.synth_steps, seed=seed)
                log("seed %d: 256 inputs synthesized in %.0f s" % (seed, time.time() - t))
            inputs = synthetic if "synth" in steps else batches
            criterion = "activation" if "act" in steps else "reconstruction" if "greedy" in steps else "l1"
            if "sens" in steps:
                key = (criterion, "synth" in steps)
                if key not in curves:
                    from tf1prune.workflows.frozen import label_free_sensitivity
                    t = time.time()
                    curves[key] = label_free_sensitivity(analysis, inputs, criterion=criterion)
                    log("seed %d: label-free sensitivity (%s%s) in %.0f s"
                        % (seed, criterion, ", synthetic inputs" if key[1] else "", time.time() - t))
                groups, order = curves[key]
                counts = tf1prune_allocation.sensitivity_allocation(analysis, order, groups, sparsity)
                spec = spec_from_counts(analysis, order, counts, criterion)
            else:
                spec = tf1prune.make_spec(analysis, sparsity=sparsity, criterion=criterion, calibration=inputs)
            plan = analysis.plan(spec)
            distill = {"epochs": FLAGS.distill_epochs} if "kd" in steps else None
            if "compensate" in steps:
                plan = refine.refine(plan)[0]
            elif "bn" in steps:
                plan = refine.refine(plan, inputs, compensate_bias=False, reconstruct=False, distill=distill)[0]
            elif "recon" in steps:
                plan = refine.refine(plan, inputs, distill=distill)[0]
            seconds = time.time() - start
            acc = Frozen(slim.apply_slim(plan), info.input_name, out_name).accuracy(ds["x_test"], ds["y_test"])
            out[(method, sparsity)] = (acc, seconds)
            log("seed %d %s @ %g: test %.4f (%.1f s)" % (seed, method, sparsity, acc, seconds))
    return out


def finetuned(name, seed, prefix, ds, start, sparsity, workdir):
    """Prune the restored baseline in a session from ``start``, fine-tune, and measure."""
    import tf_keras as keras
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph).as_default() as sess:
        info = example_models.build(name, learning_phase=None, seed=seed)
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        tf.train.Saver().restore(sess, prefix)
        batches = batches_of(info, ds)
        runner = tf1prune.IterativePruningRunner(name, sess, specs_of(info), info.output_node_names,
                                                 workspace=tempfile.mkdtemp(dir=workdir))
        runner.prune(sparsity=sparsity, strategy="uniform", best_effort=True,
                     calibration=batches if start == "recon" else None, data_free="none")
        return tune_and_measure(runner, info, ds, batches)


def tune_and_measure(runner, info, ds, batches):
    """``(pruned, fine-tuned)`` test accuracy of the pruned session: BatchNorm re-estimated, measured,
    ``--finetune_epochs`` of training, re-estimated and measured again."""
    runner.recalibrate(batches)
    out = info.output_node_names[0]
    pruned = Frozen(runner.get_slim_graph_def(), info.input_name, out).accuracy(ds["x_test"], ds["y_test"])
    info.model.fit(ds["x_fit"], ds["y_fit"], batch_size=128, epochs=FLAGS.finetune_epochs, verbose=0, shuffle=True)
    runner.recalibrate(batches)
    tuned = Frozen(runner.get_slim_graph_def(), info.input_name, out).accuracy(ds["x_test"], ds["y_test"])
    return pruned, tuned


def resnet50_cost():
    gd, inp, out = keras_application("resnet50", 224)
    analysis = tf1prune.analyze(gd, {inp: ((1, 224, 224, 3), "float32")}, [out])
    rng = np.random.RandomState(0)
    batches = [{inp: rng.uniform(-1, 1, (min(32, FLAGS.calib_images - i), 224, 224, 3)).astype(np.float32)}
               for i in range(0, FLAGS.calib_images, 32)]
    plan = analysis.plan(tf1prune.make_spec(analysis, sparsity=0.5))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.time()
    refined, done = refine.refine(plan, batches, progress=True)
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fits = done.reconstruction.fits
    log("ResNet-50 224x224, 50%% fewer MACs, %d calibration images: %d layers refitted in %d wave(s) in %.0f s; "
        "peak memory %.1f GB (%.1f GB before); output error %.3f -> %.3f (mean); %d updates"
        % (FLAGS.calib_images, len(fits), done.reconstruction.waves, seconds, peak / 2 ** 20, before / 2 ** 20,
           np.mean([f.before for f in fits]), np.mean([f.after for f in fits]), len(refined.updates)))
    if FLAGS.resnet50_distill:
        from tf1prune.apply.distill import distill
        count = FLAGS.resnet50_distill
        start = time.time()
        done = distill(refined, [{inp: b[inp][:count - i]} for i, b in zip(range(0, count, 32), batches)], epochs=1)
        log("ResNet-50 distillation, 1 epoch over %d inputs: %.0f s (%d steps, teacher pass and held-out scoring "
            "included), peak memory %.1f GB" % (count, time.time() - start, done.steps,
                                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20))


def main(argv):
    del argv
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    for method in FLAGS.methods:
        _steps(method)
    if FLAGS.resnet50:
        return resnet50_cost()
    x_train, y_train, x_test, y_test, source = data.load()
    log("data: %s" % source)
    workdir = tempfile.mkdtemp(prefix="tf1prune-posttraining-")
    results, tuned = {}, {}
    for name in FLAGS.models:
        for seed in (int(s) for s in FLAGS.seeds):
            pick = np.random.RandomState(seed).choice(len(y_train) - 2000, FLAGS.calib_images, replace=False)
            ds = {"x_fit": x_train[:-2000], "y_fit": y_train[:-2000], "x_cal": x_train[:-2000][pick],
                  "x_test": x_test, "y_test": y_test}
            frozen, prefix, info = train(name, seed, ds, workdir)
            base = Frozen(frozen, info.input_name, info.output_node_names[0]).accuracy(x_test, y_test)
            log("%s seed %d: baseline test %.4f" % (name, seed, base))
            for key, (acc, seconds) in no_finetuning(frozen, info, ds, seed).items():
                results.setdefault((name,) + key, []).append((acc - base, seconds))
            for sparsity in (float(s) for s in FLAGS.finetune_sparsities if s):
                for start in ("bn", "recon"):
                    pruned, final = finetuned(name, seed, prefix, ds, start, sparsity, workdir)
                    tuned.setdefault((name, start, sparsity), []).append((pruned - base, final - base))
                    log("%s seed %d %s @ %g: pruned %.4f, fine-tuned %.4f" % (name, seed, start, sparsity,
                                                                           pruned, final))
    fmt = lambda v: "%+.2f ± %.2f" % (100 * np.mean(v), 100 * np.std(v))   # noqa: E731
    rows = [[name, method, "%g" % s, fmt([d for d, _ in v]), " / ".join("%+.2f" % (100 * d) for d, _ in v),
             "%.1f" % np.mean([t for _, t in v])] for (name, method, s), v in sorted(results.items())]
    table(["model", "method", "fewer MACs", "test acc. change (pts)", "per seed", "seconds"], rows)
    if tuned:
        rows = [[name, start, "%g" % s, fmt([p for p, _ in v]), fmt([f for _, f in v]),
                 " / ".join("%+.2f" % (100 * f) for _, f in v)] for (name, start, s), v in sorted(tuned.items())]
        table(["model", "start", "fewer MACs", "pruned (pts)", "after fine-tuning (pts)", "per seed"], rows)


if __name__ == "__main__":
    app.run(main)
