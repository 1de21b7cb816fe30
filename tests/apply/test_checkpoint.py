"""Slim checkpoints and soft filter pruning on meta graph + checkpoint pairs."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
from helpers import randomize_bn_and_biases, run_graph, session_config
from tf1prune.choose import allocation, criteria, spec as spec_lib
from tf1prune.core.choice import Choice
from tf1prune.apply import checkpoint, slim
from tf1prune.workflows import sfp
from tf1prune.core import zeros
from tf1prune.core.analysis import analyze
from tf1prune.cli import strip_checkpoint as strip_cli
from tf1prune.errors import Tf1PruneError

pytestmark = pytest.mark.slow   # the full suite only (the fast tier: -m "not slow")

BATCH = 4


def _train_and_save(graph, sess, loss, train_op, feeds_fn, path, steps=2):
    for step in range(steps):
        sess.run(train_op, feeds_fn(step))
    with graph.as_default():
        return tf.train.Saver().save(sess, path, global_step=tf.train.get_global_step())


def _keras_checkpoint(folder):
    """mobilenet_v2_se (resource variables, Keras BN, SE) trained 2 Adam steps."""
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("mobilenet_v2_se", seed=3)
        labels = tf.placeholder(tf.int64, [None], name="labels")
        logits = info.model.outputs[0]
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        step = tf.train.get_or_create_global_step()
        train_op = tf.train.AdamOptimizer(1e-2).minimize(loss, global_step=step)
        sess = tf.Session(config=session_config())
        sess.run(tf.global_variables_initializer())
    randomize_bn_and_biases(sess, 0)
    rng = np.random.RandomState(0)
    feeds = lambda i: {info.input_name: rng.standard_normal((BATCH, 28, 28, 1)).astype(np.float32),  # noqa: E731
                       "labels:0": rng.randint(0, 10, BATCH)}
    prefix = _train_and_save(graph, sess, loss, train_op, feeds, os.path.join(folder, "model.ckpt"))
    sess.close()
    return dict(prefix=prefix, meta=prefix + ".meta", outputs=[info.output_node_names[0], "loss"],
                logits=info.output_node_names[0], input=info.input_name)


def _ref_checkpoint(folder):
    """Hand-written convnet with ref variables (VariableV2), training-mode fused BN whose moving
    averages are updated by UPDATE_OPS (as tf.layers does), a residual add, Momentum."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 12, 12, 3], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        with tf.variable_scope("net", use_resource=False):
            def conv_bn(h, cout, name):
                with tf.variable_scope(name):
                    k = tf.get_variable("kernel", [3, 3, h.shape[-1], cout])
                    h = tf.nn.conv2d(h, k, [1, 1, 1, 1], "SAME")
                    gamma = tf.get_variable("gamma", [cout], initializer=tf.ones_initializer())
                    beta = tf.get_variable("beta", [cout], initializer=tf.zeros_initializer())
                    mean = tf.get_variable("moving_mean", [cout], initializer=tf.zeros_initializer(),
                                           trainable=False)
                    var = tf.get_variable("moving_variance", [cout], initializer=tf.ones_initializer(),
                                          trainable=False)
                    h, batch_mean, batch_var = tf.nn.fused_batch_norm(h, gamma, beta, is_training=True)
                    for v, batch in ((mean, batch_mean), (var, batch_var)):   # as tf.layers does
                        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, tf.assign_sub(v, (v - batch) * 0.1))
                    return tf.nn.relu(h)
            a = conv_bn(x, 12, "c1")
            b = conv_bn(a, 16, "c2")
            c = conv_bn(b, 16, "c3") + conv_bn(a, 16, "c4")
            pooled = tf.reduce_mean(c, [1, 2])
            w = tf.get_variable("dense/kernel", [16, 5])
            bias = tf.get_variable("dense/bias", [5], initializer=tf.zeros_initializer())
            logits = tf.nn.bias_add(tf.matmul(pooled, w), bias, name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        step = tf.train.get_or_create_global_step()
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train_op = tf.train.MomentumOptimizer(0.05, 0.9).minimize(loss, global_step=step)
        sess = tf.Session(config=session_config())
        sess.run(tf.global_variables_initializer())
    randomize_bn_and_biases(sess, 1)
    rng = np.random.RandomState(1)
    feeds = lambda i: {"x:0": rng.standard_normal((BATCH, 12, 12, 3)).astype(np.float32),  # noqa: E731
                       "labels:0": rng.randint(0, 5, BATCH)}
    prefix = _train_and_save(graph, sess, loss, train_op, feeds, os.path.join(folder, "model.ckpt"))
    sess.close()
    return dict(prefix=prefix, meta=prefix + ".meta", outputs=["net/logits", "loss"], logits="net/logits",
                input="x:0")


def _keras_fit_checkpoint(folder):
    """resnet trained by Keras ``fit`` (no learning phase: BN is an ``If``; legacy Keras Nadam, which
    updates its slots ``training/Nadam/<var>/m`` with plain assigns), saved with a plain Saver."""
    import tf_keras as keras
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=session_config()).as_default() as sess:
        info = example_models.build("resnet", learning_phase=None, seed=4, widths=(8, 12, 16))
        info.model.compile(optimizer=keras.optimizers.legacy.Nadam(1e-3),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        sess.run(tf.global_variables_initializer())
        rng = np.random.RandomState(4)
        info.model.fit(rng.rand(16, 28, 28, 1).astype(np.float32), rng.randint(0, 10, 16), epochs=1, verbose=0)
        randomize_bn_and_biases(sess, 4)
        prefix = tf.train.Saver().save(sess, os.path.join(folder, "model.ckpt"))
    return dict(prefix=prefix, meta=prefix + ".meta", outputs=info.output_node_names,
                logits=info.output_node_names[0], input=info.input_name, loss=None)


BUILDERS = {"keras": _keras_checkpoint, "ref": _ref_checkpoint, "keras_fit": _keras_fit_checkpoint}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def trained(request, tmp_path_factory):
    return BUILDERS[request.param](str(tmp_path_factory.mktemp(request.param)))


def _digests(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(folder))}


