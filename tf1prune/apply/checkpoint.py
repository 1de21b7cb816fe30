"""Slim checkpoints: hard-prune a model stored as a meta graph and a checkpoint.

Example::

    model = CheckpointModel('train/model.ckpt-1000.meta', 'train/model.ckpt-1000', ['logits/BiasAdd', 'loss'])
    choice = model.choice(spec='model.spec')          # or zeros=True, or masks={variable: 0/1 array}
    result = strip_checkpoint(model, choice, 'slim/', output_graph='slim/model.pb')
    # slim/model.ckpt-1000.{index,data-*}, slim/model.ckpt-1000.meta, slim/checkpoint, slim/model.pb

The slim meta graph holds the model up to the output nodes (list the loss too, to train it),
every model variable with its reduced shape and initializer, and a new Saver.  Python custom
gradients (``tf.custom_gradient``, e.g. Keras swish) cannot be called from a re-imported graph:
their ops are differentiated automatically instead (a warning names them).  Training ops are
left out: build an optimizer on the slim graph and restore the slim checkpoint, in which the
optimizer's slot variables (Adam m/v, Momentum, moving averages) are sliced like their variables
and every other entry (``global_step``, Adam's beta powers...) is copied unchanged.  Outputs are
staged in a temporary folder and renamed into place; the input files are only read.
"""
import collections
import contextlib
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.framework import variable_pb2

from tf1prune import tfcompat
from tf1prune.core import flops, rules, zeros as zeros_lib
from tf1prune.choose import criteria
from tf1prune.apply import slim
from tf1prune.core.rules import build
from tf1prune.core.analysis import analyze
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError, tf_error_line
from tf1prune.files import atomic_write, read_proto, save_graph_def
from tf1prune.core.names import node_of
from tf1prune.progress import Steps
from tf1prune.choose.spec import Spec

VARIABLE_COLLECTIONS = ("variables", "trainable_variables", "model_variables")  # saved ones

StripResult = collections.namedtuple("StripResult", "checkpoint meta_graph graph before after")


def read_meta_graph(path):
    """A MetaGraphDef from a binary (or text) ``.meta`` file."""
    meta = read_proto(path, tf.MetaGraphDef, "meta graph")
    if meta is None:
        raise Tf1PruneError("%r is not a meta graph (.meta file)" % path)
    if not meta.graph_def.node:
        raise Tf1PruneError("meta graph %r holds no graph" % path)
    return meta


def open_checkpoint(path):
    """``(prefix, reader)`` of a checkpoint prefix, or of the latest checkpoint in a folder."""
    prefix = path
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise Tf1PruneError("no checkpoint in folder %r" % path)
    try:
        return prefix, tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        text = getattr(e, "message", None) or str(e)
        raise Tf1PruneError("cannot read checkpoint %r: %s" % (path, text.strip().splitlines()[0]))


def read_tensor(reader, key, prefix):
    """``reader.get_tensor`` with a one-line error for a damaged checkpoint."""
    try:
        return reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        text = (getattr(e, "message", None) or str(e) or type(e).__name__).strip().splitlines()[0]
        raise Tf1PruneError("cannot read %r from checkpoint %r: %s" % (key, prefix, text))


