"""Soft filter pruning (He et al. 2018) of block-internal channels, on checkpoints.

Only channels *inside* blocks are selected: the expanded channels of inverted-residual blocks
and the reduced channels of squeeze-excitation blocks, so every block keeps its output width.
Blocks come from the analyser; ``scope_names`` may restrict them.  Selection per block, from a
``threshold`` where a lower value selects more:

- ``magnitude``: keep the strongest filters (L1, each layer divided by its mean filter norm)
  until they hold ``threshold`` of the block's total; select the rest.
- ``redundancy`` (after Liu et al. 2017, redundant kernel removal): visiting filters from the
  strongest, a filter is redundant when its cosine similarity with a filter already kept is at
  least ``threshold`` (signed: a negated filter is a different feature after a ReLU).

A channel's *filters* are the kernel slices that produce it: the expand (or SE reduce) conv's
output slice and the depthwise filter.  Soft pruning zeroes them in a copy of the checkpoint (and,
optionally, every N steps with :meth:`SoftFilterPruningRunner.hook`); BatchNorm and the next layer are
left alone, so retraining may regrow them.  :meth:`summary` counts, per block, the selected
filters that converged to zero (magnitude at most ``tolerance`` times the median of the block's
kept filters) and the failure rate.  :meth:`strip` removes the selected channels for real (their
BatchNorm and next-layer weights too).  Example (seed 002's loop)::

    sfp = SoftFilterPruningRunner('pre/model.ckpt.meta', 'pre/model.ckpt', ['logits/BiasAdd'], output_dir='sfp')
    for threshold in (0.8, 0.7, 0.6):
        sfp.set_threshold(threshold)
        for attempt in range(3):
            sfp.set_output_dir('sfp/th%g_%d' % (threshold, attempt))
            ckpt = sfp.soft_prune()          # zero the selected filters in a copy of the checkpoint
            ckpt = my_training(ckpt)         # retrain from it (Estimator, a loop...): returns a checkpoint
            if sfp.summary(ckpt).failure_rate <= 0.1:
                break
    sfp.strip('slim', output_graph='slim/model.pb')   # remove the selected filters for real
"""
import collections
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune.choose.allocation import rank_units
from tf1prune.apply.checkpoint import CheckpointModel, open_checkpoint, strip_checkpoint, write_masked_copy
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write
from tf1prune.choose.criteria import channel_norms
from tf1prune.core.rules import Role

FILTERS = (Role.FILTER,)

METHODS = ("magnitude", "redundancy")
BlockSummary = collections.namedtuple("BlockSummary", "name type channels selected converged")


class Summary(collections.namedtuple("Summary", "blocks failure_rate checkpoint")):
    """Per block: channels, selected, converged; ``failure_rate``: selected filters not converged."""

    def __str__(self):
        rows = ["%-36s %-19s %8s %8s %9s" % ("block", "type", "channels", "selected", "converged")]
        rows += ["%-36s %-19s %8d %8d %9d" % (b.name[-36:], b.type, b.channels, b.selected, b.converged)
                 for b in self.blocks]
        rows.append("failure rate: %.3f (%s)" % (self.failure_rate, self.checkpoint))
        return "\n".join(rows)


def producer_filters(analysis):
    """``(param node, axis, elems)`` of every filter: the kernel slices that *produce* channels (the
    output axis of conv/dense kernels, the channel axis of depthwise kernels)."""
    return [(name, axis, b.elems) for name, axes in analysis.bindings.items()
            for axis, b in sorted(axes.items()) if b.role in FILTERS]


def _block_name(block):
    prefix = os.path.commonprefix(list(block.nodes)).rstrip("_/")
    return prefix or block.nodes[0]