def _half_spec(model):
    scores = criteria.unit_scores(model.analysis, "l1", model.value)
    order = allocation.rank_units(model.analysis, scores)
    counts = {g.id: max(1, g.channels // 2) for g in model.analysis.groups if g.prunable}
    return spec_lib.spec_from_counts(model.analysis, order, counts)


def _input_feed(trained, seed=0):
    shape = (3, 28, 28, 1) if trained["input"] != "x:0" else (3, 12, 12, 3)
    return {trained["input"]: np.random.RandomState(seed).standard_normal(shape).astype(np.float32)}


def _sparse_outputs(trained, spec, feeds):
    """Outputs of the original model with the spec's pruned channels zeroed."""
    frozen = checkpoint.freeze(trained["meta"], trained["prefix"], [trained["logits"]])
    analysis = analyze(frozen, None, [trained["logits"]])
    return run_graph(slim.apply_sparse(analysis.plan(spec)), feeds,
                     [trained["logits"] + ":0"])[0]


def test_slim_checkpoint_equals_sparse_and_keeps_training(trained, tmp_path):
    before = _digests(os.path.dirname(trained["prefix"]))
    model = checkpoint.CheckpointModel(trained["meta"], trained["prefix"], trained["outputs"])
    assert model.slots, "optimizer slots were not found"
    spec = _half_spec(model)
    keep = spec.mask(model.analysis)
    out = str(tmp_path / "slim")
    result = checkpoint.strip_checkpoint(model, spec, out, output_graph=str(tmp_path / "slim.pb"))
    assert _digests(os.path.dirname(trained["prefix"])) == before, "input checkpoint was modified"
    assert result.after.macs < result.before.macs
    assert tf.train.latest_checkpoint(out) == result.checkpoint
    assert not [f for f in os.listdir(out) if f.startswith(".tf1prune-")], "staging folder left behind"

    feeds = _input_feed(trained)
    sparse = _sparse_outputs(trained, spec, feeds)
    graph_def = tf.GraphDef()
    with open(result.graph, "rb") as f:
        graph_def.ParseFromString(f.read())
    slim_out = run_graph(graph_def, feeds, [trained["logits"] + ":0"])[0]
    np.testing.assert_allclose(slim_out, sparse, rtol=1e-4, atol=1e-4 * np.abs(sparse).max())

    # every sliced variable and slot is the original sliced; other entries are copied
    old, new = model.reader, tf.train.load_checkpoint(result.checkpoint)
    like = model.sliced_variables()
    assert any(opt in k for k in like for opt in ("Adam", "Momentum", "Nadam")), "no optimizer slot was sliced"
    for key, shape in new.get_variable_to_shape_map().items():
        value = old.get_tensor(key)
        for axis, b in (model.analysis.bindings[like[key]] if key in like else {}).items():
            value = np.compress(model.analysis.kept_positions(b.elems, keep), value, axis=axis)
        np.testing.assert_array_equal(new.get_tensor(key), value, err_msg=key)

    if trained.get("loss", "loss") is None:
        return   # no loss node in this meta graph
    # restore the slim meta graph + checkpoint, train one step with the same optimizer, save
    graph = tf.Graph()
    with graph.as_default():
        tf.train.import_meta_graph(result.meta_graph)
        loss = graph.get_tensor_by_name("loss:0")
        step = tf.train.get_global_step()
        assert step is not None, "global_step was not kept"
        opt = tf.train.AdamOptimizer(1e-2) if trained["input"] != "x:0" else tf.train.MomentumOptimizer(0.05, 0.9)
        updates = graph.get_collection(tf.GraphKeys.UPDATE_OPS)
        assert bool(updates) == (trained["input"] == "x:0"), "UPDATE_OPS were not kept"
        with tf.control_dependencies(updates):
            train_op = opt.minimize(loss, global_step=step)
        saver = tf.train.Saver()
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())   # the initializers fit the slim shapes
            saver.restore(sess, result.checkpoint)   # slots too: same names, sliced shapes
            logits = sess.run(trained["logits"] + ":0", feeds)
            np.testing.assert_allclose(logits, sparse, rtol=1e-4, atol=1e-4 * np.abs(sparse).max())
            n = feeds[trained["input"]].shape[0]
            sess.run(train_op, dict(feeds, **{"labels:0": np.arange(n) % 5}))
            saved = saver.save(sess, str(tmp_path / "again" / "model.ckpt"), global_step=step)
    again = tf.train.load_checkpoint(saved)
    assert again.get_tensor("global_step") == old.get_tensor("global_step") + 1
    for key, shape in new.get_variable_to_shape_map().items():
        assert list(again.get_variable_to_shape_map()[key]) == list(shape), key
    if updates:   # the moving averages were updated, at their slim width
        assert not np.array_equal(again.get_tensor("net/c1/moving_mean"), new.get_tensor("net/c1/moving_mean"))


def test_zeros_mode_removes_zeroed_channels(trained, tmp_path):
    model = checkpoint.CheckpointModel(trained["meta"], trained["prefix"], trained["outputs"])
    keep = model.choice(spec=_half_spec(model)).mask(model.analysis)
    values = {key: model.reader.get_tensor(key) for key in model.ckpt_shapes}
    for var, axes in model.analysis.bindings.items():   # zero the dropped channels' kernels only
        for axis, b in axes.items():
            if b.role.kernel:
                index = [slice(None)] * values[model.key(var)].ndim
                index[axis] = ~model.analysis.kept_positions(b.elems, keep)
                values[model.key(var)][tuple(index)] = 0
    zeroed = str(tmp_path / "zeroed" / "model.ckpt")
    os.makedirs(os.path.dirname(zeroed))
    checkpoint.write_checkpoint(zeroed, values, model.ckpt_dtypes)
    zero_model = checkpoint.CheckpointModel(trained["meta"], zeroed, trained["outputs"])
    np.testing.assert_array_equal(zero_model.choice(zeros=True).mask(zero_model.analysis), keep)


def test_bad_inputs_are_refused_and_nothing_is_written(trained, tmp_path):
    folder = os.path.dirname(trained["prefix"])
    before = _digests(folder)
    out = str(tmp_path / "out")
    corrupt = tmp_path / "corrupt.meta"
    corrupt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(Tf1PruneError, match="not a meta graph"):
        checkpoint.strip(str(corrupt), trained["prefix"], out, zeros=True, output_node_names=trained["outputs"])
    with pytest.raises(Tf1PruneError, match="cannot read checkpoint"):
        checkpoint.strip(trained["meta"], str(tmp_path / "nothing"), out, zeros=True,
                         output_node_names=trained["outputs"])
    with pytest.raises(Tf1PruneError, match="not in the graph"):
        checkpoint.strip(trained["meta"], trained["prefix"], out, zeros=True, output_node_names=["no_such_node"])
    other = json.loads(json.dumps(_half_spec(checkpoint.CheckpointModel(
        trained["meta"], trained["prefix"], trained["outputs"])).to_dict()))
    other["graph_digest"] = "0" * 16
    spec_path = tmp_path / "other.spec"
    spec_path.write_text(json.dumps(other))
    with pytest.raises(Tf1PruneError, match="another graph"):
        checkpoint.strip(trained["meta"], trained["prefix"], out, spec=str(spec_path),
                         output_node_names=trained["outputs"])
    # a checkpoint that lacks a variable of the meta graph
    reader = tf.train.load_checkpoint(trained["prefix"])
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "gamma" not in k}
    partial = str(tmp_path / "partial" / "model.ckpt")
    os.makedirs(os.path.dirname(partial))
    checkpoint.write_checkpoint(partial, values)
    with pytest.raises(Tf1PruneError, match="lacks variable"):
        checkpoint.strip(trained["meta"], partial, out, zeros=True, output_node_names=trained["outputs"])
    with pytest.raises(Tf1PruneError, match="holds an input"):
        checkpoint.strip(trained["meta"], trained["prefix"], folder, zeros=True,
                         output_node_names=trained["outputs"])
    assert not os.path.exists(out)
    assert _digests(folder) == before


