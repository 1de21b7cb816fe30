"""The visual report: runner.report(dir), tf1prune.write_report, --report of the tools, and the page
rendered in headless Chromium (every image loaded, none broken)."""
import html
import html.parser
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import example_models
import tf1prune
from tf1prune.choose import allocation, criteria, spec as spec_lib
from tf1prune.core import flops
from tf1prune.workflows import sensitivity
from tf1prune.cli import convert as convert_cli
from tf1prune.cli import strip_checkpoint as strip_cli
from tf1prune.workflows.iterative import IterativePruningRunner

RATIOS = (0.25, 0.5, 0.75)
EXCLUDES = ["block4_expand/Conv2D"]
X = np.random.RandomState(0).rand(4, 28, 28, 1).astype(np.float32)
PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("totals", "sensitivity", "groups", "unprunable", "blocks", "layers")


def nonzero_share(frozen_graph_def):
    """A cheap metric that falls as channels are zeroed: the share of non-zero float constants."""
    total = nonzero = 0
    for node in frozen_graph_def.node:
        if "value" in node.attr and node.attr["value"].tensor.dtype == tf.float32.as_datatype_enum:
            value = tf.make_ndarray(node.attr["value"].tensor)
            total, nonzero = total + value.size, nonzero + np.count_nonzero(value)
    return nonzero / float(total)


class Page(html.parser.HTMLParser):
    """Image sources, element ids, scripts and external references of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.images, self.ids, self.tags, self.links = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.ids += [attrs["id"]] if "id" in attrs else []
        self.images += [attrs["src"]] if tag == "img" else []
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v and re.match(r"\w+:|//", v)]


def png_size(path):
    """(width, height) of a PNG file; fails unless it is one that decodes."""
    from matplotlib import image
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert image.imread(path).shape[:2] == (height, width), path
    return width, height


def check_page(directory):
    """The report's page: self-contained, every image a valid PNG of the folder; returns (text, Page)."""
    text = open(os.path.join(directory, "index.html"), encoding="utf-8").read()
    page = Page(text)
    assert "script" not in page.tags and not page.links, (page.tags, page.links)
    assert page.images and all(os.path.dirname(src) == "" for src in page.images)
    for src in page.images:
        width, height = png_size(os.path.join(directory, src))
        assert width >= 600 and height >= 150, (src, width, height)
    assert set(SECTIONS) <= set(page.ids)
    return text, page


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """mobilenet_v2_se (inverted residuals, SE blocks) analysed without and with BN recalibration,
    pruned to 40% fewer MACs, one node excluded; its report written."""
    d = tmp_path_factory.mktemp("report")
    graph = tf.Graph()
    with graph.as_default():
        info = example_models.build("mobilenet_v2_se", learning_phase=0, seed=0)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
        specs = {info.input_name: ((1, 28, 28, 1), "float32")}
        args = ("m", sess, specs, info.output_node_names, EXCLUDES)
        without = IterativePruningRunner(*args, workspace=str(d / "plain")).ana(nonzero_share, ratios=RATIOS,
                                                                                progress=None)
        runner = IterativePruningRunner(*args, workspace=str(d / "ws"))
        runner.ana(nonzero_share, ratios=RATIOS, progress=None, calibration_data=[{info.input_name: X}])
        runner.prune(sparsity=0.4)
        counts = runner.report(str(d / "report"), sensitivity=[without.path, runner.sens], latency_ms=(2.5, 1.25),
                               title="mobilenet <v2> & SE")
    sess.close()
    return dict(dir=str(d / "report"), runner=runner, counts=counts, without=without, tmp=d)


