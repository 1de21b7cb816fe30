"""Silent wrong figures of the workflow layer (issue 20, cases 1-9): each test failed on the old main."""
import concurrent.futures
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from helpers import run_graph
from test_runner import OUT, SPECS, X, eval_fn, seed_model
from tf1prune.cli import benchmark as benchmark_cli
from tf1prune.cli import convert as convert_cli
from tf1prune.errors import Tf1PruneError
from tf1prune.files import load_graph_def, save_graph_def

pytestmark = pytest.mark.slow
RESNET_OUT = "logits/BiasAdd"


def resnet_session(seed=0):
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("resnet", learning_phase=0, seed=seed)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        example_models._randomise(info.model, sess, np.random.RandomState(seed))
    return graph, sess


def resnet_eval(graph_def):
    return float(np.abs(run_graph(graph_def, {"input_1:0": X}, [RESNET_OUT + ":0"])[0]).mean())


def perturb_kernels(sess, seed):
    """What fine-tuning does: new values for every kernel of the session (same shapes)."""
    rng = np.random.RandomState(seed)
    with sess.graph.as_default():
        kernels = [v for v in tf.global_variables() if v.op.name.endswith("kernel")]
        sess.run([v.assign(rng.standard_normal(v.shape.as_list()).astype(np.float32) * 0.2) for v in kernels])


# --- case 1: an executor never scores stale weights ------------------------------------------------
def test_ana_through_an_executor_scores_the_current_weights(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default(), concurrent.futures.ThreadPoolExecutor(1) as pool:
        runner = tf1prune.IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.ana(eval_fn, executor=pool, ratios=(0.5,), progress=None)
        perturb_kernels(sess, 1)
        threaded = runner.ana(eval_fn, executor=pool, ratios=(0.5,), progress=None, recompute=True)
        threaded = {g: dict(v) for g, v in threaded.results.items()}
        local = runner.ana(eval_fn, ratios=(0.5,), progress=None, recompute=True)
    assert threaded.keys() == local.results.keys()
    for gid, values in local.results.items():
        for ratio, value in values.items():
            assert threaded[gid][ratio] == pytest.approx(value, rel=1e-6), (gid, ratio)


def test_a_second_model_of_the_same_architecture_is_not_scored_with_the_first_ones_weights(tmp_path):
    scores = []
    for seed in (0, 1):
        graph, sess, _ = seed_model(seed=seed)
        with graph.as_default(), concurrent.futures.ThreadPoolExecutor(1) as pool:
            runner = tf1prune.IterativePruningRunner("m%d" % seed, sess, SPECS, OUT, workspace=str(tmp_path))
            pooled = runner.ana(eval_fn, executor=pool, ratios=(0.5,), progress=None).results
            local = runner.ana(eval_fn, ratios=(0.5,), progress=None, recompute=True).results
        scores.append(local)
        for gid, values in local.items():
            for ratio, value in values.items():
                assert pooled[gid][ratio] == pytest.approx(value, rel=1e-6), (seed, gid, ratio)
    assert scores[0] != scores[1]


def test_once_for_all_evaluate_through_an_executor_scores_the_current_weights(tmp_path):
    graph, sess = resnet_session()
    calibration = [{"input_1:0": X}]
    with graph.as_default():
        model = tf1prune.OnceForAllRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path)).ofa_model((0.5, 1.0))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            model.evaluate([model.max_widths()], resnet_eval, calibration, executor=pool)
            perturb_kernels(model.sess, 2)
            pooled = model.evaluate([model.max_widths()], resnet_eval, calibration, executor=pool)
        local = model.evaluate([model.max_widths()], resnet_eval, calibration)
    assert pooled[0][1] is None and local[0][1] is None
    assert pooled[0][0] == pytest.approx(local[0][0], rel=1e-6)


# --- case 2: prune(index=k) is candidate k, whatever was applied before --------------------------------
def kept_counts(spec):
    return {g["id"] if isinstance(g, dict) else g.id: len(g["keep"] if isinstance(g, dict) else g.keep)
            for g in spec.groups}


