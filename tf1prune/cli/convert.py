"""tf1prune-convert: data-free channel pruning of a frozen graph.

Example::

    tf1prune-convert --input_graph model.pb --output_graph slim.pb \\
        --output_node_names logits/BiasAdd --sparsity 0.5 [--sparse_graph sparse.pb] [--output_spec spec.json] \\
        [--tflite slim.tflite] \\
        [--report report/]
"""
import functools
import os

from absl import flags

from tf1prune import cli
from tf1prune.choose import criteria
from tf1prune.errors import Tf1PruneError

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared flags too
flags.DEFINE_float("sparsity", None, "Fraction of the MACs to remove, in (0, 1).")
flags.DEFINE_float("ratio", None, "Fraction of the channels of every prunable group to remove, in (0, 1).")
flags.DEFINE_enum("criterion", "l1", criteria.names(), "Channel importance criterion.")
flags.DEFINE_string("channel_divisible", "auto", "Kept channels per group are a multiple of this; 'auto' "
                    "(default): the rounding that makes this model's own layers fastest on this machine (timed "
                    "once, then cached), capped so the median group keeps four widths; 1: no rounding.")
flags.DEFINE_enum("allocation", "uniform", ["uniform", "importance", "sensitivity"],
                  "How --sparsity or --latency_target is spread over the groups: 'uniform' (the same share of every "
                  "group), 'importance' (each group's share of --criterion importance removed traded against the "
                  "MACs or time it saves), 'sensitivity' (needs --calibration_data or --data_free synthesize: each "
                  "group pruned alone at 9 ratios and scored by its KL agreement with the original outputs on those "
                  "inputs, then traded the same way). Both stay within 0.1 of the uniform ratio per group.")
flags.DEFINE_string("sparse_graph", None, "Also write the same-shape graph with the pruned channels zeroed.")
flags.DEFINE_string("output_spec", None, "Also write the spec that was applied (JSON).")
flags.DEFINE_integer("search", 0, "With --sparsity or --latency_target: score this many candidate allocations (one-step search: "
                     "BatchNorm recalibrated on --calibration_data, agreement with the original outputs) and "
                     "keep the best; 0: the uniform allocation.", lower_bound=0)
flags.DEFINE_string("calibration_data", None, "Unlabelled inputs: a .npz file with one array per input (named like "
                    "the input tensor, e.g. input_1 or input_1:0).  The written graph's BatchNorm statistics are "
                    "re-estimated on them; --search scores its candidates on them.")
flags.DEFINE_enum("data_free", "compensate", ["compensate", "synthesize", "none"], "Without --calibration_data: "
                  "'compensate' moves the removed channels' expected contribution into the next layers' biases and "
                  "BatchNorms (from the BatchNorm parameters); 'synthesize' makes inputs from the model's BatchNorm "
                  "statistics and uses them as calibration data (reconstruction, and --criterion activation, "
                  "--allocation sensitivity, --search): slower, more accurate; 'none' does nothing.")
flags.DEFINE_bool("no_reconstruct", False, "With calibration inputs: skip the least-squares reconstruction "
                  "(bias compensation and BatchNorm re-estimation only).")
flags.DEFINE_integer("distill_epochs", 0, "With --calibration_data: afterwards train every kernel, bias and "
                     "BatchNorm scale/offset for this many passes over the calibration inputs towards the original "
                     "graph's outputs and layer outputs (label-free distillation); 0: none (40 is a good "
                     "start).", lower_bound=0)
flags.DEFINE_float("distill_lr", 1e-3, "Adam learning rate of --distill_epochs (cosine-decayed), > 0.")
flags.DEFINE_float("distill_features", 3.0, "Weight of the layer outputs in the --distill_epochs loss, against "
                   "the graph's outputs' (0: the graph's outputs only).", lower_bound=0)
flags.DEFINE_integer("calibration_batch", None, "Batch size of --calibration_data (default: the inputs' fixed "
                     "batch, else 64).", lower_bound=1)
