"""Adaptive BatchNorm: exact training-mode statistics for fused, unfused, Keras If and NCHW BatchNorms."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from helpers import freeze, run_graph
from tf1prune.apply import calibrate

X = np.random.RandomState(0).rand(48, 28, 28, 1).astype(np.float32)


def batches(n=3, size=16):
    return [{"input_1:0": X[i * size:(i + 1) * size]} for i in range(n)]


def consts(graph_def, names):
    nodes = {n.name: n for n in graph_def.node}
    return {name: tf.make_ndarray(nodes[name].attr["value"].tensor) for name in names}


def keras_trained_statistics():
    """A Keras conv net whose BN moving statistics are its training-mode statistics on one batch
    (momentum 0, learning rate 0), frozen: (graph_def, {moving statistic: value})."""
    keras = pytest.importorskip("tf_keras")
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph).as_default() as sess:
        inputs = keras.Input((28, 28, 1), name="input_1")
        y = keras.layers.Conv2D(6, 3, name="c1")(inputs)
        y = keras.layers.BatchNormalization(momentum=0.0, name="bn1")(y)
        y = keras.layers.Conv2D(8, 3, strides=2, name="c2")(keras.layers.ReLU()(y))
        y = keras.layers.BatchNormalization(momentum=0.0, name="bn2")(y)
        y = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y)))
        model = keras.Model(inputs, y)
        model.compile(keras.optimizers.legacy.SGD(0.0), "mse")
        sess.run(tf.global_variables_initializer())
        model.train_on_batch(X[:16], np.zeros((16, 10), np.float32))
        stats = {v.op.name: sess.run(v) for v in model.variables if "moving" in v.op.name}
        return freeze(sess, [model.output.op.name]), model.output.op.name, stats


def test_recalibration_reproduces_training_mode_statistics():
    graph_def, output, trained = keras_trained_statistics()
    assert any(n.op in ("If", "StatelessIf") for n in graph_def.node)   # BN without a learning phase
    specs = {"input_1:0": ((1, 28, 28, 1), "float32")}
    calibrated = tf1prune.recalibrate_batch_norm(graph_def, [{"input_1:0": X[:16]}], specs, [output])
    got = consts(calibrated, trained)
    for name, value in trained.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("learning_phase", [0, None])
def test_example_models_statistics_are_exact_batch_averages(learning_phase):
    """Against numpy, layer by layer: each BN's input in training mode, its per-batch moments, their
    size-weighted average (the mean of equal batches), unbiased for fused BatchNorms."""
    gd, specs, outs = example_models.frozen_graph_def("resnet", seed=1, learning_phase=learning_phase)
    a = tf1prune.analyze(gd, specs, outs)
    calibrator = calibrate.Calibrator(a)
    stats = calibrator.statistics(batches())
    training_gd, fetches = calibrate.batchnorm.training_graph(gd, calibrator.sites)
    for site, (mean_t, _, _) in zip(calibrator.sites, fetches):
        xs = [run_graph(training_gd, feed, [site.x])[0] for feed in batches()]
        axes = tuple(i for i in range(xs[0].ndim) if i != site.axis)
        np.testing.assert_allclose(stats[site.mean], np.mean([x.mean(axes) for x in xs], 0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats[site.variance], np.mean([x.var(axes, ddof=1) for x in xs], 0),
                                   rtol=1e-3, atol=1e-5)
    assert len(calibrator.sites) == 11 and not calibrator.skipped


def _raw_bn_graph(fused, data_format="NHWC"):
    rng = np.random.RandomState(1)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="input_1")
        h = x if data_format == "NHWC" else tf.transpose(x, [0, 3, 1, 2])
        k = tf.constant(rng.randn(3, 3, 3, 4).astype(np.float32), name="k")
        h = tf.nn.conv2d(h, k, [1, 1, 1, 1], "SAME", data_format=data_format)
        stats = [tf.constant(rng.rand(4).astype(np.float32) + 0.5, name=n) for n in ("gamma", "beta", "mm", "mv")]
        if fused:
            h = tf.nn.fused_batch_norm(h, stats[0], stats[1], stats[2], stats[3], is_training=False,
                                       data_format=data_format)[0]
        else:
            shape = [1, 4, 1, 1] if data_format == "NCHW" else [4]
            h = tf.nn.batch_normalization(h, tf.reshape(stats[2], shape, name="mmr") if data_format == "NCHW" else stats[2],
                                          stats[3] if data_format == "NHWC" else tf.reshape(stats[3], shape),
                                          stats[1] if data_format == "NHWC" else tf.reshape(stats[1], shape),
                                          stats[0] if data_format == "NHWC" else tf.reshape(stats[0], shape), 1e-3)
        h = tf.nn.relu(h)
        tf.identity(tf.reduce_mean(h, [2, 3] if data_format == "NCHW" else [1, 2]), name="logits")
    return graph.as_graph_def()


@pytest.mark.parametrize("fused,data_format", [(True, "NHWC"), (False, "NHWC"), (True, "NCHW")])
def test_raw_batch_norms(fused, data_format):
    gd = _raw_bn_graph(fused, data_format)
    xs = [np.random.RandomState(i).rand(5, 8, 8, 3).astype(np.float32) for i in range(2)]
    a = tf1prune.analyze(gd, {"input_1:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    assert [(s.mean, s.variance, s.unbiased) for s in a.batch_norms] == [("mm", "mv", fused)]
    try:
        calibrated = tf1prune.recalibrate_batch_norm(gd, [{"input_1:0": x} for x in xs],
                                                     {"input_1:0": ((1, 8, 8, 3), "float32")}, ["logits"])
    except tf1prune.Tf1PruneError as e:
        if data_format == "NCHW":
            pytest.skip("NCHW BatchNorm not runnable on this CPU build: %s" % e)
        raise
    k = consts(gd, ["k"])["k"]
    conv = [tf.nn.conv2d(x, k, [1, 1, 1, 1], "SAME") for x in xs]
    with tf.Session() as sess:
        conv = sess.run(conv)
    got = consts(calibrated, ["mm", "mv"])
    np.testing.assert_allclose(got["mm"], np.mean([c.mean((0, 1, 2)) for c in conv], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["mv"], np.mean([c.var((0, 1, 2), ddof=1 if fused else 0) for c in conv], 0),
                               rtol=1e-3, atol=1e-5)


def test_bad_calibration_data_is_a_clear_error():
    gd, specs, outs = example_models.frozen_graph_def("mnist_convnet", seed=1)
    for data, message in (([], "holds no batch"), (["x"], "must be a feed dict"), (3, "list of feed dicts"),
                          ([{"nope:0": X[:2]}], "not in the graph"),
                          ([{"input_1:0": X[:2, :5]}], "calibration batch does not run")):
        with pytest.raises(tf1prune.Tf1PruneError, match=message):
            tf1prune.recalibrate_batch_norm(gd, data, specs, outs)


def _numpy_check(gd, specs, outputs, feeds):
    """Our statistics against numpy moments of each BatchNorm's input in the training-mode graph."""
    a = tf1prune.analyze(gd, specs, outputs)
    calibrator = calibrate.Calibrator(a)
    stats = calibrator.statistics(feeds)
    training_gd, _ = calibrate.batchnorm.training_graph(gd, calibrator.sites)
    for site in calibrator.sites:
        xs = [run_graph(training_gd, feed, [site.x])[0].astype(np.float64) for feed in feeds]
        axes = tuple(i for i in range(xs[0].ndim) if i != site.axis)
        n = [x.size / x.shape[site.axis] for x in xs]
        mean = np.average([x.mean(axes) for x in xs], axis=0, weights=n)
        var = np.average([x.var(axes, ddof=1 if site.unbiased else 0) for x in xs], axis=0, weights=n)
        np.testing.assert_allclose(stats[site.mean].reshape(-1), mean, rtol=1e-3, atol=1e-4, err_msg=site.node)
        np.testing.assert_allclose(stats[site.variance].reshape(-1), var, rtol=2e-3, atol=1e-4, err_msg=site.node)
    calibrator.close()
    return calibrator


def test_random_architectures_statistics():
    """Every BatchNorm of random architectures (fused and unfused) is found and re-estimated exactly."""
    from hypothesis import HealthCheck, given, settings
    import architectures

    @settings(max_examples=8, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(arch=architectures.architectures())
    def check(arch):
        gd, specs = architectures.frozen(arch, 0)
        shape = specs["input:0"][0]
        rng = np.random.RandomState(0)
        feeds = [{"input:0": rng.randn(*((b,) + tuple(shape[1:]))).astype(np.float32)} for b in (4, 3)]
        calibrator = _numpy_check(gd, specs, ["logits"], feeds)
        batch_norms = [n for n in gd.node if n.op.startswith("FusedBatchNorm") or n.op == "Rsqrt"]
        assert len(calibrator.sites) == len(batch_norms), [n.name for n in batch_norms]
    check()