def test_one_step_prune_of_another_candidate_equals_a_fresh_runners(tmp_path):
    calibration = [{"input_1:0": X[:3]}, {"input_1:0": X[3:]}]
    graph, sess = resnet_session()
    with graph.as_default():
        runner = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(resnet_eval, calibration, num_subnet=3, sparsity=0.5, progress=None)
        runner.prune(0.5, index=0)
        runner.prune(0.5, index=1)
        again = sess.run(RESNET_OUT + ":0", {"input_1:0": X})
        counts = kept_counts(runner.spec)
    graph, sess = resnet_session()
    with graph.as_default():
        fresh = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        fresh.prune(0.5, index=1)
        expected = sess.run(RESNET_OUT + ":0", {"input_1:0": X})
        fresh_counts = kept_counts(fresh.spec)
    assert counts == fresh_counts
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-5)


# --- case 3: convert --search writes the graph it scored -------------------------------------------
@pytest.fixture(scope="module")
def mnist_pb(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    graph_def, specs, outputs = example_models.frozen_graph_def("resnet")
    path = str(d / "resnet.pb")
    save_graph_def(graph_def, path)
    x = np.random.RandomState(3).rand(96, 28, 28, 1).astype(np.float32)
    npz = str(d / "calibration.npz")
    np.savez(npz, input_1=x)
    return path, npz, x, outputs[0]


def test_convert_search_writes_the_recalibrated_graph_it_scored(mnist_pb, tmp_path):
    path, npz, x, out = mnist_pb
    slim, sparse, spec = (str(tmp_path / n) for n in ("slim.pb", "sparse.pb", "spec.json"))
    argv = ["tf1prune-convert", "--input_graph", path, "--output_graph", slim, "--output_node_names", out,
            "--sparsity", "0.3", "--search", "3", "--calibration_data", npz, "--calibration_batch", "32",
            "--sparse_graph", sparse, "--output_spec", spec, "--channel_divisible", "1"]
    assert convert_cli.main(argv) == 0
    original = load_graph_def(path)
    plain_sparse = tf1prune.sparse_graph_def(original, tf1prune.Spec.load(spec), {"input_1:0": ((1, 28, 28, 1),
                                                                                              "float32")}, [out])
    batches = [{"input_1:0": x[i:i + 32]} for i in range(0, 96, 32)]
    scored = tf1prune.recalibrate_batch_norm(plain_sparse, batches, None, [out])
    probe = np.random.RandomState(4).rand(5, 28, 28, 1).astype(np.float32)
    want = run_graph(scored, {"input_1:0": probe}, [out + ":0"])[0]
    for written in (slim, sparse):
        got = run_graph(load_graph_def(written), {"input_1:0": probe}, [out + ":0"])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- case 4: fine-grained sparsity after channel pruning counts the slim weights ----------------------
def channel_pruned_seed_model(tmp_path, channel_divisible=1):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = tf1prune.IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path),
                                                 channel_divisible=channel_divisible)
        runner.prune(sparsity=0.5, strategy="uniform", best_effort=True)
    return graph, sess, runner


def slim_kernels(graph_def):
    from tf1prune.core.rules import build
    return {n.name: build.const_value(n) for n in graph_def.node
            if n.op == "Const" and n.name.endswith("kernel") and build.const_value(n).ndim >= 2}


def test_weight_sparsity_after_channel_pruning_holds_in_the_slim_kernels(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    graph, sess, runner = channel_pruned_seed_model(tmp_path)
    with graph.as_default():
        pruner = WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0, frequency=1))
        pruner.update(0)
        rows = {r.variable: r for r in pruner.report()}
        kernels = slim_kernels(runner.get_slim_graph_def())
    assert set(kernels) <= set(rows)
    for name, value in kernels.items():
        share = float(np.mean(value == 0))
        assert abs(share - 0.5) <= 0.5 / value.size + 1e-9, (name, share)
        assert rows[name].sparsity == pytest.approx(share), name


def test_m_by_n_after_channel_pruning_holds_in_the_slim_kernels(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    from tf1prune.apply.finegrained import satisfied_n_m
    graph, sess, runner = channel_pruned_seed_model(tmp_path, channel_divisible=4)
    with graph.as_default():
        pruner = WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0, frequency=1), m_by_n=(2, 4))
        pruner.update(0)
        kernels = slim_kernels(runner.get_slim_graph_def())
    checked = 0
    for name, value in kernels.items():
        axis = value.ndim - 2
        if value.shape[axis] % 4 == 0:
            assert satisfied_n_m(value, axis, sizes=(4,)) == [(2, 4)], name
            checked += 1
    assert checked >= 2