def test_cli_strips_and_reports_errors(trained, tmp_path, capsys):
    model = checkpoint.CheckpointModel(trained["meta"], trained["prefix"], trained["outputs"])
    spec_path = str(tmp_path / "half.spec")
    _half_spec(model).save(spec_path)
    out = str(tmp_path / "cli")
    argv = ["tf1prune-strip-checkpoint", "--input_meta_graph", trained["meta"], "--input_checkpoint",
            os.path.dirname(trained["prefix"]), "--output_dir", out, "--spec", spec_path,
            "--output_node_names", ",".join(trained["outputs"]), "--output_graph", out + "/slim.pb"]
    assert strip_cli.main(argv) == 0
    text = capsys.readouterr().out
    macs = [int(v) for v in text.split("MACs:")[1].split("\n")[0].split("->")]
    assert macs[1] < macs[0]
    assert os.path.exists(out + "/slim.pb") and tf.train.latest_checkpoint(out)
    assert strip_cli.main(argv[:-2] + ["--zeros"]) == 2
    assert capsys.readouterr().err.strip() == "error: give exactly one of --spec or --zeros"
    assert strip_cli.main(argv + ["--input_graph", "x.pb"]) == 2
    assert capsys.readouterr().err.strip() == "error: --input_graph is not an option of this tool"
    bad = argv[:2] + [trained["prefix"] + ".index"] + argv[3:]
    assert strip_cli.main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a meta graph" in err[0]


