"""A visual pruning report: one self-contained ``index.html`` and the PNG figures it shows.

Example::

    tf1prune.write_report("report/", analysis, spec, sensitivity=runner.sens,
                          sizes=(os.path.getsize("model.pb"), os.path.getsize("slim.pb")))

The page holds the sensitivity curve of every measured group (the metric against the pruned ratio,
one line per analysis, e.g. without and with BatchNorm recalibration, the chosen ratio marked), the
per-layer channels, MACs and params before and after (bar charts and a table), the inverted-residual
and squeeze-excitation blocks, the unprunable groups with their reasons, and the totals (MACs, params,
file sizes and latency when given).  Figures need matplotlib (``pip install "tf1prune[report]"``); it
is loaded by :func:`write_report` only, with its Agg canvas (no pyplot, no global backend change).
"""
import collections
import html
import io
import math
import os
import re

import numpy as np

from tf1prune.core import flops
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write

PANELS = 20        # sensitivity panels per figure (4 columns)
BARS = 40          # layers per bar chart
_FIGURE = re.compile(r"^(sensitivity|layers)_\d+\.png$")
_Row = collections.namedtuple("_Row", "node kind group in_before in_after out_before out_after macs_before macs_after "
                                      "params_before params_after")
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;vertical-align:top}th{background:#f2f2f2;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{font-family:monospace;overflow-wrap:anywhere;word-wrap:break-word;max-width:520px}
img{max-width:100%;display:block;margin:8px 0}.note{color:#666;font-size:13px}
"""


def require_matplotlib():
    """Import matplotlib's Agg canvas, or raise a :class:`Tf1PruneError` saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise Tf1PruneError('the report needs matplotlib: pip install "tf1prune[report]"')
    return Figure, FigureCanvasAgg


def _esc(value):
    return html.escape(str(value), quote=True)


def _num(value):
    return "" if value is None else "{:,}".format(int(value)) if float(value).is_integer() else "%.3f" % value


def _change(before, after):
    if before is None or after is None or not before:
        return ""
    return "%+.1f%%" % (100.0 * (after - before) / before)


def _short(name, width=40):
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _table(headers, rows, numeric=(), names=()):
    """An HTML table; cells are escaped; columns in ``numeric`` are right-aligned, in ``names`` monospace."""
    out = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % _esc(h) for h in headers)]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else ' class="name"' if i in names else ""
            cells.append("<td%s>%s</td>" % (cls, _esc(cell)))
        out.append("<tr>%s</tr>" % "".join(cells))
    return "\n".join(out) + "</table>"


def _curves(sens, gid):
    """[(ratio, metric)] of one analysis for group ``gid``: the baseline at 0, then the measured ratios."""
    measured = sorted((float(k), v) for k, v in sens.results.get(str(gid), {}).items() if v is not None)
    return ([(0.0, sens.baseline)] if sens.baseline is not None else []) + measured


def _label(sens, sensitivities):
    calibrated = lambda s: bool(getattr(s, "calibrated", False))  # noqa: E731
    label = "with BN recalibration" if calibrated(sens) else "without BN recalibration"
    same = [s for s in sensitivities if calibrated(s) == calibrated(sens)]
    return label if len(same) == 1 else "%s (%d)" % (label, same.index(sens) + 1)


def _save(figure, canvas_class, path):
    canvas_class(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def _sensitivity_figures(directory, groups, sensitivities, chosen, figure_class, canvas_class):
    """Small multiples of the measured groups' curves, PANELS per PNG; returns the file names."""
    measured = [g for g in groups if any(_curves(s, g.id)[1:] for s in sensitivities)]
    names, colors = [], ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    higher = getattr(sensitivities[0], "higher_is_better", True)
    for start in range(0, len(measured), PANELS):
        chunk = measured[start:start + PANELS]
        cols = max(2, min(4, len(chunk)))   # two at least: room for the legend
        rows = int(math.ceil(len(chunk) / float(cols)))
        figure = figure_class(figsize=(3.2 * cols, 2.5 * rows + 0.7))
        axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        for ax in axes.flat[len(chunk):]:
            ax.set_visible(False)
        for ax, g in zip(axes.flat, chunk):
            for k, sens in enumerate(sensitivities):
                points = _curves(sens, g.id)
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, color=colors[k % len(colors)],
                            label=_label(sens, sensitivities))
            ax.axvline(chosen[g.id], color="#d62728", linestyle="--", linewidth=1.2, label="chosen ratio")
            ax.set_title("group %d: %s\n%d ch, chosen %.2f"
                         % (g.id, _short(g.nodes[0], 30), g.channels, chosen[g.id]), fontsize=8)
            ax.set_xlim(-0.03, 1.0)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for col in range(min(cols, len(chunk))):   # the lowest panel of each column shows the ratios
            ax = axes.flat[max(i for i in range(len(chunk)) if i % cols == col)]
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("pruned ratio", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("metric (%s is better)" % ("higher" if higher else "lower"), fontsize=8)
        handles = {}
        for ax in axes.flat[:len(chunk)]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        labels = [_label(s, sensitivities) for s in sensitivities if _label(s, sensitivities) in handles]
        labels.append("chosen ratio")
        figure.legend([handles[k] for k in labels], labels, loc="upper center", ncol=len(labels), fontsize=9,
                      frameon=False)
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / figure.get_figheight()))
        names.append("sensitivity_%d.png" % (len(names) + 1))
        _save(figure, canvas_class, os.path.join(directory, names[-1]))
    return names


