"""Post-training refinement: bias compensation (measured and data-free), Gaussian moments through
activations, least-squares reconstruction, synthesized inputs, activation criteria, and the sparse
and slim graphs staying the same model with the updates."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from helpers import run_graph
from tf1prune.apply import refine as refine_lib
from tf1prune.apply import slim
from tf1prune.apply.reconstruct import reconstruct
from tf1prune.apply.synthesize import synthesize_inputs
from tf1prune.choose import criteria
from tf1prune.core import activations
from tf1prune.core.choice import Choice
from tf1prune.core.rules import build
from tf1prune.core.rules.moments import moments
from tf1prune.errors import Tf1PruneError

RNG = np.random.RandomState(0)


def const(value, name=None):
    return tf.constant(np.asarray(value, np.float32), name=name)


def frozen(fn):
    graph = tf.Graph()
    with graph.as_default():
        fn()
    return graph.as_graph_def()


def prune(analysis, node, kept):
    """The plan keeping positions ``kept`` of the group holding ``node``'s output channels."""
    group = analysis.group_by_node(node)
    assert group is not None and group.prunable, node
    return analysis.plan(Choice(analysis.digest(), {group.id: kept}))


def values_of(graph_def):
    nodes = {n.name: n for n in graph_def.node}
    return lambda name: build.const_value(nodes[name])


# --- bias compensation ---------------------------------------------------------------------------
def mlp():
    """x(6) -> dense 8 + bias -> relu -> dense 4 + bias = logits."""
    w1, b1, w2, b2 = RNG.randn(6, 8), RNG.randn(8), RNG.randn(8, 4), RNG.randn(4)

    def fn():
        x = tf.placeholder(tf.float32, (None, 6), name="x")
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, const(w1), name="d1"), const(b1)))
        tf.nn.bias_add(tf.matmul(h, const(w2), name="d2"), const(b2), name="logits")
    return frozen(fn)


def test_measured_compensation_keeps_a_dense_layers_output_mean():
    gd = mlp()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 6), "float32")}, ["logits"])
    plan = prune(analysis, "d1", [0, 2, 5])
    x = RNG.randn(256, 6).astype(np.float32)
    refined, done = refine_lib.refine(plan, [{"x:0": x[:128]}, {"x:0": x[128:]}], reconstruct=False)
    assert done.compensated and not done.skipped and done.reconstruction is None
    original = run_graph(gd, {"x:0": x}, ["logits:0"])[0]
    plain = run_graph(slim.apply_slim(plan), {"x:0": x}, ["logits:0"])[0]
    compensated = run_graph(slim.apply_slim(refined), {"x:0": x}, ["logits:0"])[0]
    np.testing.assert_allclose(compensated.mean(0), original.mean(0), atol=1e-4)   # exact for a dense consumer
    assert np.abs(plain.mean(0) - original.mean(0)).max() > 0.1   # and it was not already


def test_data_free_compensation_needs_a_batch_norm_and_says_so():
    gd = mlp()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 6), "float32")}, ["logits"])
    refined, done = refine_lib.refine(prune(analysis, "d1", [0, 2, 5]))
    assert not done.compensated and not refined.updates
    assert [layer for layer, _ in done.skipped] == ["d2"] and "no expected value" in done.skipped[0][1]


def bn_graph(x_sample):
    """x -> conv 3x3 VALID -> BatchNorm (moving statistics: the conv's on ``x_sample``) -> relu ->
    conv 1x1 -> BatchNorm (likewise) = logits; returns the graph."""
    w1, w2 = RNG.randn(3, 3, 3, 6) * 0.3, RNG.randn(1, 1, 6, 4)
    gamma1, beta1 = RNG.uniform(0.5, 1.5, 6), RNG.randn(6)
    gamma2, beta2 = RNG.uniform(0.5, 1.5, 4), RNG.randn(4)

    def stats(t):
        with tf.Session() as sess:
            v = sess.run(t, {"x:0": x_sample}).reshape(-1, t.shape[-1])
        return v.mean(0), v.var(0)

    def fn(final=None):
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        c1 = tf.nn.conv2d(x, const(w1), [1, 1, 1, 1], "VALID", name="c1")
        m1, v1 = stats(c1)
        h = tf.nn.fused_batch_norm(c1, const(gamma1), const(beta1), const(m1), const(v1), is_training=False)[0]
        c2 = tf.nn.conv2d(tf.nn.relu(h), const(w2), [1, 1, 1, 1], "VALID", name="c2")
        m2, v2 = stats(c2)
        tf.identity(tf.nn.fused_batch_norm(c2, const(gamma2), const(beta2), const(m2, "bn2_mean"),
                                           const(v2, "bn2_variance"), is_training=False)[0], name="logits")
    return frozen(fn)


