"""tf1prune.measure.latency, tf1prune-benchmark and tf1prune.progress."""
import io
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tf1prune import progress
from tf1prune.measure import latency
from tf1prune.cli import benchmark as benchmark_cli
from tf1prune.errors import Tf1PruneError
from tf1prune.files import save_graph_def


def conv_graph(filters, batch=None, size=8):
    """Frozen graph: input [batch, size, size, 3] -> conv(filters) -> relu -> mean; output 'out'."""
    with tf.Graph().as_default() as g:
        x = tf.placeholder(tf.float32, [batch, size, size, 3], name="x")
        k = tf.constant(np.random.RandomState(filters).randn(3, 3, 3, filters).astype(np.float32))
        tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, k, [1, 1, 1, 1], "SAME")), axis=[1, 2], name="out")
    return g.as_graph_def()


@pytest.fixture
def graphs(tmp_path):
    paths = {"a": str(tmp_path / "a.pb"), "b": str(tmp_path / "b.pb")}
    save_graph_def(conv_graph(64), paths["a"])
    save_graph_def(conv_graph(8), paths["b"])
    return paths


def test_input_shapes_take_the_batch_and_the_specs():
    gd = conv_graph(4)
    assert latency.input_shapes(gd, batch=8) == {"x:0": ((8, 8, 8, 3), "float32")}
    assert latency.input_shapes(gd, {"x": (1, 16, 16, 3)}, batch=2) == {"x:0": ((2, 16, 16, 3), "float32")}
    with pytest.raises(Tf1PruneError, match="unknown dimension"):
        latency.input_shapes(conv_graph(4, size=None))
    with pytest.raises(Tf1PruneError, match="'y:0' is not a node"):
        latency.input_shapes(gd, {"y": (1, 8, 8, 3)})


def test_measure_returns_ordered_percentiles_per_graph():
    stats = latency.measure([conv_graph(4), conv_graph(4)], ["out"], batch=2, runs=7, warmup=1, progress=None)
    assert len(stats) == 2
    for s in stats:
        assert s.runs == 7 and 0 < s.p10 <= s.median <= s.p90


def test_each_graph_gets_the_inputs_its_outputs_read():
    """A slim graph has lost a placeholder its outputs do not read (labels): both still run."""
    with tf.Graph().as_default() as g:
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        tf.placeholder(tf.int32, [None, None], name="labels")      # unused, unknown shape
        tf.identity(x * 2.0, name="out")
    full = g.as_graph_def()
    with tf.Graph().as_default() as g:
        x = tf.placeholder(tf.float32, [None, 4], name="x")
        tf.identity(x * 3.0, name="out")
    slim = g.as_graph_def()
    assert latency.input_shapes(full, output_node_names=["out"]) == {"x:0": ((1, 4), "float32")}
    stats = latency.measure([full, slim], ["out"], runs=2, warmup=0, progress=None)
    assert [s.runs for s in stats] == [2, 2]
    no_shape = tf.NodeDef(name="p", op="Placeholder")
    no_shape.attr["dtype"].type = tf.float32.as_datatype_enum
    gd = tf.GraphDef(node=[no_shape])
    with pytest.raises(Tf1PruneError, match="no static rank"):
        latency.input_shapes(gd)
    assert "shape" not in gd.node[0].attr   # the caller's graph is not modified


def test_measure_errors():
    with pytest.raises(Tf1PruneError, match="cannot run the graph"):
        latency.measure([conv_graph(4)], ["nope"], runs=1, progress=None)
    with pytest.raises(Tf1PruneError, match="runs and batch must be positive"):
        latency.measure([conv_graph(4)], ["out"], runs=0, progress=None)


def test_benchmark_tool_compares_two_graphs(graphs, capsys):
    code = benchmark_cli.main(["tf1prune-benchmark", "--input_graph", graphs["a"], "--compare", graphs["b"],
                               "--output_node_names", "out", "--batch", "1,4", "--runs", "5", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = re.findall(r"^\s+(\d+)\s+([AB])\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [(b, g) for b, g, *_ in rows] == [("1", "A"), ("1", "B"), ("4", "A"), ("4", "B")]
    for _, _, median, p10, p90 in rows:
        assert float(p10) <= float(median) <= float(p90)
    speedups = re.findall(r"^\s+(\d+) speed-up B over A: ([\d.]+)x", out, re.M)
    assert [b for b, _ in speedups] == ["1", "4"]
    medians = {(b, g): float(m) for b, g, m, _, _ in rows}
    a, b = medians["4", "A"], medians["4", "B"]   # printed to 3 decimals, the speed-up to 2
    assert (a - 5e-4) / (b + 5e-4) - 5e-3 <= float(speedups[1][1]) <= (a + 5e-4) / (b - 5e-4) + 5e-3


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch takes positive integers"),
    (["--batch", "x"], "--batch takes positive integers"),
    (["--output_graph", "o.pb"], "--output_graph is not an option"),
    (["--compare", "/nonexistent/b.pb"], "b.pb"),
    (["--input_specs", "y:0=1,8,8,3"], "'y:0' is not a node"),
])
def test_benchmark_tool_errors(graphs, capsys, argv, message):
    code = benchmark_cli.main(["tf1prune-benchmark", "--input_graph", graphs["a"], "--output_node_names", "out",
                               "--runs", "1"] + argv)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_silent_otherwise():
    assert progress.resolve(True, "ana", io.StringIO()) is None
    assert progress.resolve(None, "ana") is None and progress.resolve(False, "ana") is None
    calls = []
    assert progress.resolve(lambda *a: calls.append(a), "ana") is not None
    with pytest.raises(Tf1PruneError, match="progress must be"):
        progress.resolve("yes", "ana")
    term = Terminal()
    bar = progress.resolve(True, "ana", term)
    bar.min_interval = 0
    bar(1, 4, 30.0, "group 3 ratio 0.1")
    bar(4, 4, 100.0, "group 7 ratio 0.9")
    text = term.getvalue()
    assert text.startswith("\r\x1b[Kana 1/4 [") and "25% 0:30 elapsed, ETA 1:30  group 3 ratio 0.1" in text
    assert "100% 1:40 elapsed, ETA 0:00" in text and text.endswith("\n") and text.count("\n") == 1
    assert progress.Bar("x").line(0, 10, 0.0).endswith("ETA ?  ")
    assert "1:01:05 elapsed" in progress.Bar("x").line(1, 2, 3665.0)


def test_steps_report_each_tick():
    calls = []
    steps = progress.Steps(3, lambda *a: calls.append(a), "strip")
    for key in "abc":
        steps.tick(key)
    assert [(c[0], c[1], c[3]) for c in calls] == [(1, 3, "a"), (2, 3, "b"), (3, 3, "c")]




@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--batch", "1,8"], ["--input_specs", "x:0=1,9,9,3"]])
def test_benchmark_shapes_the_graph_refuses_are_one_error_line(fixed_batch_pb, capsys, extra):
    path, _ = fixed_batch_pb
    code = benchmark_cli.main(["tf1prune-benchmark", "--input_graph", path, "--output_node_names", "logits",
                               "--runs", "2", "--warmup", "0"] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
