"""Latency as the budget: the per-layer latency profile (timed, cached, calibrated end to end), the
``latency`` cost model, the measure-and-re-fit loop, ``tf1prune-convert --latency_target`` and
``prune(latency=...)``.  Timing is replaced by a fake machine whose latency follows the graph's own
layers, so the behaviour is tested, not this machine's speed."""
import pytest

import example_models
import tf1prune
from sessions import OUT, SPECS, seed_model
from tf1prune.choose import allocation, costs, criteria
from tf1prune.core import flops
from tf1prune.measure import layer_latency, latency
from tf1prune.measure.latency import Stats
from tf1prune.workflows.iterative import IterativePruningRunner
from tf1prune.workflows.latency_target import prune_to_latency


def machine_latency(graph_def, outputs, specs, power):
    """The fake machine: 0.2 ms plus each counted layer's MACs (millions) to ``power`` (a time that
    falls more slowly than the MACs when ``power`` < 1)."""
    analysis = tf1prune.analyze(graph_def, specs, outputs)
    return 0.2 + sum((l.macs / 1e6) ** power for l in flops.count(analysis).layers)


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """Every end-to-end measurement and every layer timing on the fake machine (``power`` settable),
    the latency cache in ``tmp_path``; returns a dict with ``power`` and the timing ``calls``."""
    state = {"power": 1.0, "calls": 0, "spread": 0.0, "layer_power": None}
    monkeypatch.setenv("TF1PRUNE_CACHE", str(tmp_path))

    def measure(graph_defs, outputs, specs=None, batch=1, threads=0, runs=50, warmup=5, seed=0, progress=True):
        out = []
        for gd in graph_defs:
            ms = machine_latency(gd, outputs, specs, state["power"]) * batch
            out.append(Stats(ms, ms, ms, runs))
        return out

    def time_ops(graphs, threads, runs=9, warmup=2):
        state["calls"] += 1
        millis = []
        for gd, shape in graphs:
            node = next(n for n in gd.node if n.name == "y")
            spec = {"x:0": (tuple(shape), "float32")}
            analysis = tf1prune.analyze(gd, spec, ["y"])
            power = state["layer_power"] or state["power"]
            millis.append(sum((l.macs / 1e6) ** power for l in flops.count(analysis).layers) if node else 0.0)
        return millis, state["spread"]
    monkeypatch.setattr(latency, "measure", measure)
    monkeypatch.setattr(layer_latency, "_time", time_ops)
    return state


@pytest.fixture(scope="module")
def resnet():
    gd, specs, outs = example_models.frozen_graph_def("resnet", learning_phase=0)
    return gd, specs, outs


def test_the_profile_times_each_layer_at_a_grid_of_widths_and_is_cached(fake_machine, resnet):
    gd, specs, outs = resnet
    analysis = tf1prune.analyze(gd, specs, outs)
    profile = layer_latency.LatencyProfile.build(analysis)
    convs = [l.node for l in analysis.layers if l.kind in ("conv", "dense")]
    assert [t.node for t in profile.timings] == convs and not profile.cached
    for t in profile.timings:
        assert t.shares == sorted(t.shares) and t.shares[-1] == 1.0 and len(t.millis) == len(layer_latency.WIDTHS)
    # identical layers (same shapes) are timed once
    assert fake_machine["calls"] == len({layer_latency._signature(analysis.view, l, 1) for l in analysis.layers
                                         if l.node in convs})
    # on a machine whose time is the layers' MACs, the model is exact: scale 1, offset the constant
    assert profile.scale == pytest.approx(1.0, rel=1e-3) and profile.offset == pytest.approx(0.2, rel=1e-2)
    fake_machine["calls"] = 0
    again = layer_latency.LatencyProfile.build(tf1prune.analyze(gd, specs, outs))
    assert again.cached and fake_machine["calls"] == 0
    assert "end to end" in again.table()


def test_a_busy_machine_is_timed_again_and_not_cached(fake_machine, resnet):
    gd, specs, outs = resnet
    fake_machine["spread"] = 1.0
    analysis = tf1prune.analyze(gd, specs, outs)
    first = layer_latency.LatencyProfile.build(analysis, attempts=2)
    layers = fake_machine["calls"]
    assert not first.cached
    layer_latency.LatencyProfile.build(tf1prune.analyze(gd, specs, outs), attempts=2)
    assert fake_machine["calls"] == 2 * layers   # nothing was cached


def test_latency_is_a_cost_model_of_the_registry(fake_machine, resnet):
    gd, specs, outs = resnet
    analysis = tf1prune.analyze(gd, specs, outs)
    assert "latency" in costs.names()
    order = allocation.rank_units(analysis, criteria.unit_scores(analysis))
    model = costs.make("latency", analysis, order)
    full = {g.id: g.channels for g in analysis.groups if g.prunable}
    assert model(full) == pytest.approx(model.total) and model.unit == "latency"
    half = allocation.counts_for_ratio(analysis, 0.5, 1)
    assert model(half) < model.total