def test_gaussian_moments_match_measured_ones_when_the_batch_norm_statistics_hold():
    """A conv of Gaussian inputs is Gaussian: after its BatchNorm, the ReLU's mean and std predicted
    from the BatchNorm parameters alone equal the measured ones."""
    x = RNG.randn(2000, 8, 8, 3).astype(np.float32)
    gd = bn_graph(x)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    predicted = activations.gaussian_moments(analysis, values_of(gd))
    relu = activations.input_tensor(analysis, next(l for l in analysis.layers if l.node == "c2"))
    assert relu in predicted
    mean, square = activations.measured_moments(analysis, gd, [{"x:0": x}], [relu])[relu]
    np.testing.assert_allclose(predicted[relu][0], mean, rtol=0.05, atol=0.02)
    np.testing.assert_allclose(predicted[relu][1], np.sqrt(square - mean ** 2), rtol=0.05, atol=0.02)


def test_data_free_compensation_moves_the_mean_into_the_next_batch_norm():
    x = RNG.randn(2000, 8, 8, 3).astype(np.float32)
    gd = bn_graph(x)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    plan = prune(analysis, "c1", [1, 3, 4])
    refined, done = refine_lib.refine(plan)
    assert done.compensated == ["bn2_mean", "bn2_variance"] and not done.skipped
    variance = values_of(gd)("bn2_variance")
    assert np.all(refined.updates["bn2_variance"] < variance) and np.all(refined.updates["bn2_variance"] > 0)
    original, plain, compensated = (run_graph(g, {"x:0": x}, ["logits:0"])[0].reshape(-1, 4).mean(0)
                                    for g in (gd, slim.apply_slim(plan), slim.apply_slim(refined)))
    assert np.abs(compensated - original).max() < 0.1 * np.abs(plain - original).max(), (original, plain,
                                                                                          compensated)


@pytest.mark.parametrize("op", ["Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus",
                                "Softsign"])
def test_activation_moments_match_monte_carlo(op):
    mean, std = np.array([-2.0, -0.3, 0.0, 0.7, 3.0, 5.5]), np.array([0.5, 1.0, 2.0, 0.1, 1.5, 1.0])
    kind, fn = moments(op)
    node = tf.NodeDef(name="a", op=op)
    if op == "LeakyRelu":
        node.attr["alpha"].f = 0.1
    got_mean, got_std = fn(node, mean, std)
    graph = tf.Graph()
    with graph.as_default():
        y = tf.constant(mean + std * np.random.RandomState(1).randn(200000, len(mean)))
        out = {"Relu": tf.nn.relu, "Relu6": tf.nn.relu6, "LeakyRelu": lambda t: tf.nn.leaky_relu(t, 0.1),
               "Elu": tf.nn.elu, "Selu": tf.nn.selu, "Sigmoid": tf.sigmoid, "Tanh": tf.tanh,
               "Softplus": tf.nn.softplus, "Softsign": tf.nn.softsign}[op](y)
    with tf.Session(graph=graph) as sess:
        sample = sess.run(out)
    tolerance = 0.01 + 0.01 * std   # well above the sampling error (std / 450)
    assert kind == "map"
    assert np.all(np.abs(got_mean - sample.mean(0)) < tolerance), (got_mean, sample.mean(0))
    assert np.all(np.abs(got_std - sample.std(0)) < tolerance), (got_std, sample.std(0))


def test_moments_of_ops_that_do_not_map_channels_are_unknown():
    assert moments("MaxPool") is None and moments("Pad") is None and moments("MatMul") is None
    assert moments("AddV2")[0] == "sum" and moments("ConcatV2")[0] == "move"