flags.DEFINE_enum("search_metric", "kl", ["kl", "top1", "mse"], "Agreement with the original outputs (--search, "
                  "--allocation sensitivity): KL divergence of the softmax, top-1 agreement, or relative squared "
                  "error (outputs that are not [batch, classes]).")
flags.DEFINE_float("weight_sparsity", None, "Fine-grained: zero this share of every layer's weights by "
                   "magnitude (after channel pruning, if any), in [0, 1).")
flags.DEFINE_string("m_by_n", None, "Fine-grained N:M sparsity, e.g. 2:4: keep N of every M consecutive "
                    "input-channel weights.")
flags.DEFINE_string("block", None, "With --weight_sparsity: prune whole blocks of the kernels' last two axes, "
                    "e.g. 1x4.")
flags.DEFINE_enum("block_pooling", "AVG", ["AVG", "MAX"], "How a block's magnitude is pooled.")
flags.DEFINE_float("latency_target", None, "Prune until the slim graph runs in this share of the original's time "
                  "on this machine, in (0, 1), at --batch and --threads: each layer timed at a grid of widths "
                  "(cached), the slim graph measured against the original and re-fitted when it misses by more "
                  "than 7%.")
flags.DEFINE_string("tflite", None, "Also convert the slim graph to this .tflite file with TensorFlow's TF1 "
                    "converter (inputs fixed to --input_specs, else the placeholders' shapes with batch 1) and "
                    "check its outputs against TensorFlow's on random inputs.")
flags.DEFINE_bool("tflite_select_ops", False, "With --tflite: allow TensorFlow ops TFLite has no builtin for "
                  "(the model then needs the Flex delegate).")
flags.DEFINE_bool("best_effort", False, "Write the closest graph when the target cannot be met (with a warning), "
                  "and an unpruned graph when nothing is prunable.")


def _fine_grained():
    """The fine-grained options: (sparsity, m_by_n, block size), or None."""
    if FLAGS.weight_sparsity is None and FLAGS.m_by_n is None:
        if FLAGS.block:
            raise Tf1PruneError("--block needs --weight_sparsity")
        if FLAGS["block_pooling"].present:
            raise Tf1PruneError("--block_pooling needs --block and --weight_sparsity")
        return None
    if FLAGS.weight_sparsity is not None and FLAGS.m_by_n is not None:
        raise Tf1PruneError("give --weight_sparsity or --m_by_n, not both (N:M sets the sparsity)")
    if FLAGS.m_by_n is not None and FLAGS.block:
        raise Tf1PruneError("--m_by_n and --block do not combine (N:M works on single weights)")
    if FLAGS["block_pooling"].present and not FLAGS.block:
        raise Tf1PruneError("--block_pooling needs --block")
    if FLAGS.weight_sparsity is not None and not 0 <= FLAGS.weight_sparsity < 1:
        raise Tf1PruneError("--weight_sparsity must be in [0, 1), got %r" % FLAGS.weight_sparsity)
    m_by_n = block = None
    try:
        if FLAGS.m_by_n is not None:
            m_by_n = tuple(int(v) for v in FLAGS.m_by_n.split(":"))
            assert len(m_by_n) == 2
        block = tuple(int(v) for v in FLAGS.block.lower().split("x")) if FLAGS.block else (1, 1)
        assert len(block) == 2
    except (ValueError, AssertionError):
        raise Tf1PruneError("--m_by_n is N:M (e.g. 2:4) and --block is HxW (e.g. 1x4)")
    if FLAGS.sparse_graph:
        raise Tf1PruneError("--sparse_graph cannot be combined with fine-grained sparsity")
    return FLAGS.weight_sparsity, m_by_n, block


