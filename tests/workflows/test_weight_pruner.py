"""WeightPruningRunner: fine-grained masks in TF1 sessions, kept through training, stripped to constants."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import run_graph
from tf1prune.apply.finegrained import satisfied_n_m
from tf1prune.workflows.schedules import ConstantSparsity, PolynomialDecay
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows.weights import WeightPruningRunner
import example_models
from sessions import OUT, SPECS, seed_model


class LinearSchedule(ConstantSparsity):
    """tf.contrib.model_pruning's test: sparsity linspace(0, 0.9, 10)[step], frequency 2 from step 1 to 6.
    contrib updates when ``global_step >= last_update + frequency`` (last_update starts at 0): at steps
    2, 4 and 6, the TFMOT turns of begin_step 2."""

    def __init__(self):
        super().__init__(0.0, begin_step=2, end_step=6, frequency=2)

    def sparsity(self, step):
        return float(np.linspace(0.0, 0.9, 10)[step])


def value(sess, name):
    """A variable's value by name (a resource variable's ``name:0`` is its handle)."""
    var = next(v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES) if v.op.name == name)
    return sess.run(var)


def dense_model(weights):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 10), name="x")
        w = tf.Variable(weights.astype(np.float32), name="w")
        tf.matmul(x, w, name="logits")
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    return graph, sess


def test_contrib_conditional_update_counts():
    graph, sess = dense_model(np.linspace(1.0, 100.0, 100).reshape(10, 10))
    with graph.as_default():
        pruner = WeightPruningRunner(sess, ["logits"], LinearSchedule())
        counts = []
        for step in range(10):
            pruner.update(step)
            counts.append(int(np.count_nonzero(value(sess, "w"))))
    assert counts == [100, 100, 80, 80, 60, 60, 40, 40, 40, 40]


def conv_model(seed=0):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        labels = tf.placeholder(tf.int64, (None,), name="labels")
        h = tf.nn.relu(tf.nn.conv2d(x, tf.get_variable("c1/kernel", [3, 3, 3, 8]), [1, 1, 1, 1], "SAME", name="c1"))
        h = tf.nn.relu(tf.nn.conv2d(h, tf.get_variable("c2/kernel", [3, 3, 8, 8]), [1, 1, 1, 1], "SAME", name="c2"))
        h = tf.matmul(tf.reduce_mean(h, [1, 2]), tf.get_variable("fc/kernel", [8, 4]), name="fc")
        logits = tf.identity(h, name="logits")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = tf.train.get_or_create_global_step()
        sess = tf.Session(graph=graph)
    return graph, sess, loss, step


def feeds(seed):
    rng = np.random.RandomState(seed)
    return {"x:0": rng.randn(8, 8, 8, 3).astype(np.float32), "labels:0": rng.randint(0, 4, 8)}


def test_m_by_n_holds_through_adam_and_strip_equals_the_session(tmp_path):
    graph, sess, loss, step = conv_model()
    with graph.as_default():
        sess.run(tf.global_variables_initializer())
        pruner = WeightPruningRunner(sess, ["logits"], ConstantSparsity(0.5, 0, frequency=1), m_by_n=(2, 4))
        assert [s[0] for s in pruner.skipped] == ["c1"]        # 3 input channels: not a multiple of 4
        known = set(tf.global_variables())
        train = tf.train.AdamOptimizer(0.05).minimize(loss, global_step=step)
        sess.run(tf.variables_initializer([v for v in tf.global_variables() if v not in known]))   # Adam's
        for i in range(5):
            sess.run(train, feeds(i))
            sess.run(pruner.update_op)
        for name in ("c2/kernel", "fc/kernel"):
            kernel = value(sess, name)
            axis = 2 if kernel.ndim == 4 else 0
            assert satisfied_n_m(kernel, axis, sizes=(4,)) == [(2, 4)], name
        saved = tf.train.Saver().save(sess, str(tmp_path / "m.ckpt"))
        reader = tf.train.load_checkpoint(saved)
        assert satisfied_n_m(reader.get_tensor("c2/kernel"), 2, sizes=(4,)) == [(2, 4)]   # sparse on disk
        frozen = pruner.strip()
        expected = sess.run("logits:0", feeds(9))
    assert not [n for n in frozen.node if "tf1prune" in n.name]
    np.testing.assert_allclose(run_graph(frozen, {"x:0": feeds(9)["x:0"]}, ["logits:0"])[0], expected,
                               rtol=1e-5, atol=1e-6)


def test_polynomial_schedule_through_a_monitored_session_with_summaries(tmp_path):
    graph, sess, loss, step = conv_model()
    sess.close()
    with graph.as_default():
        with tf.Session(graph=graph) as init_sess:
            init_sess.run(tf.global_variables_initializer())
            pruner = WeightPruningRunner(init_sess, ["logits"], PolynomialDecay(0.0, 0.75, 0, 6, frequency=2),
                                  sparsity_map={"fc": 0.5})
        summaries = pruner.summaries()
        train = tf.train.MomentumOptimizer(0.05, 0.9).minimize(loss, global_step=step)
        with tf.train.MonitoredTrainingSession(checkpoint_dir=str(tmp_path), hooks=[pruner.hook()],
                                               save_checkpoint_steps=4) as mon:
            for i in range(8):
                mon.run(train, feeds(i))
            report = {r.layer: r.sparsity for r in pruner.report(mon._tf_sess())}
            summary = mon.run(summaries)
        assert report["c2"] == pytest.approx(0.75, abs=0.01) and report["fc"] == pytest.approx(0.5, abs=0.01)
        assert tf.Summary.FromString(summary).value
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
        assert np.mean(reader.get_tensor("c2/kernel") == 0) >= 0.4        # checkpoints are sparse


def test_block_sparsity_and_keras_fit():
    keras = pytest.importorskip("tf_keras")
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph).as_default() as sess:
        inputs = keras.Input((8, 8, 4), name="x")
        y = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inputs)
        y = keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling2D()(y))
        model = keras.Model(inputs, y)
        model.compile(keras.optimizers.legacy.Adam(0.01), "mse")
        sess.run(tf.global_variables_initializer())
        pruner = WeightPruningRunner(sess, [model.output.op.name], ConstantSparsity(0.5, 0, frequency=1),
                              block_size=(1, 4), excludes=["logits/kernel"])
        x = np.random.RandomState(0).rand(16, 8, 8, 4).astype(np.float32)
        model.fit(x, np.zeros((16, 4)), epochs=2, batch_size=8, verbose=0, callbacks=[pruner.keras_callback()])
        kernel = sess.run(model.layers[1].kernel)
    blocks = (kernel.reshape(3, 3, 4, 2, 4) != 0)
    assert (blocks.all(-1) | ~blocks.any(-1)).all()            # whole 1x4 blocks
    assert np.mean(kernel == 0) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(schedule=0.5), "schedule must be"),
    (dict(m_by_n=(4, 2)), "0 < N < M"),
    (dict(block_size=(20, 1)), "larger than"),
    (dict(excludes=["nope"]), "neither a layer nor a kernel"),
])
def test_bad_arguments(kwargs, message):
    graph, sess = dense_model(np.ones((10, 10)))
    with graph.as_default():
        args = dict(schedule=ConstantSparsity(0.5, 0))
        args.update(kwargs)
        with pytest.raises(tf1prune.Tf1PruneError, match=message):
            WeightPruningRunner(sess, ["logits"], **args)


# --- frozen graphs and checkpoints -------------------------------------------------------------
def test_convert_fine_grained_and_the_sparsity_report(tmp_path, capsys):
    import re
    import example_models
    from tf1prune.cli import analyze as analyze_cli
    from tf1prune.cli import convert as convert_cli
    gd, specs, outs = example_models.frozen_graph_def("resnet", seed=1)
    path, out = str(tmp_path / "in.pb"), str(tmp_path / "out.pb")
    tf1prune.save_graph_def(gd, path)
    base = ["tf1prune-convert", "--input_graph", path, "--output_graph", out, "--output_node_names", outs[0]]
    assert convert_cli.main(base + ["--m_by_n", "2:4"]) == 0
    printed = capsys.readouterr().out
    assert "fine-grained sparsity skips stem_conv/Conv2D: 1 input channels are not a multiple of 4" in printed
    assert "MACs reduction: 0.00%" in printed and "2:4" in printed
    assert analyze_cli.main(["tf1prune-analyze", "--input_graph", out, "--output_node_names", outs[0],
                             "--sparsity_report"]) == 0
    report = capsys.readouterr().out
    assert re.search(r"stage1_block1_a_conv/Conv2D\s+\d+\s+50\.0%\s+2:4, 4:8", report), report
    raw, packed = map(int, re.search(r"file: (\d+) bytes, (\d+) gzip-compressed", report).groups())
    assert packed < raw
    # channels first, then 75% of the slim graph's weights, in blocks of 1x4
    assert convert_cli.main(base + ["--sparsity", "0.5", "--weight_sparsity", "0.75", "--block", "1x4"]) == 0
    printed = capsys.readouterr().out
    total = float(re.search(r"^total\s+\d+\s+([\d.]+)%", printed, re.M).group(1))
    assert abs(total - 75) < 2 and abs(float(re.search(r"MACs reduction: ([\d.]+)%", printed).group(1)) - 50) <= 0.5
    sparse_gd = tf1prune.load_graph_def(out)
    x = np.random.RandomState(0).rand(2, 28, 28, 1).astype(np.float32)
    assert run_graph(sparse_gd, {"input_1:0": x}, [outs[0] + ":0"])[0].shape == (2, 10)
    for extra, message in ((["--m_by_n", "4:2"], "0 < N < M"), (["--m_by_n", "2-4"], "N:M"),
                           (["--weight_sparsity", "0.5", "--m_by_n", "2:4"], "not both"),
                           (["--block", "1x4"], "--block needs --weight_sparsity"),
                           (["--weight_sparsity", "1.5"], "in [0, 1)")):
        assert convert_cli.main(base + extra) == 2
        assert message in capsys.readouterr().err, extra


def test_sparsify_checkpoint_masks_the_optimizer_slots(tmp_path):
    from tf1prune.apply import checkpoint
    from tf1prune.workflows.weights import sparsify_checkpoint
    graph, sess, loss, step = conv_model()
    with graph.as_default():
        train = tf.train.AdamOptimizer(0.05).minimize(loss, global_step=step)
        sess.run(tf.global_variables_initializer())
        for i in range(3):
            sess.run(train, feeds(i))
        prefix = tf.train.Saver().save(sess, str(tmp_path / "train" / "m.ckpt"))
    model = checkpoint.CheckpointModel(prefix + ".meta", prefix, ["logits"])
    new, skipped = sparsify_checkpoint(model, str(tmp_path / "sparse"), m_by_n=(2, 4))
    assert [s[0] for s in skipped] == ["c1"]
    reader = tf.train.load_checkpoint(new)
    kernel = reader.get_tensor("c2/kernel")
    assert satisfied_n_m(kernel, 2, sizes=(4,)) == [(2, 4)]
    for slot in ("c2/kernel/Adam", "c2/kernel/Adam_1"):
        np.testing.assert_array_equal(reader.get_tensor(slot) != 0, (kernel != 0) & (reader.get_tensor(slot) != 0))
        assert np.all(reader.get_tensor(slot)[kernel == 0] == 0)
    assert np.count_nonzero(reader.get_tensor("c1/kernel")) == 3 * 3 * 3 * 8   # skipped: dense


# --- after channel pruning: the sparsity holds in the slim kernels ----------------------------------
def channel_pruned_seed_model(tmp_path, channel_divisible=1):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = tf1prune.IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path),
                                                 channel_divisible=channel_divisible)
        runner.prune(sparsity=0.5, strategy="uniform", best_effort=True)
    return graph, sess, runner


def slim_kernels(graph_def):
    from tf1prune.core.rules import build
    return {n.name: build.const_value(n) for n in graph_def.node
            if n.op == "Const" and n.name.endswith("kernel") and build.const_value(n).ndim >= 2}


@pytest.mark.slow
def test_weight_sparsity_after_channel_pruning_holds_in_the_slim_kernels(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    graph, sess, runner = channel_pruned_seed_model(tmp_path)
    with graph.as_default():
        pruner = WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0, frequency=1))
        pruner.update(0)
        rows = {r.variable: r for r in pruner.report()}
        kernels = slim_kernels(runner.get_slim_graph_def())
    assert set(kernels) <= set(rows)
    for name, value in kernels.items():
        share = float(np.mean(value == 0))
        assert abs(share - 0.5) <= 0.5 / value.size + 1e-9, (name, share)
        assert rows[name].sparsity == pytest.approx(share), name


@pytest.mark.slow
def test_m_by_n_after_channel_pruning_holds_in_the_slim_kernels(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    from tf1prune.apply.finegrained import satisfied_n_m
    graph, sess, runner = channel_pruned_seed_model(tmp_path, channel_divisible=4)
    with graph.as_default():
        pruner = WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0, frequency=1), m_by_n=(2, 4))
        pruner.update(0)
        kernels = slim_kernels(runner.get_slim_graph_def())
    checked = 0
    for name, value in kernels.items():
        axis = value.ndim - 2
        if value.shape[axis] % 4 == 0:
            assert satisfied_n_m(value, axis, sizes=(4,)) == [(2, 4)], name
            checked += 1
    assert checked >= 2


@pytest.mark.slow
def test_weight_pruner_and_sparsify_refuse_what_they_would_ignore(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    graph, sess, _ = seed_model()
    with graph.as_default():
        with pytest.raises(Tf1PruneError, match="m_by_n"):
            WeightPruningRunner(sess, OUT, ConstantSparsity(0.8, 0), m_by_n=(2, 4))
        with pytest.raises(Tf1PruneError, match="block_pooling"):
            WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0), block_size=(1, 2), block_pooling="MIN")
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    with pytest.raises(Tf1PruneError, match="nope"):
        tf1prune.workflows.weights.sparsify_graph_def(graph_def, specs, outputs, sparsity=0.5, excludes=["nope"])
