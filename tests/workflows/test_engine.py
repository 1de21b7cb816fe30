"""The evaluation engine and the result store on tiny graphs (fast tier)."""
import concurrent.futures
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from helpers import run_graph
from tf1prune.core.rules import build
from tf1prune.errors import Tf1PruneError
from tf1prune.workflows.engine import Candidate, Engine, content_digest
from tf1prune.workflows.store import ResultStore
import tf1prune
from sessions import OUT, RESNET_OUT, SPECS, X, eval_fn, perturb_kernels, resnet_eval, resnet_model, seed_model


def tiny_graph(scale):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 2], name="x")
        tf.matmul(x, tf.constant(np.full((2, 1), scale, np.float32), name="w"), name="y")
    return graph.as_graph_def()


def total(graph_def):
    """The metric: the output on ones (module level: picklable)."""
    return float(run_graph(graph_def, {"x:0": np.ones((1, 2), np.float32)}, ["y:0"])[0].sum())


def test_the_engine_patches_restores_and_keys_workers_by_content(tmp_path):
    a, b = tiny_graph(1.0), tiny_graph(3.0)
    assert content_digest(a) != content_digest(b) and content_digest(a) == content_digest(tiny_graph(1.0))
    before = a.SerializeToString()
    engine = Engine(a, total, workdir=str(tmp_path))
    assert engine.baseline() == 2.0
    patched = dict((k, v) for k, v, _ in engine.run([Candidate("half", {"w": np.full((2, 1), 0.5, np.float32)})]))
    assert patched == {"half": 1.0} and a.SerializeToString() == before   # restored byte for byte
    with concurrent.futures.ThreadPoolExecutor(1) as pool:   # one worker thread serves both graphs
        for graph_def, want in ((a, 2.0), (b, 6.0), (a, 2.0)):
            results = list(Engine(graph_def, total, executor=pool, workdir=str(tmp_path)).run(
                [Candidate(0, {}), Candidate(1, {"w": np.zeros((2, 1), np.float32)})]))
            assert sorted(r[:2] for r in results) == [(0, want), (1, 0.0)]
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".pb")]   # the graph files are removed


def test_failures_are_recorded_not_raised_and_the_baseline_must_score():
    calls = []

    def flaky(graph_def):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("flaky")
        return float("nan") if len(calls) == 3 else total(graph_def)
    engine = Engine(tiny_graph(1.0), flaky)
    results = list(engine.run(Candidate(i, {}) for i in range(4)))
    assert [r[1] for r in results] == [2.0, None, None, 2.0]
    assert "ValueError: flaky" in results[1][2] and "nan" in results[2][2]
    with pytest.raises(Tf1PruneError, match="baseline evaluation failed"):
        Engine(tiny_graph(1.0), lambda gd: 1 / 0).baseline()
    with pytest.raises(Tf1PruneError, match="callable"):
        Engine(tiny_graph(1.0), 3)


def test_fill_retries_failures_and_saves_as_it_goes(tmp_path):
    path = str(tmp_path / "r.json")
    store = ResultStore.open(path, "test", {"graph": "g"}, {"n": 3})
    state = {"fail": True}

    def metric(graph_def):
        if state["fail"] and build.const_value(next(n for n in graph_def.node if n.name == "w"))[0, 0] == 2:
            raise RuntimeError("broken loader")
        return total(graph_def)
    engine = Engine(tiny_graph(1.0), metric)
    patch = lambda key: {"w": np.full((2, 1), float(key), np.float32)}   # noqa: E731
    engine.fill(store, ["1", "2", "3"], patch, baseline=dict)
    assert store.baseline == 2.0 and store.failures() == {"2": "RuntimeError: broken loader"}
    saved = json.load(open(path))
    assert saved["entries"]["1"]["value"] == 2.0 and saved["entries"]["2"]["value"] is None
    state["fail"] = False
    resumed = ResultStore.open(path, "test", {"graph": "g"}, {"n": 3})
    assert resumed.missing(["1", "2", "3"]) == ["2"]
    engine.fill(resumed, ["1", "2", "3"], patch, baseline=dict)
    assert resumed.value("2") == 4.0 and not resumed.failures()
    again = ResultStore.open(path, "test", {"graph": "g"}, {"n": 3}, recompute=["3"])   # per entry
    assert again.missing(["1", "2", "3"]) == ["3"] and again.value("1") == 2.0