# --- soft filter pruning ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_trained(tmp_path_factory):
    return _keras_checkpoint(str(tmp_path_factory.mktemp("sfp")))


def test_sfp_selects_only_block_internal_channels(keras_trained):
    pruner = sfp.SoftFilterPruningRunner(keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]])
    types = {b.type for b in pruner.blocks.values()}
    assert types == {"inverted_residual", "squeeze_excitation"}
    assert [name for name, _ in pruner.skipped] == ["block1"]   # no expand conv: shares the stem's channels
    counts = []
    for threshold in (0.9, 0.7, 0.5, 0.3):
        pruner.set_threshold(threshold)
        counts.append(sum(len(v) for v in pruner.select().values()))
    assert counts == sorted(counts) and counts[0] < counts[-1], counts
    for name, idx in pruner.select().items():
        channels = pruner.model.analysis.groups[pruner.blocks[name].group].channels
        assert len(idx) <= 0.75 * channels
    scoped = sfp.SoftFilterPruningRunner(keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]],
                                  scope_names=["block3_"])
    assert sorted(scoped.blocks) == ["block3", "block3_se"]
    with pytest.raises(Tf1PruneError, match="no prunable"):
        sfp.SoftFilterPruningRunner(keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]],
                             scope_names=["nowhere"])


def test_sfp_redundancy_selects_duplicated_filters(keras_trained, tmp_path):
    """A filter copied onto another (same kernel slices) is redundant at any threshold < 1."""
    pruner = sfp.SoftFilterPruningRunner(keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]],
                                  method="redundancy", threshold=0.999)
    model = pruner.model
    block = pruner.blocks["block4"]
    units = np.array(model.analysis.groups[block.group].units)
    values = {k: model.reader.get_tensor(k) for k in model.ckpt_shapes}
    for var, axes in model.analysis.bindings.items():
        for axis, b in axes.items():
            pos = {int(u): j for j, u in enumerate(model.analysis.unit_of[b.elems])}
            if b.role.kernel and int(units[0]) in pos:
                v = np.moveaxis(values[model.key(var)], axis, 0)
                v[pos[int(units[1])]] = 0.5 * v[pos[int(units[0])]]   # channel 1 = half of channel 0
    path = str(tmp_path / "dup" / "model.ckpt")
    os.makedirs(os.path.dirname(path))
    checkpoint.write_checkpoint(path, values)
    assert pruner.select(path)["block4"] == [1]


