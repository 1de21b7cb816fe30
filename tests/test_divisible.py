"""channel_divisible="auto": the choice, the per-machine cache, and where it is accepted."""
import json

import numpy as np
import pytest

import example_models
import tf1prune
from tf1prune import divisible
from tf1prune.cli import convert as convert_cli
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def


def vector_machine(fast=16):
    """Throughput of a machine whose kernels run multiples of ``fast`` at full speed, multiples of
    ``fast // 2`` at 95%, and other counts at half speed."""
    return {c: 1.0 if c % fast == 0 else 0.95 if c % (fast // 2) == 0 else 0.5 for c in divisible.COUNTS}


def test_choose_the_smallest_rounding_near_the_best():
    assert divisible.choose(vector_machine(16)) == 8           # 8: mean 0.975 of the best; 4: 0.74
    assert divisible.choose(vector_machine(16), tolerance=0.99) == 16
    assert divisible.choose(vector_machine(8)) == 4
    assert divisible.choose({c: 1.0 for c in divisible.COUNTS}) == 1   # no penalty: no rounding
    # larger layers run faster anyway: the size trend alone is no reason to round
    assert divisible.choose({c: float(c) for c in divisible.COUNTS}) == 1
    assert divisible.choose({c: c * v for c, v in vector_machine(16).items()}) == 8
    with pytest.raises(Tf1PruneError, match="no timed channel count"):
        divisible.choose({7: 1.0}, candidates=(2, 4))


def test_auto_is_measured_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TF1PRUNE_CACHE", str(tmp_path))
    calls = []

    def fake_measure(threads=0):
        calls.append(threads)
        return vector_machine(32)

    assert divisible.auto_divisible(measure_fn=fake_measure) == 16
    assert divisible.auto_divisible(measure_fn=fake_measure) == 16 and len(calls) == 1
    cache = json.load(open(tmp_path / "channel_divisible.json"))
    (entry,) = cache.values()
    assert entry["choice"] == 16 and len(entry["throughput"]) == len(divisible.COUNTS)
    assert divisible.auto_divisible(threads=1, measure_fn=fake_measure) == 16 and calls == [0, 1]
    assert divisible.auto_divisible(refresh=True, measure_fn=fake_measure) == 16 and len(calls) == 3
    (tmp_path / "channel_divisible.json").write_text("{corrupt")
    assert divisible.auto_divisible(measure_fn=fake_measure) == 16 and len(calls) == 4
    assert json.load(open(tmp_path / "channel_divisible.json"))   # rewritten


def test_measure_times_real_convolutions():
    throughput = divisible.measure(counts=(8, 16), size=4, runs=2, threads=1)
    assert sorted(throughput) == [8, 16] and all(v > 0 for v in throughput.values())


def test_resolve(monkeypatch):
    monkeypatch.setattr(divisible, "auto_divisible", lambda: 8)
    assert divisible.resolve("auto") == 8 and divisible.resolve(" Auto ") == 8
    assert divisible.resolve(16) == 16 and divisible.resolve("4") == 4 and divisible.resolve(np.int64(2)) == 2
    for bad in (0, -4, "x", True, 2.5, None):
        with pytest.raises(Tf1PruneError, match="positive integer or 'auto'"):
            divisible.resolve(bad)


def test_auto_in_make_spec_and_convert(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(divisible, "auto_divisible", lambda: 4)
    graph_def, specs, outputs = example_models.frozen_graph_def("mnist_convnet")
    analysis = tf1prune.analyze(graph_def, specs, outputs)
    spec = tf1prune.make_spec(analysis, ratio=0.5, channel_divisible="auto")
    assert spec.channel_divisible == 4
    kept = [len(g["keep"]) for g in spec.groups]
    assert kept and all(n % 4 == 0 for n in kept) and any(n < g["channels"] for n, g in zip(kept, spec.groups))
    path = str(tmp_path / "m.pb")
    save_graph_def(graph_def, path)
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--channel_divisible", "auto"])
    out = capsys.readouterr().out
    assert code == 0 and "channel_divisible: auto -> 4" in out
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--channel_divisible", "x"])
    assert code == 2 and "channel_divisible must be" in capsys.readouterr().err
    spec_path = str(tmp_path / "spec.json")
    spec.save(spec_path)
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o2.pb"),
                             "--output_node_names", outputs[0], "--spec", spec_path, "--channel_divisible", "4"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == ["error: --channel_divisible applies to --sparsity and --ratio (a --spec keeps its "
                                 "own counts)"]
    assert not (tmp_path / "o2.pb").exists()


def test_auto_is_capped_by_the_model_and_steps_down_to_meet_a_target(monkeypatch):
    monkeypatch.setattr(divisible, "auto_divisible", lambda: 32)
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
    assert all(len(g["keep"]) % spec.channel_divisible == 0 for g in spec.groups)


def test_convert_rounds_with_auto_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(divisible, "auto_divisible", lambda: 16)
    graph_def, specs, outputs = example_models.frozen_graph_def("resnet")
    path = str(tmp_path / "m.pb")
    save_graph_def(graph_def, path)
    spec_path = str(tmp_path / "spec.json")
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "o.pb"),
                             "--output_node_names", outputs[0], "--ratio", "0.5", "--output_spec", spec_path])
    assert code == 0 and "channel_divisible: auto -> 8" in capsys.readouterr().out   # resnet's median group: 32
    spec = tf1prune.Spec.load(spec_path)
    assert spec.channel_divisible == 8 and all(len(g["keep"]) % 8 == 0 for g in spec.groups)