# --- cases 5 and 6: failed candidates are retried; a corrupt search file is one error --------------
def test_failed_search_candidates_are_retried_on_the_next_run(tmp_path):
    calibration = [{"input_1:0": X}]

    def failing(graph_def):
        raise RuntimeError("the data loader broke")
    graph, sess = resnet_session()
    with graph.as_default():
        runner = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        with pytest.raises(Tf1PruneError):   # the baseline cannot be scored
            runner.search(failing, calibration, num_subnet=3, sparsity=0.5, progress=None)
        search = runner.search(resnet_eval, calibration, num_subnet=3, sparsity=0.5, progress=None)
        calls = []

        def flaky(graph_def):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("flaky")
            return resnet_eval(graph_def)
        runner.search(flaky, calibration, num_subnet=3, sparsity=0.5, progress=None, recompute=True)
        search = runner.search(resnet_eval, calibration, num_subnet=3, sparsity=0.5, progress=None)
    assert all(c["score"] is not None and not c["error"] for c in search.candidates)


CORRUPTIONS = {
    "empty": lambda text: "",
    "truncated": lambda text: text[:len(text) // 2],
    "a list": lambda text: "[1, 2]",
    "no candidates": lambda text: json.dumps(dict(json.loads(text), entries=None)),
    "candidates of another kind": lambda text: json.dumps(dict(json.loads(text), entries={"0": [3, "x"]})),
    "a candidate without counts": lambda text: json.dumps(dict(json.loads(text), entries={"0": {"value": 1.0}})),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_search_file_is_one_error_naming_it(tmp_path, corruption):
    graph, sess = resnet_session()
    with graph.as_default():
        runner = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(resnet_eval, [{"input_1:0": X}], num_subnet=2, sparsity=0.5, progress=None)
        files = [f for f in os.listdir(str(tmp_path)) if f.endswith(".search")]
        assert len(files) == 1
        path = os.path.join(str(tmp_path), files[0])
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(CORRUPTIONS[corruption](text))
        for call in (lambda: runner.prune(0.5),
                     lambda: runner.search(resnet_eval, [{"input_1:0": X}], num_subnet=2, sparsity=0.5,
                                           progress=None)):
            with pytest.raises(Tf1PruneError) as e:
                call()
            assert files[0] in str(e.value)


# --- case 7: bad calibration data and benchmark shapes are one error line -------------------------
@pytest.fixture(scope="module")
def fixed_batch_pb(tmp_path_factory):
    """A frozen conv/BN/dense graph whose input has a fixed batch of 1."""
    d = tmp_path_factory.mktemp("fixed")
    graph = tf.Graph()
    rng = np.random.RandomState(0)
    with graph.as_default():
        x = tf.placeholder(tf.float32, (1, 8, 8, 3), name="x")
        h = tf.nn.conv2d(x, tf.constant(rng.randn(3, 3, 3, 8).astype(np.float32)), [1, 1, 1, 1], "SAME")
        h, _, _ = tf.nn.fused_batch_norm(h, tf.constant(rng.rand(8).astype(np.float32) + 0.5),
                                         tf.constant(rng.randn(8).astype(np.float32)),
                                         mean=tf.constant(rng.randn(8).astype(np.float32)),
                                         variance=tf.constant(rng.rand(8).astype(np.float32) + 0.5),
                                         is_training=False)
        h = tf.nn.relu(h)
        h = tf.nn.conv2d(h, tf.constant(rng.randn(3, 3, 8, 8).astype(np.float32)), [1, 1, 1, 1], "SAME")
        h = tf.reshape(tf.nn.relu(h), [1, 512])
        tf.matmul(h, tf.constant(rng.randn(512, 4).astype(np.float32)), name="logits")
    path = str(d / "fixed.pb")
    save_graph_def(graph.as_graph_def(), path)
    return path, d


def run_convert(capsys, *extra, path):
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_node_names", "logits"]
                            + list(extra))
    return code, capsys.readouterr()


def test_bad_calibration_data_is_one_error_line(fixed_batch_pb, tmp_path, capsys):
    path, d = fixed_batch_pb
    out = str(tmp_path / "slim.pb")
    good = np.random.RandomState(0).rand(8, 8, 8, 3).astype(np.float32)
    cases = {
        "npy": lambda p: np.save(p, good),
        "wrong_shape": lambda p: np.savez(p, x=np.zeros((8, 9, 9, 3), np.float32)),
        "wrong_rank": lambda p: np.savez(p, x=np.zeros((8, 8, 8), np.float32)),
        "wrong_dtype": lambda p: np.savez(p, x=np.array([["a"] * 3] * 8)),
        "missing_input": lambda p: np.savez(p, other=good),
    }
    for name, write in cases.items():
        target = str(tmp_path / (name + (".npy" if name == "npy" else ".npz")))
        write(target)
        code, captured = run_convert(capsys, "--output_graph", out, "--sparsity", "0.3", "--search", "2",
                                     "--calibration_data", target, path=path)
        err = captured.err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, captured.err)
        assert "Traceback" not in captured.err and not os.path.exists(out), name