def test_sfp_loop_hook_summary_and_strip(keras_trained, tmp_path):
    pruner = sfp.SoftFilterPruningRunner(keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]],
                                  threshold=0.6, output_dir=str(tmp_path / "round1"))
    ckpt = pruner.soft_prune()
    selected = pruner.selected
    assert sum(map(len, selected.values())) > 0
    assert json.load(open(str(tmp_path / "round1" / "sfp_filters.json")))["selected"] == selected
    summary = pruner.summary(ckpt)
    assert summary.failure_rate == 0.0   # freshly zeroed

    # retrain from the soft-pruned checkpoint: without the hook the filters regrow
    def retrain(start, folder, hook=None, steps=3):
        graph = tf.Graph()
        with graph.as_default():
            saver = tf.train.import_meta_graph(keras_trained["meta"])
            train_op = graph.get_collection(tf.GraphKeys.TRAIN_OP) or [graph.get_operation_by_name("Adam")]
            hooks = [hook] if hook else []
            rng = np.random.RandomState(5)
            with tf.train.SingularMonitoredSession(hooks=hooks, config=session_config()) as sess:
                saver.restore(sess.raw_session(), start)
                for _ in range(steps):
                    sess.run(train_op, {keras_trained["input"]: rng.standard_normal((BATCH, 28, 28, 1)),
                                        "labels:0": rng.randint(0, 10, BATCH)})
                return saver.save(sess.raw_session(), os.path.join(folder, "model.ckpt"),
                                  global_step=tf.train.get_global_step())
    n_selected = sum(map(len, selected.values()))
    assert pruner.summary(keras_trained["prefix"]).failure_rate == 1.0   # the filters as they were
    free = retrain(ckpt, str(tmp_path / "free"))
    reader = tf.train.load_checkpoint(free)
    still_zero = zeros.zeroed_units(pruner.model.analysis, lambda n: reader.get_tensor(pruner.model.key(n)))
    assert still_zero.sum() < n_selected, "no selected filter regrew without the hook"
    held = pruner.summary(retrain(ckpt, str(tmp_path / "held"), pruner.hook(every_n_steps=1)))
    assert held.failure_rate == 0.0, str(held)
    assert "failure rate" in str(held)
    pruner.set_output_dir(str(tmp_path / "round2"))   # re-prune at the same threshold: same filters
    pruner.soft_prune(free)
    assert pruner.selected == selected
    pruner.summary(held.checkpoint)

    result = pruner.strip(str(tmp_path / "slim"), output_graph=str(tmp_path / "slim.pb"))
    assert result.after.macs < result.before.macs
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(result.graph, "rb").read())
    slim_analysis = analyze(graph_def, None, [keras_trained["logits"]])
    full = pruner.model.analysis
    for block in pruner.blocks.values():   # every inverted residual keeps its output width
        if block.type != "inverted_residual":
            continue   # the SE blocks here gate an inverted residual's internal channels
        out = block.nodes[-1] + ":0"
        assert slim_analysis.view.shape(out) == full.view.shape(out), block
    feeds = {keras_trained["input"]: np.random.RandomState(2).standard_normal((3, 28, 28, 1)).astype(np.float32)}
    frozen = checkpoint.freeze(keras_trained["meta"], held.checkpoint, [keras_trained["logits"]])
    frozen_analysis = analyze(frozen, None, [keras_trained["logits"]])
    keep = frozen_analysis.full_keep()
    for name, idx in selected.items():
        keep[np.array(frozen_analysis.groups[pruner.blocks[name].group].units)[idx]] = False
    sparse = run_graph(slim.apply_sparse(frozen_analysis.plan(Choice.from_mask(frozen_analysis, keep))), feeds, [keras_trained["logits"] + ":0"])[0]
    slim_out = run_graph(graph_def, feeds, [keras_trained["logits"] + ":0"])[0]
    np.testing.assert_allclose(slim_out, sparse, rtol=1e-4, atol=1e-4 * np.abs(sparse).max())


def test_sfp_bad_input(keras_trained, tmp_path):
    args = (keras_trained["meta"], keras_trained["prefix"], [keras_trained["logits"]])
    with pytest.raises(Tf1PruneError, match="method"):
        sfp.SoftFilterPruningRunner(*args, method="random")
    pruner = sfp.SoftFilterPruningRunner(*args)
    with pytest.raises(Tf1PruneError, match="threshold"):
        pruner.set_threshold(1.5)
    with pytest.raises(Tf1PruneError, match="output folder"):
        pruner.soft_prune()
    with pytest.raises(Tf1PruneError, match="nothing is selected"):
        pruner.summary()
    other = _ref_checkpoint(str(tmp_path))   # a checkpoint of another model
    with pytest.raises(Tf1PruneError, match="does not fit the meta graph"):
        pruner.select(other["prefix"])
    pruner.set_output_dir(os.path.dirname(keras_trained["prefix"]))
    with pytest.raises(Tf1PruneError, match="holds an input"):
        pruner.soft_prune()
    pruner.select()
    with pytest.raises(Tf1PruneError, match="holds an input"):
        pruner.strip(os.path.dirname(keras_trained["prefix"]))
    with pytest.raises(Tf1PruneError, match="tolerance"):
        sfp.SoftFilterPruningRunner(*args, tolerance=-1)


# --- unusual training graphs --------------------------------------------------------------------