def _layer_figures(directory, rows, figure_class, canvas_class):
    """Horizontal bars of MACs and output channels before/after, BARS layers per PNG."""
    from matplotlib.ticker import EngFormatter
    names, top = [], {k: 1.04 * max([getattr(r, k) or 0 for r in rows] + [1])   # one scale for all PNGs
                      for k in ("out_before", "macs_before")}
    for start in range(0, len(rows), BARS):
        chunk = rows[start:start + BARS]
        figure = figure_class(figsize=(12.5, 0.24 * len(chunk) + 1.4))
        macs_ax, ch_ax = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (3, 2)})
        y = np.arange(len(chunk))
        for ax, key, what, color in ((macs_ax, "macs", "MACs", "#1f77b4"),
                                     (ch_ax, "out", "output channels", "#ff7f0e")):
            ax.barh(y, [getattr(r, key + "_before") or 0 for r in chunk], height=0.8, color="#c7c7c7", label="before")
            ax.barh(y, [getattr(r, key + "_after") or 0 for r in chunk], height=0.5, color=color, label="after")
            ax.set_xlim(0, top[key + "_before"])
            ax.set_title(what, fontsize=10, loc="left")
            ax.tick_params(labelsize=8)
            ax.grid(axis="x", alpha=0.3)
            ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False,
                      borderaxespad=0.1)
        macs_ax.xaxis.set_major_formatter(EngFormatter())
        macs_ax.set_yticks(y)
        macs_ax.set_yticklabels([_short(r.node, 44) for r in chunk], fontsize=8)
        macs_ax.set_ylim(len(chunk) - 0.5, -0.5)
        figure.tight_layout()
        names.append("layers_%d.png" % (len(names) + 1))
        _save(figure, canvas_class, os.path.join(directory, names[-1]))
    return names


def _layer_rows(analysis, keep, before, after):
    """A :class:`_Row` per layer (channels of conv, dense and depthwise layers only)."""
    after_of = {count.node: count for count in after.layers}
    rows = []
    for layer, b in zip(analysis.layers, before.layers):
        a = after_of.get(layer.node)
        channels = [None] * 4
        if layer.kind in ("conv", "transposed_conv", "dense", "depthwise") and layer.dims:
            dims = [layer.dims[0] if len(layer.dims) > 1 else None, layer.dims[-1]]
            for i, dim in enumerate(dims):
                if dim is not None:
                    channels[2 * i:2 * i + 2] = [flops._kept(analysis, dim, None), flops._kept(analysis, dim, keep)]
        group = analysis.group_of_tensor(layer.node + ":0") or analysis.group_by_node(layer.node)
        rows.append(_Row(layer.node, layer.kind, "" if group is None else group.id, channels[0], channels[1],
                         channels[2], channels[3], b.macs, a.macs if a else None, b.params, a.params if a else None))
    return rows


