"""Shared session models and metrics of the workflow tests (module level, so worker processes can
import the metrics): the seed's Keras MNIST convnet and the ResNet-style example."""
import numpy as np
import tensorflow.compat.v1 as tf

import example_models
from helpers import run_graph

X = np.random.RandomState(0).rand(6, 28, 28, 1).astype(np.float32)
SPECS = {"input_1:0": tf.TensorSpec((1, 28, 28, 1), tf.float32)}
OUT = ["dense/BiasAdd"]


def eval_fn(frozen_graph_def):
    """A deterministic metric of the graph (module level, so worker processes can run it)."""
    return float(np.abs(run_graph(frozen_graph_def, {"input_1:0": X}, ["dense/BiasAdd:0"])[0]).mean())


def five_class_eval(frozen_graph_def):
    return float(np.abs(run_graph(frozen_graph_def, {"input_1:0": X}, ["dense/BiasAdd:0"])[0]).mean())


def seed_model(learning_phase=None, seed=0, num_classes=10):
    """The seed's Keras MNIST convnet in a fresh graph and session (BN stats randomised)."""
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("mnist_convnet", learning_phase=learning_phase, seed=seed,
                                    num_classes=num_classes)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        rng = np.random.RandomState(seed)
        for v in tf.global_variables():
            if "batch_normalization" in v.name or "bias" in v.name:
                v.load(rng.uniform(0.5, 1.5, v.shape.as_list()).astype(np.float32), sess)
    return graph, sess, info


def classification_loss(info):
    """Labels placeholder and cross-entropy of the model's logits."""
    labels = tf.placeholder(tf.int64, [None])
    return labels, tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                                 logits=info.model.output))


def slim_equals_session(runner, sess, graph_def):
    expected = sess.run("dense/BiasAdd:0", {"input_1:0": X})
    got = run_graph(graph_def, {"input_1:0": X}, ["dense/BiasAdd:0"])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


CALIBRATION = [{"input_1:0": X[:3]}, {"input_1:0": X[3:]}]
RESNET_OUT = "logits/BiasAdd"


def resnet_model(seed=0):
    """The ResNet-style example model (7 prunable groups) in a fresh graph and session."""
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("resnet", learning_phase=0, seed=seed)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        example_models._randomise(info.model, sess, np.random.RandomState(seed))
    assert info.output_node_names == [RESNET_OUT]
    return graph, sess, info


def resnet_eval(graph_def):
    """A deterministic metric of the ResNet example (module level: picklable)."""
    return float(np.abs(run_graph(graph_def, {"input_1:0": X}, [RESNET_OUT + ":0"])[0]).mean())


def resnet_examples(graph_def):
    """:func:`resnet_eval` per example (module level: picklable)."""
    return np.abs(run_graph(graph_def, {"input_1:0": X}, [RESNET_OUT + ":0"])[0]).mean(1)


def perturb_kernels(sess, seed):
    """What fine-tuning does: new values for every kernel of the session (same shapes)."""
    rng = np.random.RandomState(seed)
    with sess.graph.as_default():
        kernels = [v for v in tf.global_variables() if v.op.name.endswith("kernel")]
        sess.run([v.assign(rng.standard_normal(v.shape.as_list()).astype(np.float32) * 0.2) for v in kernels])