@pytest.mark.parametrize("power,layer_power", [(1.0, None), (0.5, None), (0.5, 1.0)])
def test_prune_to_latency_meets_the_target_or_returns_the_closest(fake_machine, resnet, power, layer_power):
    """The layers timed alone as the whole graph runs: the model is right the first time; timed
    alone faster than in the graph (``layer_power`` 1 against 0.5): the misses are re-fitted."""
    gd, specs, outs = resnet
    fake_machine["power"], fake_machine["layer_power"] = power, layer_power
    analysis = tf1prune.analyze(gd, specs, outs)
    tolerance = 0.07 if layer_power is None else 0.01
    found = prune_to_latency(analysis, 0.6, tolerance=tolerance)
    original = machine_latency(gd, outs, specs, power)
    assert found.measured == pytest.approx(machine_latency(found.slim_graph_def, outs, specs, power) / original)
    assert abs(found.measured / 0.6 - 1) <= tolerance or len(found.attempts) == 3
    assert found.measured == min((a.measured for a in found.attempts), key=lambda m: abs(m - 0.6))
    if layer_power is None:
        assert len(found.attempts) == 1 and found.predicted == pytest.approx(found.measured, abs=0.02)
    else:   # the first prediction is off; the re-fit gets closer
        first, last = found.attempts[0], found.attempts[-1]
        assert abs(first.predicted - first.measured) > 0.02 and len(found.attempts) > 1
        assert abs(last.measured - 0.6) < abs(first.measured - 0.6)
    assert "latency target 0.60" in found.summary(0.6)


def test_convert_latency_target(fake_machine, resnet, tmp_path, capsys):
    from tf1prune.cli import convert as convert_cli
    from tf1prune.files import save_graph_def
    gd, specs, outs = resnet
    src, out = str(tmp_path / "m.pb"), str(tmp_path / "slim.pb")
    save_graph_def(gd, src)
    base = ["convert", "--input_graph", src, "--output_graph", out, "--output_node_names", outs[0]]
    report = str(tmp_path / "report")
    assert convert_cli.main(base + ["--latency_target", "0.6", "--channel_divisible", "1", "--batch", "2",
                                    "--report", report]) == 0
    text = capsys.readouterr().out
    assert "latency target 0.60: predicted" in text and "attempt 1: predicted" in text
    page = open(tmp_path / "report" / "index.html").read()
    assert "Latency per layer" in page and "stem_conv/Conv2D" in page.split("Latency per layer")[1]
    for bad, message in ((["--latency_target", "0.6", "--sparsity", "0.5"], "give exactly one of"),
                         (["--ratio", "0.5", "--channel_divisible", "4", "--batch", "2"],
                          "--batch applies to --latency_target and to --channel_divisible auto"),
                         (["--sparsity", "0.5", "--threads", "2"], "--threads applies to --latency_target"),
                         (["--latency_target", "1.5"], "--latency_target must be in (0, 1)"),
                         (["--latency_target", "0.6", "--batch", "1,8"], "--batch takes one batch size")):
        assert convert_cli.main(base + bad) == 2
        assert message in capsys.readouterr().err


def test_convert_searches_candidates_on_the_latency_model(fake_machine, resnet, tmp_path, capsys):
    import numpy as np
    from tf1prune.cli import convert as convert_cli
    from tf1prune.files import save_graph_def
    gd, specs, outs = resnet
    src, out, data = str(tmp_path / "m.pb"), str(tmp_path / "slim.pb"), str(tmp_path / "cal.npz")
    save_graph_def(gd, src)
    np.savez(data, input_1=np.random.RandomState(0).rand(32, 28, 28, 1).astype(np.float32))
    assert convert_cli.main(["convert", "--input_graph", src, "--output_graph", out, "--output_node_names", outs[0],
                             "--latency_target", "0.6", "--search", "3", "--calibration_data", data,
                             "--channel_divisible", "1", "--no_reconstruct"]) == 0
    text = capsys.readouterr().out
    ratio = float(text.split("the searched graph measures ")[1].split()[0])
    assert "search: 3 candidates" in text and abs(ratio / 0.6 - 1) <= 0.07


