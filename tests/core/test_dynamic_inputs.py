"""Graphs whose shapes TensorFlow cannot infer statically (map_fn, TensorArrays, shapes read at
run time): shapes measured in one run on inputs of the spec, a complete MACs total, and a slim
graph that keeps the dynamic input and equals the sparse one at any input size."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from graphs import DETECTION_OUTPUTS, detection_graph
from helpers import run_graph
from tf1prune.apply import slim
from tf1prune.cli import convert as convert_cli
from tf1prune.core import flops
from tf1prune.core.graph import parse_input_specs
from tf1prune.files import load_graph_def, save_graph_def

SPEC = {"image_tensor:0": (1, 64, 56, 3)}     # no dtype: the placeholder's own (uint8)
BACKBONE = ["FeatureExtractor/conv0", "FeatureExtractor/pw1", "FeatureExtractor/conv2", "FeatureExtractor/conv3"]


@pytest.fixture(scope="module", params=[True, False], ids=["while_v2", "tf1_frames"])
def detection(request):
    return detection_graph(control_flow_v2=request.param)


def test_shapes_after_map_fn_are_measured_and_the_macs_total_is_complete(detection):
    analysis = tf1prune.analyze(detection, SPEC, DETECTION_OUTPUTS)
    assert analysis.view.input_specs["image_tensor:0"] == ((1, 64, 56, 3), "uint8")
    assert analysis.view.measured and analysis.view.measure_error is None
    assert "measured in one run" in analysis.view.shape_note()
    report = flops.count(analysis)
    assert report.complete and not report.uncounted
    # the backbone is prunable; the heads' channels are anchors x code, split by a Reshape
    assert all(analysis.group_by_node(n).prunable for n in BACKBONE)
    head = analysis.group_by_node("BoxPredictor_0/ClassPredictor")
    assert not head.prunable and "Reshape" in head.reason
    # conv0 runs on the 48x48 resized image, stride 2: 24*24 positions x 3*3*3 x 16
    assert next(l for l in flops.count(analysis).layers if l.node == "FeatureExtractor/conv0").macs == 24 * 24 * 27 * 16


def test_the_slim_graph_keeps_the_dynamic_uint8_input_and_equals_the_sparse_one(detection):
    analysis = tf1prune.analyze(detection, SPEC, DETECTION_OUTPUTS)
    plan = analysis.plan(tf1prune.make_spec(analysis, sparsity=0.5))
    sparse, slimmed = slim.apply_sparse(plan), slim.apply_slim(plan)
    holder = next(n for n in slimmed.node if n.name == "image_tensor")
    assert tf.as_dtype(holder.attr["dtype"].type) == tf.uint8
    assert [d.size for d in holder.attr["shape"].shape.dim] == [-1, -1, -1, 3]
    names = [o + ":0" for o in DETECTION_OUTPUTS]
    for shape in [(1, 64, 56, 3), (2, 90, 70, 3)]:     # another size and batch than the spec's
        x = np.random.RandomState(1).randint(0, 256, shape).astype(np.uint8)
        want = run_graph(sparse, {"image_tensor:0": x}, names)
        got = run_graph(slimmed, {"image_tensor:0": x}, names)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_convert_reaches_the_target_on_a_detection_export(tmp_path, capsys):
    src, out = str(tmp_path / "frozen_inference_graph.pb"), str(tmp_path / "slim.pb")
    save_graph_def(detection_graph(), src)
    before = open(src, "rb").read()
    code = convert_cli.main(["convert", "--input_graph", src, "--output_graph", out, "--output_node_names",
                             ",".join(DETECTION_OUTPUTS), "--input_specs", "image_tensor:0=1,64,56,3",
                             "--sparsity", "0.5", "--channel_divisible", "1"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "measured in one run" in text
    reduction = float(text.split("MACs reduction:")[1].split("%")[0])
    assert abs(reduction - 50.0) <= 0.5, text
    assert open(src, "rb").read() == before
    again = tf1prune.analyze(load_graph_def(out), SPEC, DETECTION_OUTPUTS)
    assert flops.count(again).complete


def test_a_run_that_fails_is_reported_and_leaves_the_shapes_unknown():
    """The graph asserts a width the spec does not have: no shapes are measured, the reason is said."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, None, None, 3], name="x")
        with tf.control_dependencies([tf.debugging.assert_equal(tf.shape(x)[2], 100)]):
            x = tf.identity(x)
        x = tf.map_fn(tf.identity, x)           # the static shape is lost here
        y = tf.nn.conv2d(x, tf.constant(np.ones((3, 3, 3, 4), np.float32)), [1, 1, 1, 1], "SAME", name="c1")
        y = tf.nn.conv2d(tf.nn.relu(y), tf.constant(np.ones((1, 1, 4, 2), np.float32)), [1, 1, 1, 1], "SAME")
        tf.reduce_mean(y, [1, 2], name="logits")
    analysis = tf1prune.analyze(graph.as_graph_def(), {"x:0": (1, 8, 8, 3)}, ["logits"])
    assert not analysis.view.measured
    assert "could not be measured" in analysis.view.shape_note() and "assert" in analysis.view.shape_note().lower()
    assert not flops.count(analysis).complete


def test_a_spec_without_a_dtype_keeps_the_placeholders_dtype():
    specs = parse_input_specs("image_tensor:0=1,32,32,3;ids:0=1,8:int32")
    assert specs == {"image_tensor:0": ((1, 32, 32, 3), None), "ids:0": ((1, 8), "int32")}
    analysis = tf1prune.analyze(detection_graph(size=32), {"image_tensor:0": (1, 32, 32, 3)}, DETECTION_OUTPUTS)
    assert analysis.view.input_specs["image_tensor:0"][1] == "uint8"