@pytest.mark.parametrize("learning_phase", [0, None])
def test_keras_batch_norms_give_moments_with_or_without_a_learning_phase(learning_phase):
    gd, specs, outs = example_models.frozen_graph_def("resnet", seed=1, learning_phase=learning_phase)
    if learning_phase is None:
        assert any(n.op in ("If", "StatelessIf") for n in gd.node)
    analysis = tf1prune.analyze(gd, specs, outs)
    plan = analysis.plan(tf1prune.make_spec(analysis, sparsity=0.3))
    refined, done = refine_lib.refine(plan)
    assert len(done.compensated) >= 4, done
    assert all("no expected value" in why or "no bias" in why for _, why in done.skipped), done.skipped
    _slim_equals_sparse(refined, specs, outs)


# --- reconstruction ------------------------------------------------------------------------------
def duplicate_channel_graph(kernel=(3, 3), stride=1, rate=1, padding="SAME"):
    """conv1's channel 5 is 0.1 x its channel 0, so after ReLU conv2 can read it from channel 0."""
    w1, b1 = RNG.randn(3, 3, 3, 6), RNG.randn(6) * 0.1
    w1[..., 5], b1[5] = 0.1 * w1[..., 0], 0.1 * b1[0]
    w2, b2, w3 = RNG.randn(*kernel, 6, 5), RNG.randn(5), RNG.randn(5, 3)

    def fn():
        x = tf.placeholder(tf.float32, (None, 9, 9, 3), name="x")
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, const(w1), [1, 1, 1, 1], "SAME", name="c1"), const(b1)))
        h = tf.nn.conv2d(h, const(w2), [1, stride, stride, 1], padding, dilations=[1, rate, rate, 1], name="c2")
        h = tf.nn.bias_add(h, const(b2))
        tf.matmul(tf.reduce_mean(tf.nn.relu(h), [1, 2]), const(w3), name="logits")
    return frozen(fn)


