"""Fidelity: no wrong figure, no unrunnable output, no silently ignored argument (one test per case)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from helpers import check_slim_equals_sparse, freeze, run_graph, static_shapes
from graphs import SPECS, H, analyse, build, conv, dense, group_of, head, var
from tf1prune.apply import checkpoint
from tf1prune.cli import convert as convert_cli
from tf1prune.cli import strip_checkpoint as strip_cli
from tf1prune.files import save_graph_def

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def convert(argv, capsys):
    """Run tf1prune-convert in-process: (exit code, stdout, stderr lines)."""
    code = convert_cli.main(["tf1prune-convert"] + [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def one_error(code, err, text):
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and text in err[0], (code, err)


@pytest.fixture
def files(tmp_path):
    """Save graphs under tmp_path; check afterwards that failed runs wrote nothing."""
    def save(graph_def, name="in.pb"):
        path = str(tmp_path / name)
        save_graph_def(graph_def, path)
        return path
    return save


# --- 1. static shapes after If ------------------------------------------------------------------
def test_slim_graph_keeps_static_shapes_after_keras_if(tmp_path):
    gd, specs, outs = example_models.frozen_graph_def("mnist_convnet", seed=1, learning_phase=None)
    assert any(n.op in ("If", "StatelessIf") for n in gd.node)
    a = check_slim_equals_sparse(gd, specs, outs, ratio=0.5)     # checks every tensor's static shape
    slim_gd = tf1prune.slim_graph_def(gd, 0.5, specs, outs)
    shapes = static_shapes(slim_gd)
    pools = [name for name in shapes if "MaxPool" in name]
    assert pools and all(shapes[p].as_list()[1:] == static_shapes(gd)[p].as_list()[1:-1] + [shapes[p][-1]]
                         and shapes[p][-1] is not None for p in pools)
    assert not a.keep.all() and a.macs_after < a.macs_before   # channels were removed through the If
    # every recorded output shape of a call op holds the tensor it produces, read or not (a BatchNorm
    # If's batch statistics are not read: their channel count is unknown, not the old one)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(slim_gd, name="")
    calls = [n for n in slim_gd.node if n.op in ("If", "StatelessIf")]
    fetched = [graph.get_tensor_by_name("%s:%d" % (n.name, i)) for n in calls
               for i in range(len(n.attr["output_shapes"].list.shape))
               if graph.get_tensor_by_name("%s:%d" % (n.name, i)).dtype == tf.float32]
    x = {name + ":0" if ":" not in name else name: np.zeros((2,) + spec[0][1:], np.float32)
         for name, spec in specs.items()}
    with tf.Session(graph=graph) as sess:
        values = sess.run(fetched, x)
    for t, v in zip(fetched, values):
        recorded = tf.TensorShape(next(n for n in calls if n.name == t.op.name).attr["output_shapes"]
                                  .list.shape[t.value_index])
        assert recorded.is_compatible_with(v.shape), (t.name, recorded, v.shape)


# --- 2. while loops -----------------------------------------------------------------------------
def _loop_graph(conv_in_body=False):
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        w = var([1, 1, 6, 6], "body_w")
        body = (lambda i, v: (i + 1, tf.nn.conv2d(v, w, [1, 1, 1, 1], "SAME"))) if conv_in_body else \
            (lambda i, v: (i + 1, v * 0.5))
        _, y = tf.while_loop(lambda i, v: i < 3, body, [0, y])
        head(conv(tf.nn.relu(y), 5, "c2", 3))
    return build(fn)


def test_layers_after_a_while_loop_are_prunable_and_counted(files, capsys, tmp_path):
    gd = _loop_graph()
    a = check_slim_equals_sparse(gd, SPECS, ["logits"], ratio=0.5)
    assert group_of(a, "c2").prunable
    c1 = group_of(a, "c1")
    assert not c1.prunable and "While" in c1.reason and "loop" in c1.reason
    report = tf1prune.count_macs(a)
    assert report.complete and report.macs == H * H * 9 * 3 * 6 + H * H * 9 * 6 * 5 + 5 * 5
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", tmp_path / "o.pb",
                              "--output_node_names", "logits", "--ratio", "0.5"], capsys)
    assert code == 0 and not err, err
    before, after = map(int, re.search(r"MACs:\s+(\d+) -> (\d+)", out).groups())
    assert before == report.macs and after < before


def test_layers_in_a_loop_body_make_the_total_incomplete(files, capsys, tmp_path):
    gd = _loop_graph(conv_in_body=True)
    report = tf1prune.count_macs(analyse(gd))
    assert not report.complete and "unknown number of times" in report.uncounted[0][1]
    out_path = str(tmp_path / "o.pb")
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", out_path, "--output_node_names",
                              "logits", "--sparsity", "0.5"], capsys)
    one_error(code, err, "the MACs total is incomplete")
    assert not os.path.exists(out_path)
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", out_path, "--output_node_names",
                              "logits", "--ratio", "0.5"], capsys)
    assert code == 0 and re.search(r"counted layers only; not counted: (Stateless)?While 'while'", out), out
    assert "of the counted MACs" in out


# --- 4. unreachable targets -----------------------------------------------------------------------
def test_unreachable_target_is_refused_unless_best_effort(files, capsys, tmp_path):
    gd = build(lambda x: head(tf.nn.softmax(conv(x, 6, "c1", 3))))    # nothing prunable
    out_path = str(tmp_path / "o.pb")
    argv = ["--input_graph", files(gd), "--output_graph", out_path, "--output_node_names", "logits"]
    code, out, err = convert(argv + ["--sparsity", "0.5"], capsys)
    one_error(code, err, "cannot remove 50.0% of the MACs: the closest reachable is 0.0% (at most 0.0%")
    assert "Softmax 'Softmax': normalises over the channel axis" in err[0] and not os.path.exists(out_path)
    code, out, err = convert(argv + ["--ratio", "0.5"], capsys)
    one_error(code, err, "no channel would be removed")
    code, out, err = convert(argv + ["--sparsity", "0.5", "--best_effort"], capsys)
    assert code == 0 and "warning: cannot remove 50.0%" in out and os.path.exists(out_path)


def test_runner_refuses_an_unreachable_target(tmp_path):
    from tf1prune.workflows.iterative import IterativePruningRunner
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, H, H, 3), name="x")
        head(tf.nn.softmax(conv(x, 6, "c1", 3)))
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            runner = IterativePruningRunner("u", sess, SPECS, ["logits"], workspace=str(tmp_path))
            with pytest.raises(tf1prune.Tf1PruneError, match="cannot remove 50.0% of the MACs"):
                runner.prune(sparsity=0.5, strategy="uniform")
            with pytest.raises(tf1prune.Tf1PruneError, match="sparsity must be a number"):
                runner.prune(sparsity="0.5", strategy="uniform")
            shape_tensors, masks = runner.prune(sparsity=0.5, strategy="uniform", best_effort=True)
            assert masks == {} and not runner.spec.pruned   # the closest reachable: nothing pruned


# --- 5. input specs and spec files ----------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--input_specs", "x:0=1,-5,8,3"], "dimension -5 must be a positive integer"),
    (["--input_specs", "x:0=0,8,8,3"], "dimension 0 must be a positive integer"),
    (["--input_specs", "Relu:0=1,8,8,6"], "is not a placeholder"),
    (["--input_specs", "x:1=1,8,8,3"], "a placeholder has one output"),
])
def test_bad_input_specs_are_errors(files, capsys, tmp_path, extra, message):
    gd = build(lambda x: head(tf.nn.relu(conv(x, 6, "c1", 3))))
    out_path = str(tmp_path / "o.pb")
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", out_path, "--output_node_names",
                              "logits", "--ratio", "0.5"] + extra, capsys)
    one_error(code, err, message)
    assert not os.path.exists(out_path) and out == ""


def test_bad_output_index_is_an_error(files, capsys, tmp_path):
    gd = build(lambda x: head(tf.nn.relu(conv(x, 6, "c1", 3))))
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", str(tmp_path / "o.pb"),
                              "--output_node_names", "logits:7", "--ratio", "0.5"], capsys)
    one_error(code, err, "node 'logits' has 1 output(s)")


@pytest.mark.parametrize("change,message", [
    (lambda d: d["groups"][0].update(keep=[0.0, 1.5]), "must be integers"),
    (lambda d: d["groups"][0].update(channels=d["groups"][0]["channels"] + 1), "channels"),
    (lambda d: d.update(version=7), "unsupported version 7"),
])
def test_bad_spec_files_are_errors(files, capsys, tmp_path, change, message):
    import json
    gd = build(lambda x: head(tf.nn.relu(conv(x, 6, "c1", 3))))
    spec = tf1prune.make_spec(analyse(gd), ratio=0.5).to_dict()
    change(spec)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", str(tmp_path / "o.pb"),
                              "--output_node_names", "logits", "--spec", path], capsys)
    one_error(code, err, message)


# --- 6/7. zeros: dead layers, zero filters with zero offsets ----------------------------------------
def _zero_net(folder, zero):
    """x -> c1 (8) -> bias -> BN -> relu -> c2 (8) -> mean -> fc; channels of c1 zeroed by ``zero``."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        k1 = tf.get_variable("c1/kernel", [3, 3, 3, 8], use_resource=False)
        b1 = tf.get_variable("c1/bias", [8], use_resource=False, initializer=tf.ones_initializer())
        gamma = tf.get_variable("bn/gamma", [8], use_resource=False, initializer=tf.ones_initializer())
        beta = tf.get_variable("bn/beta", [8], use_resource=False, initializer=tf.constant_initializer(0.1))
        mean = tf.get_variable("bn/mean", [8], use_resource=False, initializer=tf.constant_initializer(0.2))
        variance = tf.get_variable("bn/variance", [8], use_resource=False, initializer=tf.ones_initializer())
        h = tf.nn.bias_add(tf.nn.conv2d(x, k1, [1, 1, 1, 1], "SAME"), b1)
        h = tf.nn.relu(tf.nn.fused_batch_norm(h, gamma, beta, mean, variance, is_training=False)[0])
        k2 = tf.get_variable("c2/kernel", [1, 1, 8, 8], use_resource=False)
        h = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(h, k2, [1, 1, 1, 1], "SAME")), [1, 2])
        tf.matmul(h, tf.get_variable("fc/kernel", [8, 4], use_resource=False), name="logits")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.op.name: sess.run(v) for v in tf.global_variables()}
            zero(values)
            for v in tf.global_variables():
                v.load(values[v.op.name], sess)
            return tf.train.Saver().save(sess, os.path.join(folder, "model.ckpt"))


