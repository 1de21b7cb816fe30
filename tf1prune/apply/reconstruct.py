"""Least-squares reconstruction: refit each layer's kept input weights so that it reproduces the
original layer's output on calibration data (channel pruning, He et al. 2017; ThiNet; AIMET).

For every conv (``Conv2D``, SAME or VALID padding) and dense layer that loses input channels, the
layer's output before its bias is ``patches @ W``.  On sampled output positions of the calibration
batches, tf1prune solves the ridge least squares

    ``min || X_pruned · W' + b - X_original · W ||² + λ ||W'||²``

where ``X_pruned`` holds the pruned model's own input patches (kept channels only, the layers
before it already reconstructed) and ``X_original · W`` is the original layer's output at the same
positions; ``b`` (an intercept) goes into the bias or BatchNorm mean right after the layer when
there is one.  On models small enough, layers are refitted one at a time in topological order, each
on the pruned model's own inputs with the layers before it refitted (TensorFlow runs only what the
layer needs), so errors do not compound; on big ones, every layer at once on the original model's
inputs (kept channels only), in one pass over the batches.
Refitted layer by layer, the layers after the first refitted one are refitted too (their inputs
changed even where none of their channels did), depthwise convolutions per channel (each channel's
taps on its own input channel); 3-D and transposed convolutions and explicit padding are left as
they are, with the reason.

The results are parameter updates for :meth:`~tf1prune.core.plan.Plan.with_updates`: the sparse and
slim graphs, the session and checkpoints all get them.

Example::

    result = reconstruct(plan, batches)
    slim_gd = slim.apply_slim(plan.with_updates(result.updates))
    print(result.table())
"""
import collections

import numpy as np

from tf1prune import progress as progress_lib
from tf1prune.apply import calibrate
from tf1prune.apply.compensate import absorber, input_tensor
from tf1prune.core.rules import Role, build
from tf1prune.core.activations import LayerRows
from tf1prune.core.rules.layers import patch_geometry

LayerFit = collections.namedtuple("LayerFit", "layer samples before after")
LayerFit.__doc__ = ("A refitted layer: samples used, and the relative squared error of its output against the "
                    "original's before (the kept weights as they were) and after the fit.")


class Reconstruction(collections.namedtuple("Reconstruction", "updates fits skipped waves statistics")):
    """``updates``: parameter -> new full-shape value; ``fits``: a :class:`LayerFit` per refitted layer;
    ``skipped``: ``(layer, why)``; ``waves``: the passes over the batches (one per layer when refitted
    layer by layer); ``statistics``: the BatchNorm statistics re-estimated afterwards (among the
    updates; empty when not re-estimated)."""

    def table(self):
        lines = ["%-44s %8s %10s %10s" % ("layer", "samples", "err before", "err after")]
        lines += ["%-44s %8d %10.4f %10.4f" % (f.layer[-44:], f.samples, f.before, f.after) for f in self.fits]
        lines += ["%-44s skipped: %s" % (layer[-44:], why) for layer, why in self.skipped]
        return "\n".join(lines)


