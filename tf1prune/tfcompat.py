"""TensorFlow calls that differ between TF 1.15 and TF 2.x graph mode, or warn needlessly."""
import contextlib

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2
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


class VariableLoader:
    """Sets variables of one graph from numpy values (``Variable.load`` is deprecated): one
    placeholder and assign op per variable, made on first use and reused."""

    def __init__(self, graph):
        self.graph, self._ops = graph, {}

    def prepare(self, variables):
        """Make the ops of ``variables`` now (before a MonitoredSession finalizes the graph)."""
        for var in variables:
            if var not in self._ops:
                with self.graph.as_default(), tf.name_scope("tf1prune_load"):
                    holder = tf.placeholder(var.dtype.base_dtype, var.shape)
                    self._ops[var] = (holder, var.assign(holder).op if not is_ref(var) else tf.assign(var, holder).op)

    def load(self, sess, values):
        """``values``: {tf.Variable: array}."""
        feeds, ops = {}, []
        self.prepare(values)
        for var, value in values.items():
            holder, op = self._ops[var]
            feeds[holder] = value
            ops.append(op)
        if ops:
            sess.run(ops, feeds)


def is_ref(var):
    """A TF1 reference variable (VariableV2), not a resource variable."""
    return var.dtype._is_ref_dtype  # pylint: disable=protected-access


def keras_callback_class():
    """``Callback`` of tf_keras (Keras 2 on TF 2.16+), else of ``tf.keras`` (TF 1.15 to 2.15)."""
    try:
        import tf_keras
        return tf_keras.callbacks.Callback
    except ImportError:
        return tf.keras.callbacks.Callback


def session_config(base=None):
    """``base`` (a ``ConfigProto``) without the Grappler remapper: TF 2.21 fuses a training-mode
    BatchNorm with the next activation and then fails on some (``Fusion is not implemented:
    [FusedBatchNorm,Tanh]``)."""
    config = tf.ConfigProto()
    if base is not None:
        config.CopyFrom(base)
    config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    return config
