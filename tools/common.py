"""A frozen graph in its own session, interleaved CPU latency and frozen Keras applications (shared by the scripts)."""
import time

import numpy as np
import tensorflow.compat.v1 as tf


class Frozen:
    """A frozen graph in its own session."""

    def __init__(self, graph_def, input_name, output_name):
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name="")
        config = tf.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
        self.sess = tf.Session(graph=self.graph, config=config)
        self.x, self.y = input_name, output_name + ":0"

    def accuracy(self, x, y, batch=500):
        hits = sum(int((self.run(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
        return hits / len(y)

    def run(self, x):
        return self.sess.run(self.y, {self.x: x})


def latency_ms(models, x, runs=200):
    """Median batch-1 latency of each model; runs interleaved so all see the same machine load."""
    times = [[] for _ in models]
    for m in models:
        m.run(x)
    for _ in range(runs):
        for t, m in zip(times, models):
            start = time.perf_counter()
            m.run(x)
            t.append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]


def keras_application(name, size, seed=0, config=None):
    """Frozen Keras application (``"resnet50"``, ``"mobilenet_v2"``) with random weights and random BatchNorm
    statistics: ``(graph_def, input tensor name, output node name)``."""
    import tf_keras as keras
    models = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}
    rng = np.random.RandomState(seed)
    graph = tf.Graph()
    with graph.as_default(), tf.Session(graph=graph, config=config) as sess:
        keras.backend.set_learning_phase(0)
        model = models[name](weights=None, input_shape=(size, size, 3), classes=1000)
        sess.run(tf.global_variables_initializer())
        assigns = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, mean, variance
                n = layer.weights[0].shape.as_list()
                values = [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                          rng.uniform(0.5, 1.5, n)]
                assigns += [v.assign(x.astype(np.float32)) for v, x in zip(layer.weights, values)]
        sess.run(assigns)
        out = model.outputs[0].op.name
        gd = tf.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), [out])
        return gd, model.inputs[0].name, out


def markdown_table(header, rows):
    """``header`` and ``rows`` as a Markdown table (one string)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])