def _check_args():
    """One of --sparsity/--ratio/--spec (or only fine-grained options), in range; outputs distinct
    from inputs and each other."""
    given = [n for n in ("sparsity", "ratio", "spec", "latency_target") if FLAGS[n].value is not None]
    if len(given) > 1 or (not given and _fine_grained() is None):
        raise Tf1PruneError("give exactly one of --sparsity, --ratio, --latency_target or --spec (got %s), or "
                            "fine-grained options" % (", ".join("--" + n for n in given) or "none"))
    if FLAGS["threads"].present and FLAGS.latency_target is None:
        raise Tf1PruneError("--threads applies to --latency_target")
    if FLAGS["batch"].present:
        from tf1prune.choose import divisible
        if FLAGS.latency_target is None and not ((FLAGS.sparsity or FLAGS.ratio) and
                                                 divisible.is_auto(FLAGS.channel_divisible)):
            raise Tf1PruneError("--batch applies to --latency_target and to --channel_divisible auto")
        cli.batches(one=True)
    for name in ("sparsity", "ratio", "latency_target"):
        value = FLAGS[name].value
        if value is not None and not 0 < value < 1:
            raise Tf1PruneError("--%s must be in (0, 1), got %r" % (name, value))
    if FLAGS["channel_divisible"].present:
        if FLAGS.sparsity is None and FLAGS.ratio is None and FLAGS.latency_target is None:
            raise Tf1PruneError("--channel_divisible applies to --sparsity, --ratio and --latency_target (a --spec "
                                "keeps its own counts)")
        from tf1prune.choose import divisible
        divisible.check(FLAGS.channel_divisible)
    if FLAGS["allocation"].present:
        if FLAGS.sparsity is None and FLAGS.latency_target is None or FLAGS.search:
            raise Tf1PruneError("--allocation applies to --sparsity and --latency_target (not --search)")
        if FLAGS.allocation == "sensitivity" and not _has_inputs():
            raise Tf1PruneError("--allocation sensitivity needs --calibration_data or --data_free synthesize (each "
                                "group is scored on those inputs)")
    if FLAGS.search and FLAGS.sparsity is None and FLAGS.latency_target is None:
        raise Tf1PruneError("--search needs --sparsity or --latency_target")
    if FLAGS.search and not _has_inputs():
        raise Tf1PruneError("--search needs --calibration_data or --data_free synthesize (its candidates are scored "
                            "on those inputs)")
    if FLAGS["search_metric"].present and not (FLAGS.search or FLAGS.allocation == "sensitivity"):
        raise Tf1PruneError("--search_metric applies to --search and --allocation sensitivity")
    if FLAGS.calibration_batch is not None and not FLAGS.calibration_data:
        raise Tf1PruneError("--calibration_batch applies to --calibration_data")
    if FLAGS["data_free"].present and FLAGS.calibration_data:
        raise Tf1PruneError("--data_free applies without --calibration_data")
    if FLAGS.no_reconstruct and not FLAGS.calibration_data and FLAGS.data_free != "synthesize":
        raise Tf1PruneError("--no_reconstruct applies to --calibration_data or --data_free synthesize")
    if FLAGS.distill_epochs and not FLAGS.calibration_data:
        raise Tf1PruneError("--distill_epochs needs --calibration_data (on synthesized inputs it gains nothing)")
    for name in ("distill_lr", "distill_features"):
        if FLAGS[name].present and not FLAGS.distill_epochs:
            raise Tf1PruneError("--%s applies to --distill_epochs" % name)
    if not FLAGS.distill_lr > 0:
        raise Tf1PruneError("--distill_lr must be > 0, got %r" % FLAGS.distill_lr)
    if FLAGS.distill_epochs and not given:
        raise Tf1PruneError("--distill_epochs applies to channel pruning (--sparsity, --ratio, --latency_target, "
                            "--spec)")
    if FLAGS.distill_epochs and FLAGS.search and FLAGS.no_reconstruct:
        raise Tf1PruneError("--distill_epochs does not apply to --search with --no_reconstruct (the graph the search "
                            "scored is written)")
    seen = {os.path.realpath(p): n for n, p in (("input_graph", FLAGS.input_graph), ("spec", FLAGS.spec)) if p}
    if FLAGS.tflite_select_ops and not FLAGS.tflite:
        raise Tf1PruneError("--tflite_select_ops applies to --tflite")
    for name in ("output_graph", "sparse_graph", "output_spec", "tflite"):
        path = FLAGS[name].value
        if not path:
            continue
        if os.path.isdir(path):
            raise Tf1PruneError("--%s is a directory: %s" % (name, path))
        other = seen.setdefault(os.path.realpath(path), name)
        if other != name:
            raise Tf1PruneError("--%s is the same file as --%s: %s" % (name, other, path))
    cli.report_dir(FLAGS.input_graph, FLAGS.spec, FLAGS.output_graph, FLAGS.sparse_graph, FLAGS.output_spec,
                   FLAGS.tflite)


