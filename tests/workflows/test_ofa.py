"""Once-for-all: elastic masks equal the slim sub-networks, sandwich training, search, export."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import architectures
import tf1prune
from helpers import randomize_bn_and_biases, run_graph
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tf1prune.errors import Tf1PruneError
from tf1prune.choose.search import Subnet, pareto_front
from tf1prune.workflows.ofa import OnceForAllRunner

pytestmark = pytest.mark.slow
SHAPE = (1, 28, 28, 1)
from sessions import RESNET_OUT, SPECS, resnet_model


def keras_model(name, learning_phase=0, seed=0):
    graph = tf.Graph()
    sess = tf.Session(graph=graph)
    with graph.as_default():
        info = example_models.build(name, learning_phase=learning_phase, seed=seed)
        sess.run(tf.global_variables_initializer())
        example_models._randomise(info.model, sess, np.random.RandomState(seed))
    return graph, sess, info


def ref_variable_model(seed=0):
    """Raw ops with TF1 reference variables: conv, fused BN (training mode), relu, conv, dense."""
    graph = tf.Graph()
    rng = np.random.RandomState(seed)
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 12, 12, 3), name="x")

        def var(name, shape):
            return tf.get_variable(name, initializer=rng.standard_normal(shape).astype(np.float32), use_resource=False)
        h = tf.nn.conv2d(x, var("c1/kernel", (3, 3, 3, 8)), [1, 1, 1, 1], "SAME")
        h, _, _ = tf.nn.fused_batch_norm(h, var("bn/gamma", (8,)), var("bn/beta", (8,)), is_training=True)
        h = tf.nn.relu(h)
        h = tf.nn.conv2d(h, var("c2/kernel", (3, 3, 8, 6)), [1, 2, 2, 1], "SAME") + var("c2/bias", (6,))
        h = tf.reshape(tf.nn.sigmoid(h), [-1, 6 * 6 * 6])
        tf.identity(tf.matmul(h, var("fc/kernel", (216, 4))), name="logits")
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    return graph, sess


def check_subnets(model, specs, outputs, count=3, seed=0):
    """Every sampled sub-network: the masked session equals its slim graph; MACs agree."""
    rng = np.random.RandomState(seed)
    feeds = {name: rng.standard_normal((2,) + tuple(shape[1:])).astype(np.float32) for name, (shape, _) in specs.items()}
    for widths in [model.min_widths()] + [model.sample(rng) for _ in range(count)]:
        model.set_widths(widths)
        live = model.sess.run([o + ":0" for o in outputs], feeds)
        slim_gd = model.get_static_subnet(widths)
        slim = run_graph(slim_gd, feeds, [o + ":0" for o in outputs])
        for a, b in zip(live, slim):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        analysis = tf1prune.analyze(slim_gd, specs, outputs)
        assert tf1prune.count_macs(analysis).macs == model.macs(widths)
    model.set_widths(model.max_widths())


@pytest.mark.parametrize("name,learning_phase", [("resnet", None), ("mobilenet_v2_se", 0), ("inception", 0)])
def test_masked_sessions_equal_the_slim_subnetworks(tmp_path, name, learning_phase):
    graph, sess, info = keras_model(name, learning_phase)
    specs = {info.input_name: (SHAPE, "float32")}
    with graph.as_default():
        before = sess.run(info.output_node_names[0] + ":0", {info.input_name: np.ones((1, 28, 28, 1), np.float32)})
        model = OnceForAllRunner(name, sess, specs, info.output_node_names, workspace=str(tmp_path)).ofa_model(
            expand_ratios=(0.25, 0.5, 0.75))
    assert model.sess is not sess and all(len(c) > 1 for c in model.choices.values())
    assert model.macs(model.min_widths()) < model.macs(model.max_widths()) == model.full_macs
    check_subnets(model, specs, info.output_node_names)
    full = model.sess.run(info.output_node_names[0] + ":0", {info.input_name: np.ones((1, 28, 28, 1), np.float32)})
    np.testing.assert_allclose(full, before, rtol=1e-5, atol=1e-6)   # widest = the original model


def test_reference_variables_and_rounding(tmp_path):
    graph, sess = ref_variable_model()
    specs = {"x:0": ((1, 12, 12, 3), "float32")}
    model = OnceForAllRunner("ref", sess, specs, ["logits"], workspace=str(tmp_path)).ofa_model((0.5, 0.75), channel_divisible=2)
    assert not model.unmasked
    assert all(c % 2 == 0 for choices in model.choices.values() for c in choices)
    check_subnets(model, specs, ["logits"])


def elastic_resnet(tmp_path, batch=32):
    """The resnet example made elastic (widths 0.25 and 0.5), with its logits, loss and the feed
    of a random training batch of ``batch`` images."""
    import tf_keras as keras
    graph, sess, info = keras_model("resnet", learning_phase=None)
    specs = {info.input_name: (SHAPE, "float32")}
    rng = np.random.RandomState(0)
    with graph.as_default():
        model = OnceForAllRunner("resnet", sess, specs, info.output_node_names, workspace=str(tmp_path)).ofa_model((0.25, 0.5))
        logits = info.model.outputs[0]
        labels = tf.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        feed = {graph.get_tensor_by_name(info.input_name): rng.rand(batch, 28, 28, 1).astype(np.float32),
                labels: rng.randint(0, 10, batch), keras.backend.learning_phase(): True}
    return graph, model, info, specs, logits, loss, feed


def sandwich_setup(tmp_path, num_random=1):
    graph, model, info, specs, logits, loss, feed = elastic_resnet(tmp_path)
    with graph.as_default():
        step = tf.train.get_or_create_global_step()
        trainer = model.sandwich_trainer(loss, tf.train.AdamOptimizer(1e-2), logits, num_random=num_random,
                                         global_step=step)
    return graph, model, info, trainer, feed, step, specs


def test_sandwich_training_learns_every_width_and_keeps_the_masks_exact(tmp_path):
    graph, model, info, trainer, feed, step, specs = sandwich_setup(tmp_path)
    (kernel,) = [v for v in model.model_variables if v.op.name == "stem_conv/kernel"]
    before = model.sess.run(kernel)
    first = trainer.step(feed)
    for _ in range(8):
        last = trainer.step(feed)
    assert model.sess.run(step) == 9    # one optimizer update per sandwich step
    assert last["loss"] < first["loss"] and last["distill"] < first["distill"]
    after = model.sess.run(kernel)
    # channels outside the smallest width were trained, not zeroed
    assert np.all(np.abs(after - before).reshape(-1, after.shape[-1]).sum(0) > 0)
    assert np.all(np.abs(after).reshape(-1, after.shape[-1]).sum(0) > 0)
    assert model.sess.run(model.widths).tolist() == [model.max_widths()[g] for g in model.gids]
    model._check_masks(seed=3)


def test_distill_weight_scales_the_distilled_gradients(tmp_path):
    graph, model, info, specs, logits, loss, feed = elastic_resnet(tmp_path, batch=16)
    with graph.as_default():
        for bad in (0, -1.0, True, "x", float("nan")):
            with pytest.raises(Tf1PruneError, match="distill_weight"):
                model.sandwich_trainer(loss, tf.train.GradientDescentOptimizer(0.1), logits, distill_weight=bad)
        assert model.sandwich_trainer(loss, tf.train.GradientDescentOptimizer(0.1), logits,
                                      num_random=3).distill_weight == 0.25   # the default: 1 / (1 + num_random)
        trainer = model.sandwich_trainer(loss, tf.train.GradientDescentOptimizer(0.1), logits, num_random=0,
                                         distill_weight=0.3)
        (kernel,) = [v for v in model.model_variables if v.op.name == "logits/kernel"]
        g_label, = tf.gradients(loss, [kernel])
        g_distill, = tf.gradients(trainer.distill_loss, [kernel])
    s = model.sess
    model.set_widths(model.max_widths())
    teacher, gl, before = s.run([logits, g_label, kernel], feed)
    model.set_widths(model.min_widths())
    gd = s.run(g_distill, {**feed, trainer.teacher: teacher})
    assert np.abs(gd).sum() > 0
    trainer.step(feed)   # SGD: one update with the label gradient + 0.3 x the smallest one's distillation gradient
    np.testing.assert_allclose(s.run(kernel), before - 0.1 * (gl + 0.3 * gd), rtol=1e-4, atol=1e-6)


def test_sandwich_steps_in_a_monitored_session(tmp_path):
    graph, model, info, trainer, feed, step, specs = sandwich_setup(tmp_path)
    trainer.step(feed)
    with graph.as_default():
        saver = tf.train.Saver()
    path = saver.save(model.sess, str(tmp_path / "ckpt"))
    creator = tf.train.ChiefSessionCreator(checkpoint_filename_with_path=path)
    with graph.as_default(), tf.train.MonitoredSession(session_creator=creator) as mon:   # finalizes the graph
        losses = [trainer.step(feed, sess=mon)["loss"] for _ in range(3)]
        assert mon.run(step) == 4 and np.all(np.isfinite(losses))
        assert mon.run(model.widths).tolist() == [model.max_widths()[g] for g in model.gids]


def eval_fn(graph_def):
    """Mean of the logits on fixed inputs: deterministic, depends on every width."""
    x = np.random.RandomState(5).rand(16, 28, 28, 1).astype(np.float32)
    return float(run_graph(graph_def, {"input_1:0": x}, ["logits/BiasAdd:0"])[0].mean())


def test_search_pareto_front_and_export(tmp_path):
    graph, sess, info = keras_model("resnet", learning_phase=0)
    specs = {info.input_name: (SHAPE, "float32")}
    with graph.as_default():
        model = OnceForAllRunner("resnet", sess, specs, info.output_node_names, workspace=str(tmp_path)).ofa_model(
            (0.25, 0.5, 0.75))
    x = np.random.RandomState(1).rand(16, 28, 28, 1).astype(np.float32)
    calibration = [{info.input_name: x[:8]}, {info.input_name: x[8:]}]
    lo, hi = 0.3 * model.full_macs, 0.7 * model.full_macs
    front = model.search(eval_fn, calibration, lo, hi, population=5, generations=2, seed=0)
    assert front and all(lo <= s.macs <= hi for s in front)
    assert [s.macs for s in front] == sorted(s.macs for s in front)
    assert all(b.metric > a.metric for a, b in zip(front, front[1:]))    # each costlier one is better
    saved = json.load(open(os.path.join(str(tmp_path), "resnet.ofa_search.json")))
    evaluated = saved["entries"]
    assert saved["kind"] == "ofa-search" and len(evaluated) >= len(front)
    assert [s["macs"] for s in saved["extra"]["front"]] == [s.macs for s in front]
    assert len(evaluated) <= 15 and len({json.dumps(s["widths"], sort_keys=True)
                                         for s in evaluated.values()}) == len(evaluated)
    # the metric of a front member is the one of its exported, calibrated slim graph
    widths = front[0].widths
    slim_gd = model.get_static_subnet(widths, calibration, output_graph=str(tmp_path / "sub.pb"),
                                      output_dir=str(tmp_path / "ckpt"))
    assert abs(eval_fn(slim_gd) - front[0].metric) < 1e-4
    assert tf1prune.count_macs(tf1prune.analyze(tf1prune.load_graph_def(str(tmp_path / "sub.pb")), specs,
                                                info.output_node_names)).macs == front[0].macs
    # the slim checkpoint restores into its meta graph, gives the same outputs and keeps training
    g2 = tf.Graph()
    with g2.as_default():
        saver = tf.train.import_meta_graph(str(tmp_path / "ckpt" / "resnet.meta"))
        out = g2.get_tensor_by_name("logits/BiasAdd:0")
        loss = tf.reduce_mean(tf.square(out))
        train = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
        with tf.Session(graph=g2) as s:
            s.run(tf.global_variables_initializer())
            saver.restore(s, str(tmp_path / "ckpt" / "resnet"))
            feed = {"input_1:0": x}
            np.testing.assert_allclose(s.run(out, feed), run_graph(slim_gd, feed, ["logits/BiasAdd:0"])[0],
                                       rtol=1e-4, atol=1e-5)
            first = s.run(loss, feed)
            for _ in range(3):
                s.run(train, feed)
            assert s.run(loss, feed) < first


def test_search_in_a_latency_range(tmp_path, monkeypatch):
    """``latency=(low, high)``: only sub-networks the latency model puts in that share of the full
    network's latency are searched (a stand-in profile: the mean kept MACs share of the layers)."""
    from tf1prune.choose import costs

    class Profile:
        total = 1.0

        def predict(self, shares):
            return sum(shares.values()) / len(shares)
    monkeypatch.setattr(costs.LatencyModel, "profile_of", classmethod(lambda cls, analysis: Profile()))
    graph, sess, info = keras_model("resnet", learning_phase=0)
    specs = {info.input_name: (SHAPE, "float32")}
    with graph.as_default():
        model = OnceForAllRunner("resnet", sess, specs, info.output_node_names, workspace=str(tmp_path)).ofa_model(
            (0.25, 0.5, 0.75))
    calibration = [{info.input_name: np.random.RandomState(1).rand(8, 28, 28, 1).astype(np.float32)}]
    latency = costs.make(costs.latency_model(1), model.analysis, model.order)
    front = model.search(eval_fn, calibration, latency=(0.4, 0.6), population=4, generations=1, seed=0)
    assert front and all(0.4 <= latency(s.widths) / latency.total <= 0.6 for s in front)
    with pytest.raises(Tf1PruneError, match="latency is a"):
        model.search(eval_fn, calibration, 0, model.full_macs, latency=(0.4, 0.6))