def test_a_fixed_batch_graph_calibrates_with_its_own_batch(fixed_batch_pb, tmp_path, capsys):
    path, d = fixed_batch_pb
    npz = str(tmp_path / "cal.npz")
    np.savez(npz, x=np.random.RandomState(0).rand(8, 8, 8, 3).astype(np.float32))
    out = str(tmp_path / "slim.pb")
    code, captured = run_convert(capsys, "--output_graph", out, "--sparsity", "0.3", "--search", "2",
                                 "--calibration_data", npz, "--best_effort", path=path)
    assert code == 0, captured.err
    assert os.path.exists(out)


@pytest.mark.parametrize("extra", [["--batch", "1,8"], ["--input_specs", "x:0=1,9,9,3"]])
def test_benchmark_shapes_the_graph_refuses_are_one_error_line(fixed_batch_pb, capsys, extra):
    path, _ = fixed_batch_pb
    code = benchmark_cli.main(["tf1prune-benchmark", "--input_graph", path, "--output_node_names", "logits",
                               "--runs", "2", "--warmup", "0"] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err


# --- case 8: arguments are used or refused, never ignored ----------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--m_by_n", "2:4", "--block", "1x4"], "--block"),
    (["--weight_sparsity", "0.5", "--block_pooling", "MAX"], "--block_pooling"),
    (["--ratio", "0.5", "--search_metric", "top1"], "--search_metric"),
    (["--ratio", "0.5", "--calibration_batch", "8"], "--calibration_batch"),
])
def test_convert_refuses_options_it_would_ignore(fixed_batch_pb, tmp_path, capsys, extra, message):
    path, _ = fixed_batch_pb
    code, captured = run_convert(capsys, "--output_graph", str(tmp_path / "o.pb"), *extra, path=path)
    assert code == 2 and message in captured.err, captured.err


def test_analyze_sparsity_report_goes_into_the_json(fixed_batch_pb, capsys):
    from tf1prune.cli import analyze as analyze_cli
    path, _ = fixed_batch_pb
    code = analyze_cli.main(["tf1prune-analyze", "--input_graph", path, "--output_node_names", "logits",
                             "--sparsity_report", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert "sparsity" in data and {r["layer"] for r in data["sparsity"]} >= {"logits"}


def test_weight_pruner_and_sparsify_refuse_what_they_would_ignore(tmp_path):
    from tf1prune import ConstantSparsity, WeightPruningRunner
    graph, sess, _ = seed_model()
    with graph.as_default():
        with pytest.raises(Tf1PruneError, match="m_by_n"):
            WeightPruningRunner(sess, OUT, ConstantSparsity(0.8, 0), m_by_n=(2, 4))
        with pytest.raises(Tf1PruneError, match="block_pooling"):
            WeightPruningRunner(sess, OUT, ConstantSparsity(0.5, 0), block_size=(1, 2), block_pooling="MIN")
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    with pytest.raises(Tf1PruneError, match="nope"):
        tf1prune.workflows.weights.sparsify_graph_def(graph_def, specs, outputs, sparsity=0.5, excludes=["nope"])


def test_set_widths_refuses_fractions(tmp_path):
    graph, sess = resnet_session()
    with graph.as_default():
        model = tf1prune.OnceForAllRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path)).ofa_model((0.5, 1.0))
        widths = model.max_widths()
        gid = sorted(widths)[0]
        widths[gid] = widths[gid] + 0.5
        with pytest.raises(Tf1PruneError, match="integer"):
            model.set_widths(widths)