def _has_inputs():
    return bool(FLAGS.calibration_data) or FLAGS.data_free == "synthesize"


def _synthetic_batches(analysis):
    """--data_free synthesize: inputs made from the BatchNorm statistics, for every data-driven step."""
    import time
    from tf1prune.apply.synthesize import synthesize_inputs
    start = time.time()
    batches = synthesize_inputs(analysis, progress=True)
    print("synthetic inputs: %d made from the BatchNorm statistics in %.0f s"
          % (sum(len(next(iter(b.values()))) for b in batches), time.time() - start))
    return batches


def _calibration_batches(analysis):
    """--calibration_data as feed dicts of --calibration_batch rows (checked against the graph's inputs)."""
    import numpy as np
    from tf1prune.apply import calibrate
    path = FLAGS.calibration_data
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise Tf1PruneError("cannot read calibration data %r: %s" % (path, e))
    if not hasattr(data, "files"):
        raise Tf1PruneError("calibration data %r is a single array (.npy): save a .npz with one array per input, "
                            "named like the input (np.savez('data.npz', input_1=x))" % path)
    with data:
        try:
            arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as e:
            raise Tf1PruneError("cannot read calibration data %r: %s" % (path, e))
    batches, size = calibrate.batches_from_arrays(arrays, analysis, FLAGS.calibration_batch,
                                                  "calibration data %r" % path)
    if FLAGS.calibration_batch is None:
        print("calibration: %d batches of %d" % (len(batches), size))
    return batches


def _latency(analysis, batches):
    """The spec whose slim graph runs nearest --latency_target of the original's time here."""
    from tf1prune.measure.layer_latency import layer_shares
    from tf1prune.workflows.latency_target import meet_latency, prune_to_latency
    batch = cli.batches(one=True)[0]
    if FLAGS.allocation == "sensitivity":
        found = meet_latency(analysis, FLAGS.latency_target, _sensitivity_choice(analysis, batches, FLAGS.latency_target,
                                                                                 batch), batch, FLAGS.threads)
    else:
        found = prune_to_latency(analysis, FLAGS.latency_target, batch=batch, threads=FLAGS.threads,
                                 criterion=FLAGS.criterion, channel_divisible=FLAGS.channel_divisible,
                                 calibration=batches, allocation=FLAGS.allocation)
    _say_divisible(found.spec.channel_divisible)
    print("latency model: %d layers timed (%s, %.1f s); end to end = %.3f x the layers' sum + %.3f ms"
          % (len(found.profile.timings), "cached" if found.profile.cached else "measured", found.profile.seconds,
             found.profile.scale, found.profile.offset))
    for i, a in enumerate(found.attempts):
        print("attempt %d: predicted %.3f, measured %.3f of the original's latency (%.3f -> %.3f ms)"
              % (i + 1, a.predicted, a.measured, a.millis[0], a.millis[1]))
    print(found.profile.table(layer_shares(analysis, found.plan.choice)))
    print(found.summary(FLAGS.latency_target))
    if abs(found.measured / FLAGS.latency_target - 1) > 0.07:
        print("warning: the closest slim graph runs in %.3f of the original's time, not %.2f%s"
              % (found.measured, FLAGS.latency_target, " (this model's time does not fall below that with fewer "
                                                        "channels)" if found.measured > FLAGS.latency_target else ""))
    return found.spec, found


