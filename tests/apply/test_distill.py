"""Label-free distillation of a refined plan: it brings the pruned model's outputs closer to the
original's, keeps pruned positions at zero, keeps slim == sparse, and fails with a clear error."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from helpers import kl_divergence, run_graph
from tf1prune.apply import refine as refine_lib
from tf1prune.apply import slim
from tf1prune.apply.distill import distill, trainable
from tf1prune.core.rules import build
from tf1prune.errors import Tf1PruneError


@pytest.fixture(scope="module")
def mobilenet():
    gd, specs, outs = example_models.frozen_graph_def("mobilenet_v2_se", seed=2, learning_phase=0)
    name = next(iter(specs))
    x = np.random.RandomState(0).rand(80, *specs[name][0][1:]).astype(np.float32)
    batches = [{name: x[:40]}, {name: x[40:]}]
    gd = tf1prune.recalibrate_batch_norm(gd, batches, None, outs)   # outputs that depend on the input
    analysis = tf1prune.analyze(gd, specs, outs)
    plan = analysis.plan(tf1prune.make_spec(analysis, sparsity=0.4, best_effort=True))
    return gd, specs, outs, name, x, batches, refine_lib.refine(plan, batches)[0]


def test_distillation_moves_the_pruned_model_towards_the_original(mobilenet):
    gd, specs, outs, name, x, batches, plan = mobilenet
    few = x[:16]   # under 20 inputs none is held out: the epochs are scored on the training inputs
    result = distill(plan, [{name: few}], epochs=6, learning_rate=1e-4, features=0)
    assert result.steps == 6 and result.epoch > 0 and result.after < result.before, result[1:]
    reference = run_graph(gd, {name: few}, [outs[0] + ":0"])[0]
    distilled = plan.with_updates(result.updates)
    before, after = (kl_divergence(reference, run_graph(slim.apply_slim(p), {name: few}, [outs[0] + ":0"])[0])
                     for p in (plan, distilled))
    assert before == pytest.approx(result.before, rel=1e-3) and after == pytest.approx(result.after, rel=1e-3)
    assert after < 0.9 * before, (before, after)
    # every trained parameter is an update the appliers apply, pruned positions zero
    assert set(result.updates) == set(trainable(plan, {n.name: n for n in gd.node}))
    for param, value in result.updates.items():
        assert not np.any(value[plan.mask(param, value.shape) == 0]), param
    probe = np.random.RandomState(5).rand(3, *specs[name][0][1:]).astype(np.float32)
    want = run_graph(slim.apply_sparse(distilled), {name: probe}, [outs[0] + ":0"])[0]
    got = run_graph(slim.apply_slim(distilled), {name: probe}, [outs[0] + ":0"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_refine_distills_on_request_and_says_what_it_did(mobilenet):
    gd, specs, outs, name, x, batches, plan = mobilenet
    raw = plan.analysis.plan(tf1prune.make_spec(plan.analysis, sparsity=0.4, best_effort=True))
    few = [{name: x[:16]}]
    refined, done = refine_lib.refine(raw, few, reconstruct=False, distill={"epochs": 3, "learning_rate": 1e-4})
    kd = done.distillation
    assert kd is not None and kd.steps == 3 and kd.epoch > 0 and kd.held_out == 0 and done.statistics
    for param, value in kd.updates.items():
        np.testing.assert_array_equal(refined.updates[param], value)
    assert refine_lib.refine(raw, few)[1].distillation is None
    with pytest.raises(Tf1PruneError, match="distillation needs inputs"):
        refine_lib.refine(raw, distill={})


def test_distillation_matches_the_layer_outputs_on_the_kept_channels(mobilenet):
    """With ``features``, training also matches each layer's output to the original's on the kept
    channels: their error falls further than with the graph's outputs alone, while the epoch is
    still chosen (and reported) by the outputs' loss."""
    gd, specs, outs, name, x, batches, refined = mobilenet
    plan = refined.analysis.plan(tf1prune.make_spec(refined.analysis, sparsity=0.4, best_effort=True))   # not refined
    few = x[:16]
    layers = [layer for layer in plan.analysis.layers if not layer.path]
    tensors = [outs[0] + ":0"] + [layer.node + ":0" for layer in layers]
    nodes = {n.name: n for n in gd.node}
    want = run_graph(gd, {name: few}, tensors)

    def errors(p):
        got = run_graph(slim.apply_sparse(p), {name: few}, tensors)
        terms = []
        for layer, w, g in zip(layers, want[1:], got[1:]):
            kernel = p.mask(layer.kernel, build.const_value(nodes[layer.kernel]).shape)
            kept = kernel.reshape(-1, w.shape[-1]).max(0)   # output channels with a kept filter
            terms.append(np.mean((g * kept - w * kept) ** 2) / np.mean((w * kept) ** 2))
        return kl_divergence(want[0], got[0]), np.mean(terms)
    outputs_only = distill(plan, [{name: few}], epochs=6, learning_rate=3e-4, features=0)
    with_layers = distill(plan, [{name: few}], epochs=6, learning_rate=3e-4, features=2.0)
    before = errors(plan)
    after = [errors(plan.with_updates(r.updates)) for r in (outputs_only, with_layers)]
    assert with_layers.before == pytest.approx(before[0], rel=1e-3)    # the outputs' loss only
    assert with_layers.after == pytest.approx(after[1][0], rel=1e-3) and after[1][0] < before[0]
    assert after[1][1] < min(before[1], after[0][1]), (before, after)   # the layers matched better
    with pytest.raises(Tf1PruneError, match="weight of the layer outputs"):
        distill(plan, batches, features=-1.0)


