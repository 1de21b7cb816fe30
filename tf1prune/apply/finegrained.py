"""Fine-grained (weight-level) masks with TFMOT's semantics, and their appliers to frozen graphs and
checkpoints.

- :func:`magnitude_mask`: the 0/1 mask that keeps exactly ``round(n * (1 - sparsity))`` weights (at
  least one) by magnitude; with ``block_size`` the magnitudes are pooled (``AVG`` or ``MAX``) over
  blocks of the last two axes and whole blocks are kept; with ``m_by_n=(N, M)`` the N largest of
  every M consecutive weights along the input-channel axis are kept.

Example::

    mask = magnitude_mask(kernel, 0.75)                     # unstructured
    mask = magnitude_mask(kernel, 0.5, m_by_n=(2, 4), in_axis=2)   # 2:4 along the input channels
"""
import collections

import numpy as np

from tf1prune.choose.allocation import keep_count
from tf1prune.errors import Tf1PruneError, check_fraction

POOLING = ("AVG", "MAX")


def _top(scores, keep):
    """0/1 mask of the ``keep`` largest scores (ties: the earlier position wins)."""
    order = np.argsort(-scores.reshape(-1), kind="stable")
    mask = np.zeros(scores.size, np.float32)
    mask[order[:keep]] = 1
    return mask.reshape(scores.shape)


def check_block(shape, block_size):
    """``block_size`` as a pair that fits the last two axes of ``shape``."""
    try:
        rows, cols = (int(b) for b in block_size)
    except (TypeError, ValueError):
        raise Tf1PruneError("block_size must be a pair of integers, got %r" % (block_size,))
    if rows < 1 or cols < 1:
        raise Tf1PruneError("block_size must be positive, got %r" % (block_size,))
    if (rows, cols) != (1, 1):
        last = ([1] + list(shape))[-2:] if len(shape) < 2 else list(shape[-2:])
        if rows > last[0] or cols > last[1]:
            raise Tf1PruneError("block %dx%d is larger than the weights' last two axes %s" % (rows, cols, last))
    return rows, cols


def check_m_by_n(m_by_n):
    """``(N, M)`` with 0 < N < M."""
    try:
        n, m = (int(v) for v in m_by_n)
    except (TypeError, ValueError):
        raise Tf1PruneError("m_by_n must be a pair (N, M), got %r" % (m_by_n,))
    if not 0 < n < m:
        raise Tf1PruneError("m_by_n=(N, M) needs 0 < N < M, got %r" % (m_by_n,))
    return n, m


