"""IterativePruningRunner: the seed workflow, caches, failures, masks under training, iteration."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import run_graph
from sessions import OUT, SPECS, X, classification_loss, eval_fn, five_class_eval, seed_model, slim_equals_session
from tf1prune import analyze
from tf1prune.core import flops
from tf1prune.workflows.iterative import IterativePruningRunner

pytestmark = pytest.mark.slow   # the full suite only (the fast tier: -m "not slow")

@pytest.mark.parametrize("learning_phase", [None, 0])
def test_seed_workflow(tmp_path, learning_phase):
    graph, sess, _ = seed_model(learning_phase)
    with graph.as_default():
        runner = IterativePruningRunner("mnist", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, gpu_ids=["/CPU:0"], checkpoint_interval=10, progress=None)
        shape_tensors, masks = runner.prune(sparsity=0.5)
        slim_gd = runner.get_slim_graph_def(shape_tensors, masks)
    assert "flatten/Const" in shape_tensors
    assert set(masks) >= {"conv2d/kernel", "conv2d_1/kernel"}
    assert all(set(np.unique(m)) <= {0.0, 1.0} for m in masks.values())
    slim_equals_session(runner, sess, slim_gd)
    before = flops.count(runner.analysis).macs
    after = flops.count(analyze(slim_gd, {"input_1:0": ((1, 28, 28, 1), "float32")}, OUT)).macs
    assert abs((1 - after / before) - 0.5) <= 0.01
    assert os.path.exists(tmp_path / "mnist_sparsity_0.5.spec")
    assert (tmp_path / "latest_spec").read_text().strip().endswith("mnist_sparsity_0.5.spec")


class Interrupted(BaseException):
    """Stands for Ctrl-C or a kill: not an Exception, so eval_fn failures handling lets it through."""


def test_ana_resumes_and_refuses_stale_cache(tmp_path):
    graph, sess, _ = seed_model()
    calls, interrupt = [], [True]

    def counting(gd):
        calls.append(1)
        if len(calls) == 8 and interrupt[0]:
            interrupt[0] = False
            raise Interrupted()   # the user stops the analysis
        return eval_fn(gd)
    with graph.as_default():
        runner = IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        with pytest.raises(Interrupted):
            runner.ana(counting, checkpoint_interval=3, progress=None)
        saved = json.loads((tmp_path / "m.sens").read_text())
        assert measured(saved) == 6   # baseline + 7 evaluations, the 7th interrupted: every finished one is saved
        calls.clear()
        sens = runner.ana(counting, progress=None)
        assert len(calls) == 18 - 6   # only the missing ones
        assert sum(len(v) for v in sens.results.values()) == 18
    graph2, sess2, _ = seed_model(seed=1, num_classes=5)    # another model under the same name
    with graph2.as_default():
        other = IterativePruningRunner("m", sess2, SPECS, OUT, workspace=str(tmp_path))
        with pytest.raises(tf1prune.Tf1PruneError, match="another graph"):
            other.ana(five_class_eval, progress=None)
        assert len(other.ana(five_class_eval, progress=None, recompute=True).results) == 2


def test_failing_and_nan_eval_fn_are_recorded(tmp_path):
    graph, sess, _ = seed_model()
    state = {"n": 0}

    def flaky(gd):
        state["n"] += 1
        if state["n"] == 3:
            raise RuntimeError("disk on fire")
        return float("nan") if state["n"] == 5 else eval_fn(gd)
    with graph.as_default():
        runner = IterativePruningRunner("f", sess, SPECS, OUT, workspace=str(tmp_path))
        sens = runner.ana(flaky, progress=None)
    errors = [m for errs in sens.errors.values() for m in errs.values()]
    assert len(errors) == 2 and any("disk on fire" in m for m in errors) and any("nan" in m for m in errors)
    assert sum(len(v) for v in sens.results.values()) == 16
    with graph.as_default():
        runner.prune(sparsity=0.3, best_effort=True)          # failed points count as too sensitive, not as crashes
    with pytest.raises(tf1prune.Tf1PruneError, match="baseline evaluation failed"):
        with graph.as_default():
            IterativePruningRunner("g", sess, SPECS, OUT, workspace=str(tmp_path)).ana(
                lambda gd: 1 / 0, progress=None)


OPTIMIZERS = {
    "sgd": lambda: tf.train.GradientDescentOptimizer(0.1),
    "adam": lambda: tf.train.AdamOptimizer(0.05),
    "momentum": lambda: tf.train.MomentumOptimizer(0.05, 0.9),
    "rmsprop": lambda: tf.train.RMSPropOptimizer(0.01, momentum=0.5),
    "adagrad": lambda: tf.train.AdagradOptimizer(0.1),
    "adadelta": lambda: tf.train.AdadeltaOptimizer(1.0),
    "ftrl": lambda: tf.train.FtrlOptimizer(0.1, l2_regularization_strength=0.01),
    "proximal": lambda: tf.train.ProximalGradientDescentOptimizer(0.1, l1_regularization_strength=0.01),
}


@pytest.mark.parametrize("train_op_built", ["before_prune", "after_prune"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zeros_survive_fine_tuning(tmp_path, name, train_op_built):
    """Slots with history from training before prune() (and weight decay) must not revive pruned weights."""
    graph, sess, info = seed_model()
    with graph.as_default():
        labels, loss = classification_loss(info)
        loss += 1e-2 * tf.add_n([tf.nn.l2_loss(v) for v in tf.trainable_variables()])   # weight decay
        optimizer = OPTIMIZERS[name]()                      # created before prune()
        train = optimizer.minimize(loss)
        sess.run(tf.variables_initializer(optimizer.variables()))
        feed = {"input_1:0": X, labels: np.arange(6) % 10}
        for _ in range(5):
            sess.run(train, feed)                           # slot history
        runner = IterativePruningRunner("t", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, progress=None)
        _, masks = runner.prune(sparsity=0.5)
        if train_op_built == "after_prune":
            train = optimizer.minimize(loss)                # same optimizer and slots
        for _ in range(25):
            sess.run(train, feed)
        for n, mask in masks.items():
            value = sess.run(runner.variables[n])
            assert np.all(value[mask == 0] == 0), n
            assert np.any(value[mask == 1] != 0), n
        slim_equals_session(runner, sess, runner.get_slim_graph_def())


def test_train_op_built_before_prune_and_keras_fit(tmp_path):
    import tf_keras as keras
    graph, sess, info = seed_model()
    with graph.as_default(), sess.as_default():   # as in the seed: Keras trains in the default session
        info.model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        info.model.fit(X, np.arange(6) % 10, epochs=1, verbose=0)      # baseline training before prune()
        labels, loss = classification_loss(info)
        optimizer = tf.train.AdamOptimizer(0.05)
        early_train = optimizer.minimize(loss)                 # built before prune()
        sess.run(tf.variables_initializer(optimizer.variables()))
        runner = IterativePruningRunner("k", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, progress=None)
        _, masks = runner.prune(sparsity=0.5)
        for _ in range(5):
            sess.run(early_train, {"input_1:0": X, labels: np.arange(6) % 10})
        info.model.fit(X, np.arange(6) % 10, epochs=3, verbose=0)             # fine-tuning, no re-compile
        for name, mask in masks.items():
            assert np.all(sess.run(runner.variables[name])[mask == 0] == 0), name


def test_iterative_pruning_across_save_and_restore(tmp_path):
    graph, sess, _ = seed_model()
    ckpt = str(tmp_path / "model.ckpt")
    with graph.as_default():
        runner = IterativePruningRunner("it", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, progress=None)
        _, masks5 = runner.prune(sparsity=0.5)
        tf.train.Saver().save(sess, ckpt)
    graph2, sess2, _ = seed_model(seed=7)          # a "new process": rebuilt graph, restored weights
    with graph2.as_default():
        tf.train.Saver().restore(sess2, ckpt)
        runner2 = IterativePruningRunner("it", sess2, SPECS, OUT, workspace=str(tmp_path))
        assert runner2.spec is not None            # masks come back from the latest spec
        _, masks7 = runner2.prune(sparsity=0.7)
        for name, mask in masks5.items():
            assert np.all(masks7[name][mask == 0] == 0), name   # pruned stays pruned
        before, after = runner2.report()
        assert abs((1 - after.macs / before.macs) - 0.7) <= 0.01
        slim_equals_session(runner2, sess2, runner2.get_slim_graph_def())


def test_repeated_prune_does_not_grow_graph(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("g", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, progress=None)
        runner.prune(sparsity=0.3, best_effort=True)   # 29.4% is the closest on this model
        size = len(graph.get_operations())
        runner.prune(sparsity=0.5)
        runner.prune(threshold=0.05)
        assert len(graph.get_operations()) == size


def test_parallel_workers_match_sequential(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("p", sess, SPECS, OUT, workspace=str(tmp_path / "seq"))
        seq = runner.ana(eval_fn, progress=None, ratios=(0.3, 0.6))
        runner.workspace = str(tmp_path / "par")
        par = runner.ana(eval_fn, gpu_ids=["/CPU:0", "/CPU:1"], progress=None, ratios=(0.3, 0.6))
        assert par.results == seq.results
        with pytest.raises(tf1prune.Tf1PruneError, match="cannot be sent to worker"):
            runner.workspace = str(tmp_path / "lambda")
            runner.ana(lambda gd: 1.0, gpu_ids=["/CPU:0", "/CPU:1"], progress=None)


def test_bad_arguments(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("b", sess, SPECS, OUT, workspace=str(tmp_path))
        with pytest.raises(tf1prune.Tf1PruneError, match="call ana"):
            runner.prune(sparsity=0.5)
        with pytest.raises(tf1prune.Tf1PruneError, match="sparsity, latency or threshold"):
            runner.prune()
        with pytest.raises(tf1prune.Tf1PruneError, match=r"\(0, 1\)"):
            runner.prune(sparsity=1.5)
        with pytest.raises(tf1prune.Tf1PruneError, match="not in the graph"):
            IterativePruningRunner("b", sess, SPECS, ["nope"], workspace=str(tmp_path))
    assert not math.isnan(eval_fn(runner.frozen))


CHILD = """
import sys, time
sys.path[:0] = [{root!r}, {tests!r}]
import conftest
import sessions as t
from tf1prune.workflows.iterative import IterativePruningRunner
graph, sess, _ = t.seed_model()
def slow(gd):
    time.sleep(0.1)
    return t.eval_fn(gd)