@pytest.mark.parametrize("sequential,geometry", [
    (True, {}), (False, {}),
    (True, dict(stride=2)), (True, dict(stride=2, padding="VALID")), (True, dict(rate=2)),
    (True, dict(kernel=(3, 2), padding="VALID", rate=2)), (True, dict(kernel=(1, 1), stride=2)),
])
def test_reconstruction_recovers_a_redundant_channel_exactly(sequential, geometry):
    """Exact recovery needs the input windows of every geometry right (strides, dilations, padding)."""
    gd = duplicate_channel_graph(**geometry)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 9, 9, 3), "float32")}, ["logits"])
    plan = prune(analysis, "c1", [0, 1, 2, 3, 4])
    x = RNG.randn(64, 9, 9, 3).astype(np.float32)
    result = reconstruct(plan, [{"x:0": x[:32]}, {"x:0": x[32:]}], ridge=0.0, sequential=sequential)
    # refitted layer by layer, the layer after c2 is refitted too (its input is c2's output)
    assert [f.layer for f in result.fits] == ["c2", "logits"][:2 if sequential else 1]
    assert result.fits[0].before > 1e-4 and all(f.after < 1e-6 for f in result.fits) and not result.skipped
    assert result.waves == (len(result.fits) if sequential else 1)
    probe = RNG.randn(5, 9, 9, 3).astype(np.float32)
    want = run_graph(gd, {"x:0": probe}, ["logits:0"])[0]
    got = run_graph(slim.apply_slim(plan.with_updates(result.updates)), {"x:0": probe}, ["logits:0"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert "c2" in result.table()


def test_reconstruction_skips_what_it_cannot_refit_with_the_reason():
    """A depthwise conv keeps its pruned channels' weights out (nothing to refit); a conv with
    explicit padding is left as it is, with the reason; the conv after both is refitted."""
    def fn():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        h = tf.nn.relu(tf.nn.conv2d(x, const(RNG.randn(1, 1, 3, 6)), [1, 1, 1, 1], "SAME", name="c1"))
        h = tf.nn.depthwise_conv2d(h, const(RNG.randn(3, 3, 6, 1)), [1, 1, 1, 1], "SAME", name="dw")
        h = tf.nn.conv2d(tf.nn.relu(h), const(RNG.randn(3, 3, 6, 5)), [1, 1, 1, 1], [[0, 0], [1, 1], [1, 1], [0, 0]],
                         name="explicit")
        h = tf.nn.conv2d(tf.nn.relu(h), const(RNG.randn(1, 1, 5, 4)), [1, 1, 1, 1], "SAME", name="c2")
        tf.reduce_mean(h, [1, 2], name="logits")
    gd = frozen(fn)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    group = analysis.group_by_node("explicit")
    plan = analysis.plan(Choice(analysis.digest(), {analysis.group_by_node("c1").id: [0, 2, 4],
                                                    group.id: [0, 1, 3]}))
    result = reconstruct(plan, [{"x:0": RNG.randn(8, 8, 8, 3).astype(np.float32)}])
    assert [f.layer for f in result.fits] == ["c2"]
    assert result.skipped == [("explicit", "Conv2D: only Conv2D with SAME or VALID padding is refitted")]


def test_depthwise_layers_downstream_are_refitted_per_channel():
    """c1's channel 3 duplicates channel 0 and feeds only c2's output 0 (a conv that cannot be refitted:
    explicit padding): pruning it scales that channel, which the depthwise conv after c2 undoes exactly."""
    w1 = RNG.randn(1, 1, 3, 4)
    w1[..., 3] = w1[..., 0]
    w2 = np.zeros((1, 1, 4, 3))
    w2[0, 0, [0, 1, 2, 3], [0, 1, 2, 0]] = [1.0, 1.0, 1.0, 0.5]

    def fn():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        h = tf.nn.conv2d(x, const(w1), [1, 1, 1, 1], "SAME", name="c1")
        h = tf.nn.conv2d(h, const(w2), [1, 1, 1, 1], [[0, 0], [0, 0], [0, 0], [0, 0]], name="c2")
        h = tf.nn.depthwise_conv2d(h, const(RNG.randn(3, 3, 3, 2)), [1, 2, 2, 1], "SAME", name="dw")
        tf.reduce_mean(tf.nn.relu(h), [1, 2], name="logits")
    gd = frozen(fn)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    plan = prune(analysis, "c1", [0, 1, 2])
    x = RNG.randn(16, 8, 8, 3).astype(np.float32)
    result = reconstruct(plan, [{"x:0": x}], ridge=0.0, sequential=True)
    assert result.skipped == [("c2", "Conv2D: only Conv2D with SAME or VALID padding is refitted")]
    fit = {f.layer: f for f in result.fits}["dw"]
    assert fit.before > 1e-3 and fit.after < 1e-8
    probe = RNG.randn(4, 8, 8, 3).astype(np.float32)
    want = run_graph(gd, {"x:0": probe}, ["logits:0"])[0]
    got = run_graph(slim.apply_slim(plan.with_updates(result.updates)), {"x:0": probe}, ["logits:0"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not reconstruct(plan, [{"x:0": x}], sequential=True, downstream=False).fits   # consumers only


def _slim_equals_sparse(plan, specs, outs):
    feeds = {name: np.random.RandomState(3).rand(4, *spec[0][1:]).astype(np.float32) for name, spec in specs.items()}
    names = [o + ":0" for o in outs]
    a = run_graph(slim.apply_sparse(plan), feeds, names)[0]
    b = run_graph(slim.apply_slim(plan), feeds, names)[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("name,sequential", [("resnet", None), ("mobilenet_v2_se", None), ("resnet", False)])
def test_refined_slim_graph_equals_the_refined_sparse_graph(name, sequential):
    gd, specs, outs = example_models.frozen_graph_def(name, seed=2, learning_phase=0)
    analysis = tf1prune.analyze(gd, specs, outs)
    plan = analysis.plan(tf1prune.make_spec(analysis, sparsity=0.4, best_effort=True))
    shape = specs[next(iter(specs))][0]
    batches = [{next(iter(specs)): np.random.RandomState(i).rand(16, *shape[1:]).astype(np.float32)}
               for i in range(2)]
    refined, done = refine_lib.refine(plan, batches, sequential=sequential)
    fits = done.reconstruction.fits
    assert fits and all(f.after <= f.before for f in fits), done.reconstruction.table()
    assert done.reconstruction.waves == (1 if sequential is False else len(fits))
    # BatchNorm re-estimated only after refitting all layers at once (one by one, they see what they saw)
    assert bool(done.statistics) == (sequential is False) and set(done.statistics) <= set(refined.updates)
    _slim_equals_sparse(refined, specs, outs)


def test_refine_validates_and_leaves_an_unpruned_plan_alone():
    gd = mlp()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 6), "float32")}, ["logits"])
    with pytest.raises(Tf1PruneError, match="data_free"):
        refine_lib.refine(prune(analysis, "d1", [0]), data_free="zeros")
    whole = analysis.plan(Choice.everything(analysis))
    same, done = refine_lib.refine(whole, [{"x:0": np.ones((2, 6), np.float32)}])
    assert same is whole and not done.compensated and done.reconstruction is None


# --- synthesized inputs --------------------------------------------------------------------------
def test_synthesized_inputs_match_the_batch_norm_statistics():
    x = RNG.randn(2000, 8, 8, 3).astype(np.float32)
    gd = bn_graph(x)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    site = next(s for s in analysis.batch_norms if s.mean == "bn2_mean")

    def mismatch(batches):
        got = activations.measured_moments(analysis, gd, batches, [site.x])[site.x.split(":")[0] + ":0"]
        want_mean, want_var = values_of(gd)(site.mean), values_of(gd)(site.variance)
        return np.abs(got[0] - want_mean).mean() + np.abs(got[1] - got[0] ** 2 - want_var).mean()
    before = synthesize_inputs(analysis, count=32, batch=32, steps=0)
    after = synthesize_inputs(analysis, count=40, batch=32, steps=150)
    assert [len(b["x:0"]) for b in after] == [32, 8] and after[0]["x:0"].dtype == np.float32
    assert mismatch(after) < 0.3 * mismatch(before), (mismatch(before), mismatch(after))


def test_pure_functions_use_synthesized_inputs_for_a_data_driven_criterion():
    """``data_free="synthesize"``: the synthesized inputs serve the activation criterion too (which
    needs data), and the slim and sparse functions build the same model."""
    gd = bn_graph(RNG.randn(500, 8, 8, 3).astype(np.float32))
    specs = {"x:0": ((1, 8, 8, 3), "float32")}
    with pytest.raises(Tf1PruneError, match="give calibration data"):
        tf1prune.slim_graph_def(gd, 0.5, specs, ["logits"], criterion="activation")
    args = dict(ratio=0.5, input_specs=specs, output_node_names=["logits"], criterion="activation",
                data_free="synthesize")
    slim_gd, sparse_gd = tf1prune.slim_graph_def(gd, **args), tf1prune.sparse_graph_def(gd, **args)
    x = RNG.randn(5, 8, 8, 3).astype(np.float32)
    got, want = (run_graph(g, {"x:0": x}, ["logits:0"])[0] for g in (slim_gd, sparse_gd))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    nodes = {n.name: n for n in slim_gd.node}
    assert build.const_value(nodes[nodes["c1"].input[1]]).shape == (3, 3, 3, 3)   # half of c1's 6 channels


def test_synthesis_differentiates_ops_with_python_custom_gradients():
    """A frozen graph with a ``tf.custom_gradient`` op (Keras swish): its gradient function belongs to
    the graph that made it, so the synthesis differentiates the op's own ops instead."""
    x_sample = RNG.randn(64, 8, 8, 3).astype(np.float32)
    w, gamma, beta = RNG.randn(3, 3, 3, 4) * 0.3, RNG.uniform(0.5, 1.5, 4), RNG.randn(4)

    @tf.custom_gradient
    def swish(t):
        y = t * tf.sigmoid(t)
        return y, lambda dy: dy * (tf.sigmoid(t) * (1 + t * (1 - tf.sigmoid(t))))

    def fn():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        c = swish(tf.nn.conv2d(x, const(w), [1, 1, 1, 1], "SAME", name="c1"))
        c2 = tf.nn.conv2d(c, const(RNG.randn(1, 1, 4, 4)), [1, 1, 1, 1], "SAME", name="c2")
        tf.identity(tf.nn.fused_batch_norm(c2, const(gamma), const(beta), const(np.zeros(4)), const(np.ones(4)),
                                           is_training=False)[0], name="logits")
    gd = frozen(fn)
    assert any("_gradient_op_type" in n.attr for n in gd.node)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    before = run_graph(gd, {"x:0": x_sample}, ["c2:0"])[0].reshape(-1, 4)
    made = synthesize_inputs(analysis, count=64, batch=64, steps=100)
    after = run_graph(gd, {"x:0": made[0]["x:0"]}, ["c2:0"])[0].reshape(-1, 4)
    assert np.abs(after.mean(0)).mean() + np.abs(after.var(0) - 1).mean() < \
        0.5 * (np.abs(before.mean(0)).mean() + np.abs(before.var(0) - 1).mean())
    assert any("_gradient_op_type" in n.attr for n in gd.node)   # the caller's graph is untouched


def test_synthesis_refuses_a_graph_without_batch_norm():
    analysis = tf1prune.analyze(mlp(), {"x:0": ((1, 6), "float32")}, ["logits"])
    with pytest.raises(Tf1PruneError, match="no BatchNorm"):
        synthesize_inputs(analysis, count=4, steps=1)


# --- criteria ------------------------------------------------------------------------------------
def dead_channel_graph():
    """Channel 0 of c1 has the largest weights but a bias that keeps it below zero: always dead after ReLU."""
    w1, b1 = RNG.randn(3, 3, 3, 4) * 0.1, np.zeros(4)
    w1[..., 0] *= 30.0
    b1[0] = -1000.0

    def fn():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, const(w1), [1, 1, 1, 1], "SAME", name="c1"), const(b1)))
        tf.reduce_mean(tf.nn.conv2d(h, const(RNG.randn(1, 1, 4, 2)), [1, 1, 1, 1], "SAME", name="c2"), [1, 2],
                       name="logits")
    return frozen(fn)