class _Site:
    """One layer to refit: its input rows at sampled output positions, and the normal equations so far."""

    def __init__(self, analysis, plan, layer, values, graph, positions):
        self.layer, self.kernel_name = layer, layer.kernel
        self.kernel = np.asarray(values(layer.kernel), np.float64)
        self.kept = plan.kept_positions(layer.kernel).get(layer.in_axis)
        if self.kept is None:
            self.kept = np.ones(self.kernel.shape[layer.in_axis], bool)
        self.sampler = LayerRows(analysis, layer, graph, positions)
        self.rows, self.feed, self.grid = self.sampler.rows, self.sampler.feed, self.sampler.grid
        if self.grid is None:
            self.weights = self.kernel if layer.in_axis == 0 else self.kernel.T
            self.columns = self.kept
        else:
            self.weights = self.kernel.reshape(-1, self.kernel.shape[-1])
            self.columns = np.tile(self.kept, self.kernel.shape[0] * self.kernel.shape[1])
        d = int(self.columns.sum()) + 1
        self.a, self.b, self.yy, self.samples = np.zeros((d, d)), np.zeros((d, self.weights.shape[1])), 0.0, 0

    def add(self, original, pruned):
        """Accumulate one batch (products in float32, sums in float64)."""
        y = np.asarray(original, np.float32) @ self.weights.astype(np.float32)
        x = np.concatenate([np.asarray(pruned, np.float32)[:, self.columns], np.ones((len(y), 1), np.float32)], 1)
        self.a += x.T @ x
        self.b += x.T @ y
        self.yy += float(np.square(y, dtype=np.float64).sum())
        self.samples += len(y)

    def solve(self, ridge, intercept):
        d = self.a.shape[0] - 1
        old = np.concatenate([self.weights[self.columns], np.zeros((1, self.weights.shape[1]))], 0)
        a = self.a if intercept else self.a[:d, :d]
        b = self.b if intercept else self.b[:d]
        lam = ridge * max(np.trace(a[:d, :d]) / max(d, 1), 1e-12)
        reg = np.eye(len(a)) * lam
        if intercept:
            reg[-1, -1] = 0.0
        w = np.linalg.solve(a + reg, b)
        if not intercept:
            w = np.concatenate([w, np.zeros((1, w.shape[1]))], 0)

        def error(m):
            return float((np.sum(m * (self.a @ m)) - 2 * np.sum(m * self.b) + self.yy) / max(self.yy, 1e-12))
        if intercept:   # the kept weights as they were, with their best shift: the fit must beat it
            shifted = old.copy()
            shifted[d] = (self.b[d] - self.a[d, :d] @ old[:d]) / max(self.a[d, d], 1.0)
        else:
            shifted = old
        before, after = error(old), error(w)
        if error(shifted) <= after:   # a ridge fit can lose to weights that were already right
            w, after = shifted, error(shifted)
        return w[:d], w[d], before, after

    def kernel_value(self, kept_weights):
        full = np.zeros_like(self.weights)
        full[self.columns] = kept_weights
        if self.grid is None:
            return full if self.layer.in_axis == 0 else full.T
        return full.reshape(self.kernel.shape)


class _DepthwiseSite:
    """A depthwise layer to refit: each channel's ``kh·kw`` taps (and multiplier columns) fitted on its
    own input channel, at sampled output positions."""

    def __init__(self, analysis, plan, layer, values, graph, positions):
        self.layer, self.kernel_name = layer, layer.kernel
        self.kernel = np.asarray(values(layer.kernel), np.float64)          # [kh, kw, C, M]
        kept = plan.kept_positions(layer.kernel).get(2)
        self.kept = np.ones(self.kernel.shape[2], bool) if kept is None else kept
        self.sampler = LayerRows(analysis, layer, graph, positions)
        self.rows, self.feed = self.sampler.rows, self.sampler.feed
        taps, channels, mult = self.kernel.shape[0] * self.kernel.shape[1], self.kernel.shape[2], self.kernel.shape[3]
        self.weights = self.kernel.reshape(taps, channels, mult)
        self.a = np.zeros((channels, taps + 1, taps + 1))
        self.b = np.zeros((channels, taps + 1, mult))
        self.yy, self.samples = np.zeros(channels), 0

    def _split(self, rows):
        x = np.asarray(rows, np.float32).reshape(len(rows), self.weights.shape[0], self.weights.shape[1])
        return np.concatenate([x, np.ones((len(x), 1, x.shape[2]), np.float32)], 1)    # [S, taps + 1, C]

    def add(self, original, pruned):
        y = np.einsum("stc,tcm->scm", np.asarray(original, np.float32).reshape(
            len(original), *self.weights.shape[:2]), self.weights.astype(np.float32))
        x = self._split(pruned)
        self.a += np.einsum("stc,suc->ctu", x, x)
        self.b += np.einsum("stc,scm->ctm", x, y)
        self.yy += np.square(y, dtype=np.float64).sum(axis=(0, 2))
        self.samples += len(y)

    def solve(self, ridge, intercept):
        taps = self.weights.shape[0]
        old = np.concatenate([self.weights, np.zeros((1,) + self.weights.shape[1:])], 0).transpose(1, 0, 2)
        new = old.copy()
        d = taps + 1 if intercept else taps

        def error(c, m):
            return float(np.sum(m * (self.a[c] @ m)) - 2 * np.sum(m * self.b[c]) + self.yy[c])
        before = after = 0.0
        for c in np.flatnonzero(self.kept):
            a, b = self.a[c][:d, :d], self.b[c][:d]
            reg = np.eye(d) * ridge * max(np.trace(a[:taps, :taps]) / taps, 1e-12)
            reg[taps:, taps:] = 0.0
            w = np.zeros_like(old[c])
            w[:d] = np.linalg.solve(a + reg, b)
            e_old, e_new = error(c, old[c]), error(c, w)
            before += e_old
            if e_new < e_old:
                new[c], e_old = w, e_new
            after += e_old
        total = max(float(self.yy[self.kept].sum()), 1e-12)
        new = new.transpose(1, 0, 2)                 # [taps + 1, C, M]
        return new[:taps], new[taps].reshape(-1), before / total, after / total

    def kernel_value(self, kept_weights):
        return kept_weights.reshape(self.kernel.shape)