with graph.as_default():
    IterativePruningRunner("k9", sess, t.SPECS, t.OUT, workspace={ws!r}).ana(slow, checkpoint_interval=2, progress=None)
"""


def measured(store):
    """Evaluations with a value in a result-store file."""
    return sum(e["value"] is not None for e in store["entries"].values())


def test_kill_9_loses_at_most_unsaved_evaluations(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(root=os.path.dirname(tests), tests=tests, ws=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    cache = tmp_path / "k9.sens"
    deadline = time.time() + 120
    while time.time() < deadline:
        if cache.exists() and measured(json.loads(cache.read_text())) >= 6:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = json.loads(cache.read_text())               # never a torn file
    done = measured(saved)
    assert 6 <= done < 18
    graph, sess, _ = seed_model()
    calls = []
    with graph.as_default():
        runner = IterativePruningRunner("k9", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(lambda gd: calls.append(1) or eval_fn(gd), progress=None)
    assert len(calls) == 18 - done


def test_user_executor_and_session_hook(tmp_path):
    import concurrent.futures
    graph, sess, info = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("x", sess, SPECS, OUT, workspace=str(tmp_path / "seq"))
        seq = runner.ana(eval_fn, progress=None, ratios=(0.2, 0.7))
        runner.workspace = str(tmp_path / "threads")
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            threaded = runner.ana(eval_fn, executor=pool, progress=None, ratios=(0.2, 0.7))
        assert threaded.results == seq.results
        _, masks = runner.prune(sparsity=0.5)
        labels, loss = classification_loss(info)
        variables = [runner.variables[n] for n in masks]
        # bypasses the optimizer wrapper, and moves every weight (a pruned weight's gradient alone is 0):
        # only apply_masks_op / the hook keep the zeros
        train = tf.group(*[v.assign_sub(0.1 * g + 0.01) for v, g in zip(variables, tf.gradients(loss, variables))])
        feed = {"input_1:0": X, labels: np.arange(6) % 10}
        sess.run(train, feed)                 # the session sees the write and re-masks
        for name, mask in masks.items():
            assert np.all(sess.run(runner.variables[name])[mask == 0] == 0), name
        tf.Session.run(sess, train, feed)     # unwrapped run, as a custom loop on another handle would do
        assert any(np.any(sess.run(runner.variables[n])[m == 0] != 0) for n, m in masks.items())
        sess.run(runner.apply_masks_op)
        for name, mask in masks.items():
            assert np.all(sess.run(runner.variables[name])[mask == 0] == 0), name
        with tf.train.MonitoredTrainingSession(hooks=[runner.mask_hook()]) as mon:   # re-initialises weights
            for _ in range(3):
                mon.run(train, feed)
            values = {n: mon.run(runner.variables[n]) for n in masks}
        for name, mask in masks.items():
            assert np.all(values[name][mask == 0] == 0) and np.any(values[name][mask == 1] != 0), name


def test_uniform_strategy_needs_no_analysis(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("u", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.prune(sparsity=0.5, strategy="uniform")
        ratios = [g.ratio for g in runner.spec.groups]
        before, after = runner.report()
        assert abs((1 - after.macs / before.macs) - 0.5) <= 0.01
        assert max(ratios) - min(ratios) < 0.2, ratios
        with pytest.raises(tf1prune.Tf1PruneError, match="strategy"):
            runner.prune(threshold=0.1, strategy="uniform")
        slim_equals_session(runner, sess, runner.get_slim_graph_def())


def test_ref_variables(tmp_path):
    """tf.get_variable ref variables (VariableV2) are masked like resource variables."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        with tf.variable_scope("net", use_resource=False):
            y = tf.nn.relu(tf.nn.conv2d(x, tf.get_variable("w1", [3, 3, 3, 8]), [1, 1, 1, 1], "SAME"))
            y = tf.nn.relu(tf.nn.conv2d(y, tf.get_variable("w2", [3, 3, 8, 8]), [1, 1, 1, 1], "SAME"))
            logits = tf.matmul(tf.reduce_mean(y, [1, 2]), tf.get_variable("fc", [8, 4]), name="logits")
        loss = tf.reduce_mean(tf.square(logits)) + 1e-2 * tf.add_n([tf.nn.l2_loss(v) for v in tf.trainable_variables()])
        optimizer = tf.train.MomentumOptimizer(0.1, 0.9)
        train = optimizer.minimize(loss)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        feed = {"x:0": np.random.RandomState(0).rand(4, 8, 8, 3)}
        for _ in range(3):
            sess.run(train, feed)
        runner = IterativePruningRunner("ref", sess, {"x:0": ((1, 8, 8, 3), "float32")}, [logits.op.name],
                                        workspace=str(tmp_path))
        assert runner.variables["net/w1"].dtype._is_ref_dtype
        _, masks = runner.prune(sparsity=0.5, strategy="uniform")
        for _ in range(10):
            sess.run(train, feed)
        for name, mask in masks.items():
            assert np.all(sess.run(runner.variables[name])[mask == 0] == 0), name
        expected = sess.run(logits, feed)
        got = run_graph(runner.get_slim_graph_def(), feed, [logits.name])[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


CALIBRATION = [{"input_1:0": X[:3]}, {"input_1:0": X[3:]}]


def test_recalibrate_sets_the_session_statistics(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("r", sess, SPECS, OUT, workspace=str(tmp_path))
        expected = tf1prune.recalibrate_batch_norm(runner.frozen_graph_def(), CALIBRATION, SPECS, OUT)
        names = runner.recalibrate(CALIBRATION)
        assert names and all("moving" in n for n in names)
        nodes = {n.name: n for n in expected.node}
        for name in names:
            np.testing.assert_allclose(sess.run(runner.variables[name]),
                                       tf.make_ndarray(nodes[name].attr["value"].tensor), rtol=1e-5, atol=1e-6)


def test_ana_with_calibration_is_recorded_and_checked_against_uniform(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("c", sess, SPECS, OUT, workspace=str(tmp_path))
        sens = runner.ana(lambda gd: 1.0, calibration_data=CALIBRATION, progress=None, ratios=(0.3, 0.6))
        assert sens.calibrated and json.load(open(sens.path))["settings"]["calibrated"] is True
        with pytest.raises(tf1prune.Tf1PruneError, match="with BatchNorm calibration"):
            runner.ana(lambda gd: 1.0, progress=None, ratios=(0.3, 0.6))
        runner.prune(sparsity=0.5)   # a flat metric: the allocation cannot score better, uniform is kept
        uniform = tf1prune.make_spec(runner.analysis, sparsity=0.5)
        assert [g.keep for g in runner.spec.groups] == [g.keep for g in uniform.groups]


@pytest.mark.parametrize("learning_phase", [None, 0])
def test_prune_with_calibration_writes_the_reconstruction_into_the_session(tmp_path, learning_phase):
    """prune(calibration=...) refits the kept weights in the session's variables: the pruned session
    is closer to the original than the masks alone, and the slim graph still equals the session."""
    x = np.random.RandomState(5).rand(64, 28, 28, 1).astype(np.float32)
    probe = np.random.RandomState(6).rand(64, 28, 28, 1).astype(np.float32)   # held out
    outputs = {}
    for how in ("none", "calibration"):
        graph, sess, _ = seed_model(learning_phase)
        with graph.as_default():
            original = sess.run(OUT[0] + ":0", {"input_1:0": probe})
            runner = IterativePruningRunner("r", sess, SPECS, OUT, workspace=str(tmp_path / how))
            batches = [{"input_1:0": x[:32]}, {"input_1:0": x[32:]}] if how == "calibration" else None
            runner.prune(sparsity=0.5, strategy="uniform", best_effort=True, calibration=batches, data_free="none")
            outputs[how] = sess.run(OUT[0] + ":0", {"input_1:0": probe})
            slim_equals_session(runner, sess, runner.get_slim_graph_def())
            done = runner.refinement
            if how == "calibration":
                assert done.reconstruction.fits and done.reconstruction.waves == len(done.reconstruction.fits), done
            else:
                assert not done.compensated and done.reconstruction is None
    error = {how: float(np.mean((out - original) ** 2)) for how, out in outputs.items()}
    assert error["calibration"] < 0.3 * error["none"], error


@pytest.mark.parametrize("criterion", ["activation", "reconstruction"])
def test_data_driven_criteria_read_the_runners_calibration(tmp_path, criterion):
    graph, sess, _ = seed_model()
    x = np.random.RandomState(2).rand(16, 28, 28, 1).astype(np.float32)
    with graph.as_default():
        runner = IterativePruningRunner("a", sess, SPECS, OUT, workspace=str(tmp_path), criterion=criterion)
        with pytest.raises(tf1prune.Tf1PruneError, match="calibration data"):
            runner.prune(sparsity=0.3, strategy="uniform", best_effort=True)
        runner.prune(sparsity=0.3, strategy="uniform", best_effort=True, calibration=[{"input_1:0": x}])
        assert runner.spec.criterion == criterion and runner.spec.pruned
        slim_equals_session(runner, sess, runner.get_slim_graph_def())