def test_runner_prunes_a_session_to_a_latency(fake_machine, tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        shape_tensors, masks = runner.prune(latency=0.7, strategy="uniform", best_effort=True)
    found = runner.latency_result
    assert found is not None and masks and (tmp_path / "m_latency_0.7.spec").exists()
    assert found.measured == min((a.measured for a in found.attempts), key=lambda m: abs(m - 0.7))
    with pytest.raises(tf1prune.Tf1PruneError, match="a sparsity or a latency"):
        runner.prune(sparsity=0.5, latency=0.7)


def test_analyze_prints_each_layers_latency(fake_machine, resnet, tmp_path, capsys):
    from tf1prune.cli import analyze as analyze_cli
    from tf1prune.files import save_graph_def
    gd, specs, outs = resnet
    src = str(tmp_path / "m.pb")
    save_graph_def(gd, src)
    base = ["analyze", "--input_graph", src, "--output_node_names", outs[0]]
    assert analyze_cli.main(base + ["--latency", "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "latency (batch 2, timed in" in text and "stem_conv/Conv2D" in text.split("latency (batch 2")[1]
    assert analyze_cli.main(base + ["--batch", "2"]) == 2
    assert "--batch and --threads apply to --latency" in capsys.readouterr().err


def test_one_step_search_at_a_latency(fake_machine, tmp_path):
    from sessions import CALIBRATION, eval_fn
    from tf1prune.workflows.onestep import OneStepPruningRunner
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = OneStepPruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        search = runner.search(eval_fn, CALIBRATION, num_subnet=3, latency=0.7, progress=None)
        assert (tmp_path / "m_latency_0.7.search").exists() and len(search.candidates) == 3
        model = costs.make(costs.latency_model(1), runner.analysis,
                           allocation.rank_units(runner.analysis, criteria.unit_scores(runner.analysis)))
        for c in search.candidates:   # every candidate on the latency model at the target (within half a point)
            counts = {int(g): n for g, n in c["counts"].items()}
            assert abs(model(counts) / model.total - 0.7) <= 0.005 + 1e-9
        runner.prune(latency=0.7)
        assert (tmp_path / "m_latency_0.7.spec").exists()
        with pytest.raises(tf1prune.Tf1PruneError, match="no search at a latency of 0.5"):
            runner.prune(latency=0.5)


def test_timings_are_cached_per_graph_not_per_channel_structure(fake_machine, resnet):
    """A Keras BatchNorm frozen as an ``If`` and the same model with it fused have one channel structure
    but run differently: their end-to-end timings and roundings are not shared."""
    gd, specs, outs = resnet
    as_if, _, _ = example_models.frozen_graph_def("resnet", learning_phase=None)
    fused, branched = tf1prune.analyze(gd, specs, outs), tf1prune.analyze(as_if, specs, outs)
    assert fused.digest() == branched.digest()
    assert latency.graph_fingerprint(gd) != latency.graph_fingerprint(as_if)
    again, _, _ = example_models.frozen_graph_def("resnet", learning_phase=0, seed=1)   # other weights
    assert latency.graph_fingerprint(again) == latency.graph_fingerprint(gd)
    ends = []
    real = layer_latency._end_to_end
    layer_latency._end_to_end = lambda *a, **k: (ends.append(1), real(*a, **k))[1]
    try:
        layer_latency.LatencyProfile.build(fused)
        layer_latency.LatencyProfile.build(branched)
        layer_latency.LatencyProfile.build(tf1prune.analyze(gd, specs, outs))
    finally:
        layer_latency._end_to_end = real
    assert len(ends) == 2   # each graph once; the third build is the first graph again


def test_auto_rounding_is_timed_at_the_latency_batch(fake_machine, resnet, monkeypatch, tmp_path):
    from tf1prune.choose import divisible
    from tf1prune.measure import rounding
    gd, specs, outs = resnet
    monkeypatch.delenv(divisible.PIN, raising=False)
    timed = []
    monkeypatch.setattr(rounding, "model_rounding", lambda analysis, ratio=0.5, batch=1, threads=0: (
        timed.append(batch), (4, {}))[1])
    found = prune_to_latency(tf1prune.analyze(gd, specs, outs), 0.6, batch=8, channel_divisible="auto")
    assert timed == [8] and found.spec.channel_divisible == 4
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path), channel_divisible="auto")
        assert timed[-1] == 1    # the runner's own rounding: batch 1
        runner.prune(latency=0.7, batch=8, strategy="uniform", best_effort=True)
    assert timed[-1] == 8 and runner.latency_result.spec.channel_divisible == 4


def test_runner_importance_strategy_prunes_to_a_sparsity_without_ana(tmp_path):
    graph, sess, _ = seed_model()
    with graph.as_default():
        runner = IterativePruningRunner("m", sess, SPECS, OUT, workspace=str(tmp_path))
        runner.prune(sparsity=0.4, strategy="importance")
        macs = tf1prune.count_macs(runner.analysis)
        assert abs(1 - tf1prune.count_macs(runner.analysis, runner.spec).macs / macs.macs - 0.4) <= 0.005
        with pytest.raises(tf1prune.Tf1PruneError, match="'uniform' or 'importance' with a sparsity"):
            runner.prune(threshold=0.1, strategy="importance")


def test_convert_times_auto_rounding_at_the_batch_given(fake_machine, resnet, tmp_path, capsys, monkeypatch):
    from tf1prune.choose import divisible
    from tf1prune.cli import convert as convert_cli
    from tf1prune.files import save_graph_def
    from tf1prune.measure import rounding
    gd, specs, outs = resnet
    monkeypatch.delenv(divisible.PIN, raising=False)
    timed = []
    real = rounding.model_rounding
    monkeypatch.setattr(rounding, "model_rounding", lambda *a, **k: (timed.append(a[2] if len(a) > 2 else k["batch"]),
                                                                      real(*a, **k))[1])
    src = str(tmp_path / "m.pb")
    save_graph_def(gd, src)
    assert convert_cli.main(["convert", "--input_graph", src, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outs[0], "--sparsity", "0.5", "--batch", "16"]) == 0
    assert timed == [16] and "timed on this machine at batch 16" in capsys.readouterr().out