def test_search_records_failures_and_refuses_bad_input(tmp_path):
    graph, sess, info = keras_model("resnet", learning_phase=0)
    specs = {info.input_name: (SHAPE, "float32")}
    pruner = OnceForAllRunner("resnet", sess, specs, info.output_node_names, workspace=str(tmp_path))
    with pytest.raises(Tf1PruneError, match="expand_ratios"):
        pruner.ofa_model((0.0, 0.5))
    with pytest.raises(Tf1PruneError, match="not in the graph"):
        OnceForAllRunner("resnet", sess, specs, ["nope"])
    with graph.as_default():
        model = pruner.ofa_model((0.5,))
    with pytest.raises(Tf1PruneError, match="already elastic"):
        pruner.ofa_model((0.5,))
    calibration = [{info.input_name: np.ones((4, 28, 28, 1), np.float32)}]
    with pytest.raises(Tf1PruneError, match="min_macs <= max_macs"):
        model.search(eval_fn, calibration, 10, 5)
    with pytest.raises(Tf1PruneError, match="no sub-network found within"):
        model.search(eval_fn, calibration, 0, model.macs(model.min_widths()) - 1)

    def failing(graph_def):
        raise RuntimeError("boom")
    with pytest.raises(Tf1PruneError, match="could be evaluated"):
        model.search(failing, calibration, 0, model.full_macs, population=2, generations=0)
    with pytest.raises(Tf1PruneError, match="cannot keep"):
        model.set_widths({**model.max_widths(), model.gids[0]: 3})
    with pytest.raises(Tf1PruneError, match="every prunable group"):
        model.get_static_subnet({model.gids[0]: model.choices[model.gids[0]][0]})