class CheckpointModel:
    """A meta graph and a checkpoint, analysed and cross-checked.

    Args:
      meta_graph: path of the ``.meta`` file (a training or an inference graph).
      checkpoint: checkpoint prefix, or a folder (its latest checkpoint).
      output_node_names: output nodes (default: the outputs of the meta graph's signatures).
      input_specs: input shapes (default: placeholder shapes, batch 1).
      excludes: nodes whose output channels are not pruned.
    """

    def __init__(self, meta_graph, checkpoint, output_node_names=None, input_specs=None, excludes=()):
        self.meta_path = meta_graph
        self.meta = read_meta_graph(meta_graph)
        self.prefix, self.reader = open_checkpoint(checkpoint)
        self.ckpt_shapes = self.reader.get_variable_to_shape_map()
        self.ckpt_dtypes = self.reader.get_variable_to_dtype_map()
        self.output_node_names = [node_of(n) for n in (output_node_names or self._signature_outputs())]
        if not self.output_node_names:
            raise Tf1PruneError("output node names are required (the meta graph has no signature)")
        graph_def = self.meta.graph_def
        self.nodes = {n.name: n for n in graph_def.node}
        self.update_ops = self._update_ops()
        self.analysis = analyze(graph_def, input_specs, self.output_node_names, excludes, update_ops=self.update_ops)
        self.view = self.analysis.view
        self.var_defs = self._variable_defs()
        self.key_of = self._saved_keys()
        self.optimizer_vars, self.slots, self.tied_variables = self._optimizer_variables()
        self._check()

    # --- reading the meta graph -------------------------------------------
    def _signature_outputs(self):
        return sorted({node_of(t.name) for sig in self.meta.signature_def.values() for t in sig.outputs.values()})

    def _update_ops(self):
        """Nodes of the UPDATE_OPS collection (BN moving averages): analysed and kept with the outputs."""
        names = self.meta.collection_def["update_ops"].node_list.value if "update_ops" in self.meta.collection_def \
            else []
        return [node_of(n) for n in names if node_of(n) in self.nodes]

    def _variable_defs(self):
        out = collections.OrderedDict()
        for key in VARIABLE_COLLECTIONS:
            if key in self.meta.collection_def:
                for raw in self.meta.collection_def[key].bytes_list.value:
                    vd = variable_pb2.VariableDef()
                    vd.ParseFromString(raw)
                    out.setdefault(node_of(vd.variable_name), vd)
        return out

    def _saved_keys(self):
        """Variable node -> checkpoint key, from the SaveV2 op of the meta graph's Saver."""
        per_saver = collections.defaultdict(dict)
        for node in self.meta.graph_def.node:
            if not rules.is_save(node.op):
                continue
            names_in, slices_in, saved = rules.save_layout(node.input)
            names = self.analysis.view.const_value(names_in)
            slices = self.analysis.view.const_value(slices_in)
            if names is None:
                continue
            scope = node.name.rsplit("/", 1)[0] if "/" in node.name else ""
            if slices is not None and any(s for s in slices.reshape(-1)):
                raise Tf1PruneError("Saver '%s' of the meta graph saves partitioned variables: not supported" % scope)
            for key, ref in zip(names.reshape(-1), saved):
                var = self.variable_of(ref)
                if var is not None:
                    per_saver[scope][var] = key.decode() if isinstance(key, bytes) else str(key)
        if self.meta.HasField("saver_def") and self.meta.saver_def.filename_tensor_name:
            scope = node_of(self.meta.saver_def.filename_tensor_name).rsplit("/", 1)[0]
            chosen = [m for sc, m in per_saver.items() if sc == scope or sc.startswith(scope + "/")]
        else:
            chosen = list(per_saver.values())
        keys = {}
        for mapping in chosen:
            for var, key in mapping.items():
                if keys.setdefault(var, key) != key:
                    raise Tf1PruneError("the meta graph's Savers save variable %r under different names (%r, %r) "
                                        "and it has no saver_def to tell which one wrote the checkpoint"
                                        % (var, keys[var], key))
        return keys

    def key(self, var):
        return self.key_of.get(var, var)

    def _optimizer_variables(self):
        """(variables that optimizers own, {bound variable: its slot checkpoint keys},
        {variable named and shaped like a bound variable's slot, kept in the meta graph: that variable})."""
        owned, slots = set(), collections.defaultdict(list)
        bound = {n for n in self.analysis.bindings if self.is_variable(n)}
        for node in self.meta.graph_def.node:
            if not rules.is_optimizer_update(node.op):
                continue
            written = rules.written_variable(node.input)
            var = self.variable_of(written) if written else None
            for ref in rules.update_operands(node.input):
                other = self.variable_of(ref)
                if other is None or other == var:
                    continue
                owned.add(other)
                if var in bound and self.var_shape(other) == self.var_shape(var):
                    if self.key(other) not in slots[var]:
                        slots[var].append(self.key(other))
        # Slots of optimizers absent from the graph or updating with plain assigns, and moving
        # averages: an entry named [scope/]<variable key>/<suffix>, of the variable's shape, where
        # <variable key> is the first and longest run of the name that is some variable's key.
        # Those that are variables of the meta graph stay in it, shrunk like their variable.
        var_by_key = {self.key(v): v for v in self.var_defs}
        var_by_key.update({self.key(v): v for v in bound})
        taken = {k for keys in slots.values() for k in keys}
        tied = {}
        for key, shape in self.ckpt_shapes.items():
            if key in taken or var_by_key.get(key) in bound or var_by_key.get(key) in owned:
                continue
            parts = key.split("/")
            master = next((var_by_key["/".join(parts[i:j])] for i in range(len(parts) - 1)
                           for j in range(len(parts) - 1, i, -1) if "/".join(parts[i:j]) in var_by_key), None)
            if master in bound and list(shape) == self.var_shape(master):
                slots.setdefault(master, []).append(key)
                var = var_by_key.get(key)
                if var is not None and self._initialized_from(var, master):
                    owned.add(var)   # a moving average: re-created by its owner, restored by name
                elif var is not None:
                    tied[var] = master
        return owned, dict(slots), tied

    def _initialized_from(self, var, master):
        vd = self.var_defs.get(var)
        if vd is None or not vd.initial_value_name:
            return False
        return master in self.analysis.view.order_from([node_of(vd.initial_value_name)])[1]

    def variable_of(self, ref):
        """The variable node a tensor reads (through reads such as ReadVariableOp), else None."""
        source = self.view.read_source(ref)
        return source if source is not None and self.is_variable(source) else None

    def is_variable(self, name):
        return name in self.nodes and rules.is_variable(self.nodes[name].op)

    def var_shape(self, var):
        """The static shape of a variable node."""
        return self.view.shape(var + ":0")

    def model_variables(self):
        """Variables of the slim meta graph: every collected variable that no optimizer owns."""
        return [v for v in self.var_defs if v not in self.optimizer_vars and v in self.nodes]

    def _check(self):
        needed = set(self.model_variables())
        needed |= {n for n in self.analysis.bindings if self.is_variable(n)}
        for var in sorted(needed):
            key = self.key(var)
            if key not in self.ckpt_shapes:
                raise Tf1PruneError("checkpoint %r lacks variable %r: was it saved from this meta graph?"
                                    % (self.prefix, key))
            if list(self.ckpt_shapes[key]) != self.var_shape(var):
                raise Tf1PruneError("checkpoint variable %r has shape %s, the meta graph says %s"
                                    % (key, list(self.ckpt_shapes[key]), self.var_shape(var)))

    # --- values -------------------------------------------------------------
    def values_in(self, reader, prefix):
        """Value provider: a variable node's value in checkpoint ``reader`` (a Const node's value)."""
        consts = criteria.const_values(self.analysis)
        return lambda name: read_tensor(reader, self.key(name), prefix) if self.is_variable(name) else consts(name)

    def value(self, name):
        """Value of a variable node in this checkpoint (the value of a Const node)."""
        return self.values_in(self.reader, self.prefix)(name)

    def choice(self, spec=None, zeros=False, masks=None):
        """The :class:`~tf1prune.core.choice.Choice` of a spec (path or :class:`Spec`), of the zeroed
        channels, or of 0/1 masks.

        ``zeros`` and ``masks`` remove the channels whose contribution is provably zero (see
        :mod:`tf1prune.core.zeros`): read with zero weights by every consumer, or produced by zero
        filters through zero offsets, as masked training or network slimming leaves them.  The
        removal is then exact, and every layer keeps a channel.  After soft filter pruning, use
        :meth:`SoftFilterPruningRunner.strip`."""
        if sum(x is not None and x is not False for x in (spec, masks, zeros or None)) != 1:
            raise Tf1PruneError("give exactly one of spec, zeros or masks")
        if spec is not None:
            spec = Spec.load(spec) if isinstance(spec, str) else spec
            spec.check(self.analysis)
            return spec
        return Choice.from_mask(self.analysis, self.zero_channels(masks).keep)

    def keep_mask(self, spec=None, zeros=False, masks=None):
        """Deprecated: :meth:`choice`."""
        warnings.warn("CheckpointModel.keep_mask is deprecated: use CheckpointModel.choice", DeprecationWarning,
                      stacklevel=2)
        return self.choice(spec, zeros, masks)

    def zero_channels(self, masks=None):
        """The :class:`~tf1prune.core.zeros.ZeroChannels` of this checkpoint (or of 0/1 ``masks``)."""
        values = self.value if masks is None else zeros_lib.mask_values(self.analysis, masks, self.var_shape)
        return zeros_lib.find_zero_channels(self.analysis, values)

    def check_left_out(self, keep):
        """Refuse to cut a layer off the slim graph while its weights read pruned channels (a second
        head missing from the output nodes): its variable would no longer fit the slim model."""
        view, kept = self.analysis.view, set(self.model_variables())
        bound = set(self.analysis.bindings) | set(self.tied_variables)
        for var in sorted(kept - bound):
            stack = [var]
            while stack:
                for user, _ in view.consumers.get(stack.pop(), []):
                    node = self.nodes[user]
                    if rules.is_read(node.op):
                        stack.append(user)
                        continue
                    for t in view.data_inputs(user):
                        inf = self.analysis.tensor_info(t)
                        if inf is not None and not self.analysis.kept_positions(inf.elems, keep).all():
                            raise Tf1PruneError(
                                "variable %r is used by %s '%s', which reads pruned channels but is neither under "
                                "the output nodes nor in UPDATE_OPS: list its outputs as output nodes"
                                % (var, node.op, user))

    def sliced_variables(self):
        """Checkpoint key -> the bound variable whose channels it has (the variable's, its slots')."""
        out = {}
        for var in self.analysis.bindings:
            if self.is_variable(var):
                for key in [self.key(var)] + self.slots.get(var, []):
                    out[key] = var
        return out

    def checkpoint_values(self, plan, progress=None):
        """Every checkpoint entry, sliced to the kept channels of ``plan`` where it is bound to channels
        (``progress``: see :mod:`tf1prune.progress`)."""
        like = self.sliced_variables()
        values = {}
        steps = Steps(len(self.ckpt_shapes), progress, "strip")
        for key in self.ckpt_shapes:
            value = read_tensor(self.reader, key, self.prefix)
            values[key] = plan.slice(like[key], value) if key in like else value
            steps.tick(key)
        return values


