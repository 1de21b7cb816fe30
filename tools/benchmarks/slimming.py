"""Benchmark tf1prune on ResNet-50 and MobileNetV2 frozen graphs.

Measures analysis and slimming time, the prunable share of conv/dense output
channels, CPU latency of the original vs the slim graph (interleaved, median),
MACs, params and frozen file size.  Example::

    python tools/benchmarks/slimming.py --markdown --models resnet50 --divisible 1,8
"""
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))   # the repo

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tf1prune  # noqa: E402
from tf1prune.choose import divisible, spec as spec_lib
from tf1prune.core import flops
from tf1prune.apply import slim  # noqa: E402
from tools.common import keras_application  # noqa: E402

tf.disable_eager_execution()

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet50", "mobilenet_v2"], "Models to benchmark.")
flags.DEFINE_integer("image_size", 224, "Input height and width.")
flags.DEFINE_integer("repeats", 3, "Best-of-N repeats for analyze and slim timings.")
flags.DEFINE_integer("warmup", 5, "Untimed warm-up runs of each graph.")
flags.DEFINE_integer("runs", 20, "Timed runs of each graph (interleaved).")
flags.DEFINE_integer("batch", 1, "Batch size of the latency runs.")
flags.DEFINE_integer("threads", 2, "intra_op and inter_op parallelism threads.")
flags.DEFINE_float("sparsity", 0.5, "MACs reduction target of make_spec.")
flags.DEFINE_list("divisible", ["1", "8", "16"], "channel_divisible values to benchmark ('auto' too).")
flags.DEFINE_bool("markdown", False, "Print a Markdown table instead of plain text.")

def session_config():
    """Thread settings; TF's thread pools are process-wide, sized by the first session, so every session uses this."""
    return tf.ConfigProto(intra_op_parallelism_threads=FLAGS.threads, inter_op_parallelism_threads=FLAGS.threads)


def frozen_model(name, size, seed=0):
    """Frozen Keras application with random weights and BN stats; (gd, input, output)."""
    return keras_application(name, size, seed, config=session_config())


def best_of(fn, n):
    """(best seconds, last result) over ``n`` calls."""
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def output_layers(a, output):
    """Layers whose outputs reach the graph output without passing through another layer."""
    layer_nodes, found = {l.node for l in a.layers}, set()
    stack, seen = [output], set()
    while stack:
        name = stack.pop()
        if name in layer_nodes:
            found.add(name)
        elif name not in seen:
            seen.add(name)
            stack += [r.split(":")[0] for r in a.view.data_inputs(name)]
    return found


def prunable_share(a, output):
    """Prunable share of conv/dense output channels: (all, excluding the output layer), unprunable reasons."""
    excluded = output_layers(a, output)
    tot = [0, 0]
    ok = [0, 0]
    for layer in a.layers:
        if layer.kind not in ("conv", "dense") or not len(layer.dims[-1].elems):
            continue
        units = a.unit_of[layer.dims[-1].elems]
        good = sum(a.groups[a.group_of_unit[u]].prunable for u in units.tolist() if u in a.group_of_unit)
        for i, counted in enumerate((True, layer.node not in excluded)):
            tot[i] += len(units) * counted
            ok[i] += good * counted
    reasons = sorted({g.reason for g in a.groups if not g.prunable})
    return ok[0] / max(tot[0], 1), ok[1] / max(tot[1], 1), reasons


def latency(graphs, inp, out, shape, warmup, runs):
    """Median ms of each graph, runs alternating between graphs in one process."""
    x = np.random.RandomState(1).uniform(-1, 1, shape).astype(np.float32)
    sessions = []
    for gd in graphs:
        g = tf.Graph()
        with g.as_default():
            tf.import_graph_def(gd, name="")
        sessions.append((tf.Session(graph=g, config=session_config()), g.get_tensor_by_name(inp),
                         g.get_tensor_by_name(out + ":0")))
    times = [[] for _ in graphs]
    for i in range(warmup + runs):
        for (sess, t_in, t_out), ts in zip(sessions, times):
            t = time.perf_counter()
            sess.run(t_out, {t_in: x})
            if i >= warmup:
                ts.append((time.perf_counter() - t) * 1e3)
    for sess, _, _ in sessions:
        sess.close()
    return [float(np.median(ts)) for ts in times]


