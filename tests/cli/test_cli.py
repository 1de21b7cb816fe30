"""tf1prune-analyze / tf1prune-convert, run as subprocesses (and in-process for most error cases)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from tf1prune.core import flops
from tf1prune.cli import analyze as analyze_cli
from tf1prune.cli import convert as convert_cli
from tf1prune.files import load_graph_def, save_graph_def
from tf1prune.choose.spec import make_spec

pytestmark = pytest.mark.slow   # the full suite only (the fast tier: -m "not slow")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = {"mnist_convnet": "dense/BiasAdd", "mobilenet_v2_se": "logits/BiasAdd"}
# TensorFlow 2.21 writes these C++ INFO lines while tf1prune imports it, before any log level applies.
TF_STARTUP_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                              r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
                              r"|To enable the following instructions:)")
from helpers import kl_divergence, run_graph


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Frozen example graphs (.pb, plus mnist_convnet as .pbtxt) and a spec made for mnist_convnet."""
    d = tmp_path_factory.mktemp("models")
    paths = {}
    for name in OUT:
        graph_def, specs, outputs = example_models.frozen_graph_def(name)
        assert outputs == [OUT[name]] and specs == {"input_1:0": ((1, 28, 28, 1), "float32")}
        paths[name] = str(d / (name + ".pb"))
        save_graph_def(graph_def, paths[name])
        if name == "mnist_convnet":
            paths["pbtxt"] = str(d / "mnist_convnet.pbtxt")
            save_graph_def(graph_def, paths["pbtxt"])
            paths["mnist_spec"] = str(d / "mnist_spec.json")
            make_spec(tf1prune.analyze(graph_def, specs, outputs), ratio=0.5).save(paths["mnist_spec"])
    (d / "corrupt.pb").write_bytes(b"\x08\x96\x01 this is not a GraphDef \xff\xfe")
    paths["corrupt"] = str(d / "corrupt.pb")
    (d / "bad.json").write_text("{not json")
    paths["bad_json"] = str(d / "bad.json")
    (d / "not_a_spec.json").write_text(json.dumps({"format": "other", "groups": []}))
    paths["not_a_spec"] = str(d / "not_a_spec.json")
    paths["dir"] = str(d)
    return paths


def clean_stderr(text):
    return [l for l in text.splitlines() if l.strip() and not TF_STARTUP_NOISE.match(l)]