@pytest.mark.slow
def test_runner_report_page(pruned):
    runner, a = pruned["runner"], pruned["runner"].analysis
    before, after = pruned["counts"]
    keep = runner.spec
    assert (before.macs, after.macs) == (flops.count(a).macs, flops.count(a, keep).macs)
    assert runner.report() == pruned["counts"]   # without a folder: the (before, after) reports only
    text, page = check_page(pruned["dir"])
    assert sorted(page.images) == ["layers_1.png", "sensitivity_1.png"]
    assert "<title>mobilenet &lt;v2&gt; &amp; SE</title>" in text
    for g in a.groups:   # every group, by its producers, and each unprunable one with its reasons
        assert html.escape(", ".join(g.nodes)) in text, g.nodes
        if not g.prunable:
            assert html.escape(g.reason) in text.split('id="unprunable"')[1].split('id="blocks"')[0], g.reason
    assert any(EXCLUDES[0] in g.reason for g in a.groups if not g.prunable)
    for label in ("without BN recalibration", "with BN recalibration"):
        assert "<td>%s</td>" % label in text
    assert "inverted residual" in text and "squeeze excitation" in text
    assert len(re.findall(r"<td>(inverted residual|squeeze excitation)</td>", text)) == len(a.blocks) > 0
    totals = text.split('id="totals"')[1].split('id="sensitivity"')[0]
    assert "{:,}".format(before.macs) in totals and "{:,}".format(after.macs) in totals
    assert "latency (ms)" in totals and "2.500" in totals and "-50.0%" in totals
    assert "frozen graph size (bytes)" in totals
    for layer in a.layers:
        assert "<td class=\"name\">%s</td>" % html.escape(layer.node) in text


@pytest.mark.slow
def test_report_defaults_and_refusals(pruned, tmp_path):
    runner = pruned["runner"]
    runner.report(str(tmp_path / "default"), sizes=(1000, 600))   # its own ana only, sizes as given
    text, _ = check_page(str(tmp_path / "default"))
    assert "<td>with BN recalibration</td>" in text and "without BN recalibration" not in text
    assert "file size (bytes)" in text and "frozen graph" not in text
    other = pruned["without"]
    digest, other.store.identity["graph"] = other.digest, "0" * 16
    try:
        with pytest.raises(tf1prune.Tf1PruneError, match="another graph"):
            runner.report(str(tmp_path / "x"), sensitivity=other)
    finally:
        other.store.identity["graph"] = digest
    (tmp_path / "file").write_text("")
    with pytest.raises(tf1prune.Tf1PruneError, match="is a file"):
        tf1prune.write_report(str(tmp_path / "file"), runner.analysis)


