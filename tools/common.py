"""A frozen graph in its own session, and interleaved CPU latency (shared by the demo scripts)."""
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