def per_example(graph_def):
    """The metric as per-example scores: each of four inputs' output (module level: picklable)."""
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    return run_graph(graph_def, {"x:0": x}, ["y:0"])[0][:, 0]


def test_per_example_scores_are_a_mean_and_kept_for_paired_comparisons(tmp_path):
    from tf1prune.workflows import _worker
    engine = Engine(tiny_graph(1.0), per_example, workdir=str(tmp_path))
    value = engine.baseline()
    assert value == 7.0 and list(value.examples) == [1.0, 5.0, 9.0, 13.0]   # rows sum x0 + x1
    with concurrent.futures.ThreadPoolExecutor(1) as pool:   # the examples survive a worker
        (key, threaded, error), = Engine(tiny_graph(1.0), per_example, executor=pool, workdir=str(tmp_path)).run(
            [Candidate("a", {"w": np.full((2, 1), 2.0, np.float32)})])
    assert error is None and threaded == 14.0 and list(threaded.examples) == [2.0, 10.0, 18.0, 26.0]
    path = str(tmp_path / "r.json")
    store = ResultStore.open(path, "test", {"graph": "g"}, {})
    engine.fill(store, ["2"], lambda key: {"w": np.full((2, 1), 2.0, np.float32)}, baseline=dict)
    again = ResultStore.open(path, "test", {"graph": "g"}, {})
    assert again.baseline == 7.0 and again.value("2") == 14.0 and list(again.examples("2")) == [2, 10, 18, 26]
    assert _worker.check([0.5, float("nan")]) == (None, "eval_fn returned 1 non-finite per-example scores")
    assert _worker.check(np.array([True, False]))[0] == 0.5 and _worker.check(["a", "b"])[0] is None
    assert _worker.check(np.zeros((2, 2)))[0] is None   # a matrix is not per-example scores


def test_a_paired_test_separates_a_real_gain_from_noise():
    from tf1prune.choose import compare
    rng = np.random.RandomState(0)
    reference = (rng.rand(2000) < 0.8).astype(float)
    noise = np.where(rng.rand(2000) < 0.05, 1 - reference, reference)   # 5% of the answers flipped at random
    better = np.where((reference == 0) & (rng.rand(2000) < 0.2), 1.0, reference)   # 20% of the errors fixed
    assert compare.paired_p_value(better, reference) < 1e-6
    assert compare.significantly_better(better, reference, comparisons=19)
    assert not compare.significantly_better(noise, reference, comparisons=19)
    assert compare.significantly_better(reference, better, higher_is_better=False)   # losses: lower wins
    assert not compare.significantly_better(better, reference[:10])   # not the same examples


def search_with(scores, examples):
    from tf1prune.workflows.onestep import Search
    store = ResultStore("unused", "search", {"graph": "g"}, {"sparsity": 0.5, "higher_is_better": True})
    for i, (value, ex) in enumerate(zip(scores, examples)):
        store.record(i, value, examples=ex, counts={"0": 4}, macs=10)
    return Search(store)


def changed(answers, fixed, broken):
    """``answers`` (per-example correctness) with the first ``fixed`` errors right and the last ``broken``
    right answers wrong."""
    out = answers.copy()
    out[np.flatnonzero(answers == 0)[:fixed]] = 1.0
    out[np.flatnonzero(answers == 1)[::-1][:broken]] = 0.0
    return out