def _sensitivity_choice(analysis, batches, kept, batch=1):
    """``choose(cost, sparsity)``: the label-free sensitivity of every group on ``batches`` (measured
    once), traded against the cost each saves; ``kept``: about the share of the cost kept (where
    ``auto`` rounding is timed)."""
    from tf1prune.choose import allocation, divisible
    from tf1prune.choose.spec import spec_from_counts
    from tf1prune.workflows.frozen import label_free_sensitivity
    rounding = _say_divisible(divisible.resolve(FLAGS.channel_divisible, analysis, divisible.ratio_for(1.0 - kept),
                                                batch))
    curves, order = label_free_sensitivity(analysis, batches, FLAGS.search_metric, FLAGS.criterion, rounding,
                                           progress=True)
    print("sensitivity: %d groups x %d ratios scored by %s agreement on the calibration inputs"
          % (len(curves), len(next(iter(curves.values()), ())), FLAGS.search_metric))

    def choose(cost, sparsity):
        counts = allocation.sensitivity_allocation(analysis, order, curves, sparsity, rounding, cost=cost)
        spec = spec_from_counts(analysis, order, counts, FLAGS.criterion, rounding)
        spec.warning = allocation.target_problem(analysis, order, counts, sparsity, cost=cost)
        return spec
    return choose


def _say_divisible(value):
    from tf1prune.choose import divisible
    if divisible.is_auto(FLAGS.channel_divisible):
        from tf1prune.measure import rounding
        print("channel_divisible: auto -> %d (%s)" % (value, "pinned by %s" % divisible.PIN if os.environ.get(
            divisible.PIN) else "this model's slim graphs timed on this machine at batch %d, cached in %s"
            % (cli.batches()[0], rounding.cache_path())))
    return value


def _search(analysis, batches):
    """The spec of the best candidate, and its BatchNorm statistics (what it was scored with)."""
    from tf1prune.choose import costs
    from tf1prune.workflows import frozen
    target, cost = FLAGS.sparsity, "macs"
    if FLAGS.latency_target is not None:   # candidates on the latency model, the winner measured
        target, cost = 1.0 - FLAGS.latency_target, costs.latency_model(cli.batches(one=True)[0], FLAGS.threads)
    found = frozen.search_graph_def(analysis, target, batches, FLAGS.search, FLAGS.search_metric,
                                    FLAGS.criterion, FLAGS.channel_divisible, progress=True,
                                    best_effort=FLAGS.best_effort, cost=cost)
    if frozen.divisible.is_auto(FLAGS.channel_divisible):
        _say_divisible(found.spec.channel_divisible)
    scores = [score for _, score, _ in found.results]
    known = [s for s in scores if s is not None]
    print("search: %d candidates, %s agreement: uniform %.4g, best %.4g, worst %.4g"
          % (len(found.results), FLAGS.search_metric, scores[0] if scores[0] is not None else float("nan"),
             max(known), min(known)))
    found.spec.warning = found.warning
    if FLAGS.latency_target is not None:
        _say_latency(analysis, found.spec)
    return found.spec, found.statistics