def _strip(prefix, tmp_path, capsys):
    code = strip_cli.main(["tf1prune-strip-checkpoint", "--input_meta_graph", prefix + ".meta",
                           "--input_checkpoint", prefix, "--output_dir", str(tmp_path / "slim"), "--zeros",
                           "--output_node_names", "logits", "--output_graph", str(tmp_path / "slim.pb")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    graph_def = tf.GraphDef()
    graph_def.ParseFromString(open(str(tmp_path / "slim.pb"), "rb").read())
    return captured.out, graph_def


def _frozen(prefix):
    return checkpoint.freeze(prefix + ".meta", prefix, ["logits"])


def test_zeros_on_a_dead_layer_keeps_a_channel(tmp_path, capsys):
    def dead(values):
        values["c1/kernel"][:] = 0
        values["c1/bias"][:] = 0
        values["c2/kernel"][:] = 0
    prefix = _zero_net(str(tmp_path), dead)
    out, slim_gd = _strip(prefix, tmp_path, capsys)
    feeds = {"x:0": np.random.RandomState(0).randn(2, 8, 8, 3).astype(np.float32)}
    np.testing.assert_allclose(run_graph(slim_gd, feeds, ["logits:0"])[0],
                               run_graph(_frozen(prefix), feeds, ["logits:0"])[0], atol=1e-5)
    # c1 and c2 are dead (zero filters, zero bias): each keeps one of its 8 channels, so TF can run it
    assert "channels removed: 14" in out and "group 0: 7 of 8 channels are zero" in out


def test_zeros_finds_channels_with_zero_filters_and_offsets(tmp_path, capsys):
    def slimmed(values):   # network slimming: filters, bias, gamma and beta of channels 1 and 5 are zero
        for name in ("c1/bias", "bn/gamma", "bn/beta"):
            values[name][[1, 5]] = 0
        values["c1/kernel"][..., [1, 5]] = 0
        values["c1/kernel"][..., 3] = 0    # channel 3: zero filter, but bias 1 -> BN maps it to non-zero
    prefix = _zero_net(str(tmp_path), slimmed)
    out, slim_gd = _strip(prefix, tmp_path, capsys)
    assert "channels removed: 2" in out
    assert re.search(r"group \d+: 2 of 8 channels are zero \(0 read with zero weights, 2 with zero filters", out)
    assert "channels with zero filters stay: BiasAdd" in out
    feeds = {"x:0": np.random.RandomState(0).randn(2, 8, 8, 3).astype(np.float32)}
    np.testing.assert_allclose(run_graph(slim_gd, feeds, ["logits:0"])[0],
                               run_graph(_frozen(prefix), feeds, ["logits:0"])[0], rtol=1e-5, atol=1e-5)


def test_zeros_warns_when_nothing_is_zero(tmp_path, capsys):
    prefix = _zero_net(str(tmp_path), lambda values: None)
    out, _ = _strip(prefix, tmp_path, capsys)
    assert "warning: no channel is provably zero" in out and "channels removed: 0" in out


# --- 8. an unlisted head ----------------------------------------------------------------------------
def test_an_unlisted_head_is_left_out(files, capsys, tmp_path):
    def fn(x):
        trunk = tf.nn.relu(conv(x, 6, "trunk", 3))
        head(conv(trunk, 5, "c2"))
        tf.identity(dense(tf.reduce_mean(trunk, [1, 2]), 3, "head2"), name="aux")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, H, H, 3), name="x")
        fn(x)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            gd = freeze(sess, ["logits", "aux"])
    out_path = str(tmp_path / "o.pb")
    code, out, err = convert(["--input_graph", files(gd), "--output_graph", out_path, "--output_node_names",
                              "logits", "--ratio", "0.5"], capsys)
    assert code == 0 and not err, err
    assert re.search(r"left out \d+ nodes the output nodes do not need \(e\.g\. 'aux'\)", out), out
    check_slim_equals_sparse(gd, SPECS, ["logits"], ratio=0.5)