def _small_net(extra=None, initializer=None, optimizer=None):
    """x -> conv c1 (8) -> relu -> conv c2 (8) -> mean -> dense fc (4); ref variables."""
    def build():
        x = tf.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        k1 = tf.get_variable("c1/kernel", [3, 3, 3, 8], use_resource=False)
        h = tf.nn.relu(tf.nn.conv2d(x, k1, [1, 1, 1, 1], "SAME"))
        k2 = tf.get_variable("c2/kernel", [1, 1, 8, 8], use_resource=False, initializer=initializer)
        h = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(h, k2, [1, 1, 1, 1], "SAME")), [1, 2])
        w = tf.get_variable("fc/kernel", [8, 4], use_resource=False)
        logits = tf.matmul(h, w, name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                              name="loss")
        step = tf.train.get_or_create_global_step()
        train_op = (optimizer or tf.train.GradientDescentOptimizer(0.1)).minimize(loss, global_step=step)
        return train_op, (extra(train_op) if extra else train_op)
    return build


def _train_small(folder, build, saver_fn=None):
    graph = tf.Graph()
    with graph.as_default():
        _, train_op = build()
        saver = saver_fn() if saver_fn else tf.train.Saver()
        rng = np.random.RandomState(0)
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.variables_initializer(tf.trainable_variables()))   # before the EMA shadows read them
            sess.run(tf.global_variables_initializer())
            for _ in range(2):
                sess.run(train_op, {"x:0": rng.randn(4, 8, 8, 3), "labels:0": rng.randint(0, 4, 4)})
            return saver.save(sess, os.path.join(folder, "model.ckpt"), global_step=tf.train.get_global_step())


def _check_small(prefix, tmp_path, outputs=("logits", "loss")):
    """Strip half of every group; the slim .pb must equal the sparse model; returns (model, result)."""
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, list(outputs))
    spec = _half_spec(model)
    result = checkpoint.strip_checkpoint(model, spec, str(tmp_path / "slim"),
                                         output_graph=str(tmp_path / "slim.pb"))
    feeds = {"x:0": np.random.RandomState(1).randn(2, 8, 8, 3).astype(np.float32)}
    sparse = _sparse_outputs(dict(meta=prefix + ".meta", prefix=prefix, logits="logits"), spec, feeds)
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(result.graph, "rb").read())
    np.testing.assert_allclose(run_graph(graph_def, feeds, ["logits:0"])[0], sparse, rtol=1e-4, atol=1e-5)
    return model, result


def test_saver_renaming_variables_and_a_second_saver(tmp_path):
    """The checkpoint keys come from the meta graph's own Saver (saver_def), not another one."""
    def savers():
        variables = {v.op.name: v for v in tf.global_variables()}
        tf.train.Saver({"c2/kernel": variables["c1/kernel"]}, name="init_saver")   # unrelated, made first
        return tf.train.Saver({"model/" + name: v for name, v in variables.items()})
    prefix = _train_small(str(tmp_path), _small_net(), savers)
    model, result = _check_small(prefix, tmp_path)
    assert model.key("c1/kernel") == "model/c1/kernel"
    reader = tf.train.load_checkpoint(result.checkpoint)
    assert reader.get_variable_to_shape_map()["model/c1/kernel"] == [3, 3, 3, 4]
    graph = tf.Graph()
    with graph.as_default():
        tf.train.import_meta_graph(result.meta_graph).restore(tf.Session(graph=graph), result.checkpoint)


def test_moving_average_shadows_and_keras_style_slots_are_sliced(tmp_path):
    def ema(train_op):
        with tf.control_dependencies([train_op]):
            return tf.train.ExponentialMovingAverage(0.9).apply(tf.trainable_variables())
    prefix = _train_small(str(tmp_path), _small_net(extra=ema, optimizer=tf.train.RMSPropOptimizer(0.01)))
    model, result = _check_small(prefix, tmp_path)
    shapes = tf.train.load_checkpoint(result.checkpoint).get_variable_to_shape_map()
    assert shapes["c1/kernel/ExponentialMovingAverage"] == shapes["c1/kernel"] == [3, 3, 3, 4]
    assert shapes["c1/kernel/RMSProp"] == shapes["c1/kernel/RMSProp_1"] == [3, 3, 3, 4]
    graph = tf.Graph()
    with graph.as_default():   # the shadows are not in the slim meta graph; EMA restores them by name
        tf.train.import_meta_graph(result.meta_graph)
        saver = tf.train.Saver(tf.train.ExponentialMovingAverage(0.9).variables_to_restore())
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            saver.restore(sess, result.checkpoint)


def test_initializers_that_cannot_be_shrunk_are_gathered(tmp_path):
    """An orthogonal initializer (QR, reshape) still initialises the slim variable."""
    prefix = _train_small(str(tmp_path), _small_net(initializer=tf.orthogonal_initializer()))
    _, result = _check_small(prefix, tmp_path)
    graph = tf.Graph()
    with graph.as_default():
        tf.train.import_meta_graph(result.meta_graph)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            assert sess.run("c2/kernel:0").shape == (1, 1, 4, 4)