def _gather_initial_values(graph_def, model, variables, plan, aliases):
    """Each shrunk variable's initializer assigns its original initial value's kept channels (a
    GatherV2 per axis), whatever computes that value.  Returns the new initial value tensors."""
    nodes = {n.name: n for n in graph_def.node}
    new_values = {}
    for var in variables:
        vd = model.var_defs[var]
        assign = nodes.get(node_of(vd.initializer_name))
        like = aliases.get(var, var)
        if like not in plan.params or assign is None or rules.assigned_value(assign.input) is None:
            continue
        value = original = rules.assigned_value(assign.input)
        for s in plan.params[like]:
            if s.kept.all():
                continue
            base = "%s/tf1prune_keep_axis%d" % (var, s.axis)
            graph_def.node.extend(build.gather_nodes(base, value, np.flatnonzero(s.kept).astype(np.int32),
                                                     np.int32(s.axis), nodes[var].attr["dtype"].type))
            value = base
        if value != original:
            assign.input[list(assign.input).index(original)] = value
            new_values[var] = value + ":0"
    return new_values


def _copy_collections(model, meta, variables, kept_nodes, new_values):
    for key in VARIABLE_COLLECTIONS + ("global_step", "update_ops"):
        if key not in model.meta.collection_def:
            continue
        collection = model.meta.collection_def[key]
        for raw in collection.bytes_list.value:
            vd = variable_pb2.VariableDef()
            vd.ParseFromString(raw)
            var = node_of(vd.variable_name)
            if var in variables:
                if var in new_values:
                    vd.initial_value_name = new_values[var]
                meta.collection_def[key].bytes_list.value.append(vd.SerializeToString())
        names = [n for n in collection.node_list.value if node_of(n) in kept_nodes]
        if names:
            meta.collection_def[key].node_list.value.extend(names)


