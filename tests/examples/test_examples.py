"""Example models: slim == sparse at several ratios, blocks found, specs and graph files."""
import functools
import json

import pytest

import example_models
import tf1prune
from helpers import check_slim_equals_sparse
from tf1prune.choose import spec as spec_mod

pytestmark = pytest.mark.slow   # the full suite only (the fast tier: -m "not slow")


@functools.lru_cache(maxsize=None)
def frozen(name, learning_phase):
    return example_models.frozen_graph_def(name, seed=1, learning_phase=learning_phase)


@pytest.mark.parametrize("learning_phase", [0, None])
@pytest.mark.parametrize("name", example_models.MODEL_NAMES)
def test_slim_equals_sparse(name, learning_phase):
    gd, specs, outs = frozen(name, learning_phase)
    for ratio in (0.3, 0.7):
        a = check_slim_equals_sparse(gd, specs, outs, ratio=ratio)
    a = check_slim_equals_sparse(gd, specs, outs, sparsity=0.5, channel_divisible=2)
    achieved = 1 - a.macs_after / a.macs_before
    assert abs(achieved - 0.5) <= 0.01, achieved
    prunable = [g for g in a.groups if g.prunable]
    assert len(prunable) == len(a.groups) - 1     # all but the logits layer
    if learning_phase is None:
        assert any(a.view.nodes[n].op == "If" for n in a.view.order)


def test_blocks_of_mobilenet_v2_se():
    gd, specs, outs = frozen("mobilenet_v2_se", 0)
    a = tf1prune.analyze(gd, specs, outs)
    kinds = [b.type for b in a.blocks]
    assert kinds.count("squeeze_excitation") >= 3 and kinds.count("inverted_residual") >= 5
    for b in a.blocks:
        assert a.groups[b.group].prunable
        if b.type == "squeeze_excitation":
            assert a.groups[b.group].nodes == [b.nodes[1]]   # the reduce layer alone


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_gamma"])
def test_spec_round_trip(tmp_path, criterion):
    gd, specs, outs = frozen("resnet", 0)
    a = tf1prune.analyze(gd, specs, outs)
    spec = spec_mod.make_spec(a, sparsity=0.4, criterion=criterion, channel_divisible=4)
    path = str(tmp_path / "s.json")
    spec.save(path)
    loaded = spec_mod.Spec.load(path)
    assert (loaded.mask(a) == spec.mask(a)).all() and loaded == spec
    for g in loaded.groups:
        assert len(g.keep) % 4 == 0 or len(g.keep) == g.channels


def test_importance_keeps_strongest_channels():
    gd, specs, outs = frozen("mnist_convnet", 0)
    a = tf1prune.analyze(gd, specs, outs)
    from tf1prune.choose import criteria
    scores = criteria.unit_scores(a, "l1")
    spec = spec_mod.make_spec(a, ratio=0.5)
    keep = spec.mask(a)
    for g in a.groups:
        if g.prunable:
            kept = scores[g.units][keep[g.units]]
            dropped = scores[g.units][~keep[g.units]]
            assert kept.min() >= dropped.max()


@pytest.mark.parametrize("content,match", [
    ("not json", "not valid JSON"),
    (json.dumps({"format": "other"}), "not a tf1prune spec"),
    (json.dumps({"format": "tf1prune-spec", "graph_digest": "x",
                 "groups": [{"id": 0, "nodes": [], "channels": 4, "keep": [7]}]}), "invalid channel"),
])
def test_bad_spec_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(tf1prune.Tf1PruneError, match=match):
        spec_mod.Spec.load(str(path))


def test_bad_arguments():
    gd, specs, outs = frozen("mnist_convnet", 0)
    a = tf1prune.analyze(gd, specs, outs)
    for kw in ({"sparsity": 1.2}, {"ratio": 0.0}, {}, {"ratio": 0.5, "sparsity": 0.5}):
        with pytest.raises(tf1prune.Tf1PruneError):
            spec_mod.make_spec(a, **kw)
    with pytest.raises(tf1prune.Tf1PruneError, match="not prunable"):
        spec_mod.make_spec(a, ratios={2: 0.5})
    with pytest.raises(tf1prune.Tf1PruneError, match="output node 'nope'"):
        tf1prune.analyze(gd, specs, ["nope"])
    with pytest.raises(tf1prune.Tf1PruneError, match="input 'y:0'"):
        tf1prune.analyze(gd, {"y:0": ((1, 2), "float32")}, outs)


def test_graph_files(tmp_path):
    gd, _, _ = frozen("mnist_convnet", 0)
    for name in ("g.pb", "g.pbtxt"):
        tf1prune.save_graph_def(gd, str(tmp_path / name))
        assert tf1prune.load_graph_def(str(tmp_path / name)) == gd
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(tf1prune.Tf1PruneError, match="not a valid GraphDef"):
        tf1prune.load_graph_def(str(corrupt))
    with pytest.raises(tf1prune.Tf1PruneError, match="cannot read"):
        tf1prune.load_graph_def(str(tmp_path / "missing.pb"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pb", "g.pb", "g.pbtxt"]   # no temp files left


@pytest.mark.parametrize("resource", [True, False])
def test_unfrozen_graph_matches_frozen(resource):
    """Ref and resource variables are parameters like constants: same groups, same digest."""
    import tensorflow.compat.v1 as tf
    from helpers import freeze
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, 8, 8, 3), name="x")
        with tf.variable_scope("m", use_resource=resource):
            y = x
            for i, width in enumerate((6, 8)):
                w = tf.get_variable("w%d" % i, [3, 3, y.shape[-1], width])
                y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(y, w, [1, 1, 1, 1], "SAME"),
                                              tf.get_variable("b%d" % i, [width])))
            y = tf.reduce_mean(y, [1, 2])
        tf.matmul(y, tf.get_variable("m/fc", [8, 4]), name="logits")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            frozen_gd = freeze(sess, ["logits"])
        live_gd = graph.as_graph_def()
    specs = {"x:0": ((1, 8, 8, 3), "float32")}
    live = tf1prune.analyze(live_gd, specs, ["logits"])
    frozen_a = tf1prune.analyze(frozen_gd, specs, ["logits"])
    assert [g.to_dict() for g in live.groups] == [g.to_dict() for g in frozen_a.groups]
    assert live.digest() == frozen_a.digest()
    assert sum(g.prunable for g in live.groups) == 2
    assert set(live.bindings) >= {"m/w0", "m/w1", "m/b0", "m/b1", "m/fc"}
    from tf1prune.core import flops
    assert flops.count(live).params == flops.count(frozen_a).params == 3 * 3 * 3 * 6 + 6 + 3 * 3 * 6 * 8 + 8 + 32


def test_slim_graph_drops_unused_functions():
    """Frozen Keras graphs carry every function of the session; the slim graph keeps the used ones."""
    gd, specs, outs = frozen("mnist_convnet", None)
    a = tf1prune.analyze(gd, specs, outs)
    from tf1prune.apply import slim
    slim_gd = slim.apply_slim(a.plan(spec_mod.make_spec(a, ratio=0.5)))
    used = {n.attr[k].func.name for n in slim_gd.node if n.op == "If" for k in ("then_branch", "else_branch")}
    assert {f.signature.name for f in slim_gd.library.function} == used
    assert len(gd.library.function) > len(used)