def test_variable_written_from_activations_is_not_pruned():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [2, 8, 8, 3], name="x")
        k1 = tf.get_variable("c1/kernel", [3, 3, 3, 8], use_resource=False)
        cache = tf.get_variable("cache", [2, 8, 8, 8], trainable=False, use_resource=False)
        h = tf.assign(cache, tf.nn.relu(tf.nn.conv2d(x, k1, [1, 1, 1, 1], "SAME")))
        k2 = tf.get_variable("c2/kernel", [1, 1, 8, 6], use_resource=False)
        tf.reduce_mean(tf.nn.conv2d(h, k2, [1, 1, 1, 1], "SAME"), [1, 2], name="out")
    analysis = analyze(graph.as_graph_def(), None, ["out"])
    group = analysis.group_by_node("Conv2D")
    assert not group.prunable and "Assign" in group.reason


def test_damaged_checkpoint_and_bad_outputs(trained, tmp_path):
    folder = os.path.dirname(trained["prefix"])
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, str(damaged))
    data = [f for f in os.listdir(str(damaged)) if ".data-" in f and f.startswith(os.path.basename(trained["prefix"]))]
    path = damaged / data[0]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    prefix = str(damaged / os.path.basename(trained["prefix"]))
    with pytest.raises(Tf1PruneError, match="cannot read"):
        checkpoint.strip(trained["meta"], prefix, str(tmp_path / "out"), zeros=True,
                         output_node_names=trained["outputs"])
    assert not os.path.exists(str(tmp_path / "out"))
    model = checkpoint.CheckpointModel(trained["meta"], trained["prefix"], trained["outputs"])
    keep = Choice.everything(model.analysis)
    with pytest.raises(Tf1PruneError, match="is an input file"):
        checkpoint.strip_checkpoint(model, keep, str(tmp_path / "o2"), output_graph=trained["meta"])
    var = next(v for v in model.analysis.bindings if model.is_variable(v))
    with pytest.raises(Tf1PruneError, match="has shape"):
        model.choice(masks={var: np.zeros(3)})


