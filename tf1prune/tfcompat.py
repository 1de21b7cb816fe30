"""TensorFlow calls that differ between TF 1.15 and TF 2.x graph mode, or warn needlessly."""
import contextlib

import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation


@contextlib.contextmanager
def quiet_deprecations():
    """Silence TensorFlow's deprecation warnings for tf1prune's own calls (``convert_variables_to_
    constants``, ``extract_sub_graph``: TF 1.15 has no other name for them); the user's own calls
    still warn."""
    silence = deprecation.silence()
    silence.__enter__()
    try:
        yield
    finally:
        silence.__exit__(None, None, None)


def freeze_session(sess, graph_def, output_node_names):
    """``convert_variables_to_constants`` without its deprecation warning."""
    with quiet_deprecations():
        return tf.graph_util.convert_variables_to_constants(sess, graph_def, list(output_node_names))


def extract_sub_graph(graph_def, dest_nodes):
    """``extract_sub_graph`` without its deprecation warning."""
    with quiet_deprecations():
        return tf.graph_util.extract_sub_graph(graph_def, list(dest_nodes))