def run_tool(tool, *args):
    """Run ``python -m tf1prune.cli.<tool> args`` from the repo root."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the tools must quiet TensorFlow themselves
    proc = subprocess.run([sys.executable, "-m", "tf1prune.cli." + tool] + list(args), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, clean_stderr(proc.stderr)


def ok(tool, *args):
    code, out, err = run_tool(tool, *args)
    assert code == 0 and not err, (code, out, err)
    return out


def measured_macs(path, name):
    a = tf1prune.analyze(load_graph_def(path), None, [OUT[name]])
    return flops.count(a).macs


def outputs_of(graph_def, x, output):
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph_def, name="")
        with tf.Session(graph=g) as sess:
            return sess.run(output + ":0", {"input_1:0": x})


# --- analyze -----------------------------------------------------------------
def test_analyze_text(models):
    out = ok("analyze", "--input_graph", models["mnist_convnet"], "--output_node_names", OUT["mnist_convnet"])
    assert "groups: 3 (2 prunable)" in out
    assert re.search(r"^ +2 +10 no +dense/MatMul$", out, re.M)
    assert "reason: graph output 'dense/BiasAdd'" in out
    assert "blocks: 0" in out
    assert re.search(r"^conv2d_1/Conv2D +conv +557568 +4608$", out, re.M)
    assert re.search(r"^total +662912 +12874$", out, re.M)


def test_analyze_json(models):
    out = ok("analyze", "--input_graph", models["mobilenet_v2_se"], "--output_node_names=logits/BiasAdd", "--json")
    doc = json.loads(out)  # exactly one JSON document
    assert doc["macs"] > 0 and doc["params"] > 0
    for g in doc["groups"]:
        assert {"nodes", "channels", "prunable", "reason"} <= set(g)
        assert isinstance(g["channels"], int) and g["nodes"] and (g["prunable"] == (g["reason"] == ""))
    [dense] = [g for g in doc["groups"] if "logits/MatMul" in g["nodes"]]
    assert not dense["prunable"] and "graph output 'logits/BiasAdd'" in dense["reason"]
    assert {b["type"] for b in doc["blocks"]} == {"inverted_residual", "squeeze_excitation"}
    assert all(b["nodes"] for b in doc["blocks"])


# --- convert -----------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(models):
    """mobilenet_v2_se at --sparsity 0.5 with --sparse_graph and --output_spec."""
    d = os.path.join(models["dir"], "sparsity")
    paths = {k: os.path.join(d, f) for k, f in (("slim", "slim.pb"), ("sparse", "sparse.pb"), ("spec", "s.json"))}
    out = ok("convert", "--input_graph", models["mobilenet_v2_se"], "--output_graph", paths["slim"],
             "--output_node_names", OUT["mobilenet_v2_se"], "--sparsity", "0.5",
             "--sparse_graph", paths["sparse"], "--output_spec", paths["spec"])
    return paths, out


def test_convert_sparsity(models, converted):
    paths, out = converted
    printed = float(re.search(r"^MACs reduction: ([\d.]+)%$", out, re.M).group(1))
    assert abs(printed - 50) <= 1
    before, after = (int(x) for x in re.search(r"^MACs: +(\d+) -> (\d+)$", out, re.M).groups())
    assert before == measured_macs(models["mobilenet_v2_se"], "mobilenet_v2_se")
    assert after == measured_macs(paths["slim"], "mobilenet_v2_se")
    assert abs(100.0 * (1 - after / before) - printed) < 0.01
    assert all(os.path.exists(p) for p in paths.values())


def test_slim_equals_sparse(converted):
    paths, _ = converted
    x = np.random.RandomState(0).standard_normal((3, 28, 28, 1)).astype(np.float32)
    slim = outputs_of(load_graph_def(paths["slim"]), x, OUT["mobilenet_v2_se"])
    sparse = outputs_of(load_graph_def(paths["sparse"]), x, OUT["mobilenet_v2_se"])
    assert slim.shape == (3, 10)
    np.testing.assert_allclose(slim, sparse, atol=1e-4, rtol=1e-4)


def test_convert_spec_round_trip(models, converted):
    paths, out = converted
    again = os.path.join(models["dir"], "sparsity", "again.pb")
    out2 = ok("convert", "--input_graph", models["mobilenet_v2_se"], "--output_graph", again,
              "--output_node_names", OUT["mobilenet_v2_se"], "--spec", paths["spec"])
    assert load_graph_def(again) == load_graph_def(paths["slim"])
    assert out2.splitlines()[-3:] == out.splitlines()[-3:]


def test_convert_ratio_pbtxt(models):
    """Text input, text output, --ratio with --channel_divisible."""
    slim = os.path.join(models["dir"], "ratio", "slim.pbtxt")
    out = ok("convert", "--input_graph", models["pbtxt"], "--output_graph", slim, "--output_node_names",
             OUT["mnist_convnet"], "--ratio", "0.5", "--channel_divisible", "4", "--criterion", "l2",
             "--input_specs", "input_1:0=2,28,28,1")
    with open(slim) as f:
        assert f.read().startswith("node {")
    a = tf1prune.analyze(load_graph_def(slim), None, [OUT["mnist_convnet"]])
    assert [g.channels for g in a.groups] == [8, 16, 10]
    assert "pruned groups: 2 of 2 prunable; channels 48 -> 24" in out
    printed = float(re.search(r"^MACs reduction: ([\d.]+)%$", out, re.M).group(1))
    assert 40 < printed < 80


# --- bad input -----------------------------------------------------------------
def bad_cases(m):
    """(tool, argv) pairs that must fail; ``m`` maps fixture names to paths, 'out' is the output."""
    mb, out = m["mobilenet_v2_se"], m["out"]
    conv = ["--input_graph", mb, "--output_graph", out, "--output_node_names", OUT["mobilenet_v2_se"]]
    return {
        "missing_graph": ("convert", ["--input_graph", m["dir"] + "/nope.pb", "--output_graph", out,
                                      "--output_node_names", "x", "--ratio", "0.5"]),
        "corrupt_graph": ("convert", ["--input_graph", m["corrupt"], "--output_graph", out,
                                      "--output_node_names", "x", "--ratio", "0.5"]),
        "unknown_output": ("convert", conv[:-1] + ["nope", "--ratio", "0.5"]),
        "unknown_exclude": ("convert", conv + ["--ratio", "0.5", "--excludes", "stem_conv/Conv2D,nope"]),
        "spec_other_graph": ("convert", conv + ["--spec", m["mnist_spec"]]),
        "spec_bad_json": ("convert", conv + ["--spec", m["bad_json"]]),
        "spec_malformed": ("convert", conv + ["--spec", m["not_a_spec"]]),
        "missing_spec": ("convert", conv + ["--spec", m["dir"] + "/nope.json"]),
        "sparsity_1": ("convert", conv + ["--sparsity", "1"]),
        "sparsity_neg": ("convert", conv + ["--sparsity=-0.1"]),
        "ratio_0": ("convert", conv + ["--ratio", "0"]),
        "sparsity_nan": ("convert", conv + ["--sparsity", "abc"]),
        "no_target": ("convert", conv),
        "two_targets": ("convert", conv + ["--sparsity", "0.5", "--ratio", "0.5"]),
        "target_and_spec": ("convert", conv + ["--ratio", "0.5", "--spec", m["mnist_spec"]]),
        "missing_output_graph": ("convert", conv[:2] + conv[4:] + ["--ratio", "0.5"]),
        "missing_output_names": ("convert", conv[:4] + ["--ratio", "0.5"]),
        "output_is_input": ("convert", ["--input_graph", mb, "--output_graph", mb, "--output_node_names",
                                        OUT["mobilenet_v2_se"], "--ratio", "0.5"]),
        "sparse_is_input": ("convert", conv + ["--ratio", "0.5", "--sparse_graph", mb]),
        "output_spec_is_spec": ("convert", conv + ["--spec", m["mnist_spec"], "--output_spec", m["mnist_spec"]]),
        "bad_input_specs": ("convert", conv + ["--ratio", "0.5", "--input_specs", "input_1:0=1,x"]),
        "unknown_flag": ("convert", conv + ["--ratio", "0.5", "--bogus"]),
        "stray_argument": ("convert", conv + ["--ratio", "0.5", "extra"]),
        "bad_criterion": ("convert", conv + ["--ratio", "0.5", "--criterion", "l7"]),
        "criterion_without_data": ("convert", conv + ["--ratio", "0.5", "--criterion", "reconstruction"]),
        "analyze_missing_names": ("analyze", ["--input_graph", mb]),
        "analyze_corrupt": ("analyze", ["--input_graph", m["corrupt"], "--output_node_names", "x"]),
    }


@pytest.fixture
def bad_env(models, tmp_path):
    """Paths for a bad-input case, and a check that nothing was written and no input changed."""
    m = dict(models, out=str(tmp_path / "out.pb"))
    inputs = [p for k, p in models.items() if k != "dir"]
    before = {p: open(p, "rb").read() for p in inputs}
    yield m
    assert not os.path.exists(m["out"])
    assert sorted(os.listdir(tmp_path)) == []
    assert {p: open(p, "rb").read() for p in inputs} == before


def check_error(code, err):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("case", ["corrupt_graph", "missing_output_graph", "unknown_flag"])
def test_bad_input_subprocess(bad_env, case):
    tool, argv = bad_cases(bad_env)[case]
    code, out, err = run_tool(tool, *argv)
    check_error(code, err)
    assert out == ""


@pytest.mark.parametrize("case", sorted(bad_cases({k: "" for k in ("mobilenet_v2_se", "out", "dir", "corrupt",
                                                                   "mnist_spec", "bad_json", "not_a_spec")})))
def test_bad_input_in_process(bad_env, case, capsys):
    tool, argv = bad_cases(bad_env)[case]
    main = {"analyze": analyze_cli.main, "convert": convert_cli.main}[tool]
    code = main(["tf1prune-" + tool] + argv)
    captured = capsys.readouterr()
    check_error(code, captured.err.splitlines())
    assert captured.out == ""


def test_error_messages(models, tmp_path, capsys):
    """A few messages name the problem."""
    out = str(tmp_path / "o.pb")
    base = ["tf1prune-convert", "--input_graph", models["mobilenet_v2_se"], "--output_graph", out,
            "--output_node_names", OUT["mobilenet_v2_se"]]
    expected = [([], "give exactly one of --sparsity, --ratio, --latency_target or --spec (got none)"),
                (["--sparsity", "1.5"], "--sparsity must be in (0, 1), got 1.5"),
                (["--spec", models["mnist_spec"]], "spec was made for another graph"),
                (["--ratio", "0.5", "--excludes", "nope"], "excluded node 'nope' is not in the graph")]
    for extra, message in expected:
        assert convert_cli.main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert convert_cli.main(base[:3] + ["--output_graph", models["mobilenet_v2_se"]] + base[5:] + ["--ratio=.5"]) == 2
    assert "--output_graph is the same file as --input_graph" in capsys.readouterr().err
    assert analyze_cli.main(["tf1prune-analyze", "--output_node_names", "x"]) == 2
    assert capsys.readouterr().err == "error: --input_graph is required\n"


# --- calibration data: the written graph is the scored one; bad data is one error line ----------------
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


def test_convert_search_writes_the_recalibrated_graph_it_scored(mnist_pb, tmp_path, capsys):
    path, npz, x, out = mnist_pb
    slim, sparse, spec = (str(tmp_path / n) for n in ("slim.pb", "sparse.pb", "spec.json"))
    argv = ["tf1prune-convert", "--input_graph", path, "--output_graph", slim, "--output_node_names", out,
            "--sparsity", "0.3", "--search", "3", "--calibration_data", npz, "--calibration_batch", "32",
            "--sparse_graph", sparse, "--output_spec", spec, "--channel_divisible", "1"]
    assert convert_cli.main(argv + ["--no_reconstruct"]) == 0
    original = load_graph_def(path)
    specs = {"input_1:0": ((1, 28, 28, 1), "float32")}
    plain_sparse = tf1prune.sparse_graph_def(original, tf1prune.Spec.load(spec), specs, [out], data_free="none")
    batches = [{"input_1:0": x[i:i + 32]} for i in range(0, 96, 32)]
    scored = tf1prune.recalibrate_batch_norm(plain_sparse, batches, None, [out])
    probe = np.random.RandomState(4).rand(5, 28, 28, 1).astype(np.float32)
    want = run_graph(scored, {"input_1:0": probe}, [out + ":0"])[0]
    for written in (slim, sparse):   # --no_reconstruct: exactly what the search scored
        got = run_graph(load_graph_def(written), {"input_1:0": probe}, [out + ":0"])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert convert_cli.main(argv) == 0   # by default the scored candidate is also reconstructed
    printed = capsys.readouterr().out
    assert re.search(r"reconstruction: \d+ layers refitted on the calibration data", printed), printed
    reference = run_graph(original, {"input_1:0": x}, [out + ":0"])[0]
    errors = [np.mean((run_graph(g, {"input_1:0": x}, [out + ":0"])[0] - reference) ** 2)
              for g in (scored, load_graph_def(slim), load_graph_def(sparse))]
    assert errors[1] == pytest.approx(errors[2], rel=1e-3) and errors[1] < errors[0], errors


def test_convert_chooses_channels_by_the_reconstruction_criterion(mnist_pb, tmp_path, capsys):
    path, npz, x, out = mnist_pb
    slim, sparse, spec = (str(tmp_path / n) for n in ("slim.pb", "sparse.pb", "spec.json"))
    assert convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_graph", slim, "--output_node_names",
                             out, "--sparsity", "0.3", "--calibration_data", npz, "--criterion", "reconstruction",
                             "--sparse_graph", sparse, "--output_spec", spec]) == 0
    assert tf1prune.Spec.load(spec).criterion == "reconstruction"
    slim_out, sparse_out = (run_graph(load_graph_def(p), {"input_1:0": x}, [out + ":0"])[0] for p in (slim, sparse))
    np.testing.assert_allclose(slim_out, sparse_out, rtol=1e-4, atol=1e-4)


def test_convert_distills_the_slim_graph_towards_the_original(mnist_pb, tmp_path, capsys):
    """``--distill_epochs`` trains the refined graph on the calibration inputs: the slim graph moves
    closer to the original's outputs than without it and still equals the sparse graph."""
    path, _, x, out = mnist_pb
    x, npz = x[:16], str(tmp_path / "few.npz")   # under 20 inputs: epochs scored on the training inputs
    np.savez(npz, input_1=x)
    path = str(tmp_path / "calibrated.pb")   # BatchNorm statistics of the inputs: outputs that depend on them
    save_graph_def(tf1prune.recalibrate_batch_norm(load_graph_def(mnist_pb[0]), [{"input_1:0": x}], None, [out]), path)
    base = ["tf1prune-convert", "--input_graph", path, "--output_node_names", out, "--sparsity", "0.5",
            "--calibration_data", npz]
    reference = run_graph(load_graph_def(path), {"input_1:0": x}, [out + ":0"])[0]
    errors = {}
    for epochs in ("0", "8"):
        slim_pb, sparse_pb = str(tmp_path / ("slim%s.pb" % epochs)), str(tmp_path / ("sparse%s.pb" % epochs))
        assert convert_cli.main(base + ["--output_graph", slim_pb, "--sparse_graph", sparse_pb, "--distill_epochs",
                                        epochs] + (["--distill_lr", "1e-5", "--distill_features", "0"] if epochs != "0" else [])) == 0
        printed = capsys.readouterr().out
        match = re.search(r"distillation: \d+ parameters trained in 8 steps .*loss to the original outputs on the "
                          r"training inputs \(under 20: none held out\) ([0-9.e-]+) -> ([0-9.e-]+) \(epoch \d kept\)",
                          printed)
        assert (match is not None) == (epochs != "0"), printed
        if match:
            assert float(match.group(2)) < float(match.group(1))
        got, sparse = (run_graph(load_graph_def(p), {"input_1:0": x}, [out + ":0"])[0] for p in (slim_pb, sparse_pb))
        np.testing.assert_allclose(got, sparse, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(sparse).max())))
        errors[epochs] = kl_divergence(reference, got)
    assert errors["8"] < errors["0"], errors
    assert convert_cli.main(base + ["--output_graph", str(tmp_path / "o.pb"), "--distill_epochs", "1",
                                    "--distill_lr", "10"]) == 0   # far too high: nothing kept, and said so
    assert "no epoch of 1 steps" in capsys.readouterr().out