# --- 9. runner masks and eval_fn values --------------------------------------------------------------
def _runner(tmp_path, name="m"):
    from tf1prune.workflows.iterative import IterativePruningRunner
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, H, H, 3), name="x")
        head(conv(tf.nn.relu(conv(x, 8, "c1", 3)), 6, "c2", 3))
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    return sess, IterativePruningRunner(name, sess, SPECS, ["logits"], workspace=str(tmp_path / name))


def test_bad_masks_are_refused_and_zero_masks_keep_a_channel(tmp_path):
    sess, runner = _runner(tmp_path)
    other_sess, other = _runner(tmp_path, "other")
    with sess.graph.as_default():
        _, masks = runner.prune(sparsity=0.5, strategy="uniform")
    with other_sess.graph.as_default():
        other.prune(sparsity=0.5, strategy="uniform")
    with sess.graph.as_default():
        with pytest.raises(tf1prune.Tf1PruneError, match="masks must be a dict"):
            runner.get_slim_graph_def(None, "junk")
        with pytest.raises(tf1prune.Tf1PruneError, match="mask for 'c1_w' has shape"):
            runner.get_slim_graph_def(None, {"c1_w": np.ones(3)})
        with pytest.raises(tf1prune.Tf1PruneError, match="values other than 0 and 1"):
            runner.get_slim_graph_def(None, {name: m * 0.5 for name, m in masks.items()})
        with pytest.raises(tf1prune.Tf1PruneError, match="holds no prunable channels"):
            runner.get_slim_graph_def(None, {"nope/kernel": np.ones(3)})
        zero = {name: np.zeros_like(m) for name, m in masks.items()}
        slim_gd = runner.get_slim_graph_def(None, zero)     # every layer keeps a channel
        out = run_graph(slim_gd, {"x:0": np.ones((2, H, H, 3), np.float32)}, ["logits:0"])[0]
        assert out.shape == (2, 5)