def _slim_meta_graph(model, plan):
    """MetaGraphDef of the slim model: outputs, update ops, model variables with their
    initializers, and a Saver that saves them under their checkpoint keys."""
    variables = model.model_variables()
    dest = list(model.output_node_names) + model.update_ops
    for var in variables:
        vd = model.var_defs[var]
        dest += [node_of(n) for n in (vd.variable_name, vd.initializer_name, vd.snapshot_name,
                                      vd.initial_value_name) if n]
    missing = sorted({d for d in dest if d not in model.nodes})
    if missing:
        raise Tf1PruneError("the meta graph's variable collections name missing nodes: %s" % missing[:3])
    graph_def = tfcompat.extract_sub_graph(model.meta.graph_def, dest)
    tied = {var: master for var, master in model.tied_variables.items() if var in variables}
    slim.shrink(graph_def, plan, aliases=tied)
    new_values = _gather_initial_values(graph_def, model, variables, plan, tied)
    slim.strip_unused_functions(graph_def)
    slim.update_shape_hints(graph_def, plan, infer=False)
    custom = [n for n in graph_def.node if "_gradient_op_type" in n.attr]
    for node in custom:
        del node.attr["_gradient_op_type"]
    if custom:
        tf.logging.warning("%d ops had Python custom gradients (e.g. %r), which a re-imported graph cannot "
                           "call: they are differentiated automatically in the slim meta graph",
                           len(custom), custom[0].name)
    meta = tf.MetaGraphDef()
    meta.meta_info_def.CopyFrom(model.meta.meta_info_def)
    meta.graph_def.CopyFrom(graph_def)
    _copy_collections(model, meta, variables, {n.name for n in graph_def.node}, new_values)
    graph = tf.Graph()
    with graph.as_default():
        try:
            saver = tf.train.import_meta_graph(meta)
            renamed = {model.key(v.op.name): v for v in tf.global_variables() if model.key(v.op.name) != v.op.name}
            if renamed:   # the checkpoint keys are not the variable names: save under the keys
                saver = tf.train.Saver({model.key(v.op.name): v for v in tf.global_variables()}, name="save_keys")
        except (ValueError, TypeError, tf.errors.OpError) as e:
            raise Tf1PruneError("internal error, slim meta graph rejected by TensorFlow (please report): %s"
                                % tf_error_line(e))
        return tf.train.export_meta_graph(graph=graph, saver_def=saver.as_saver_def() if saver else None)