def test_activation_criterion_sees_a_dead_channel_that_l1_keeps():
    gd = dead_channel_graph()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    units = np.asarray(analysis.group_by_node("c1").units)
    batches = [{"x:0": RNG.rand(8, 8, 8, 3).astype(np.float32)}]
    l1 = criteria.unit_scores(analysis, "l1")[units]
    measured = criteria.unit_scores(analysis, "activation", calibration=batches)[units]
    assert l1.argmax() == 0 and measured.argmin() == 0 and measured[0] == 0.0
    with pytest.raises(Tf1PruneError, match="calibration data"):
        criteria.unit_scores(analysis, "activation")


def test_contribution_criterion_uses_batch_norm_moments():
    x = RNG.randn(500, 8, 8, 3).astype(np.float32)
    gd = bn_graph(x)
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    units = np.asarray(analysis.group_by_node("c1").units)
    data_free = criteria.unit_scores(analysis, "contribution", values=values_of(gd))[units]
    measured = criteria.unit_scores(analysis, "activation", calibration=[{"x:0": x}])[units]
    assert np.corrcoef(data_free, measured)[0, 1] > 0.95, (data_free, measured)


def sampled(gd, shape, node, positions, images, stride):
    """``(rows, output at the sampled positions, kernel)`` of layer ``node``'s :class:`LayerRows`."""
    from tf1prune.core.activations import LayerRows
    analysis = tf1prune.analyze(gd, {"x:0": ((1,) + shape, "float32")}, [node])
    layer = next(l for l in analysis.layers if l.node == node)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(gd, name="")
        sampler = LayerRows(analysis, layer, graph, positions=positions)
    feed = sampler.feed(np.random.RandomState(0), images)
    with tf.Session(graph=graph) as sess:
        rows, out = sess.run([sampler.rows, node + ":0"], {"x:0": RNG.randn(images, *shape).astype(np.float32), **feed})
    corner = next(iter(feed.values()))[::len(sampler._taps)]   # each window's first tap: (image, row, col) padded
    assert len(rows) == images * positions
    return rows, out[corner[:, 0], corner[:, 1] // stride, corner[:, 2] // stride], values_of(gd)(layer.kernel)


@pytest.mark.parametrize("geometry", [{}, dict(stride=2), dict(stride=2, padding="VALID"), dict(rate=2),
                                      dict(kernel=(3, 2), padding="VALID", rate=2), dict(kernel=(2, 2), stride=2)])
def test_sampled_windows_times_the_kernel_are_the_convolution(geometry):
    """The windows reconstruction gathers at sampled output positions, times the kernel, equal the
    convolution's output there (strides, dilations, SAME and VALID padding)."""
    gd = duplicate_channel_graph(**geometry)
    rows, want, kernel = sampled(gd, (9, 9, 3), "c2", 7, 3, geometry.get("stride", 1))
    np.testing.assert_allclose(rows @ kernel.reshape(-1, kernel.shape[-1]), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "SAME"), (2, "VALID")])