def test_distillation_regresses_outputs_that_are_not_class_scores():
    """A feature-map output is matched by relative squared error."""
    rng = np.random.RandomState(1)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 6, 6, 3), name="x")
        h = tf.nn.relu(tf.nn.conv2d(x, tf.constant(rng.randn(3, 3, 3, 8).astype(np.float32)), [1, 1, 1, 1], "SAME"))
        tf.nn.conv2d(h, tf.constant(rng.randn(1, 1, 8, 4).astype(np.float32)), [1, 1, 1, 1], "SAME", name="features")
    gd = graph.as_graph_def()
    analysis = tf1prune.analyze(gd, {"x:0": ((1, 6, 6, 3), "float32")}, ["features"])
    plan = analysis.plan(tf1prune.make_spec(analysis, ratios={analysis.groups[0].id: 0.5}, best_effort=True))
    data = rng.rand(40, 6, 6, 3).astype(np.float32)
    result = distill(plan, [{"x:0": data[:20]}, {"x:0": data[20:]}], epochs=20, learning_rate=1e-2, features=0)
    # the loss: squared error on every tenth input (held out of training) relative to the outputs' mean square
    scale = np.mean(run_graph(gd, {"x:0": data}, ["features:0"])[0] ** 2)
    held = data[9::10]
    reference = run_graph(gd, {"x:0": held}, ["features:0"])[0]
    before, after = (np.mean((run_graph(slim.apply_slim(p), {"x:0": held}, ["features:0"])[0] - reference) ** 2) / scale
                     for p in (plan, plan.with_updates(result.updates)))
    assert result.before == pytest.approx(before, rel=1e-3)
    assert after == pytest.approx(result.after, rel=1e-3) and after < 0.8 * before, (before, after)


def test_distillation_errors_are_clear(mobilenet):
    gd, specs, outs, name, x, batches, plan = mobilenet
    with pytest.raises(Tf1PruneError, match="calibration batch does not run"):
        distill(plan, [{name: x[:4, :5]}])
    with pytest.raises(Tf1PruneError, match="different inputs"):
        distill(plan, [{name: x[:4]}, {"other:0": x[:4]}])
    bad = x[:8].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(Tf1PruneError, match="check the calibration data"):
        distill(plan, [{name: bad}], epochs=1)
    for bad, message in (({"epochs": 1.5}, "whole number"), ({"learning_rate": 0.0}, "learning rate must be > 0")):
        with pytest.raises(Tf1PruneError, match=message):
            distill(plan, batches, **bad)
    assert distill(plan, batches, epochs=0).updates == {}


@pytest.mark.parametrize("rate", [1.0, 1e30])
def test_distillation_keeps_nothing_when_no_epoch_helps(mobilenet, rate):
    """Learning rates far too high for the model (the loss worse, or not finite): no update."""
    gd, specs, outs, name, x, batches, plan = mobilenet
    result = distill(plan, batches, epochs=2, learning_rate=rate)
    assert result.updates == {} and result.epoch == 0 and result.after == result.before
    assert result.held_out == 8   # every tenth of the 80 inputs


def test_distillation_holds_out_whole_batches_of_a_fixed_batch_graph():
    """A graph whose input has a fixed batch size is fed only full batches, held-out ones too."""
    rng = np.random.RandomState(2)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (4, 6), name="x")
        h = tf.nn.relu(tf.matmul(x, tf.constant(rng.randn(6, 8).astype(np.float32)), name="d1"))
        tf.matmul(h, tf.constant(rng.randn(8, 3).astype(np.float32)), name="logits")
    gd = graph.as_graph_def()
    analysis = tf1prune.analyze(gd, {"x:0": ((4, 6), "float32")}, ["logits"])
    plan = analysis.plan(tf1prune.make_spec(analysis, ratio=0.5))
    data = rng.randn(88, 6).astype(np.float32)
    result = distill(plan, [{"x:0": data[i:i + 4]} for i in range(0, 88, 4)], epochs=3, learning_rate=1e-2)
    # rows 9, 19, ..., 79 held out, trimmed to two batches of 4; 80 rows left: 20 steps an epoch
    assert result.held_out == 8 and result.steps == 60 and result.epoch > 0, result[1:]


def test_the_teacher_copy_of_a_graph_with_functions_imports_beside_a_changed_one():
    """When the sparse model changed a function body, the original (the teacher) is imported with its
    functions renamed: the same names with other bodies would clash."""
    from tf1prune.apply.distill import _own_functions
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 3), name="x")
        flag = tf.placeholder_with_default(True, (), name="flag")
        tf.identity(tf.cond(flag, lambda: x * 2.0, lambda: x * 3.0), name="y")
    gd = graph.as_graph_def()
    if not gd.library.function:
        pytest.skip("control flow v1 here: no functions")
    changed = tf.GraphDef()
    changed.CopyFrom(gd)
    for function in changed.library.function:   # another body under the same name
        for node in function.node_def:
            if node.op == "Const" and node.attr["value"].tensor.float_val == [2.0]:
                node.attr["value"].tensor.float_val[0] = 5.0
    data = np.ones((1, 3), np.float32)
    both = tf.Graph()
    with both.as_default():
        tf.import_graph_def(changed, name="")
        with pytest.raises(ValueError):
            tf.import_graph_def(gd, name="teacher")
    both = tf.Graph()
    with both.as_default():
        tf.import_graph_def(changed, name="")
        tf.import_graph_def(_own_functions(gd, "t_"), name="teacher")
        with tf.Session(graph=both) as sess:
            got = sess.run(["y:0", "teacher/y:0"], {"x:0": data, "teacher/x:0": data})
    np.testing.assert_allclose(got[0], 5 * data)
    np.testing.assert_allclose(got[1], 2 * data)