def test_eval_fn_returning_a_string_is_a_failed_evaluation():
    from tf1prune.workflows import _worker
    assert _worker.check("0.9")[0] is None and "not a number" in _worker.check("0.9")[1]
    assert _worker.check(np.float32(0.5)) == (0.5, None) and _worker.check(np.array([0.25]))[0] == 0.25
    assert _worker.check(True)[0] is None and _worker.check(float("nan"))[0] is None


# --- 10. MACs targets on small models ---------------------------------------------------------------
def test_targets_on_a_two_conv_model_are_met_within_half_a_point():
    def fn(x):
        y = tf.nn.relu(conv(x, 8, "c1", 3))
        y = tf.nn.relu(conv(y, 16, "c2", 3))
        tf.identity(dense(tf.reduce_mean(y, [1, 2]), 10, "fc"), name="logits")
    a = analyse(build(fn))
    before = tf1prune.count_macs(a).macs
    for target in (0.5, 0.7):   # e.g. (4, 16) channels: 49.9%, where the bisection alone gave 47.4%
        achieved = 1 - tf1prune.count_macs(a, tf1prune.make_spec(a, sparsity=target)).macs / before
        assert abs(achieved - target) <= 0.005, (target, achieved)
    # 30% is out of reach at this granularity (closest: 7 and 12 channels): said, not silently missed
    with pytest.raises(tf1prune.Tf1PruneError, match=r"cannot remove 30.0% of the MACs: the closest reachable is 30.9%"):
        tf1prune.make_spec(a, sparsity=0.3)
    spec = tf1prune.make_spec(a, sparsity=0.3, best_effort=True)
    assert "closest reachable is 30.9%" in spec.warning
    assert abs(1 - tf1prune.count_macs(a, spec).macs / before - 0.309) < 0.001