def test_convert_allocates_by_label_free_sensitivity_or_importance(mnist_pb, tmp_path, capsys):
    """``--allocation sensitivity`` scores each group pruned alone on the calibration inputs and moves
    the ratios away from uniform, still at the MACs target; ``importance`` needs no data."""
    path, npz, x, out = mnist_pb
    specs = {"input_1:0": ((1, 28, 28, 1), "float32")}
    analysis = tf1prune.analyze(load_graph_def(path), specs, [out])
    base = ["tf1prune-convert", "--input_graph", path, "--output_graph", str(tmp_path / "slim.pb"),
            "--output_node_names", out, "--sparsity", "0.4", "--channel_divisible", "1"]
    counts = {}
    for allocation, extra in (("uniform", []), ("sensitivity", ["--calibration_data", npz, "--no_reconstruct"]),
                              ("importance", [])):
        spec = str(tmp_path / (allocation + ".json"))
        assert convert_cli.main(base + ["--allocation", allocation, "--output_spec", spec] + extra) == 0
        printed = capsys.readouterr().out
        assert ("sensitivity: 7 groups x 9 ratios scored by kl agreement" in printed) == (allocation == "sensitivity")
        loaded = tf1prune.Spec.load(spec)
        removed = 1 - tf1prune.count_macs(analysis, loaded).macs / tf1prune.count_macs(analysis).macs
        assert abs(removed - 0.4) <= 0.005, (allocation, removed)
        counts[allocation] = loaded.counts(analysis)
    assert counts["sensitivity"] != counts["uniform"]
    for bad, message in ((["--allocation", "sensitivity"], "--allocation sensitivity needs --calibration_data or --data_free synthesize"),
                         (["--allocation", "importance", "--search", "2", "--calibration_data", npz],
                          "--allocation applies to --sparsity and --latency_target (not --search)")):
        assert convert_cli.main(base + bad) == 2
        assert message in capsys.readouterr().err


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