def _layers(plan, nodes=None, downstream=False):
    """``(layers to refit, [(layer, why not)])``: the conv and dense layers that lose input channels
    (``downstream``: also those after the first of them, whose inputs the pruning changes)."""
    analysis = plan.analysis
    nodes = nodes if nodes is not None else analysis.view.nodes
    order = {name: i for i, name in enumerate(analysis.view.order)}
    chosen, skipped, first = [], [], None
    for layer in sorted(analysis.layers, key=lambda layer: order.get(layer.node, 0)):
        if layer.kernel is None or layer.in_axis is None or layer.path:
            continue
        kept = plan.kept_positions(layer.kernel).get(layer.in_axis)
        roles = {s.axis: s.role for s in plan.params.get(layer.kernel, ())}
        loses = kept is not None and not kept.all() and roles.get(layer.in_axis) is Role.KERNEL_IN
        if loses and first is None:
            first = order.get(layer.node, 0)
        if not loses and not (downstream and first is not None and (
                layer.kind == "depthwise" or layer.kind in ("conv", "dense") and (kept is None or kept.all()))):
            continue
        if layer.kind == "depthwise" and patch_geometry(analysis.view, analysis.view.nodes[layer.node],
                                                        depthwise=True) is None:
            skipped.append((layer.node, "%s: only SAME or VALID padding is refitted" % layer.kind))
        elif layer.kind == "conv" and patch_geometry(analysis.view, analysis.view.nodes[layer.node]) is None:
            skipped.append((layer.node, "%s: only Conv2D with SAME or VALID padding is refitted"
                            % analysis.view.nodes[layer.node].op))
        elif layer.kind not in ("conv", "dense", "depthwise"):
            skipped.append((layer.node, "a %s layer is not refitted" % layer.kind))
        elif input_tensor(analysis, layer) is None or layer.kernel not in nodes:
            skipped.append((layer.node, "its input or kernel is not in the graph"))
        else:
            chosen.append(layer)
    return chosen, skipped


def refittable(plan, downstream=False):
    """The names of the layers :func:`reconstruct` refits for ``plan``."""
    return [layer.node for layer in _layers(plan, downstream=downstream)[0]]


def auto_sequential(analysis, images, layers, budget=3e12):
    """Refit layer by layer on the pruned model's own inputs when that costs at most ``budget``
    multiply-accumulates (about a layer's prefix of the model, twice, per layer and image), else refit
    every layer at once on the original model's inputs (one pass)."""
    from tf1prune.core import flops
    return layers * flops.count(analysis).macs * max(images, 1) <= budget