def write_report(directory, analysis, choice=None, sensitivity=None, before=None, after=None, sizes=None,
                 latency_ms=None, title="tf1prune pruning report", refinement=None, layer_latency=None):
    """Write ``directory/index.html`` and its PNG figures; returns the path of ``index.html``.

    Args:
      directory: created if needed; figures of an earlier report there are replaced.
      analysis: the :func:`~tf1prune.analyze` result of the unpruned graph.
      choice: the kept channels (a :class:`~tf1prune.core.choice.Choice`, e.g. a spec; None: nothing pruned).
      sensitivity: a :class:`~tf1prune.workflows.sensitivity.Sensitivity` or a list of them (e.g. without and
        with BatchNorm recalibration), drawn as one curve each.
      before, after: :func:`~tf1prune.count_macs` reports (default: counted from ``analysis``).
      sizes: ``(bytes before, bytes after)``, or ``{what: (before, after)}`` for several files.
      latency_ms: ``(before, after)`` measured latency in milliseconds.
      refinement: the :class:`~tf1prune.apply.refine.Refinement` of the written graph: each layer's
        reconstruction error before and after the fit, the compensated parameters, what was skipped.
      layer_latency: ``[(layer, ms before, ms after)]`` from a latency model (each layer timed alone).
    """
    figure_class, canvas_class = require_matplotlib()
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise Tf1PruneError("the report folder %r is a file" % directory)
    os.makedirs(directory, exist_ok=True)
    keep = analysis.plan(choice).keep
    before = before or flops.count(analysis)
    after = after or flops.count(analysis, choice)
    if sensitivity is None:
        sensitivities = []
    else:
        sensitivities = list(sensitivity) if isinstance(sensitivity, (list, tuple)) else [sensitivity]
    kept = {g.id: int(np.count_nonzero(keep[np.asarray(g.units, np.int64)])) for g in analysis.groups}
    chosen = {g.id: 1.0 - kept[g.id] / float(g.channels) if g.channels else 0.0 for g in analysis.groups}
    prunable = [g for g in analysis.groups if g.prunable]
    layers = _layer_rows(analysis, keep, before, after)

    written = _sensitivity_figures(directory, prunable, sensitivities, chosen, figure_class, canvas_class) \
        if sensitivities else []
    sens_images = list(written)
    layer_images = _layer_figures(directory, layers, figure_class, canvas_class)
    written += layer_images

    body = ["<h1>%s</h1>" % _esc(title),
            '<p class="note">%d layers, %d channel groups (%d prunable), %d blocks; graph digest %s.</p>'
            % (len(analysis.layers), len(analysis.groups), len(prunable), len(analysis.blocks),
               _esc(analysis.digest()))]
    totals = [("MACs", before.macs, after.macs), ("params", before.params, after.params)]
    if isinstance(sizes, dict):
        totals += [("%s size (bytes)" % what, b, a) for what, (b, a) in sorted(sizes.items())]
    elif sizes is not None:
        totals.append(("file size (bytes)", sizes[0], sizes[1]))
    if latency_ms is not None:
        totals.append(("latency (ms)", latency_ms[0], latency_ms[1]))
    body += ['<h2 id="totals">Totals</h2>',
             _table(["", "before", "after", "change"], [(w, _num(b), _num(a), _change(b, a)) for w, b, a in totals],
                    numeric=(1, 2, 3))]
    if not before.complete:
        body.append('<p class="note">MACs count the counted layers only; not counted: %s</p>'
                    % _esc("; ".join(why for _, why in before.uncounted)))

    body.append('<h2 id="sensitivity">Sensitivity</h2>')
    if sens_images:
        body.append('<p class="note">The metric with one group pruned at a time, against the ratio of its channels '
                    'pruned (0: the baseline), per analysis; the dashed red line is the ratio chosen.</p>')
        body += ['<img src="%s" alt="sensitivity curves %d">' % (_esc(n), i + 1) for i, n in enumerate(sens_images)]
    else:
        body.append('<p class="note">No sensitivity %s in this report.</p>'
                    % ("measurement" if sensitivities else "analysis"))
    if sensitivities:
        body.append(_table(["analysis", "baseline metric", "ratios", "evaluations", "failed (not drawn)"],
                           [(_label(s, sensitivities), "" if s.baseline is None else "%.6g" % s.baseline,
                             ", ".join("%g" % r for r in sorted({float(k) for v in s.results.values() for k in v})),
                             sum(len(v) for v in s.results.values()),
                             sum(len(v) for v in getattr(s, "errors", {}).values())) for s in sensitivities],
                           numeric=(1, 3, 4)))

    body.append('<h2 id="groups">Prunable groups</h2>')
    body.append(_table(["group", "channels", "kept", "chosen ratio", "producers"],
                       [(g.id, g.channels, kept[g.id], "%.3f" % chosen[g.id], ", ".join(g.nodes)) for g in prunable],
                       numeric=(0, 1, 2, 3), names=(4,)))

    body.append('<h2 id="unprunable">Unprunable groups</h2>')
    fixed = [g for g in analysis.groups if not g.prunable]
    body.append(_table(["group", "channels", "producers", "reasons"],
                       [(g.id, g.channels, ", ".join(g.nodes), g.reason) for g in fixed], numeric=(0, 1), names=(2,))
                if fixed else '<p class="note">Every group is prunable.</p>')

    body.append('<h2 id="blocks">Blocks</h2>')
    body.append(_table(["type", "internal group", "channels", "kept", "nodes"],
                       [(b.type.replace("_", " "), "" if b.group is None else b.group,
                         "" if b.group is None else analysis.groups[b.group].channels,
                         "" if b.group is None else kept[b.group], ", ".join(b.nodes)) for b in analysis.blocks],
                       numeric=(1, 2, 3), names=(4,))
                if analysis.blocks else '<p class="note">No inverted-residual or squeeze-excitation block.</p>')

    body += _refinement_section(refinement)
    if layer_latency:
        body.append('<h2 id="latency">Latency per layer</h2>')
        body.append('<p class="note">Each layer\'s op timed alone on this machine at its kept widths '
                    '(interpolated between the timed widths); the end-to-end figures are in the totals.</p>')
        body.append(_table(["layer", "ms before", "ms after", "change"],
                           [(n, "%.3f" % a, "%.3f" % b, _change(a, b)) for n, a, b in layer_latency],
                           numeric=(1, 2, 3), names=(0,)))

    body.append('<h2 id="layers">Layers</h2>')
    body += ['<img src="%s" alt="per-layer MACs and channels %d">' % (_esc(n), i + 1)
             for i, n in enumerate(layer_images)]
    body.append(_table(["layer", "kind", "out group", "in ch.", "out ch.", "MACs before", "MACs after", "change",
                        "params before", "params after"],
                       [(r.node, r.kind, r.group, _arrow(r.in_before, r.in_after), _arrow(r.out_before, r.out_after),
                         _num(r.macs_before), _num(r.macs_after), _change(r.macs_before, r.macs_after),
                         _num(r.params_before), _num(r.params_after)) for r in layers],
                       numeric=(2, 3, 4, 5, 6, 7, 8, 9), names=(0,)))

    for name in os.listdir(directory):   # figures of an earlier report that this one does not have
        if _FIGURE.match(name) and name not in written:
            os.remove(os.path.join(directory, name))
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title><style>%s</style></head>'
            '<body>\n%s\n</body></html>\n' % (_esc(title), _CSS, "\n".join(body)))
    path = os.path.join(directory, "index.html")
    atomic_write(path, page.encode("utf-8"))
    return path