def test_keras_fit_cycles_the_widths(tmp_path):
    import tf_keras as keras
    graph, sess, info = keras_model("resnet", learning_phase=None)
    specs = {info.input_name: (SHAPE, "float32")}
    with graph.as_default():
        model = OnceForAllRunner("resnet", sess, specs, info.output_node_names, workspace=str(tmp_path)).ofa_model((0.5,))
        seen = []

        class Spy(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                seen.append(tuple(model.sess.run(model.widths)))
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-3), metrics=["accuracy"],
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.RandomState(0)
        with model.sess.as_default():
            info.model.fit(rng.rand(32, 28, 28, 1).astype(np.float32), rng.randint(0, 10, 32), batch_size=4,
                           epochs=1, verbose=0, callbacks=[model.keras_callback(num_random=1), Spy()])
    full, small = (tuple(model.max_widths()[g] for g in model.gids), tuple(model.min_widths()[g] for g in model.gids))
    assert seen[0] == full and seen[1] == small and len(seen) == 8
    assert tuple(model.sess.run(model.widths)) == full
    model._check_masks(seed=2)


def test_pareto_front():
    subnets = [Subnet(10, 0.5, {}), Subnet(5, 0.6, {}), Subnet(7, 0.4, {}), Subnet(12, 0.7, {}), Subnet(5, 0.2, {})]
    assert [(s.macs, s.metric) for s in pareto_front(subnets)] == [(5, 0.6), (12, 0.7)]
    assert [(s.macs, s.metric) for s in pareto_front(subnets, higher_is_better=False)] == [(5, 0.2)]