def reconstruct(plan, calibration_data, graph_def=None, values=None, positions=32, samples=16384, ridge=1e-3,
                sequential=None, recalibrate=None, statistics_images=256, progress=None, seed=0,
                downstream=None):
    """Refit the layers that ``plan`` takes input channels from (see the module docstring); returns a
    :class:`Reconstruction` whose updates include the plan's own and, with ``recalibrate``, every
    BatchNorm's statistics re-estimated for the result (on the first ``statistics_images`` inputs:
    plenty for per-channel moments, and a fraction of the cost on big models).  ``recalibrate``
    None: only when the layers were refitted at once; refitted one by one on the pruned model's own
    inputs, the BatchNorms already see what the original's did, and re-estimating them would move the
    model away from the original wherever the calibration inputs are unlike the training data.

    A convolution is fitted on ``positions`` output positions per image, fewer when there are many
    images (about ``samples`` rows per layer in all); ``ridge`` scales the ridge term (relative to
    the mean squared input).

    ``sequential``: True refits one layer at a time, in topological order, on the pruned model's own
    inputs (the layers before it already refitted: errors do not compound); False refits all at once
    on the original model's inputs restricted to the kept channels (one pass: for big models); None
    chooses by cost (:func:`auto_sequential`).  ``downstream`` (layer by layer only): also refit
    the layers after the first refitted one whose inputs keep all their channels, and depthwise
    layers; None: when affordable by the same cost rule."""
    import tensorflow.compat.v1 as tf
    analysis = plan.analysis
    graph_def = graph_def or analysis.view.graph_def
    nodes = {n.name: n for n in graph_def.node}
    values = values or (lambda name: build.const_value(nodes[name]))
    batches = calibrate.feed_batches(calibration_data)
    images = sum(len(next(iter(b.values()))) for b in batches)
    order = {name: i for i, name in enumerate(analysis.view.order)}
    chosen, skipped = _layers(plan, nodes)
    if sequential is None:
        sequential = auto_sequential(analysis, images, len(chosen))
    if sequential and downstream is not False:
        more = _layers(plan, nodes, downstream=True)[0]
        if downstream or auto_sequential(analysis, images, len(more)):
            chosen = more
    chosen.sort(key=lambda layer: order.get(layer.node, 0))
    positions = max(1, min(positions, -(-samples // max(images, 1))))
    if recalibrate is None:
        recalibrate = not sequential
    waves = [[i] for i in range(len(chosen))] if sequential else [list(range(len(chosen)))] if chosen else []
    updates, fits = dict(plan.updates), []
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    steps = progress_lib.Steps(len(chosen), progress, "reconstruct")
    rng = np.random.RandomState(seed)
    with tf.Session(graph=graph, config=calibrate.session_config()) as sess:
        for wave in waves:
            with graph.as_default():
                sites = [(_DepthwiseSite if chosen[i].kind == "depthwise" else _Site)(
                    analysis, plan, chosen[i], values, graph, positions) for i in wave]
            pruned = {name + ":0": value for name, value in plan.with_updates(updates).sparse_values(values, nodes).items()}
            for feed in batches:
                batch = len(next(iter(feed.values())))
                extra = {}
                for site in sites:
                    extra.update(site.feed(rng, batch))
                fetches = [site.rows for site in sites]
                original = sess.run(fetches, {**feed, **extra})
                mine = sess.run(fetches, {**feed, **extra, **pruned}) if sequential else original
                for site, o, p in zip(sites, original, mine):
                    site.add(o, p)
            for site in sites:
                target = absorber(analysis, site.layer, values)
                kept_weights, bias, before, after = site.solve(ridge, target is not None)
                updates[site.kernel_name] = site.kernel_value(kept_weights).astype(
                    np.asarray(values(site.kernel_name)).dtype)
                if target is not None:
                    base = np.asarray(values(target.param), np.float64)   # the fit replaces any earlier shift
                    updates[target.param] = (base.reshape(-1) + target.sign * bias).reshape(base.shape).astype(
                        np.asarray(values(target.param)).dtype)
                fits.append(LayerFit(site.layer.node, site.samples, before, after))
                steps.tick(site.layer.node)
    statistics = {}
    if recalibrate:
        patches = plan.with_updates(updates).sparse_values(values, nodes)
        with calibrate.Calibrator(analysis, graph_def) as calibrator:
            statistics = calibrator.statistics(_first(batches, statistics_images), patches)
        updates.update(statistics)
    return Reconstruction(updates, fits, skipped, len(waves), statistics)



def _first(batches, images):
    """The leading batches holding at least ``images`` inputs (all of them if fewer)."""
    out, seen = [], 0
    for feed in batches:
        if seen >= images:
            break
        out.append(feed)
        seen += len(next(iter(feed.values())))
    return out
