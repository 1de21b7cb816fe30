"""OneStepPruningRunner: candidates at the target, calibrated scores, resumable search, prune, executors."""
import json
import os

import numpy as np
import pytest

import tf1prune
from helpers import run_graph
from sessions import CALIBRATION, OUT, RESNET_OUT, SPECS, X, eval_fn as mnist_eval_fn, resnet_eval as eval_fn
from sessions import resnet_model, seed_model
from tf1prune.core import flops
from tf1prune.workflows.onestep import OneStepPruningRunner, Search

pytestmark = pytest.mark.slow


def test_search_scores_candidates_at_the_target_and_prunes_the_best(tmp_path):
    graph, sess, _ = resnet_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        search = runner.search(eval_fn, CALIBRATION, num_subnet=5, sparsity=0.5, progress=None)
        full = flops.count(runner.analysis).macs
        assert len(search.candidates) == 5 and search.baseline is not None
        for c in search.candidates:
            assert abs(1 - c["macs"] / full - 0.5) <= 0.005 and c["score"] is not None
        uniform = tf1prune.make_spec(runner.analysis, sparsity=0.5)
        assert [len(g.keep) for g in uniform.groups] == [search.candidates[0]["counts"][g.id]
                                                             for g in uniform.groups]   # candidate 0: uniform
        assert len({tuple(sorted(c["counts"].items())) for c in search.candidates}) == 5
        best = search.ranked()[0]
        assert search.candidates[best]["score"] == max(c["score"] for c in search.candidates)
        shape_tensors, masks = runner.prune(sparsity=0.5)
        kept = {g.id: len(g.keep) for g in runner.spec.groups}
        assert kept == search.candidates[best]["counts"]
        before, after = runner.report()
        assert abs(1 - after.macs / before.macs - 0.5) <= 0.005
        expected = sess.run(RESNET_OUT + ":0", {"input_1:0": X})
        np.testing.assert_allclose(run_graph(runner.get_slim_graph_def(), {"input_1:0": X}, [RESNET_OUT + ":0"])[0],
                                   expected, rtol=1e-4, atol=1e-4)
        runner.prune(sparsity=0.5, index=len(search.ranked()) - 1)   # the worst one
        assert {g.id: len(g.keep) for g in runner.spec.groups} == \
            search.candidates[search.ranked()[-1]]["counts"]


def test_prune_applies_the_candidate_the_paired_test_picks(tmp_path):
    from sessions import resnet_examples
    graph, sess, _ = resnet_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        search = runner.search(resnet_examples, CALIBRATION, num_subnet=4, sparsity=0.5, progress=None)
        assert all(len(search.store.examples(i)) == len(X) for i in range(4))
        assert search.candidates[1]["score"] == pytest.approx(search.store.examples(1).mean())
        picked, why = search.choice()
        runner.prune(sparsity=0.5)
        assert {g.id: len(g.keep) for g in runner.spec.groups} == search.candidates[picked]["counts"]
        assert ("paired p" in why) == (picked != 0)


def counting_eval_fn():
    """``eval_fn`` that records each call, and the list it records into."""
    calls = []

    def counting(gd):
        calls.append(1)
        return eval_fn(gd)
    return counting, calls