def bench(name):
    """Rows (one per channel_divisible) and the unprunable reasons of one model."""
    size = FLAGS.image_size
    gd, inp, out = frozen_model(name, size)
    specs = {inp: ((1, size, size, 3), "float32")}
    t_an, a = best_of(lambda: tf1prune.analyze(gd, specs, [out]), FLAGS.repeats)
    share, share_no_out, reasons = prunable_share(a, out)
    base = flops.count(a)
    size0 = len(gd.SerializeToString())
    rows = []
    for text in FLAGS.divisible:
        text = text.strip()
        div = spec_lib.make_spec(a, sparsity=FLAGS.sparsity, channel_divisible=text).channel_divisible

        def run():
            s = spec_lib.make_spec(a, sparsity=FLAGS.sparsity, channel_divisible=text)
            return slim.apply_slim(a.plan(s))
        t_slim, slim_gd = best_of(run, FLAGS.repeats)
        after = flops.count(tf1prune.analyze(slim_gd, specs, [out]))
        orig_ms, slim_ms = latency([gd, slim_gd], inp, out, (FLAGS.batch, size, size, 3),
                                   FLAGS.warmup, FLAGS.runs)
        macs_red = 1 - after.macs / base.macs
        rows.append([name, "auto->%d" % div if divisible.is_auto(text) else div, "%.2f" % t_an, "%.2f" % t_slim, "%.1f%%" % (100 * share),
                     "%.1f%%" % (100 * share_no_out), "%.2f->%.2f" % (base.macs / 1e9, after.macs / 1e9),
                     "%.1f%%" % (100 * macs_red), "%.1f->%.1f" % (base.params / 1e6, after.params / 1e6),
                     "%.1f->%.1f" % (size0 / 1e6, len(slim_gd.SerializeToString()) / 1e6),
                     "%.1f" % orig_ms, "%.1f" % slim_ms, "%.2fx" % (orig_ms / slim_ms),
                     "%.2f" % ((1 - slim_ms / orig_ms) / macs_red),
                     "%.2f" % ((orig_ms / slim_ms) / (base.macs / after.macs))])
    return rows, reasons


HEADER = ["model", "div", "analyze s", "slim s", "prunable", "prunable (no output)", "GMACs",
          "MACs cut", "params M", "file MB", "orig ms", "slim ms", "speed-up", "latency/MACs", "speed-up/MACs ratio"]


def table(rows, markdown):
    """Plain-text or Markdown table."""
    rows = [HEADER] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines[:1] + ["|" + "---|" * len(HEADER)] + lines[1:])
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv):
    del argv
    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1]] + sys.argv))
    print("tensorflow %s, %d cores (load avg %.1f), %d threads, batch %d, %d warm-up + %d timed runs, best of %d;"
          " goals: analyze and slim <= 2 s, prunable 100%% but the output, latency/MACs >= 0.8"
          % (tf.__version__, os.cpu_count(), os.getloadavg()[0], FLAGS.threads, FLAGS.batch, FLAGS.warmup,
             FLAGS.runs, FLAGS.repeats), flush=True)
    rows, notes = [], []
    for name in FLAGS.models:
        r, reasons = bench(name)
        rows += r
        notes += ["%s unprunable: %s" % (name, reason) for reason in reasons] or ["%s: all groups prunable" % name]
        print("(%s done)" % name, flush=True)
    print(table(rows, FLAGS.markdown))
    print("\nlatency/MACs = (1 - slim_ms/orig_ms) / (1 - slim_MACs/orig_MACs); prunable = share of conv/dense "
          "output channels in prunable groups (no output: without the layers feeding the graph output)")
    print("\n".join(("- " if FLAGS.markdown else "") + n for n in notes))


if __name__ == "__main__":
    app.run(main)