def _refinement_section(refinement):
    """The post-training section: reconstruction errors per layer, compensation, skipped layers."""
    body = ['<h2 id="refinement">Post-training refinement</h2>']
    if refinement is None:
        return body + ['<p class="note">Not recorded in this report.</p>']
    fit = refinement.reconstruction
    if fit is not None and fit.fits:
        body.append('<p class="note">Least-squares reconstruction: each layer\'s output error relative to the '
                    'original layer\'s on the calibration samples, with its kept weights as they were and after '
                    'the fit (%s).</p>' % ("layer by layer on the pruned model's inputs" if fit.waves > 1
                                           else "all layers at once on the original model's inputs"))
        body.append(_table(["layer", "samples", "error before", "error after"],
                           [(f.layer, f.samples, "%.4f" % f.before, "%.4f" % f.after) for f in fit.fits],
                           numeric=(1, 2, 3), names=(0,)))
    skipped = list(refinement.skipped) + (list(fit.skipped) if fit is not None else [])
    notes = []
    if refinement.compensated:
        notes.append("bias compensation shifted %d parameters" % len(refinement.compensated))
    if refinement.statistics:
        notes.append("%d BatchNorm statistics were re-estimated" % len(refinement.statistics))
    kd = getattr(refinement, "distillation", None)
    if kd is not None and kd.epoch:
        notes.append("distillation trained %d parameters, keeping epoch %d of %d steps: loss to the original outputs "
                     "%.4g \u2192 %.4g" % (len(kd.updates), kd.epoch, kd.steps, kd.before, kd.after))
    elif kd is not None and kd.steps:
        notes.append("distillation kept nothing: no epoch of %d steps lowered the loss to the original outputs "
                     "(%.4g)" % (kd.steps, kd.before))
    if not notes and not (fit is not None and fit.fits):
        notes.append("nothing was changed besides removing channels")
    text = "; ".join(notes)
    body.append('<p class="note">%s.</p>' % _esc(text[:1].upper() + text[1:]))
    if skipped:
        body.append(_table(["layer", "left as it was because"], skipped, names=(0,)))
    return body


def _arrow(before, after):
    if before is None:
        return ""
    return "%d" % before if after == before else "%d \u2192 %d" % (before, after)