def magnitude_mask(weights, sparsity, block_size=(1, 1), block_pooling="AVG", m_by_n=None, in_axis=-2):
    """The 0/1 mask of ``weights`` (see the module docstring); ``in_axis``: the input-channel axis
    of ``m_by_n`` groups (conv ``[kh, kw, in, out]``: 2; dense ``[in, out]``: 0)."""
    w = np.abs(np.asarray(weights, np.float64))
    if m_by_n is not None:
        n, m = check_m_by_n(m_by_n)
        axis = in_axis % w.ndim
        if w.shape[axis] % m:
            raise Tf1PruneError("m_by_n needs the input channels (%d) to be a multiple of %d" % (w.shape[axis], m))
        moved = np.moveaxis(w, axis, -1)
        groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
        order = np.argsort(-groups, axis=-1, kind="stable")
        mask = np.zeros(groups.shape, np.float32)
        np.put_along_axis(mask, order[..., :n], 1.0, axis=-1)
        return np.moveaxis(mask.reshape(moved.shape), -1, axis)
    sparsity = check_fraction("sparsity", sparsity, low_open=False)
    rows, cols = check_block(w.shape, block_size)
    if (rows, cols) == (1, 1):
        return _top(w, keep_count(w.size, sparsity))
    if block_pooling not in POOLING:
        raise Tf1PruneError("block_pooling must be AVG or MAX, got %r" % (block_pooling,))
    shaped = w.reshape((-1,) + w.shape[-2:]) if w.ndim >= 2 else w.reshape(1, 1, -1)
    lead, height, width = shaped.shape
    bh, bw = -(-height // rows), -(-width // cols)
    padded = np.full((lead, bh * rows, bw * cols), np.nan)
    padded[:, :height, :width] = shaped
    blocks = padded.reshape(lead, bh, rows, bw, cols)
    pooled = np.nanmean(blocks, axis=(2, 4)) if block_pooling == "AVG" else np.nanmax(blocks, axis=(2, 4))
    keep_blocks = _top(pooled, keep_count(pooled.size, sparsity))
    mask = np.repeat(np.repeat(keep_blocks, rows, axis=1), cols, axis=2)[:, :height, :width]
    return mask.reshape(w.shape).astype(np.float32)


def satisfied_n_m(weights, in_axis=-2, sizes=(4, 8, 16)):
    """``[(N, M)]``: for each group size M dividing the input channels, the most non-zeros N of any
    group of M consecutive input-channel weights (a weight satisfies N:M when N < M)."""
    w = np.asarray(weights)
    axis = in_axis % w.ndim
    out = []
    for m in sizes:
        if w.shape[axis] % m == 0:
            moved = np.moveaxis(w != 0, axis, -1)
            groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
            out.append((int(groups.sum(-1).max()), m))
    return out


# --- kernels, options, and the appliers to frozen graphs and checkpoints ----------------------------
def layer_kernels(analysis, is_value_source):
    """``[(layer node, kernel source, input-channel axis)]`` of the layers whose kernel is a source."""
    return [(layer.node, layer.kernel, layer.in_axis) for layer in analysis.layers
            if layer.kernel is not None and layer.in_axis is not None and is_value_source(layer.kernel)]


def check_options(kernels, m_by_n=None, block_size=(1, 1), block_pooling="AVG", excludes=()):
    """The options as used, or a one-line error for one that would be ignored or is unknown: ``m_by_n``
    with a block, a pooling without a block, a pooling other than AVG/MAX, an exclude that names no
    layer or kernel of ``kernels`` (see :func:`layer_kernels`)."""
    m_by_n = None if m_by_n is None else check_m_by_n(m_by_n)
    block = check_block((1 << 30, 1 << 30), block_size)   # a pair of positive integers
    if block_pooling not in POOLING:
        raise Tf1PruneError("block_pooling must be AVG or MAX, got %r" % (block_pooling,))
    if m_by_n is not None and block != (1, 1):
        raise Tf1PruneError("m_by_n and block_size do not combine (N:M works on single weights)")
    if block_pooling != "AVG" and block == (1, 1):
        raise Tf1PruneError("block_pooling applies to blocks: give block_size too")
    known = {k[0] for k in kernels} | {k[1] for k in kernels}
    unknown = sorted(set(excludes or ()) - known)
    if unknown:
        raise Tf1PruneError("exclude %r is neither a layer nor a kernel of the model" % unknown[0])
    return m_by_n, block, set(excludes or ())


def kernel_mask(value, sparsity, block_size=(1, 1), block_pooling="AVG", m_by_n=None, in_axis=-2, plan=None,
                kernel=None):
    """``(mask, None)`` or ``(None, why it is skipped)``: the magnitude mask of a kernel ``value``.  With a
    channel ``plan``, the mask is made on the kernel's kept channels (what the slim graph holds) and is
    zero on the pruned ones, so the sparsity and N:M groups hold in the slim kernel."""
    value = np.asarray(value)
    kept = value if plan is None else plan.slice(kernel, value)
    if m_by_n and kept.shape[in_axis] % m_by_n[1]:
        return None, "%d input channels are not a multiple of %d" % (kept.shape[in_axis], m_by_n[1])
    check_block(kept.shape, block_size)
    mask = magnitude_mask(kept, sparsity, block_size, block_pooling, m_by_n, in_axis)
    return (mask if plan is None else plan.unslice(kernel, mask, value.shape)), None


def kept_sparsity(value, plan=None, kernel=None):
    """``(weights, zeros)`` of a kernel, counted on its kept channels when a ``plan`` is given."""
    kept = np.asarray(value) if plan is None else plan.slice(kernel, value)
    return int(kept.size), int(np.count_nonzero(kept == 0))


def _masks(kernels, values, sparsity, m_by_n, block_size, block_pooling, excludes):
    """``({kernel: mask}, [(layer, reason)])`` for one-shot magnitude sparsity."""
    if (sparsity is None) == (m_by_n is None):
        raise Tf1PruneError("give a weight sparsity or m_by_n (N:M already sets the sparsity)")
    m_by_n, block_size, excludes = check_options(kernels, m_by_n, block_size, block_pooling, excludes)
    out, skipped = {}, []
    for node, kernel, in_axis in kernels:
        if node in excludes or kernel in excludes:
            skipped.append((node, "excluded"))
            continue
        mask, why = kernel_mask(values(kernel), sparsity, block_size, block_pooling, m_by_n, in_axis)
        if why:
            skipped.append((node, why))
        else:
            out[kernel] = mask
    return out, skipped


def sparsify_graph_def(graph_def, input_specs=None, output_node_names=(), sparsity=None, m_by_n=None,
                       block_size=(1, 1), block_pooling="AVG", excludes=()):
    """One-shot magnitude sparsity of a frozen graph's kernels (data-free): ``(graph_def, report,
    skipped)`` with the report as from :func:`sparsity_report`.

    Example::

        sparse_gd, report, skipped = sparsify_graph_def(gd, specs, ["logits"], m_by_n=(2, 4))
    """
    import tensorflow.compat.v1 as tf
    from tf1prune.core.analysis import analyze
    from tf1prune.core.rules import build, is_const
    analysis = analyze(graph_def, input_specs, output_node_names)
    nodes = {n.name: n for n in graph_def.node}
    kernels = layer_kernels(analysis, lambda name: is_const(nodes[name].op))
    masks, skipped = _masks(kernels, lambda name: build.const_value(nodes[name]), sparsity, m_by_n, block_size,
                            block_pooling, set(excludes))
    out = tf.GraphDef()
    out.CopyFrom(graph_def)
    out_nodes = {n.name: n for n in out.node}
    for kernel, mask in masks.items():
        value = build.const_value(out_nodes[kernel])
        build.set_const_value(out_nodes[kernel], value * mask.astype(value.dtype))
    return out, sparsity_report(analyze(out, input_specs, output_node_names)), skipped


LayerReport = collections.namedtuple("LayerReport", "layer kernel weights zeros n_m")


def sparsity_report(analysis):
    """Per layer with a constant kernel: its weights, zero share, and the N:M patterns it satisfies
    (``[(N, M)]`` for M in 4, 8, 16 dividing its input channels, N the most non-zeros of any group)."""
    from tf1prune.core.rules import build, is_const
    nodes = analysis.view.nodes
    rows = []
    for node, kernel, in_axis in layer_kernels(analysis, lambda name: name in nodes and is_const(nodes[name].op)):
        value = build.const_value(nodes[kernel])
        rows.append(LayerReport(node, kernel, int(value.size), float(np.mean(value == 0)),
                                satisfied_n_m(value, in_axis)))
    return rows


def report_table(rows):
    """Text table of a :func:`sparsity_report`."""
    lines = ["%-44s %10s %7s  %s" % ("layer", "weights", "zeros", "N:M (most non-zeros of M)")]
    for r in rows:
        pattern = ", ".join("%d:%d" % nm for nm in r.n_m) or "-"
        lines.append("%-44s %10d %6.1f%%  %s" % (r.layer[-44:], r.weights, 100 * r.zeros, pattern))
    total = sum(r.weights for r in rows)
    zeros = sum(r.weights * r.zeros for r in rows)
    lines.append("%-44s %10d %6.1f%%" % ("total", total, 100 * zeros / max(total, 1)))
    return "\n".join(lines)


def sparsify_checkpoint(model, output_dir, sparsity=None, m_by_n=None, block_size=(1, 1), block_pooling="AVG",
                        excludes=(), checkpoint=None):
    """One-shot magnitude sparsity of a :class:`~tf1prune.CheckpointModel`'s kernels, written as a copy
    in ``output_dir`` with the optimizer slots masked too; returns ``(prefix, skipped)``.

    Example::

        prefix, skipped = sparsify_checkpoint(CheckpointModel(meta, ckpt, ["logits"]), "sparse/", m_by_n=(2, 4))
    """
    from tf1prune.apply.checkpoint import open_checkpoint, write_masked_copy
    prefix, reader = open_checkpoint(checkpoint or model.prefix)
    kernels = layer_kernels(model.analysis, model.is_variable)
    masks, skipped = _masks(kernels, model.values_in(reader, prefix), sparsity, m_by_n, block_size, block_pooling,
                            set(excludes))
    return write_masked_copy(model, prefix, reader, masks, output_dir), skipped