def test_sampled_windows_times_the_kernel_are_the_depthwise_convolution(stride, padding):
    kernel = RNG.randn(3, 3, 4, 2).astype(np.float32)

    def fn():
        x = tf.placeholder(tf.float32, (None, 9, 9, 4), name="x")
        h = tf.nn.conv2d(x, const(RNG.randn(1, 1, 4, 4)), [1, 1, 1, 1], "SAME", name="c0")
        tf.nn.depthwise_conv2d(h, const(kernel), [1, stride, stride, 1], padding, name="dw")
    rows, want, _ = sampled(frozen(fn), (9, 9, 4), "dw", 5, 2, stride)     # want: [samples, 4 channels x 2]
    got = np.einsum("stc,tcm->scm", rows.reshape(len(rows), 9, 4), kernel.reshape(9, 4, 2)).reshape(len(rows), -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def constant_channel_graph():
    """Channel 0 of c1 is constant (zero kernel, bias 5) and read by c2 (3×3 VALID) with the largest
    weights: removing it changes c2's output by a constant only, which bias compensation restores."""
    w1, b1 = RNG.randn(3, 3, 3, 4), np.zeros(4)
    w1[..., 0], b1[0] = 0.0, 5.0
    w2 = RNG.randn(3, 3, 4, 2) * 0.3
    w2[:, :, 0] *= 20.0

    def fn():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, const(w1), [1, 1, 1, 1], "SAME", name="c1"), const(b1)))
        c2 = tf.nn.conv2d(h, const(w2), [1, 1, 1, 1], "VALID", name="c2")
        tf.nn.bias_add(c2, const(np.zeros(2)), name="logits")
    return frozen(fn)