def write_checkpoint(prefix, values, dtypes=None):
    """Write ``values`` (checkpoint key -> array) as a V2 checkpoint at ``prefix``."""
    graph = tf.Graph()
    with graph.as_default():
        names = sorted(values)
        holders = [tf.placeholder((dtypes or {}).get(n) or tf.as_dtype(np.asarray(values[n]).dtype), name="v%d" % i)
                   for i, n in enumerate(names)]
        save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                                 tensors=holders)
        with tf.Session(graph=graph) as sess:
            sess.run(save, {h: values[n] for h, n in zip(holders, names)})


def _input_files(prefix, meta_graph=None):
    folder, base = os.path.split(os.path.abspath(prefix))
    files = [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base + ".")] \
        if os.path.isdir(folder) else []
    return [os.path.realpath(f) for f in files + ([meta_graph] if meta_graph else [])]


def check_outputs(output_dir, output_graph, inputs, basename=None):
    """Refuse outputs that could replace an input (``inputs``: (checkpoint prefix, meta graph) pairs)
    or a file of the checkpoint ``basename`` being written."""
    folders = {os.path.realpath(os.path.dirname(os.path.abspath(p))) for prefix, meta in inputs
               for p in [prefix] + ([meta] if meta else [])}
    if os.path.realpath(output_dir) in folders:
        raise Tf1PruneError("output folder %r holds an input (checkpoint or meta graph): choose another folder"
                            % output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise Tf1PruneError("output folder %r is a file" % output_dir)
    if output_graph:
        if os.path.isdir(output_graph):
            raise Tf1PruneError("output graph %r is a folder" % output_graph)
        folder = os.path.dirname(os.path.abspath(output_graph))
        if not os.path.isdir(folder) and os.path.realpath(folder) != os.path.realpath(output_dir):
            raise Tf1PruneError("the folder of output graph %r does not exist" % output_graph)
        name = os.path.basename(output_graph)
        if os.path.realpath(os.path.dirname(os.path.abspath(output_graph))) == os.path.realpath(output_dir) \
                and (name == "checkpoint" or (basename and name.startswith(basename + "."))):
            raise Tf1PruneError("output graph %r would replace a file of the slim checkpoint" % output_graph)
        if os.path.realpath(output_graph) in {f for prefix, meta in inputs for f in _input_files(prefix, meta)}:
            raise Tf1PruneError("output graph %r is an input file" % output_graph)


@contextlib.contextmanager
def staged_checkpoint(output_dir, basename, extra=()):
    """Yield a staging prefix in ``output_dir``.  On success the staged checkpoint files are
    renamed into ``output_dir`` (data, index, then meta), then the ``extra`` (staged file, final
    path) pairs (a list the caller may extend inside the block), and ``output_dir/checkpoint``
    lists the new checkpoint as the latest.  On failure nothing is
    left behind (not even ``output_dir`` if this call created it)."""
    created = not os.path.exists(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tf1prune-", dir=output_dir)
    except OSError as e:
        raise Tf1PruneError("cannot write to %r: %s" % (output_dir, e.strerror or e))
    done = False
    try:
        yield os.path.join(staging, basename)
        rank = lambda f: (0 if ".data-" in f else 1 if f.endswith(".index") else 2, f)  # noqa: E731
        for name in sorted(os.listdir(staging), key=rank):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        for staged, final in extra:
            os.replace(staged, final)
        state = tf.train.get_checkpoint_state(output_dir)
        others = [p for p in (state.all_model_checkpoint_paths if state else [])
                  if os.path.basename(p) != basename]
        with tfcompat.quiet_deprecations():
            tf.train.update_checkpoint_state(output_dir, basename, all_model_checkpoint_paths=others + [basename])
        done = True
    except OSError as e:
        raise Tf1PruneError("cannot write to %r: %s" % (output_dir, e.strerror or e))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for staged, _ in extra:
            if os.path.exists(staged):
                os.remove(staged)
        if created and not done:
            shutil.rmtree(output_dir, ignore_errors=True)


def write_masked_copy(model, prefix, reader, masks, output_dir):
    """Copy checkpoint ``prefix`` (its ``reader``) into ``output_dir`` with variables multiplied by
    0/1 ``masks`` (variable node -> array), their optimizer slots too (also those of an optimizer the
    meta graph lacks: entries named ``<key>/...`` of the variable's shape); the meta graph saved with
    the checkpoint (else the model's) is copied beside it.  Returns the new prefix."""
    keyed = {}
    for var, mask in masks.items():
        for key in [model.key(var)] + model.slots.get(var, []):
            keyed[key] = mask
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    for key in shapes:
        owner = next((k for k in list(keyed) if key.startswith(k + "/")), None)
        if key not in keyed and owner is not None and list(shapes[key]) == list(np.shape(keyed[owner])):
            keyed[key] = keyed[owner]
    values = {}
    for key in shapes:
        value = read_tensor(reader, key, prefix)
        values[key] = (value * keyed[key]).astype(value.dtype) if key in keyed else value
    basename = os.path.basename(prefix)
    check_outputs(output_dir, None, [(prefix, None), (model.prefix, model.meta_path)])
    with staged_checkpoint(output_dir, basename) as staging:
        write_checkpoint(staging, values, dtypes)
        own_meta = prefix + ".meta"
        shutil.copyfile(own_meta if os.path.exists(own_meta) else model.meta_path, staging + ".meta")
    return os.path.join(output_dir, basename)


def freeze(meta_graph, prefix, output_node_names):
    """Frozen GraphDef of a meta graph restored from checkpoint ``prefix``."""
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.train.import_meta_graph(meta_graph, clear_devices=True)
        with tf.Session(graph=graph) as sess:
            if saver is not None:
                saver.restore(sess, prefix)
            frozen = tfcompat.freeze_session(sess, graph.as_graph_def(), output_node_names)
    return slim.strip_unused_functions(frozen)


def strip_checkpoint(model, choice, output_dir, output_graph=None, inputs=(), progress=True):
    """Write the slim checkpoint and meta graph of ``model`` for ``choice`` (a
    :class:`~tf1prune.core.choice.Choice`, e.g. from :meth:`CheckpointModel.choice`, or a spec).

    Also writes the slim frozen GraphDef to ``output_graph`` when given.  ``inputs``: more
    (checkpoint prefix, meta graph) pairs that must not be overwritten; ``progress``: a bar with an
    ETA on a terminal while the tensors are read (see :mod:`tf1prune.progress`).  Returns a
    :class:`StripResult` (paths, and MACs/params before and after).
    """
    check_outputs(output_dir, output_graph, [(model.prefix, model.meta_path)] + list(inputs),
                  os.path.basename(model.prefix))
    plan = model.analysis.plan(choice)
    model.check_left_out(plan.keep)
    meta = _slim_meta_graph(model, plan)
    values = model.checkpoint_values(plan, progress)
    basename = os.path.basename(model.prefix)
    extra = []
    with staged_checkpoint(output_dir, basename, extra) as staging:
        write_checkpoint(staging, values, model.ckpt_dtypes)
        atomic_write(staging + ".meta", meta.SerializeToString())
        try:   # restoring the slim meta graph from the slim checkpoint checks every shape
            frozen = freeze(meta, staging, model.output_node_names)
        except (ValueError, tf.errors.OpError) as e:
            raise Tf1PruneError("internal error, slim checkpoint does not restore (please report): %s"
                                % tf_error_line(e))
        if output_graph:   # renamed into place with the checkpoint
            fd, staged_graph = tempfile.mkstemp(prefix=".tf1prune-", dir=os.path.dirname(os.path.abspath(output_graph)))
            os.close(fd)
            extra.append((staged_graph, output_graph))
            save_graph_def(frozen, staged_graph, as_text=output_graph.endswith((".pbtxt", ".txt")))
    prefix = os.path.join(output_dir, basename)
    return StripResult(prefix, prefix + ".meta", output_graph, flops.count(model.analysis),
                       flops.count(model.analysis, choice))


def strip(meta_graph, checkpoint, output_dir, spec=None, zeros=False, masks=None, output_node_names=None,
          input_specs=None, output_graph=None, excludes=()):
    """One call: analyse, pick the kept channels (spec / zeros / masks) and :func:`strip_checkpoint`."""
    model = CheckpointModel(meta_graph, checkpoint, output_node_names, input_specs, excludes)
    return strip_checkpoint(model, model.choice(spec, zeros, masks), output_dir, output_graph)