class SoftFilterPruningRunner:
    """Soft filter pruning of inverted-residual and SE blocks (see the module docstring).

    Args:
      meta_graph, checkpoint: the trained model (``.meta`` file; checkpoint prefix or folder).
      output_node_names, input_specs: as for :class:`tf1prune.apply.checkpoint.CheckpointModel`.
      scope_names: act only on blocks with a node whose name starts with one of these (as in seed
        002: ``'MobilenetV2/expanded_conv_1/'`` with the slash, so ``expanded_conv_10`` is not included).
      method: ``magnitude`` or ``redundancy``; threshold: see the module docstring.
      output_dir: where :meth:`soft_prune` writes its checkpoint.
      max_ratio: at most this fraction of a block's channels is selected.
      channel_divisible: what a block keeps is rounded up to a multiple of this (at most the block).
      tolerance: a selected filter converged when its magnitude is at most this times the median
        magnitude of the block's kept filters.
    """

    def __init__(self, meta_graph, checkpoint, output_node_names=None, input_specs=None, scope_names=None,
                 method="magnitude", threshold=0.7, output_dir=None, max_ratio=0.75, channel_divisible=1,
                 tolerance=0.05):
        if method not in METHODS:
            raise Tf1PruneError("method must be one of %s, got %r" % (", ".join(METHODS), method))
        if not isinstance(max_ratio, (int, float)) or not 0 <= max_ratio < 1:
            raise Tf1PruneError("max_ratio must be in [0, 1), got %r" % (max_ratio,))
        if not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise Tf1PruneError("tolerance must be >= 0, got %r" % (tolerance,))
        if not isinstance(channel_divisible, int) or channel_divisible < 1:
            raise Tf1PruneError("channel_divisible must be a positive integer, got %r" % (channel_divisible,))
        self.model = CheckpointModel(meta_graph, checkpoint, output_node_names, input_specs)
        self.method, self.max_ratio, self.tolerance = method, max_ratio, tolerance
        self.channel_divisible = int(channel_divisible)
        self.set_threshold(threshold)
        self.output_dir = output_dir
        self.checkpoint = self.model.prefix
        self.blocks, self.skipped = self._find_blocks(scope_names)
        self.filters = producer_filters(self.model.analysis)
        self.selected = None   # block name -> selected channel indices, from the last selection
        self._selected_at = None

    # --- settings ---------------------------------------------------------
    def set_output_dir(self, path):
        self.output_dir = path

    def set_threshold(self, value):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise Tf1PruneError("threshold must be a number in [0, 1], got %r" % (value,))
        self.threshold = float(value)

    # --- blocks -----------------------------------------------------------
    def _find_blocks(self, scope_names):
        analysis = self.model.analysis
        scopes = [s for s in scope_names or () if s]
        blocks, skipped, seen = collections.OrderedDict(), [], set()
        for block in analysis.blocks:
            name = _block_name(block)
            if name in blocks or name in dict(skipped):
                name = "%s (%s)" % (name, block.type)
            if scopes and not any(n.startswith(s) for n in block.nodes for s in scopes):
                continue
            group = analysis.groups[block.group] if block.group is not None else None
            members = set(block.nodes)
            for inner in analysis.blocks:   # an SE block gating the block's channels is part of it
                gate = analysis.group_of_tensor(inner.nodes[-1] + ":0")
                if inner.type == "squeeze_excitation" and block.group is not None \
                        and gate is not None and gate.id == block.group:
                    members.update(inner.nodes)
            if group is None or not set(group.nodes) <= members or not set(group.consumers) <= members:
                skipped.append((name, "its internal channels are shared with layers outside the block"))
            elif not group.prunable:
                skipped.append((name, group.reason))
            elif block.group not in seen:
                seen.add(block.group)
                blocks[name] = block
        if scopes and not blocks:
            raise Tf1PruneError("no prunable inverted-residual or SE block under scopes %s" % scope_names)
        return blocks, skipped

    # --- selection --------------------------------------------------------
    def select(self, checkpoint=None):
        """Block name -> indices of the channels to prune (the seed's ``get_pruning_filters``)."""
        prefix, reader = self._open(checkpoint)
        analysis = self.model.analysis
        values = self.model.values_in(reader, prefix)
        scores = self._filter_scores(values)
        minimum = rank_units(analysis, scores).minimum
        selected = collections.OrderedDict()
        for name, block in self.blocks.items():
            group = analysis.groups[block.group]
            units = np.array(group.units)
            s = scores[units]
            order = np.argsort(-s, kind="stable")
            if self.method == "magnitude":
                chosen = self._by_magnitude(s, order)
            else:
                chosen = self._by_redundancy(self._vectors(values, units), order)
            floor = max(int(np.ceil((1 - self.max_ratio) * len(units))), minimum.get(group.id, 1), 1)
            if self.channel_divisible > 1:
                floor = -(-floor // self.channel_divisible) * self.channel_divisible
            kept = [i for i in order if i not in chosen]
            while len(kept) < min(floor, len(units)):   # give back the strongest selected filters
                best = next(i for i in order if i in chosen)
                chosen.discard(best)
                kept.append(best)
            if self.channel_divisible > 1:
                while len(kept) % self.channel_divisible and chosen:
                    best = next(i for i in order if i in chosen)
                    chosen.discard(best)
                    kept.append(best)
            selected[name] = sorted(int(i) for i in chosen)
        self.selected, self._selected_at = selected, self.threshold
        return selected

    def _by_magnitude(self, s, order):
        total = s.sum()
        chosen, acc = set(), 0.0
        for i in order:
            if total > 0 and acc >= self.threshold * total:
                chosen.add(int(i))
            acc += s[i]
        return chosen

    def _by_redundancy(self, vectors, order):
        norms = np.linalg.norm(vectors, axis=1)
        unit = vectors / np.maximum(norms, 1e-12)[:, None]
        kept, chosen = [], set()
        for i in order:
            if norms[i] == 0 or (kept and np.max(unit[kept] @ unit[i]) >= self.threshold - 1e-6):
                chosen.add(int(i))
            else:
                kept.append(int(i))
        return chosen

    def _filter_scores(self, values):
        """Per unit: the L1 norm of its filters, each layer divided by its mean filter norm."""
        total, count = self.model.analysis.per_unit(FILTERS, lambda name, axis: channel_norms(values(name), axis))
        return total / np.maximum(count, 1)

    def _vectors(self, values, units):
        """Per unit of a block: its filters side by side, each layer's kernel scaled to unit norm."""
        analysis = self.model.analysis
        position = {int(u): i for i, u in enumerate(units)}
        parts = []
        for name, axis, elems in self.filters:
            cols = [(j, position.get(int(u))) for j, u in enumerate(analysis.unit_of[elems])]
            cols = [(j, p) for j, p in cols if p is not None]
            if not cols:
                continue
            w = np.moveaxis(np.asarray(values(name), np.float64), axis, 0)
            w = w.reshape(w.shape[0], -1) / max(np.linalg.norm(w), 1e-12)
            block = np.zeros((len(units), w.shape[1]))
            for j, p in cols:
                block[p] += w[j]
            parts.append(block)
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(units), 1))

    # --- soft pruning -------------------------------------------------------
    def _open(self, checkpoint):
        prefix, reader = open_checkpoint(checkpoint or self.checkpoint)
        shapes = reader.get_variable_to_shape_map()
        for var in self.model.analysis.bindings:
            if self.model.is_variable(var):
                key = self.model.key(var)
                if key not in shapes or list(shapes[key]) != self.model.var_shape(var):
                    raise Tf1PruneError("checkpoint %r does not fit the meta graph (variable %r)" % (prefix, key))
        return prefix, reader

    def _choice(self, analysis, selected):
        """The choice of ``analysis`` without the selected channels (blocks of this pruner's model)."""
        kept = {}
        for name, idx in selected.items():
            group = analysis.groups[self.blocks[name].group]
            kept[group.id] = sorted(set(range(group.channels)) - set(idx))
        return Choice(analysis.digest(), {g: k for g, k in kept.items() if len(k) < analysis.groups[g].channels})

    def _zero_masks(self, selected):
        """Variable -> 0/1 mask zeroing the selected filters."""
        plan = self.model.analysis.plan(self._choice(self.model.analysis, selected))
        return {var: plan.mask(var, self.model.var_shape(var), FILTERS)
                for var in plan.changed(FILTERS) if self.model.is_variable(var)}

    def soft_prune(self, checkpoint=None, reselect=None):
        """Zero the selected filters of ``checkpoint`` (default: the latest one) in a copy written to
        the output folder; returns its prefix, the checkpoint to retrain (``get_pruning_ckpt``).

        The filters are selected on that checkpoint when ``reselect`` is true; by default only when
        the threshold changed since the last selection, so re-pruning at the same threshold zeroes
        the same filters again (seed 002's ``pruning_process(retrain=True)``)."""
        if not self.output_dir:
            raise Tf1PruneError("set an output folder first (set_output_dir)")
        prefix, reader = self._open(checkpoint)
        if reselect is None:
            reselect = self.selected is None or self._selected_at != self.threshold
        selected = self.select(prefix) if reselect else self.selected
        self.checkpoint = write_masked_copy(self.model, prefix, reader, self._zero_masks(selected), self.output_dir)
        record = {"threshold": self.threshold, "method": self.method, "source": prefix,
                  "selected": selected}
        atomic_write(os.path.join(self.output_dir, "sfp_filters.json"), json.dumps(record, indent=1))
        return self.checkpoint

    def hook(self, every_n_steps):
        """SessionRunHook zeroing the current selection at session start and every N steps.

        Hooks run in list order: a ``CheckpointSaverHook`` placed before it (as
        ``MonitoredTrainingSession`` does) saves the step's weights before they are zeroed again."""
        if self.selected is None:
            raise Tf1PruneError("nothing is selected yet: call select() or soft_prune() first")
        return _ZeroHook(self._zero_masks(self.selected), every_n_steps)

    def summary(self, checkpoint=None):
        """How many selected filters converged to zero in ``checkpoint`` (a retrained one; default:
        the latest), per block, and the failure rate.  The checkpoint becomes the latest one."""
        if self.selected is None:
            raise Tf1PruneError("nothing is selected yet: call soft_prune() first")
        prefix, reader = self._open(checkpoint)
        scores = self._filter_scores(self.model.values_in(reader, prefix))
        rows, selected_total, converged_total = [], 0, 0
        for name, block in self.blocks.items():
            units = np.array(self.model.analysis.groups[block.group].units)
            idx = self.selected.get(name, [])
            kept = np.setdiff1d(np.arange(len(units)), idx)
            ref = np.median(scores[units[kept]]) if len(kept) else 0.0
            converged = int(np.sum(scores[units[idx]] <= self.tolerance * ref)) if idx else 0
            rows.append(BlockSummary(name, block.type, len(units), len(idx), converged))
            selected_total += len(idx)
            converged_total += converged
        self.checkpoint = prefix
        failure = 1.0 - converged_total / selected_total if selected_total else 0.0
        return Summary(rows, failure, prefix)

    def strip(self, output_dir, output_graph=None, checkpoint=None):
        """Remove the selected filters for real: slim checkpoint, meta graph (and ``.pb``)."""
        if self.selected is None:
            raise Tf1PruneError("nothing is selected yet: call soft_prune() first")
        prefix, _ = self._open(checkpoint)
        model = CheckpointModel(self.model.meta_path, prefix, self.model.output_node_names,
                                self.model.analysis.view.input_specs)
        choice = self._choice(model.analysis, self.selected)
        return strip_checkpoint(model, choice, output_dir, output_graph, inputs=[(self.model.prefix, self.model.meta_path)])