def test_search_resumes_and_refuses_stale_files(tmp_path):
    graph, sess, _ = resnet_model()
    counting, calls = counting_eval_fn()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(counting, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        assert len(calls) == 4                       # baseline + 3
        search = runner.search(counting, CALIBRATION, num_subnet=5, sparsity=0.5, progress=None)
        assert len(calls) == 6 and len(search.candidates) == 5    # only the 2 new ones
        path = runner._search_path(0.5)
        data = json.load(open(path))
        data["identity"]["graph"] = "other"
        open(path, "w").write(json.dumps(data))
        with pytest.raises(tf1prune.Tf1PruneError, match="another graph"):
            runner.search(counting, CALIBRATION, num_subnet=5, sparsity=0.5, progress=None)
        runner.search(counting, CALIBRATION, num_subnet=2, sparsity=0.5, recompute=True, progress=None)


def test_search_errors(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        with pytest.raises(tf1prune.Tf1PruneError, match="call search"):
            runner.prune(sparsity=0.5)
        search = runner.search(mnist_eval_fn, CALIBRATION, num_subnet=60, sparsity=0.5, progress=None)
        assert 1 < len(search.candidates) < 60          # two groups: the space runs out, with a warning
        assert len({tuple(sorted(c["counts"].items())) for c in search.candidates}) == len(search.candidates)
        with pytest.raises(tf1prune.Tf1PruneError, match="num_subnet"):
            runner.search(mnist_eval_fn, CALIBRATION, num_subnet=0)
        with pytest.raises(tf1prune.Tf1PruneError, match="sparsity must be in"):
            runner.search(mnist_eval_fn, CALIBRATION, sparsity=1.5)
        with pytest.raises(tf1prune.Tf1PruneError, match="holds no batch"):
            runner.search(mnist_eval_fn, [], sparsity=0.5)
        with pytest.raises(tf1prune.Tf1PruneError, match="index must be"):
            runner.prune(sparsity=0.5, index=len(search.candidates))


def test_a_failing_eval_fn_is_recorded(tmp_path):
    graph, sess, _ = resnet_model()
    state = {"n": 0}

    def flaky(gd):
        state["n"] += 1
        if state["n"] == 3:
            raise RuntimeError("boom")
        return eval_fn(gd)
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        search = runner.search(flaky, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        errors = [c["error"] for c in search.candidates if c["error"]]
        assert errors == ["RuntimeError: boom"] and len(search.ranked()) == 2


def test_search_file_round_trip(tmp_path):
    search = Search.open(str(tmp_path / "s.search"), "d", "w", 0.5, higher_is_better=False)
    search.store.record(0, 2.0, None, counts={"0": 3}, macs=1)
    search.store.record(1, 1.0, None, counts={"0": 2}, macs=1)
    search.store.save()
    again = Search.open(search.path, "d", "w", 0.5, higher_is_better=False)
    assert again.ranked() == [1, 0] and again.candidates[0]["counts"] == {0: 3}
    assert Search.load(search.path, "d").top(1)[0]["index"] == 1
    with pytest.raises(tf1prune.Tf1PruneError, match="another graph"):
        Search.load(search.path, "e")


def test_ana_and_search_on_a_dask_cluster_match_in_process(tmp_path, monkeypatch):
    """A LocalCluster of 2 worker processes on loopback (Client.get_executor: a standard Executor)."""
    distributed = pytest.importorskip("distributed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.path.join(root, "tests")]))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    from tf1prune.workflows.iterative import IterativePruningRunner
    graph, sess, _ = resnet_model()
    with graph.as_default():
        runner = IterativePruningRunner("d", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path / "local"))
        local_sens = runner.ana(eval_fn, ratios=(0.5,), calibration_data=CALIBRATION, progress=None)
        searcher = OneStepPruningRunner("d", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path / "local"))
        local_search = searcher.search(eval_fn, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
            executor = client.get_executor(pure=False)
            runner.workspace = searcher.workspace = str(tmp_path / "dask")
            dask_sens = runner.ana(eval_fn, ratios=(0.5,), calibration_data=CALIBRATION, progress=None,
                                   executor=executor)
            dask_search = searcher.search(eval_fn, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None,
                                          executor=executor)
    assert dask_sens.baseline == pytest.approx(local_sens.baseline)
    for gid, values in local_sens.results.items():
        for ratio, value in values.items():
            assert dask_sens.results[gid][ratio] == pytest.approx(value, rel=1e-5)
    assert [c["score"] for c in dask_search.candidates] == pytest.approx([c["score"] for c in local_search.candidates],
                                                                        rel=1e-5)


def test_a_second_search_keeps_the_channels_pruned_earlier(tmp_path):
    graph, sess, _ = resnet_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(eval_fn, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        runner.prune(sparsity=0.5)
        first = {g.id: set(g.keep) for g in runner.spec.groups}
        search = runner.search(eval_fn, CALIBRATION, num_subnet=3, sparsity=0.7, progress=None)
        for c in search.candidates:
            assert all(c["counts"][gid] <= len(kept) for gid, kept in first.items())
        runner.prune(sparsity=0.7)
        for g in runner.spec.groups:
            assert set(g.keep) <= first[g.id]


def test_rerunning_a_search_after_a_restart_resumes_it(tmp_path):
    graph, sess, _ = resnet_model()
    counting, calls = counting_eval_fn()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        first = runner.search(counting, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        runner.prune(sparsity=0.5)
        kept = runner.spec.groups
        restarted = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        assert restarted.spec.groups == kept                 # the latest spec came back
        n = len(calls)
        again = restarted.search(counting, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        assert len(calls) == n and again.candidates == first.candidates
        restarted.prune(sparsity=0.5)
        assert restarted.spec.groups == kept


# --- prune(index=k) is candidate k, whatever was applied before --------------------------------------
def kept_counts(spec):
    return {g["id"] if isinstance(g, dict) else g.id: len(g["keep"] if isinstance(g, dict) else g.keep)
            for g in spec.groups}


def test_one_step_prune_of_another_candidate_equals_a_fresh_runners(tmp_path):
    calibration = [{"input_1:0": X[:3]}, {"input_1:0": X[3:]}]
    graph, sess, _ = resnet_model()
    with graph.as_default():
        runner = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(eval_fn, calibration, num_subnet=3, sparsity=0.5, progress=None)
        runner.prune(0.5, index=0)
        runner.prune(0.5, index=1)
        again = sess.run(RESNET_OUT + ":0", {"input_1:0": X})
        counts = kept_counts(runner.spec)
    fresh_space = tmp_path / "fresh"   # the unpruned model and the search file, no latest spec to recover
    fresh_space.mkdir()
    search_file = runner._search_path(0.5)
    (fresh_space / os.path.basename(search_file)).write_bytes(open(search_file, "rb").read())
    graph, sess, _ = resnet_model()
    with graph.as_default():
        fresh = tf1prune.OneStepPruningRunner("r", sess, SPECS, [RESNET_OUT], workspace=str(fresh_space))
        fresh.prune(0.5, index=1)
        expected = sess.run(RESNET_OUT + ":0", {"input_1:0": X})
        fresh_counts = kept_counts(fresh.spec)
    assert counts == fresh_counts
    np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-5)


def test_rescore_scores_finalists_after_a_burst_and_prune_follows_it(tmp_path):
    """NetAdapt-style rescoring: uniform and the finalists each trained by the user's burst from the
    weights the search scored (optimiser state re-initialised), scored, the session restored; prune()
    then applies the finalist that wins after the burst."""
    import tensorflow.compat.v1 as tf
    import tf_keras as keras
    from sessions import resnet_examples
    graph, sess, info = resnet_model()
    with graph.as_default(), sess.as_default():   # tf_keras trains in the default session
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        with pytest.raises(tf1prune.Tf1PruneError, match="call search"):
            runner.rescore(resnet_examples, lambda: None, sparsity=0.5)
        search = runner.search(resnet_examples, CALIBRATION, num_subnet=5, sparsity=0.5, progress=None)
        finalists = [i for i in search.ranked() if i != 0][:2]
        boosted = finalists[-1]   # the lower-ranked finalist wins after the burst
        info.model.compile(optimizer=keras.optimizers.legacy.Adam(1e-4), loss="mse")
        logits = next(v for v in tf.global_variables() if v.op.name == "logits/kernel")
        before = {v.op.name: value for v, value in zip(tf.global_variables(), sess.run(tf.global_variables()))}
        seen = []

        def burst():
            counts = {g.id: len(g.keep) for g in runner.spec.groups}
            optimizer_steps = sess.run(info.model.optimizer.iterations) if seen else 0
            info.model.fit(X, np.zeros((len(X), 10), np.float32), batch_size=3, epochs=1, verbose=0)
            kernels = runner.analysis.plan(runner.spec)
            for name, mask in runner.mask_set.masks.items():   # the burst kept the pruned weights at zero
                value = sess.run(runner.variables[name])
                assert not np.any(value[kernels.mask(name, value.shape) == 0]), name
            seen.append((counts, optimizer_steps))
            if counts == search.candidates[boosted]["counts"]:
                sess.run(logits.assign(logits * 10.0))
        scores = runner.rescore(resnet_examples, burst, sparsity=0.5, finalists=2, progress=None)
        assert sorted(scores) == sorted([0] + finalists) and all(v is not None for v in scores.values())
        assert [c for c, _ in seen] == [search.candidates[i]["counts"] for i in [0] + finalists]
        assert [s for _, s in seen] == [0, 0, 0]   # the optimiser starts afresh for every finalist
        assert max(scores, key=scores.get) == boosted and runner.choice(0.5)[0] == boosted
        assert "after the training burst" in runner.choice(0.5)[1]
        after = dict(zip([v.op.name for v in tf.global_variables()], sess.run(tf.global_variables())))
        for name, value in before.items():   # the session is as it was
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        assert runner.spec is None
        runner.prune(sparsity=0.5)
        assert {g.id: len(g.keep) for g in runner.spec.groups} == search.candidates[boosted]["counts"]
        # kept in the workspace: a second call scores nothing again
        assert runner.rescore(resnet_examples, lambda: seen.append("again"), sparsity=0.5, finalists=2,
                              progress=None) == scores and seen[-1] != "again"


def test_rescore_records_a_failing_burst_and_restores_the_session(tmp_path):
    import tensorflow.compat.v1 as tf
    graph, sess, info = resnet_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, [RESNET_OUT], workspace=str(tmp_path))
        runner.search(eval_fn, CALIBRATION, num_subnet=3, sparsity=0.5, progress=None)
        before = sess.run(tf.global_variables())

        def burst():
            sess.run([v.assign(v * 0.0) for v in tf.global_variables() if v.op.name.endswith("kernel")])
            raise RuntimeError("out of data")
        scores = runner.rescore(eval_fn, burst, sparsity=0.5, finalists=1, progress=None)
        assert set(scores.values()) == {None}
        store = runner._burst_store(runner._search_path(0.5), Search.load(runner._search_path(0.5),
                                                                          runner.analysis.digest()))
        assert "RuntimeError: out of data" in store.error("0")
        for got, want in zip(sess.run(tf.global_variables()), before):
            np.testing.assert_array_equal(got, want)
        for bad in ({"finalists": 0}, {"train_fn": None}):
            with pytest.raises(tf1prune.Tf1PruneError):
                runner.rescore(eval_fn, **dict({"train_fn": burst, "sparsity": 0.5}, **bad))
        search = Search.load(runner._search_path(0.5), runner.analysis.digest())
        assert runner.choice(0.5) == search.choice()   # no burst scored: the search's own choice
        runner.prune(sparsity=0.5)
        assert {g.id: len(g.keep) for g in runner.spec.groups} == search.candidates[search.choice()[0]]["counts"]
