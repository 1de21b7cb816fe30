"""Small TF1-graph (tf_keras) example models for testing and benchmarking tf1prune.

Models (all use fused Keras BatchNormalization; default input (28, 28, 1)):

* ``mnist_convnet``   -- the seed Keras Sequential convnet (conv/BN/pool/flatten/dropout/dense).
* ``resnet``          -- basic-block ResNet, 3 stages, projection + identity shortcuts.
* ``mobilenet_v2_se`` -- inverted residuals, depthwise convs, squeeze-excitation
                         (sigmoid / hard_sigmoid gates), relu6 / swish / hard-swish.
* ``inception``       -- two 4-branch inception modules joined by Concatenate.

``build`` adds a model to the current default graph; ``frozen_graph_def`` returns a
frozen GraphDef with randomised BatchNorm statistics and biases.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import collections
import contextlib
import random
import warnings

import numpy as np
import tensorflow.compat.v1 as tf
import tf_keras as keras
from tf_keras import layers
from tf_keras.src import backend as _keras_backend

from . import inception, mnist_convnet, mobilenet_v2_se, resnet

tf.disable_eager_execution()

MODEL_NAMES = ('mnist_convnet', 'resnet', 'mobilenet_v2_se', 'inception')
_BUILDERS = {
    'mnist_convnet': mnist_convnet.build_model,
    'resnet': resnet.build_model,
    'mobilenet_v2_se': mobilenet_v2_se.build_model,
    'inception': inception.build_model,
}
DEFAULT_INPUT_SHAPE = (28, 28, 1)

ModelInfo = collections.namedtuple('ModelInfo', 'input_name input_shape output_node_names model')


def _set_learning_phase(value):
    """Fix the Keras learning phase of the default graph (0/1), or unset it (None).

    Keras keeps the phase per graph; with None, BN and Dropout are built with a
    ``keras_learning_phase`` placeholder and become ``If`` ops."""
    if value is None:
        graph = tf.get_default_graph()
        if isinstance(_keras_backend._GRAPH_LEARNING_PHASES.get(graph), int):
            del _keras_backend._GRAPH_LEARNING_PHASES[graph]  # set earlier on this graph
    else:
        with warnings.catch_warnings():  # "set_learning_phase is deprecated"
            warnings.simplefilter('ignore')
            keras.backend.set_learning_phase(value)


def build(name, input_shape=None, num_classes=10, learning_phase=0, seed=None, **kw):
    """Build model `name` into the current default graph; the caller owns graph and session.

    With ``seed``, the initial weights are deterministic (graph-level and Keras seeds).
    Extra keyword arguments go to the model's ``build_model`` (e.g. ``widths`` for resnet).
    Node names are unsuffixed only in a graph without earlier Keras layers."""
    if name not in _BUILDERS:
        raise ValueError('unknown model %r; choose from %s' % (name, MODEL_NAMES))
    input_shape = tuple(input_shape or DEFAULT_INPUT_SHAPE)
    _set_learning_phase(learning_phase)
    if seed is not None:
        tf.set_random_seed(seed)
    with _keras_seed(seed) if seed is not None else contextlib.nullcontext():
        model = _BUILDERS[name](input_shape=input_shape, num_classes=num_classes, **kw)
    return ModelInfo(input_name=model.inputs[0].name,
                     input_shape=(None,) + input_shape,
                     output_node_names=[t.op.name for t in model.outputs],
                     model=model)


@contextlib.contextmanager
def _keras_seed(seed):
    """Make Keras initialisers deterministic (what keras.utils.set_random_seed does to
    Keras), without reseeding the global python/numpy RNGs."""
    local = _keras_backend._SEED_GENERATOR
    saved = getattr(local, 'generator', None)
    local.generator = random.Random(seed)
    try:
        yield
    finally:
        local.generator = saved


def _randomise(model, sess, rng):
    """Give BatchNorm layers non-trivial statistics and all biases random values."""
    updates = []
    for layer in model.submodules:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            updates += [(layer.gamma, rng.uniform(0.5, 1.5, n)),
                        (layer.beta, rng.normal(0.0, 0.5, n)),
                        (layer.moving_mean, rng.normal(0.0, 0.5, n)),
                        (layer.moving_variance, rng.uniform(0.5, 2.0, n))]
        elif getattr(layer, 'bias', None) is not None:
            updates.append((layer.bias, rng.normal(0.0, 0.1, layer.bias.shape)))
    sess.run([v.assign(val.astype(np.float32)) for v, val in updates])


def frozen_graph_def(name, seed=0, input_shape=None, learning_phase=0, **kw):
    """Build `name` in a fresh graph, initialise with `seed`, randomise BN/biases and freeze.

    Returns ``(graph_def, input_specs, output_node_names)`` where
    ``input_specs = {input_name: ((1,) + input_shape, 'float32')}``."""
    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        info = build(name, input_shape=input_shape, learning_phase=learning_phase, seed=seed, **kw)
        sess.run(tf.global_variables_initializer())
        _randomise(info.model, sess, np.random.RandomState(seed))
        graph_def = tf.graph_util.convert_variables_to_constants(
            sess, graph.as_graph_def(), info.output_node_names)
    input_specs = {info.input_name: ((1,) + info.input_shape[1:], 'float32')}
    return graph_def, input_specs, info.output_node_names