def test_write_report_escapes_names_and_needs_matplotlib(tmp_path, monkeypatch):
    """A node name with markup in it (TensorFlow allows '>'); an unpruned graph without sensitivity, then
    a pruned one with a hand-made sensitivity; a clear error without matplotlib."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (1, 8, 8, 3), name="x")
        rng = np.random.RandomState(0)
        h = tf.nn.relu(tf.nn.conv2d(x, tf.constant(rng.rand(3, 3, 3, 8).astype(np.float32)), [1] * 4, "SAME",
                                    name="conv>1"))
        tf.nn.conv2d(h, tf.constant(rng.rand(1, 1, 8, 4).astype(np.float32)), [1] * 4, "SAME", name="out")
    a = tf1prune.analyze(graph.as_graph_def(), None, ["out"])
    path = tf1prune.write_report(str(tmp_path / "r"), a, title="<script>alert(1)</script>")
    text, page = check_page(str(tmp_path / "r"))
    assert path == str(tmp_path / "r" / "index.html") and page.images == ["layers_1.png"]
    assert "conv&gt;1" in text and "conv>1" not in text and "<script" not in text
    assert "No sensitivity analysis" in text
    sens = sensitivity.Sensitivity.open(str(tmp_path / "s.sens"), a.digest(), "weights", ratios=(0.5, 0.75))
    sens.baseline = 1.0
    group = a.group_by_node("conv>1")
    sens.record(group.id, 0.5, 0.8, None)
    sens.record(group.id, 0.75, None, "eval_fn raised ValueError")
    (tmp_path / "r" / "sensitivity_3.png").write_bytes(PNG)   # a figure of an earlier report goes
    tf1prune.write_report(str(tmp_path / "r"), a, tf1prune.make_spec(a, ratio=0.5), sens)
    text, page = check_page(str(tmp_path / "r"))
    assert page.images == ["sensitivity_1.png", "layers_1.png"]
    assert sorted(os.listdir(str(tmp_path / "r"))) == ["index.html", "layers_1.png", "sensitivity_1.png"]
    assert re.search(r"<td>without BN recalibration</td><td class=\"n\">1</td><td>0.5</td>"
                     r"<td class=\"n\">1</td><td class=\"n\">1</td>", text), text
    assert "<td class=\"n\">0.500</td>" in text   # the chosen ratio of the group
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)   # as if matplotlib were not installed
    with pytest.raises(tf1prune.Tf1PruneError, match=re.escape('pip install "tf1prune[report]"')):
        tf1prune.write_report(str(tmp_path / "r2"), a)
    assert not (tmp_path / "r2").exists()


@pytest.fixture(scope="module")
def frozen_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    graph_def, _, outputs = example_models.frozen_graph_def("mnist_convnet")
    tf1prune.save_graph_def(graph_def, str(d / "m.pb"))
    return str(d / "m.pb"), outputs[0]


def test_convert_report(frozen_model, tmp_path, capsys, monkeypatch):
    pb, output = frozen_model

    def convert(slim, report):
        return convert_cli.main(["tf1prune-convert", "--input_graph", pb, "--output_graph", str(tmp_path / slim),
                                 "--output_node_names", output, "--sparsity", "0.5",
                                 "--report", str(tmp_path / report)])
    assert convert("slim.pb", "report") == 0
    out = capsys.readouterr().out
    assert re.search(r"^report: +%s$" % re.escape(str(tmp_path / "report")), out, re.M), out
    text, page = check_page(str(tmp_path / "report"))
    assert page.images == ["layers_1.png"] and "file size (bytes)" in text
    assert "{:,}".format(os.path.getsize(str(tmp_path / "slim.pb"))) in text
    assert "graph output &#x27;%s&#x27;" % output in text   # the output layer's group, unprunable
    assert "Post-training refinement" in text and "not compensated" not in text
    npz = str(tmp_path / "cal.npz")
    np.savez(npz, input_1=np.random.RandomState(0).rand(64, 28, 28, 1).astype(np.float32))
    assert convert_cli.main(["tf1prune-convert", "--input_graph", pb, "--output_graph", str(tmp_path / "c.pb"),
                             "--output_node_names", output, "--sparsity", "0.5", "--calibration_data", npz,
                             "--distill_epochs", "2", "--report", str(tmp_path / "calibrated")]) == 0
    capsys.readouterr()
    text, _ = check_page(str(tmp_path / "calibrated"))
    section = text[text.index("Post-training refinement"):text.index(">Layers<")]
    assert "error before" in section and "conv2d_1/Conv2D" in section and "dense/MatMul" in section, section
    assert "layer by layer on the pruned model" in section, section
    assert re.search(r"[Dd]istillation (trained \d+ parameters, keeping epoch [12] of 2 steps|kept nothing: no epoch "
                     r"of 2 steps)", section), section
    # errors: one line, exit 2, nothing written
    (tmp_path / "afile").write_text("")
    for slim, report, message in (("slim1.pb", "afile", "--report is a file"),
                                  ("slim2.pb", "slim2.pb", "would hold or replace another file"),
                                  ("rep4/index.html", "rep4", "would hold or replace another file")):
        assert convert(slim, report) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
        assert not (tmp_path / slim).exists()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)   # as if matplotlib were not installed
    assert convert("slim3.pb", "r3") == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: the report needs matplotlib: pip install "tf1prune[report]"']
    assert not (tmp_path / "slim3.pb").exists() and not (tmp_path / "r3").exists()


def test_strip_checkpoint_report(tmp_path, capsys):
    graph = tf.Graph()
    with graph.as_default():
        h = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        for name, cout in (("c1", 8), ("c2", 6)):
            kernel = tf.get_variable(name + "/kernel", (3, 3, h.shape[-1], cout))
            h = tf.nn.relu(tf.nn.conv2d(h, kernel, [1] * 4, "SAME", name=name + "/Conv2D"))
        weights = tf.get_variable("logits/kernel", (6, 5))
        tf.nn.bias_add(tf.matmul(tf.reduce_mean(h, [1, 2]), weights), tf.get_variable("logits/bias", (5,)),
                       name="logits/BiasAdd")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            prefix = tf.train.Saver().save(sess, str(tmp_path / "in" / "model.ckpt"))
    model = tf1prune.CheckpointModel(prefix + ".meta", prefix, ["logits/BiasAdd"])
    order = allocation.rank_units(model.analysis, criteria.unit_scores(model.analysis, "l1", model.value))
    counts = {g.id: g.channels // 2 for g in model.analysis.groups if g.prunable}
    spec_lib.spec_from_counts(model.analysis, order, counts).save(str(tmp_path / "half.spec"))
    argv = ["tf1prune-strip-checkpoint", "--input_meta_graph", prefix + ".meta", "--input_checkpoint", prefix,
            "--output_dir", str(tmp_path / "out"), "--spec", str(tmp_path / "half.spec"),
            "--output_node_names", "logits/BiasAdd", "--report", str(tmp_path / "report")]
    assert strip_cli.main(argv) == 0
    assert "report:        %s" % (tmp_path / "report") in capsys.readouterr().out
    text, _ = check_page(str(tmp_path / "report"))
    assert "checkpoint size (bytes)" in text and "meta graph size (bytes)" in text and "c1/Conv2D" in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


CHECK_IMAGES = """<script>
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) { if (!images[i].complete || images[i].naturalWidth === 0) broken++; }
  var p = document.createElement("p");
  p.id = "image-check";
  p.textContent = "images=" + images.length + " broken=" + broken;
  document.body.appendChild(p);
});
</script>
<img src="no-such-image.png" alt="a broken image: proves the check sees one">
"""


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs headless Chromium (Debian: apt-get install chromium)")
def test_page_renders_in_chromium(pruned):
    """A screenshot of the page shows the figures; in a copy of the page, a script counts the images that did
    not load (plus one broken on purpose)."""
    from matplotlib import image
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--user-data-dir=%s" % (pruned["tmp"] / "chrome")]
    url = "file://" + os.path.abspath(os.path.join(pruned["dir"], "index.html"))
    shot = str(pruned["tmp"] / "screenshot.png")
    subprocess.run(base + ["--screenshot=%s" % shot, "--window-size=1280,4000", url], capture_output=True, timeout=120)
    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    assert (pixels < 0.9).any(axis=-1).mean() > 0.05   # far from blank
    blue = np.abs(pixels - np.array([0x1f, 0x77, 0xb4]) / 255.0).max(axis=-1) < 0.05   # curves and MACs bars
    orange = np.abs(pixels - np.array([0xff, 0x7f, 0x0e]) / 255.0).max(axis=-1) < 0.05
    assert blue.sum() > 2000 and orange.sum() > 2000, (blue.sum(), orange.sum())
    check = pruned["tmp"] / "check"
    shutil.copytree(pruned["dir"], str(check))
    page = (check / "index.html").read_text(encoding="utf-8").replace("</body>", CHECK_IMAGES + "</body>")
    (check / "check.html").write_text(page, encoding="utf-8")
    dom = subprocess.run(base + ["--dump-dom", "file://" + str(check / "check.html")], capture_output=True,
                         text=True, timeout=120).stdout
    found = re.search(r'<p id="image-check">images=(\d+) broken=(\d+)</p>', dom)
    assert found, dom[-2000:]
    assert (int(found.group(1)), int(found.group(2))) == (len(Page(page).images), 1)