def _say_latency(analysis, spec):
    """Time the slim graph of ``spec`` against the original and print the ratio to --latency_target."""
    from tf1prune.apply import slim
    from tf1prune.measure.latency import measure_settled
    batch = cli.batches(one=True)[0]
    stats, _ = measure_settled([analysis.view.graph_def, slim.apply_slim(analysis.plan(spec))],
                               analysis.view.output_node_names, analysis.view.input_specs, batch=batch,
                               threads=FLAGS.threads)
    ratio = stats[1].median / stats[0].median
    print("latency target %.2f: the searched graph measures %.3f (%.3f -> %.3f ms, batch %d)"
          % (FLAGS.latency_target, ratio, stats[0].median, stats[1].median, batch))
    if abs(ratio / FLAGS.latency_target - 1) > 0.07:
        print("warning: %.3f is more than 7%% from the target: without --search, --latency_target re-fits and "
              "tries again" % ratio)


def _refine(plan, batches):
    """``(plan, Refinement)``: the plan with what keeps the slim graph accurate without training;
    prints what was done."""
    import numpy as np
    from tf1prune.apply.refine import refine
    distill = ({"epochs": FLAGS.distill_epochs, "learning_rate": FLAGS.distill_lr, "features": FLAGS.distill_features}
               if FLAGS.distill_epochs else None)
    plan, done = refine(plan, batches, FLAGS.data_free, not FLAGS.no_reconstruct, progress=True, distill=distill)
    source = "the calibration data" if FLAGS.calibration_data else "synthetic inputs" if batches is not None else None
    if done.compensated:
        print("bias compensation: %d parameters shifted (%s)" % (len(done.compensated), "measured means" if source
                                                                   else "BatchNorm moments, no data"))
    for layer, why in done.skipped[:5]:
        print("  not compensated: %s: %s" % (layer, why))
    if batches is None and FLAGS.data_free == "compensate":
        print("no data: compensation only; unlabelled inputs (--calibration_data) or --data_free synthesize "
              "recover far more accuracy (README: Post-training pruning)")
    fit = done.reconstruction
    if fit is not None and fit.fits:
        print("reconstruction: %d layers refitted on %s (%s), output error %.4f -> %.4f (mean)"
              % (len(fit.fits), source, "one by one" if fit.waves > 1 else "at once", np.mean([f.before for f in fit.fits]),
                 np.mean([f.after for f in fit.fits])))
        for layer, why in fit.skipped[:5]:
            print("  not refitted: %s: %s" % (layer, why))
    if done.statistics:
        print("BatchNorm statistics re-estimated on %s: %d constants" % (source, len(done.statistics)))
    kd = done.distillation
    if kd is not None:
        scored = "%d held-out inputs" % kd.held_out if kd.held_out else "the training inputs (under 20: none held out)"
        if kd.epoch:
            print("distillation: %d parameters trained in %d steps (%.0f s), loss to the original outputs on %s "
                  "%.4g -> %.4g (epoch %d kept)" % (len(kd.updates), kd.steps, kd.seconds, scored, kd.before,
                                                    kd.after, kd.epoch))
        else:
            print("distillation: no epoch of %d steps (%.0f s) improved the loss on %s (%.4g): parameters left as "
                  "refined; try a lower --distill_lr" % (kd.steps, kd.seconds, scored, kd.before))
    return plan, done


def _write_all(outputs):
    """Write ``(what, path, write)`` outputs; on failure remove the ones already written."""
    done = []
    for what, path, write in outputs:
        try:
            write(path)
        except (OSError, Tf1PruneError) as e:
            for p in done:
                os.remove(p)
            raise Tf1PruneError("cannot write %s %r: %s" % (what, path, getattr(e, "strerror", None) or e))
        done.append(path)
    for what, path, _ in outputs:
        print("%-13s %s" % (what + ":", path))