class _ZeroHook(tf.train.SessionRunHook):
    def __init__(self, masks, every_n_steps):
        self.masks, self.every = masks, max(1, int(every_n_steps))
        self.step = 0

    def begin(self):
        graph = tf.get_default_graph()
        variables = {v.op.name: v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)}
        missing = sorted(set(self.masks) - set(variables))
        if missing:
            raise Tf1PruneError("soft-pruning hook: the graph has no variable %r" % missing[0])
        for name, mask in sorted(self.masks.items()):
            if variables[name].shape.as_list() != list(mask.shape):
                raise Tf1PruneError("soft-pruning hook: variable %r has shape %s, the pruned model's is %s"
                                    % (name, variables[name].shape.as_list(), list(mask.shape)))
        with tf.name_scope("tf1prune_soft_prune"):
            self.op = tf.group(*[variables[n].assign(variables[n] * tf.constant(m, variables[n].dtype.base_dtype))
                                 for n, m in sorted(self.masks.items())])

    def after_create_session(self, session, coord):
        session.run(self.op)

    def after_run(self, run_context, run_values):
        self.step += 1
        if self.step % self.every == 0:
            run_context.session.run(self.op)


SoftFilterPruner = SoftFilterPruningRunner   # the name of tf1prune 0.1 (deprecated alias, see tf1prune.__init__)