@settings(max_examples=int(os.environ.get("TF1PRUNE_EXAMPLES", "12")), deadline=None,
          derandomize=os.environ.get("TF1PRUNE_EXPLORE") is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(arch=architectures.architectures(), seed=st.integers(0, 2 ** 16))
def test_masks_equal_slim_subnetworks_on_random_architectures(arch, seed):
    """Residuals, concat, split, depthwise, SE, BN variants, flatten->dense: every sampled width of the
    elastic network equals its slim graph (ofa_model checks the smallest and one random width too)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        architectures.build(arch)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        randomize_bn_and_biases(sess, seed)
        specs = {"input:0": ((1, arch["size"], arch["size"], arch["in_ch"]), "float32")}
        try:
            model = OnceForAllRunner("arch", sess, specs, ["logits"], workspace="/nonexistent").ofa_model((0.5, 0.75))
        except Tf1PruneError as e:
            assume("more than one width" not in str(e))
            raise
    check_subnets(model, specs, ["logits"], count=2, seed=seed)


def test_an_incomplete_macs_total_is_refused():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        y = tf.nn.relu(tf.nn.conv2d(x, tf.get_variable("c1", (3, 3, 3, 6)), [1, 1, 1, 1], "SAME"))
        w = tf.get_variable("body_w", (1, 1, 6, 6))
        _, y = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, tf.nn.conv2d(v, w, [1, 1, 1, 1], "SAME")), [0, y])
        y = tf.nn.conv2d(tf.nn.relu(y), tf.get_variable("c2", (3, 3, 6, 5)), [1, 1, 1, 1], "SAME")
        tf.identity(tf.reduce_mean(y, [1, 2]), name="logits")
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    with pytest.raises(Tf1PruneError, match="MACs total is incomplete"):
        OnceForAllRunner("loop", sess, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"]).ofa_model((0.5,))


def test_set_widths_refuses_fractions(tmp_path):
    graph, sess, _ = resnet_model()
    with graph.as_default():
        model = tf1prune.OnceForAllRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path)).ofa_model((0.5, 1.0))
        widths = model.max_widths()
        gid = sorted(widths)[0]
        widths[gid] = widths[gid] + 0.5
        with pytest.raises(Tf1PruneError, match="integer"):
            model.set_widths(widths)
