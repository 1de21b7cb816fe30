"""Real architectures with random weights: analyze -> prune 50% -> slim, and slim(x) == sparse(x).

tf_slim nets (ResNet-v1-50, Inception-v3, AlexNet-v2) and tf_keras applications (MobileNetV2,
ResNet50, MobileNetV3Small, EfficientNetB0) are built offline (``weights=None``), their BN
statistics and biases randomized, frozen and pruned.  Each test prints the number of groups, the
prunable share of the conv/dense producer layers (excluding the final logits layer), the reasons
of the unprunable groups and the MACs before/after (``pytest -s`` shows them).
"""
import collections
import importlib
import sys
import time

import pytest
import tensorflow.compat.v1 as tf
import tf_keras as keras

import tf1prune

from helpers import check_slim_equals_sparse, freeze, randomize_bn_and_biases

pytestmark = pytest.mark.slow   # the full suite only (the fast tier: -m "not slow")


def _tf_slim():
    """Import tf_slim; on TF 2.21 its batch_norm needs tf_keras' legacy layers under their old name."""
    from tf_keras.src import legacy_tf_layers
    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
    sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization",
                           importlib.import_module("tf_keras.src.legacy_tf_layers.normalization"))
    import tf_slim
    return tf_slim


# --- model builders: each builds in the default graph from input ``x`` and returns its output ---

def slim_resnet_v1_50(x):
    slim = _tf_slim()
    from tf_slim.nets import resnet_utils, resnet_v1
    with slim.arg_scope(resnet_utils.resnet_arg_scope()):
        net, _ = resnet_v1.resnet_v1_50(x, num_classes=10, is_training=False)
    return net


def slim_inception_v3(x):
    slim = _tf_slim()
    from tf_slim.nets import inception_v3
    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        net, _ = inception_v3.inception_v3(x, num_classes=10, is_training=False, create_aux_logits=False)
    return net


def slim_alexnet_v2(x):
    slim = _tf_slim()
    from tf_slim.nets import alexnet
    with slim.arg_scope(alexnet.alexnet_v2_arg_scope()):
        net, _ = alexnet.alexnet_v2(x, num_classes=10, is_training=False)
    return net


def _keras(app, **kwargs):
    def build(size):
        model = app(input_tensor=keras.Input((size, size, 3), name="input"), weights=None, classes=10,
                    classifier_activation=None, **kwargs)
        return model.input, model.output
    build.keras = True
    return build


# name: (builder, input size, minimum prunable share of the conv/dense producers)
MODELS = collections.OrderedDict([
    ("slim_resnet_v1_50", (slim_resnet_v1_50, 64, 0.9)),
    ("slim_inception_v3", (slim_inception_v3, 75, 0.9)),
    ("slim_alexnet_v2", (slim_alexnet_v2, 224, 0.9)),
    ("keras_mobilenet_v2", (_keras(keras.applications.MobileNetV2, alpha=0.35), 96, 0.9)),
    ("keras_resnet50", (_keras(keras.applications.ResNet50), 64, 0.9)),
    ("keras_mobilenet_v3_small", (_keras(keras.applications.MobileNetV3Small, include_preprocessing=False),
                                  96, 0.9)),
    ("keras_efficientnet_b0", (_keras(keras.applications.EfficientNetB0), 96, 0.9)),
])


def frozen_model(name, seed=0):
    """Build model ``name`` in a fresh graph (learning phase 0), randomize BN/biases, freeze."""
    builder, size, _ = MODELS[name]
    graph = tf.Graph()
    with graph.as_default():
        keras.backend.set_learning_phase(0)
        tf.set_random_seed(seed)
        if getattr(builder, "keras", False):
            x, out = builder(size)
        else:
            x = tf.placeholder(tf.float32, [None, size, size, 3], name="input")
            out = builder(x)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            randomize_bn_and_biases(sess, seed)
            graph_def = freeze(sess, [out.op.name])
    keras.backend.clear_session()
    return graph_def, {x.name: ((1, size, size, 3), "float32")}, out.op.name


def producer_share(analysis):
    """(prunable share, unprunable producer layers with their reasons) over the conv/dense
    producers, excluding the group fixed by the graph output (the logits layer)."""
    total, unprunable = 0, []
    for layer in analysis.layers:
        group = analysis.group_by_node(layer.node) if layer.kind in ("conv", "dense") else None
        if group is None or "graph output" in (group.reason or ""):
            continue
        total += 1
        if not group.prunable:
            unprunable.append((layer.node, group.reason))
    return 1.0 - len(unprunable) / max(total, 1), unprunable, total


@pytest.mark.parametrize("name", list(MODELS))
def test_real_architecture(name):
    t0 = time.time()
    graph_def, specs, output = frozen_model(name)
    t1 = time.time()
    analysis = check_slim_equals_sparse(graph_def, specs, [output], ratio=0.5, batch=2)
    share, unprunable, total = producer_share(analysis)
    print("\n%s: %d groups (%d prunable), %d conv/dense producers, prunable share %.3f, "
          "MACs %d -> %d (%.2f), build %.1fs, check %.1fs"
          % (name, len(analysis.groups), sum(g.prunable for g in analysis.groups), total, share,
             analysis.macs_before, analysis.macs_after, analysis.macs_after / analysis.macs_before,
             t1 - t0, time.time() - t1))
    for reason, count in collections.Counter(r for _, r in unprunable).most_common():
        print("  unprunable x%d: %s" % (count, reason))
    assert share >= MODELS[name][2], unprunable


@pytest.mark.parametrize("name", ["keras_mobilenet_v2", "slim_resnet_v1_50"])
def test_real_architecture_slim_graph_converts_to_tflite(name):
    """TensorFlow's TF1 TFLite converter takes the slim graph, and TFLite computes what TensorFlow does."""
    from tf1prune.apply import slim
    from tf1prune.apply.tflite import to_tflite
    graph_def, specs, output = frozen_model(name)
    analysis = tf1prune.analyze(graph_def, specs, [output])
    slim_gd = slim.apply_slim(analysis.plan(tf1prune.make_spec(analysis, sparsity=0.5)))
    result = to_tflite(slim_gd, specs, [output])
    assert result.model[4:8] == b"TFL3" and set(result.outputs) == {output}
    assert result.max_diff is not None and result.max_diff < 1e-3, result.outputs