def test_the_search_keeps_uniform_unless_a_candidate_is_better_beyond_noise():
    uniform = (np.random.RandomState(1).rand(1000) < 0.7).astype(float)
    rivals = [changed(uniform, 20 + k, 20) for k in (1, 3, 5, 2)]   # a few answers better: noise
    noisy = search_with([x.mean() for x in [uniform] + rivals], [list(x) for x in [uniform] + rivals])
    assert noisy.ranked()[0] == 3 and noisy.choice()[0] == 0 and "beyond noise" in noisy.choice()[1]
    real = rivals + [changed(uniform, 80, 20)]
    real = search_with([x.mean() for x in [uniform] + real], [list(x) for x in [uniform] + real])
    assert real.choice()[0] == 5 and "paired p" in real.choice()[1]
    scalar = search_with([x.mean() for x in [uniform] + rivals], [None] * 5)   # one number each: the best
    assert scalar.choice()[0] == 3 and "per-example" in scalar.choice()[1]


@pytest.mark.parametrize("content,problem", [
    ("", "corrupt"), ("{\"format\": \"tf1prune-results\", \"ver", "corrupt"), ("[1, 2]", "not a JSON object"),
    (json.dumps({"format": "other"}), "not a tf1prune results file"),
    (json.dumps({"format": "tf1prune-results", "version": 1}), "version 1"),
    (json.dumps({"format": "tf1prune-results", "version": 2, "kind": "search"}), "'search' results, not 'test'"),
    (json.dumps({"format": "tf1prune-results", "version": 2, "kind": "test", "identity": {}, "settings": {},
                 "entries": None}), "'entries' is missing"),
    (json.dumps({"format": "tf1prune-results", "version": 2, "kind": "test", "identity": {}, "settings": {},
                 "entries": {"a": {"value": "high"}}}), "entry 'a' is malformed"),
    (json.dumps({"format": "tf1prune-results", "version": 2, "kind": "test", "identity": {}, "settings": {},
                 "entries": {"a": {"value": 0.5, "examples": [1, None]}}}), "entry 'a' is malformed"),
])
def test_a_corrupt_store_is_one_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(Tf1PruneError) as e:
        ResultStore.open(str(path), "test", {"graph": "g"}, {})
    assert str(path) in str(e.value) and problem in str(e.value) and "\n" not in str(e.value)
    assert path.read_text() == content   # nothing was overwritten
    assert ResultStore.open(str(path), "test", {"graph": "g"}, {}, recompute=True).entries == {}


def test_a_store_for_other_weights_or_settings_is_refused(tmp_path):
    path = str(tmp_path / "r.json")
    store = ResultStore.open(path, "test", {"graph": "g", "weights": "w1"}, {"ratios": [0.5]})
    store.record("k", 1.0)
    store.save()
    assert ResultStore.open(path, "test", {"graph": "g", "weights": "w1"}, {"ratios": (0.5,)}).value("k") == 1.0
    with pytest.raises(Tf1PruneError, match="other weights .'w1', now 'w2': the model changed since"):
        ResultStore.open(path, "test", {"graph": "g", "weights": "w2"}, {"ratios": [0.5]})
    with pytest.raises(Tf1PruneError, match="ratios"):
        ResultStore.open(path, "test", {"graph": "g", "weights": "w1"}, {"ratios": [0.4]})
    assert ResultStore.read(path, "test").value("k") == 1.0   # read as it was made, whatever the weights


# --- the workflows go through the engine and the store (session models) ----------------------------
@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_once_for_all_evaluate_through_an_executor_scores_the_current_weights(tmp_path):
    graph, sess, _ = resnet_model()
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


@pytest.mark.slow
def test_failed_search_candidates_are_retried_on_the_next_run(tmp_path):
    calibration = [{"input_1:0": X}]

    def failing(graph_def):
        raise RuntimeError("the data loader broke")
    graph, sess, _ = resnet_model()
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


@pytest.mark.slow
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_search_file_is_one_error_naming_it(tmp_path, corruption):
    graph, sess, _ = resnet_model()
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