def _report(analysis, spec, before, measured, directory, refinement, latency=None):
    """Write the --report folder; ``measured`` receives the slim graph's MACs/params report."""
    from tf1prune.core import flops
    from tf1prune.report import write_report
    measured.append(flops.count(cli.load_and_analyze(FLAGS.output_graph, note=False)))
    layers, millis = None, None
    if latency is not None:
        from tf1prune.measure.layer_latency import layer_shares
        shares = layer_shares(analysis, latency.plan.choice)
        layers = [(t.node, latency.profile.layer_millis(t.node, 1.0), latency.profile.layer_millis(
            t.node, shares.get(t.node, 1.0))) for t in latency.profile.timings]
        millis = next(a.millis for a in latency.attempts if a.measured == latency.measured)
    write_report(directory, analysis, spec, before=before, after=measured[0], refinement=refinement,
                 layer_latency=layers, latency_ms=millis,
                 sizes=(os.path.getsize(FLAGS.input_graph), os.path.getsize(FLAGS.output_graph)),
                 title="tf1prune-convert: %s \u2192 %s"
                 % (os.path.basename(FLAGS.input_graph), os.path.basename(FLAGS.output_graph)))


@cli.tool(required=("input_graph", "output_graph", "output_node_names"))
def main():
    """Prune --input_graph, write the outputs and print the measured MACs/params."""
    from tf1prune.apply import slim
    from tf1prune.choose import allocation
    from tf1prune.choose.spec import Spec, make_spec
    from tf1prune.core import flops
    from tf1prune.files import save_graph_def
    _check_args()
    analysis = cli.load_and_analyze(FLAGS.input_graph, FLAGS.excludes)
    fine = _fine_grained()
    batches = _calibration_batches(analysis) if FLAGS.calibration_data else None
    if batches is None and FLAGS.data_free == "synthesize" and any(
            FLAGS[n].value is not None for n in ("sparsity", "ratio", "spec", "latency_target")):
        batches = _synthetic_batches(analysis)
    statistics, latency = None, None
    if FLAGS.spec:
        spec = Spec.load(FLAGS.spec)
    elif FLAGS.search:
        spec, statistics = _search(analysis, batches)
    elif FLAGS.latency_target is not None:
        spec, latency = _latency(analysis, batches)
    elif FLAGS.sparsity is not None and FLAGS.allocation == "sensitivity":
        spec = _sensitivity_choice(analysis, batches, 1.0 - FLAGS.sparsity, cli.batches(one=True)[0])("macs",
                                                                                                   FLAGS.sparsity)
        if spec.warning and not FLAGS.best_effort:
            raise Tf1PruneError(spec.warning + " (--best_effort writes the closest)")
    elif FLAGS.sparsity is not None or FLAGS.ratio is not None:
        spec = make_spec(analysis, ratio=FLAGS.ratio, sparsity=FLAGS.sparsity, criterion=FLAGS.criterion,
                         channel_divisible=FLAGS.channel_divisible, best_effort=FLAGS.best_effort,
                         calibration=batches, batch=cli.batches(one=True)[0], allocation=FLAGS.allocation)
        _say_divisible(spec.channel_divisible)
    else:
        spec = make_spec(analysis, ratios={})   # channels untouched: fine-grained only
    plan = analysis.plan(spec)
    if not plan.pruned and not FLAGS.best_effort and fine is None:
        blockers = "; ".join("group %d (%d MACs): %s" % (g.id, m, g.reason)
                             for m, g in allocation.blocked_macs(analysis)[:3])
        raise Tf1PruneError("no channel would be removed%s (--best_effort writes the graph anyway)"
                            % (": the most MACs are held by " + blockers if blockers else ""))
    refinement = None
    if FLAGS.search and FLAGS.no_reconstruct:   # exactly the graph the search scored
        plan = plan.with_updates(statistics)
        print("BatchNorm statistics re-estimated on %s: %d constants"
              % ("the calibration data" if FLAGS.calibration_data else "synthetic inputs", len(statistics)))
    elif plan.pruned:
        plan, refinement = _refine(plan, batches)
    elif FLAGS.distill_epochs:
        print("no channel removed: nothing to distill")
    slim_gd, report = slim.apply_slim(plan), None
    if fine is not None:
        from tf1prune.apply import finegrained
        layers = {l.node for l in analysis.layers} | {l.kernel for l in analysis.layers if l.kernel}
        slim_gd, report, skipped = finegrained.sparsify_graph_def(
            slim_gd, analysis.view.input_specs, analysis.view.output_node_names, fine[0], fine[1], fine[2],
            FLAGS.block_pooling, [n for n in cli.names(FLAGS.excludes) if n in layers])
        for layer, why in skipped:
            print("fine-grained sparsity skips %s: %s" % (layer, why))
    outputs = [("slim graph", FLAGS.output_graph, functools.partial(save_graph_def, slim_gd))]
    if FLAGS.sparse_graph:
        outputs.append(("sparse graph", FLAGS.sparse_graph,
                        functools.partial(save_graph_def, slim.apply_sparse(plan))))
    if FLAGS.output_spec:
        outputs.append(("spec", FLAGS.output_spec, spec.save))
    before, measured = flops.count(analysis), []
    if FLAGS.report:   # last: it reads the written slim graph, and a failure removes the other outputs
        outputs.append(("report", FLAGS.report, functools.partial(_report, analysis, spec, before, measured,
                                                          latency=latency,
                                                          refinement=refinement)))
    _write_all(outputs)
    unneeded = slim.unneeded_nodes(analysis)
    if unneeded:
        print("left out %d nodes the output nodes do not need (e.g. '%s')" % (len(unneeded), unneeded[0]))
    if getattr(spec, "warning", None):
        print("warning: %s" % spec.warning)
    after = measured[0] if measured else flops.count(cli.load_and_analyze(FLAGS.output_graph, note=False))
    if isinstance(spec, Spec):
        pruned = [g for g in spec.groups if len(g.keep) < g.channels]
        print("pruned groups: %d of %d prunable; channels %d -> %d" % (
            len(pruned), len(spec.groups), sum(g.channels for g in spec.groups),
            sum(len(g.keep) for g in spec.groups)))
    counted = "" if before.complete else " (counted layers only; not counted: %s)" % "; ".join(
        why for _, why in before.uncounted)
    print("MACs:   %d -> %d%s" % (before.macs, after.macs, counted))
    print("params: %d -> %d" % (before.params, after.params))
    print("MACs reduction: %.2f%%%s" % (100.0 * (1 - after.macs / before.macs) if before.macs else 0.0,
                                        "" if before.complete else " of the counted MACs"))
    if report is not None:
        from tf1prune.apply import finegrained
        print(finegrained.report_table(report))
        print("(TensorFlow's CPU kernels do not run faster on unstructured zeros: the gain is the compressed "
              "size; see tf1prune-analyze --sparsity_report)")
    if FLAGS.tflite:   # last: a graph TFLite cannot take is an error, with the .pb already written
        _tflite(slim_gd, analysis)


def _tflite(slim_gd, analysis):
    """Write --tflite from the slim graph and print how far TFLite's outputs are from TensorFlow's."""
    from tf1prune.apply.tflite import to_tflite
    from tf1prune.files import atomic_write
    result = to_tflite(slim_gd, analysis.view.input_specs, analysis.view.output_node_names, FLAGS.tflite_select_ops)
    try:
        atomic_write(FLAGS.tflite, result.model)
    except OSError as e:
        raise Tf1PruneError("cannot write TFLite model %r: %s" % (FLAGS.tflite, e.strerror or e))
    print("%-13s %s (%d bytes)" % ("tflite:", FLAGS.tflite, len(result.model)))
    if result.max_diff is None:
        print("TFLite vs TensorFlow: not checked (no TFLite interpreter installed)")
    else:
        print("TFLite vs TensorFlow on random inputs: max |difference| %.3g%s" % (result.max_diff, "" if len(
            result.outputs) < 2 else " (%s)" % ", ".join("%s %.3g" % kv for kv in result.outputs.items())))


def run():
    """Console-script entry point."""
    cli.launch(main)


if __name__ == "__main__":
    run()