@pytest.mark.parametrize("extra,message", [
    (["--m_by_n", "2:4", "--block", "1x4"], "--block"),
    (["--weight_sparsity", "0.5", "--block_pooling", "MAX"], "--block_pooling"),
    (["--ratio", "0.5", "--search_metric", "top1"], "--search_metric"),
    (["--ratio", "0.5", "--calibration_batch", "8"], "--calibration_batch"),
    (["--ratio", "0.5", "--calibration_data", "cal.npz", "--data_free", "none"], "--data_free"),
    (["--ratio", "0.5", "--no_reconstruct"], "--no_reconstruct"),
    (["--ratio", "0.5", "--distill_epochs", "2"], "--distill_epochs needs --calibration_data"),
    (["--ratio", "0.5", "--calibration_data", "cal.npz", "--distill_lr", "0.01"], "--distill_lr"),
    (["--ratio", "0.5", "--calibration_data", "cal.npz", "--distill_features", "1"], "--distill_features applies"),
    (["--ratio", "0.5", "--calibration_data", "cal.npz", "--distill_epochs", "2", "--distill_lr", "0"],
     "--distill_lr must be > 0"),
    (["--m_by_n", "2:4", "--calibration_data", "cal.npz", "--distill_epochs", "2"], "--distill_epochs applies to"),
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


@pytest.mark.parametrize("name,mode,printed", [
    ("mobilenet_v2_se", "compensate", r"bias compensation: \d+ parameters shifted \(BatchNorm moments, no data\)"),
    ("mnist_convnet", "synthesize", r"synthetic inputs: 256 made from the BatchNorm statistics in \d+ s\n(.|\n)*"
                                    r"sensitivity: \d+ groups x 9 ratios(.|\n)*"
                                    r"reconstruction: \d+ layers refitted on synthetic inputs"),
    ("mnist_convnet", "none", None),
])
def test_convert_without_data_refines_as_told(models, tmp_path, capsys, name, mode, printed):
    """With --data_free synthesize the synthesized inputs serve every data-driven step: here the
    activation criterion, the label-free sensitivity allocation and the reconstruction."""
    path, out = models[name], OUT[name]
    slim_pb, sparse_pb = str(tmp_path / "slim.pb"), str(tmp_path / "sparse.pb")
    data_driven = ["--sparsity", "0.4", "--allocation", "sensitivity", "--criterion", "activation"]
    code = convert_cli.main(["tf1prune-convert", "--input_graph", path, "--output_node_names", out, "--output_graph",
                             slim_pb, "--sparse_graph", sparse_pb, "--data_free", mode]
                            + (data_driven if mode == "synthesize" else ["--ratio", "0.5"]))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    if printed:
        assert re.search(printed, captured.out), captured.out
    else:
        assert "compensation" not in captured.out and "reconstruction" not in captured.out, captured.out
    x = np.random.RandomState(1).rand(4, 28, 28, 1).astype(np.float32)
    slim_out, sparse_out = (outputs_of(load_graph_def(p), x, out) for p in (slim_pb, sparse_pb))
    np.testing.assert_allclose(slim_out, sparse_out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(OUT))
def test_convert_tflite_hands_off_a_matching_model(models, tmp_path, name):
    out, lite = str(tmp_path / "slim.pb"), str(tmp_path / "slim.tflite")
    text = ok("convert", "--input_graph", models[name], "--output_graph", out, "--output_node_names", OUT[name],
              "--sparsity", "0.5", "--channel_divisible", "1", "--tflite", lite)
    assert re.search(r"tflite: +%s \(\d+ bytes\)" % re.escape(lite), text), text
    diff = float(re.search(r"TFLite vs TensorFlow on random inputs: max \|difference\| (\S+)", text).group(1))
    assert diff < 1e-3, text
    interpreter = tf.lite.Interpreter(model_path=lite)
    interpreter.allocate_tensors()
    x = np.random.RandomState(5).rand(1, 28, 28, 1).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, outputs_of(load_graph_def(out), x, OUT[name]), rtol=1e-3, atol=1e-3)


def test_convert_tflite_names_the_op_it_cannot_take_and_keeps_the_pb(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        y = tf.nn.conv2d(x, tf.constant(np.ones((3, 3, 3, 4), np.float32)), [1, 1, 1, 1], "SAME", name="c1")
        y = tf.nn.conv2d(tf.nn.relu(y), tf.constant(np.ones((1, 1, 4, 4), np.float32)), [1, 1, 1, 1], "SAME")
        tf.reduce_mean(tf.math.bessel_i0e(y, name="odd"), [1, 2], name="logits")
    src, out, lite = (str(tmp_path / f) for f in ("m.pb", "slim.pb", "m.tflite"))
    save_graph_def(graph.as_graph_def(), src)
    code, text, err = run_tool("convert", "--input_graph", src, "--output_graph", out, "--output_node_names",
                               "logits", "--input_specs", "x:0=1,8,8,3", "--ratio", "0.5", "--tflite", lite)
    assert code == 2 and len(err) == 1, (code, text, err)
    assert err[0].startswith("error: TFLite cannot convert the graph: op BesselI0e") and "odd/BesselI0e" in err[0], err
    assert "MACs reduction" in text and os.path.exists(out) and not os.path.exists(lite)
    code, _, err = run_tool("convert", "--input_graph", src, "--output_graph", out, "--output_node_names", "logits",
                            "--ratio", "0.5", "--tflite_select_ops")
    assert code == 2 and err == ["error: --tflite_select_ops applies to --tflite"], err