def test_second_head_weight_copy_and_l2sp_term(tmp_path):
    """An auxiliary head reading pruned channels must be listed as an output; a weight copy used in
    an L2-SP loss term shrinks with its weight and stays in the slim meta graph."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        labels = tf.placeholder(tf.int64, [None], name="labels")
        with tf.variable_scope("", use_resource=False):
            k1 = tf.get_variable("c1/kernel", [3, 3, 3, 8])
            h = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, k1, [1] * 4, "SAME")), [1, 2])
            w = tf.get_variable("fc/kernel", [8, 4])
            w0 = tf.get_variable("c1/kernel/initial", [3, 3, 3, 8], trainable=False)   # named like a slot
            logits = tf.matmul(h, w, name="logits")
            aux_logits = tf.matmul(h, tf.get_variable("aux/fc/kernel", [8, 4]), name="aux_logits")
        xent = lambda z: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z))  # noqa
        loss = tf.add(xent(logits), 0.1 * tf.reduce_sum(tf.square(k1 - w0)), name="loss")
        aux_loss = tf.identity(xent(aux_logits), name="aux_loss")
        step = tf.train.get_or_create_global_step()
        train_op = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss + 0.4 * aux_loss, global_step=step)
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(w0.assign(k1 + 0.1))
            sess.run(train_op, {x: np.ones((2, 8, 8, 3)), labels: [0, 1]})
            prefix = tf.train.Saver().save(sess, str(tmp_path / "pre" / "model.ckpt"), global_step=step)
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, ["logits", "loss"])
    with pytest.raises(Tf1PruneError, match="aux"):
        checkpoint.strip_checkpoint(model, _half_spec(model), str(tmp_path / "no"))
    assert not os.path.exists(str(tmp_path / "no"))

    outputs = ["logits", "loss", "aux_logits", "aux_loss"]
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, outputs)
    spec = _half_spec(model)
    result = checkpoint.strip_checkpoint(model, spec, str(tmp_path / "slim"),
                                         output_graph=str(tmp_path / "slim.pb"))
    shapes = tf.train.load_checkpoint(result.checkpoint).get_variable_to_shape_map()
    assert shapes["aux/fc/kernel/Momentum"] == shapes["aux/fc/kernel"] == [4, 4]
    assert shapes["c1/kernel/initial"] == shapes["c1/kernel"] == [3, 3, 3, 4]
    assert "c1/kernel/initial" in model.model_variables()
    feeds = {"x:0": np.random.RandomState(3).randn(2, 8, 8, 3).astype(np.float32), "labels:0": np.array([1, 2])}
    frozen = checkpoint.freeze(prefix + ".meta", prefix, outputs)
    analysis = analyze(frozen, None, outputs)
    names = [o + ":0" for o in outputs]
    sparse = run_graph(slim.apply_sparse(analysis.plan(spec)), feeds, names)
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(result.graph, "rb").read())
    for a, b in zip(run_graph(graph_def, feeds, names), sparse):   # the loss too: w0 is zeroed in sparse
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(Tf1PruneError, match="replace a file of the slim checkpoint"):
        checkpoint.strip_checkpoint(model, spec, str(tmp_path / "s2"),
                                    output_graph=str(tmp_path / "s2" / "checkpoint"))


# --- property: random architectures through the checkpoint path ------------------------------

OPTIMIZERS = {"adam": lambda: tf.train.AdamOptimizer(1e-2), "momentum": lambda: tf.train.MomentumOptimizer(0.05, 0.9),
              "rmsprop": lambda: tf.train.RMSPropOptimizer(1e-2)}


def _property_checkpoint(arch, seed, optimizer, folder):
    import architectures
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        _, logits = architectures.build(arch)
        labels = tf.placeholder(tf.int64, [None], name="labels")
        tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
        step = tf.train.get_or_create_global_step()
        train_op = OPTIMIZERS[optimizer]().minimize(graph.get_tensor_by_name("loss:0"), global_step=step)
        rng = np.random.RandomState(seed)
        feeds = {"input:0": rng.standard_normal((3, arch["size"], arch["size"], arch["in_ch"])),
                 "labels:0": rng.randint(0, arch["classes"], 3)}
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            randomize_bn_and_biases(sess, seed)
            sess.run(train_op, feeds)
            return tf.train.Saver().save(sess, os.path.join(folder, "model.ckpt"), global_step=step), feeds


def _check_random_checkpoint(arch, seed, optimizer, folder):
    prefix, feeds = _property_checkpoint(arch, seed, optimizer, folder)
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, ["logits", "loss"])
    spec = _half_spec(model)
    result = checkpoint.strip_checkpoint(model, spec, os.path.join(folder, "slim"),
                                         output_graph=os.path.join(folder, "slim.pb"))
    x = {"input:0": feeds["input:0"].astype(np.float32)}
    sparse = _sparse_outputs(dict(meta=prefix + ".meta", prefix=prefix, logits="logits"), spec, x)
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(result.graph, "rb").read())
    slim_out = run_graph(graph_def, x, ["logits:0"])[0]
    np.testing.assert_allclose(slim_out, sparse, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(sparse).max()))
    graph = tf.Graph()
    with graph.as_default():   # the slim model trains on with its restored optimizer state
        tf.train.import_meta_graph(result.meta_graph)
        train_op = OPTIMIZERS[optimizer]().minimize(graph.get_tensor_by_name("loss:0"),
                                                    global_step=tf.train.get_global_step())
        with tf.Session(config=session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().restore(sess, result.checkpoint)
            sess.run(train_op, feeds)


def run_random_checkpoints(folder):
    """The property, for :func:`test_random_architectures_through_checkpoints` (in a subprocess)."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    import architectures

    @settings(max_examples=int(os.environ.get("TF1PRUNE_CKPT_EXAMPLES", "8")), deadline=None,
              derandomize=os.environ.get("TF1PRUNE_EXPLORE") is None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(arch=architectures.architectures(), seed=st.integers(0, 2 ** 16),
           optimizer=st.sampled_from(sorted(OPTIMIZERS)))
    def check(arch, seed, optimizer):
        _check_random_checkpoint(arch, seed, optimizer, tempfile.mkdtemp(dir=folder))
    check()


def test_random_architectures_through_checkpoints(tmp_path):
    """Random architectures (tests/architectures.py) with Adam/Momentum/RMSProp: strip, slim ==
    sparse, and the slim model trains on.  Derandomized; ``TF1PRUNE_EXPLORE=1`` draws new ones.

    It runs in a subprocess with ``TF_ENABLE_ONEDNN_OPTS=0``: TF 2.21's oneDNN kernels sometimes
    corrupt the heap computing gradients of tiny layers (also in graphs built natively with those
    shapes, without tf1prune), which would abort the whole test run."""
    here = os.path.dirname(os.path.abspath(__file__))
    tests = os.path.dirname(here)
    code = ("import sys; sys.path[:0] = [%r, %r, %r]; import test_checkpoint; "
            "test_checkpoint.run_random_checkpoints(%r)" % (here, tests, os.path.dirname(tests), str(tmp_path)))
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], cwd=tests, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, (done.stdout[-4000:] + done.stderr[-4000:])
