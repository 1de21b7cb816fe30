"""channel_divisible="auto": timed on the model's own layers, robust to a busy machine, cached, capped by
the model, stepping down to meet a budget, and where it is accepted."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from graphs import build, conv, head
from tf1prune.choose import divisible
from tf1prune.cli import convert as convert_cli
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def
from tf1prune.core.rules import build as build_lib
from tf1prune.measure import rounding
from tf1prune.measure.latency import Stats


@pytest.fixture
def unpinned(monkeypatch, tmp_path):
    """``auto`` measured (not pinned by the suite's conftest), with a cache folder of the test's own."""
    monkeypatch.delenv(divisible.PIN, raising=False)
    monkeypatch.setenv("TF1PRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def wide_model():
    """conv 44 -> conv 76 -> conv 108 -> logits: groups large enough for every rounding up to 16; at half
    their channels, only rounding to 16 keeps multiples of 16 (8 keeps 24, 40, 56)."""
    def fn(x):
        y = tf.nn.relu(conv(x, 44, "c1", 3))
        y = tf.nn.relu(conv(y, 76, "c2", 3))
        head(tf.nn.relu(conv(y, 108, "c3", 3)))
    return tf1prune.analyze(build(fn), {"x:0": ((1, 8, 8, 3), "float32")}, ["logits"])


def machine(fast=16, spread=0.0, calls=None):
    """A fake ``latency.measure``: a graph whose conv kernels all have channel counts that are multiples of
    ``fast`` runs twice as fast per MAC; ``spread``: the relative run-to-run noise (p10 to p90)."""
    def measure(graph_defs, outputs, input_specs, batch=1, threads=0, runs=15, warmup=3, progress=None):
        if calls is not None:
            calls.append(len(graph_defs))
        out = []
        for gd in graph_defs:
            analysis = tf1prune.analyze(gd, input_specs, outputs)
            kernels = [build_lib.const_value(analysis.view.nodes[l.kernel]).shape for l in analysis.layers]
            fast_graph = all(k[-1] % fast == 0 for k in kernels[:-1])
            ms = tf1prune.count_macs(analysis).macs * (1.0 if fast_graph else 2.0) * 1e-6
            out.append(Stats(ms, ms * (1 - spread / 2), ms * (1 + spread / 2), runs))
        return out
    return measure


def test_choose_the_smallest_rounding_near_the_best():
    assert divisible.choose({1: 0.5, 4: 0.6, 8: 0.97, 16: 1.0}) == 8
    assert divisible.choose({1: 0.5, 4: 0.6, 8: 0.97, 16: 1.0}, tolerance=0.99) == 16
    assert divisible.choose({1: 1.0, 8: 1.0}) == 1   # no gain: no rounding
    with pytest.raises(Tf1PruneError, match="no rounding"):
        divisible.choose({})


def test_auto_times_the_models_own_slim_graphs_and_caches_the_choice(unpinned):
    analysis = wide_model()
    assert divisible.model_cap(analysis) == 16
    calls = []
    choice, record = rounding.model_rounding(analysis, measure_fn=machine(16, calls=calls))
    assert choice == 16 and not record["cached"] and calls == [4]      # 1, 4, 8, 16 (32 is above the cap)
    assert float(record["throughput"]["16"]) > 1.5 * float(record["throughput"]["1"])
    again, record = rounding.model_rounding(analysis, measure_fn=machine(16, calls=calls))
    assert again == 16 and record["cached"] and len(calls) == 1        # nothing timed the second time
    assert rounding.model_rounding(analysis, measure_fn=machine(32, calls=calls), refresh=True)[0] == 1
    assert rounding.model_rounding(analysis, ratio=0.3, measure_fn=machine(4, calls=calls))[0] == 4
    other = rounding.model_rounding(analysis, threads=1, measure_fn=machine(4, calls=calls))[0]
    assert other == 4 and len(calls) == 4                              # another ratio, thread count: own entries
    for path in os.listdir(str(unpinned)):                             # a broken cache is measured again
        (unpinned / path).write_text("{broken")
    assert rounding.model_rounding(analysis, measure_fn=machine(16, calls=calls))[0] == 16 and len(calls) == 5
    assert rounding.model_rounding(analysis, measure_fn=machine(16, calls=calls))[1]["cached"]


def test_a_busy_machine_is_measured_again_and_its_result_never_cached(unpinned):
    analysis = wide_model()
    calls = []
    choice, record = rounding.model_rounding(analysis, measure_fn=machine(16, spread=0.9, calls=calls), attempts=3)
    assert len(calls) == 3 and record["noise"] > rounding.BUSY and not record["cached"]
    rounding.model_rounding(analysis, measure_fn=machine(16, spread=0.9, calls=calls), attempts=1)
    assert len(calls) == 4                                             # nothing was cached
    calls.clear()
    rounding.model_rounding(analysis, measure_fn=machine(16, spread=0.05, calls=calls), attempts=3)
    assert len(calls) == 1                                             # quiet: measured once, cached


def test_auto_is_measured_end_to_end_on_this_machine(unpinned):
    graph_def, specs, outputs = example_models.frozen_graph_def("resnet")
    analysis = tf1prune.analyze(graph_def, specs, outputs)
    graphs = rounding.candidate_graphs(analysis, 0.3)
    assert sorted(graphs) == [r for r in divisible.CANDIDATES if r <= divisible.model_cap(analysis)]
    for r, (gd, macs) in graphs.items():
        assert tf1prune.count_macs(tf1prune.analyze(gd, specs, outputs)).macs == macs
    assert graphs[1][1] != graphs[8][1]                                # the roundings make other graphs
    choice, record = rounding.model_rounding(analysis, runs=3, warmup=1)
    assert choice in graphs and set(record["throughput"]) == {str(r) for r in graphs}


def test_check_and_the_pin(monkeypatch):
    assert divisible.check(" Auto ") == "auto" and divisible.check("4") == 4 and divisible.check(np.int64(2)) == 2
    for bad in (0, -4, "x", True, 2.5, None):
        with pytest.raises(Tf1PruneError, match="positive integer or 'auto'"):
            divisible.check(bad)
    analysis = wide_model()
    monkeypatch.setenv(divisible.PIN, "8")
    assert divisible.resolve("auto", analysis) == 8 and divisible.resolve(32, analysis) == 32
    monkeypatch.setenv(divisible.PIN, "32")
    assert divisible.resolve("auto", analysis) == 16                  # capped by the model
    monkeypatch.setenv(divisible.PIN, "many")
    with pytest.raises(Tf1PruneError, match=divisible.PIN):
        divisible.resolve("auto", analysis)


def test_auto_in_make_spec_and_convert(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(divisible.PIN, "4")
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    analysis = tf1prune.analyze(graph_def, specs, outputs)
    spec = tf1prune.make_spec(analysis, ratio=0.5, channel_divisible="auto")
    assert spec.channel_divisible == 4
    kept = [len(g.keep) for g in spec.groups]
    assert kept and all(n % 4 == 0 for n in kept) and any(n < g.channels for n, g in zip(kept, spec.groups))
    path = str(tmp_path / "m.pb")
    save_graph_def(graph_def, path)
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--channel_divisible", "auto"])
    out = capsys.readouterr().out
    assert code == 0 and "channel_divisible: auto -> 4 (pinned by TF1PRUNE_CHANNEL_DIVISIBLE)" in out
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--channel_divisible", "x"])
    assert code == 2 and "channel_divisible must be" in capsys.readouterr().err
    spec_path = str(tmp_path / "spec.json")
    spec.save(spec_path)
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o2.pb"),
                             "--output_node_names", outputs[0], "--spec", spec_path, "--channel_divisible", "4"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == ["error: --channel_divisible applies to --sparsity, --ratio and --latency_target "
                                 "(a --spec keeps its own counts)"]
    assert not (tmp_path / "o2.pb").exists()


def test_auto_is_capped_by_the_model_and_steps_down_to_meet_a_target(monkeypatch):
    monkeypatch.setenv(divisible.PIN, "32")
    widths = {}
    for name in ("mnist_convnet", "inception"):
        graph_def, specs, outputs = example_models.frozen_graph_def(name)
        analysis = tf1prune.analyze(graph_def, specs, outputs)
        widths[name] = divisible.resolve("auto", analysis)
        assert divisible.resolve(32, analysis) == 32   # an explicit rounding is kept as given
    # groups of 16 and 32 channels: median 32 keeps four widths at 8; the inception median (8) at 1
    assert widths == {"mnist_convnet": 8, "inception": 1}
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    analysis = tf1prune.analyze(graph_def, specs, outputs)
    with pytest.raises(Tf1PruneError, match="cannot remove"):
        tf1prune.make_spec(analysis, sparsity=0.37, channel_divisible=8)
    spec = tf1prune.make_spec(analysis, sparsity=0.37, channel_divisible="auto")   # 8 misses it: finer
    assert spec.channel_divisible < 8 and not spec.warning
    assert all(len(g.keep) % spec.channel_divisible == 0 for g in spec.groups)


def test_convert_search_steps_down_like_the_plain_convert(tmp_path, monkeypatch, capsys):
    """With --search, ``auto`` steps down to a finer rounding when the coarse one cannot reach the target
    (it used to stop with an error where the plain convert reached it)."""
    monkeypatch.setenv(divisible.PIN, "32")
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    path, npz = str(tmp_path / "m.pb"), str(tmp_path / "cal.npz")
    save_graph_def(graph_def, path)
    np.savez(npz, input_1=np.random.RandomState(0).rand(16, 28, 28, 1).astype(np.float32))
    base = ["tf1prune-convert", "--input_graph", path, "--output_node_names", outputs[0], "--sparsity", "0.37"]
    assert convert_cli.main(base + ["--output_graph", str(tmp_path / "plain.pb")]) == 0
    plain = capsys.readouterr().out
    assert convert_cli.main(base + ["--output_graph", str(tmp_path / "searched.pb"), "--search", "3",
                                    "--calibration_data", npz]) == 0, capsys.readouterr().err
    searched = capsys.readouterr().out
    for out in (plain, searched):
        reduction = float(out.split("MACs reduction: ")[1].split("%")[0])
        assert abs(reduction - 37) <= 0.5, out
        assert "channel_divisible: auto -> " in out and "auto -> 8 " not in out


def test_convert_rounds_with_auto_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(divisible.PIN, "16")
    graph_def, specs, outputs = example_models.frozen_graph_def("resnet")
    path = str(tmp_path / "m.pb")
    save_graph_def(graph_def, path)
    spec_path = str(tmp_path / "spec.json")
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--output_spec", spec_path])
    assert code == 0 and "channel_divisible: auto -> 8" in capsys.readouterr().out   # resnet's median group: 32
    spec = tf1prune.Spec.load(spec_path)
    assert spec.channel_divisible == 8 and all(len(g.keep) % 8 == 0 for g in spec.groups)