def test_seed_mnist_model_target_is_met_within_half_a_point():
    gd, specs, outs = example_models.frozen_graph_def("mnist_convnet", seed=0)
    a = tf1prune.analyze(gd, specs, outs)
    before = tf1prune.count_macs(a).macs
    achieved = 1 - tf1prune.count_macs(a, tf1prune.make_spec(a, sparsity=0.5)).macs / before
    assert abs(achieved - 0.5) <= 0.005, achieved


# --- 11. deprecation noise ----------------------------------------------------------------------------
def test_tf1prune_calls_print_no_deprecation_warnings(tmp_path):
    code = """
import sys; sys.path[:0] = [%r, %r]
import numpy as np, tensorflow.compat.v1 as tf
tf.disable_eager_execution()
import graphs as t
from tf1prune.workflows.iterative import IterativePruningRunner
from tf1prune.apply import checkpoint
x = tf.placeholder(tf.float32, (None, t.H, t.H, 3), name="x")
t.head(t.conv(tf.nn.relu(t.conv(x, 8, "c1", 3)), 6, "c2", 3))
sess = tf.Session()
sess.run(tf.global_variables_initializer())
runner = IterativePruningRunner("d", sess, t.SPECS, ["logits"], workspace=%r)
runner.prune(sparsity=0.5, strategy="uniform")
runner.get_slim_graph_def()
prefix = tf.train.Saver().save(sess, %r)
model = checkpoint.CheckpointModel(prefix + ".meta", prefix, ["logits"])
checkpoint.strip_checkpoint(model, model.choice(zeros=True), %r)
""" % (ROOT, os.path.join(ROOT, "tests"), str(tmp_path / "ws"), str(tmp_path / "ck" / "m.ckpt"),
       str(tmp_path / "slim"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deprecated" not in proc.stderr, [l for l in proc.stderr.splitlines() if "deprecated" in l]


# --- label-free one-step search of a frozen graph (issue: quality) -------------------------------------
def test_convert_search_with_calibration_data(tmp_path, capsys):
    gd, specs, outs = example_models.frozen_graph_def("resnet", seed=1, learning_phase=None)
    path = str(tmp_path / "in.pb")
    save_graph_def(gd, path)
    x = np.random.RandomState(0).rand(64, 28, 28, 1).astype(np.float32)
    np.savez(str(tmp_path / "cal.npz"), input_1=x)
    out_path = str(tmp_path / "o.pb")
    argv = ["--input_graph", path, "--output_graph", out_path, "--output_node_names", outs[0], "--sparsity", "0.5"]
    code, out, err = convert(argv + ["--search", "4", "--calibration_data", tmp_path / "cal.npz",
                                     "--calibration_batch", "32"], capsys)
    assert code == 0 and not err, err
    assert re.search(r"search: 4 candidates, kl agreement: uniform -?[\d.e-]+, best", out), out
    reduction = float(re.search(r"MACs reduction: ([\d.]+)%", out).group(1))
    assert abs(reduction - 50) <= 0.5
    for extra, message in ((["--search", "4"], "--search needs --calibration_data"),
                           (["--search", "2", "--calibration_data", tmp_path / "nope.npz"], "cannot read calibration")):
        code, out, err = convert(argv + extra, capsys)
        one_error(code, err, message)
    np.savez(str(tmp_path / "bad.npz"), conv=x)
    code, out, err = convert(argv + ["--search", "2", "--calibration_data", tmp_path / "bad.npz"], capsys)
    one_error(code, err, "not an input of the graph")