def test_reconstruction_criterion_removes_what_compensation_restores():
    gd = constant_channel_graph()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    units = np.asarray(analysis.group_by_node("c1").units)
    batches = [{"x:0": RNG.randn(16, 8, 8, 3).astype(np.float32)}]
    greedy = criteria.unit_scores(analysis, "reconstruction", calibration=batches)[units]
    measured = criteria.unit_scores(analysis, "activation", calibration=batches)[units]
    assert greedy.argmin() == 0 and measured.argmax() == 0
    assert sorted(greedy) == [0, 1, 2, 3]   # the step at which each is removed
    x = RNG.randn(32, 8, 8, 3).astype(np.float32)
    original = run_graph(gd, {"x:0": x}, ["logits:0"])[0]
    errors = {}
    for name in ("reconstruction", "activation"):
        spec = tf1prune.make_spec(analysis, ratio=0.25, criterion=name, calibration=batches)
        refined, _ = refine_lib.refine(analysis.plan(spec), batches, reconstruct=False)
        errors[name] = np.abs(run_graph(slim.apply_slim(refined), {"x:0": x}, ["logits:0"])[0] - original).max()
    assert errors["reconstruction"] < 1e-3 < errors["activation"], errors


def test_greedy_removal_takes_the_cheapest_step_each_time():
    a = RNG.randn(6, 40)
    gram = a @ a.T
    score = criteria.greedy_removal(gram)
    order = np.argsort(score)
    for step in range(1, 6):
        removed = list(order[:step - 1])
        cost = [gram[np.ix_(removed + [c], removed + [c])].sum() for c in range(6) if c not in removed]
        assert gram[np.ix_(removed + [order[step - 1]], removed + [order[step - 1]])].sum() == pytest.approx(min(cost))
