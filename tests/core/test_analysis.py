"""Fast tier: the graph view, the rule registry, plans, flops, the MACs solver, importance, the public
API and process state, on tiny graphs."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from helpers import check_slim_equals_sparse, run_graph
from graphs import SPECS, H, analyse, build, conv, group_of, head
from tf1prune.choose import allocation, costs, criteria
from tf1prune.core.choice import Choice
from tf1prune.core import flops, rules, zeros
from tf1prune.apply import slim
from tf1prune.core.graph import GraphView
from tf1prune.core.rules import Layer, Role

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def chain(x):
    head(conv(tf.nn.relu(conv(x, 8, "c1", 3)), 6, "c2", 3))


@pytest.fixture(scope="module")
def chain_gd():
    return build(chain)


# --- graph view -----------------------------------------------------------------------------
def test_view_shapes_follow_the_input_specs(chain_gd):
    view = GraphView(chain_gd, {"x:0": ((4, H, H, 3), "float32")}, ["logits"])
    assert view.shape("c1:0") == [4, H, H, 8] and view.shape("logits:0") == [4, 5]
    assert GraphView(chain_gd, None, ["logits"]).shape("c1:0")[0] == 1     # batch 1 by default
    assert view.read_source(view.data_inputs("c1")[1]) == "c1_w"
    assert view.const_value("c1_w:0").shape == (3, 3, 3, 8)
    with pytest.raises(tf1prune.Tf1PruneError, match="not in the graph"):
        GraphView(chain_gd, None, ["nope"])
    with pytest.raises(tf1prune.Tf1PruneError, match="not in the graph"):
        GraphView(chain_gd, {"y:0": (1, 2)}, ["logits"])


def test_view_folds_computed_permutations_and_reads_if_branch_shapes():
    def fn(x):
        y = tf.nn.relu(conv(x, 6, "c1", 3))
        perm = tf.concat([tf.constant([0, 3]), tf.constant([1, 2])], 0)
        y = tf.transpose(tf.transpose(y, perm, name="to_nchw"), [0, 2, 3, 1])
        flag = tf.placeholder_with_default(False, [], name="flag")
        y = tf.cond(flag, lambda: y * 2.0, lambda: y + 1.0)
        head(conv(y, 5, "c2"))
    gd = build(fn)
    view = GraphView(gd, SPECS, ["logits"])
    assert list(view.const_value(view.data_inputs("to_nchw")[1])) == [0, 3, 1, 2]
    cond = next(n for n in view.order if view.nodes[n].op in ("If", "StatelessIf"))
    assert view.shape(cond + ":0") == [1, H, H, 6]
    assert group_of(check_slim_equals_sparse(gd, SPECS, ["logits"]), "c1").prunable


# --- the rule registry ----------------------------------------------------------------------
def test_registering_one_rule_supports_a_new_op():
    def fn(x):
        head(conv(tf.atan(tf.nn.relu(conv(x, 6, "c1", 3))), 5, "c2"))
    gd = build(fn)
    assert not rules.known("Atan")
    g = group_of(analyse(gd), "c1")
    assert not g.prunable and "unsupported op Atan" in g.reason
    try:
        rules.register("Atan", rules.passthrough, rules.PASS)
        assert group_of(check_slim_equals_sparse(gd, SPECS, ["logits"]), "c1").prunable
    finally:
        del rules.base.REGISTRY["Atan"]


def _string_constants(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_op_type_names_outside_the_rules():
    """Op facts live in tf1prune/core/rules only: no other module spells an op type."""
    op_types = {n for n in dir(tf.raw_ops) if not n.startswith("_")} | set(rules.base.REGISTRY) \
        | set(rules.base.PREFIXES)
    found = []
    package = os.path.join(ROOT, "tf1prune")
    for folder, _, files in os.walk(package):
        if os.path.relpath(folder, package).split(os.sep)[:2] == ["core", "rules"]:
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found += [(os.path.relpath(path, ROOT), line, s) for line, s in _string_constants(path)
                          if s in op_types]
    assert not found, found


def test_every_registered_rule_is_consistent():
    for op_type, rule in list(rules.base.REGISTRY.items()) + list(rules.base.PREFIXES.items()):
        assert callable(rule.forward), op_type
        assert rule.param is None or isinstance(rule.param, rules.Param), op_type
        assert rule.shape_inputs == rules.ALL or all(isinstance(i, int) for i in rule.shape_inputs), op_type
        if rule.layer is not None:
            assert rules.is_layer(op_type) and rule.layer.positions in ("input", "output"), op_type
        if rule.call is not None:
            assert rule.call.branches and rule.call.first_arg in (0, 1), op_type
    assert rules.lookup("ResourceApplyAdam") is rules.lookup("ApplyGradientDescent")   # a prefix rule
    assert rules.is_write("ResourceApplyAdam") and rules.is_optimizer_update("ApplyMomentum")
    assert not rules.known("NoSuchOp") and rules.lookup("NoSuchOp").forward is rules.opaque


# --- plans ------------------------------------------------------------------------------------
def test_plan_slices_zeroes_and_masks_consistently(chain_gd):
    a = analyse(chain_gd)
    spec = tf1prune.make_spec(a, ratio=0.5)
    plan = a.plan(spec)
    value = tf.make_ndarray(a.view.nodes["c1_w"].attr["value"].tensor)
    kept = plan.params["c1_w"][-1].kept
    assert plan.params["c1_w"][-1].role is Role.FILTER and kept.sum() == 4
    np.testing.assert_array_equal(plan.slice("c1_w", value), value[..., kept])
    zeroed = plan.zero("c1_w", value)
    assert not zeroed[..., ~kept].any() and np.array_equal(zeroed[..., kept], value[..., kept])
    np.testing.assert_array_equal(plan.mask("c1_w", value.shape), (zeroed != 0) | (value == 0))
    assert plan.shape("c2_w", [3, 3, 8, 6]) == [3, 3, 4, 3]
    assert set(plan.changed()) >= {"c1_w", "c1_b", "c2_w", "c2_b", "fc_w"}
    assert not a.plan().pruned and plan.pruned
    assert (a.plan(Choice.from_mask(a, plan.keep)).keep == plan.keep).all()
    np.testing.assert_array_equal(plan.unslice("c1_w", plan.slice("c1_w", value), value.shape), zeroed)
    with pytest.raises(tf1prune.Tf1PruneError, match="Choice"):
        a.plan(plan.keep)   # a plan is made of a typed choice, not a mask
    with pytest.raises(tf1prune.Tf1PruneError, match="bool array"):
        Choice.from_mask(a, np.ones(3))


# --- flops and the MACs solver ------------------------------------------------------------------
def test_macs_and_params_of_a_tiny_graph(chain_gd):
    a = analyse(chain_gd)
    report = tf1prune.count_macs(a)
    c1, c2, fc = (H * H * 9 * 3 * 8), (H * H * 9 * 8 * 6), 6 * 5
    assert [l.macs for l in report.layers] == [c1, c2, fc] and report.macs == c1 + c2 + fc
    assert report.params == 9 * 3 * 8 + 8 + 9 * 8 * 6 + 6 + 6 * 5 + 5 and report.complete
    after = tf1prune.count_macs(a, tf1prune.make_spec(a, ratio=0.5))
    assert after.macs == H * H * 9 * 3 * 4 + H * H * 9 * 4 * 3 + 3 * 5
    assert [l.params for l in after.layers] == [9 * 3 * 4, 9 * 4 * 3, 3 * 5]


def test_alternative_branches_count_their_costliest():
    def layer(node, macs, path=()):
        return Layer(node, "conv", None, 1, macs, [], path)
    layers = [layer("a", 10), layer("t", 7, (("if", 0),)), layer("e", 3, (("if", 1),)), layer("e2", 5, (("if", 1),)),
              layer("n", 100, (("if", 0), ("inner", 0))), layer("m", 1, (("if", 0), ("inner", 1)))]
    assert flops.total(layers, [l.factor for l in layers]) == 10 + max(7 + 100, 3 + 5)


def test_macs_model_matches_the_count_and_the_solver_meets_targets():
    def fn(x):
        y = tf.nn.relu(conv(x, 8, "c1", 3))
        y = tf.nn.relu(conv(y, 16, "c2", 3) + conv(x, 16, "skip", 1))
        head(conv(y, 12, "c3", 3))
    a = analyse(build(fn))
    order = allocation.rank_units(a, criteria.unit_scores(a))
    model = costs.make("macs", a, order)
    params = costs.make("params", a, order)
    rng = np.random.RandomState(0)
    for _ in range(5):
        counts = {gid: int(rng.randint(order.minimum[gid], len(r) + 1)) for gid, r in order.items()}
        choice = Choice.from_counts(a, order, counts)
        assert choice.counts(a) == counts
        report = tf1prune.count_macs(a, choice)
        assert model(counts) == report.macs and params(counts) == report.params
    before = tf1prune.count_macs(a).macs
    for target in (0.3, 0.5, 0.7):
        spec = tf1prune.make_spec(a, sparsity=target)
        achieved = 1 - tf1prune.count_macs(a, spec).macs / before
        assert abs(achieved - target) < 0.03, (target, achieved)


# --- importance ------------------------------------------------------------------------------------
def test_importance_ranks_by_normalised_norms(chain_gd):
    a = analyse(chain_gd)
    norms = criteria.channel_norms(np.array([[1.0, -3.0], [1.0, 1.0]]), 1)
    np.testing.assert_allclose(norms, [2 / 3.0, 4 / 3.0])
    values = criteria.const_values(a)
    scaled = {"c1_w": values("c1_w") * np.arange(1, 9)}   # channel 7 strongest on the producer side
    scores = criteria.unit_scores(a, "l1", lambda n: scaled.get(n, values(n)))
    units = np.array(group_of(a, "c1").units)
    assert int(np.argmax(scores[units])) != 0 and criteria.unit_scores(a).shape == (a.num_units,)
    zero = {"c1_w": values("c1_w") * (np.arange(8) != 2), "c2_w": values("c2_w") * (np.arange(8) != 2)[:, None]}
    dead = zeros.zeroed_units(a, lambda n: zero.get(n, values(n)))
    assert dead.sum() == 1 and dead[units[2]]
    with pytest.raises(tf1prune.Tf1PruneError, match="unknown criterion"):
        criteria.unit_scores(a, "l3")


# --- the public API ----------------------------------------------------------------------------------
def _docstring_blocks(text):
    """The indented code blocks that follow a line ending in '::'."""
    blocks, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith("    "):
                    break
                block.append(nxt[4:])
            blocks.append("\n".join(block).strip("\n"))
    return blocks


def test_package_docstring_example_runs():
    code = _docstring_blocks(tf1prune.__doc__)[0]
    namespace = {"graph_def": build(chain, shape=(1, 28, 28, 1))}
    exec(compile(code, "tf1prune.__doc__", "exec"), namespace)
    a, spec = namespace["a"], namespace["spec"]
    slim_macs = tf1prune.count_macs(tf1prune.analyze(namespace["slim_gd"], namespace["specs"], ["logits"])).macs
    assert slim_macs == tf1prune.count_macs(a, spec).macs
    assert abs(1 - slim_macs / tf1prune.count_macs(a).macs - 0.5) <= 0.005


def test_pure_graph_functions(chain_gd, tmp_path):
    slim_gd = tf1prune.slim_graph_def(chain_gd, 0.5, SPECS, ["logits"])
    sparse_gd = tf1prune.sparse_graph_def(chain_gd, ratio=0.5, input_specs=SPECS, output_node_names=["logits"])
    feeds = {"x:0": np.random.RandomState(0).rand(2, H, H, 3).astype(np.float32)}
    np.testing.assert_allclose(run_graph(slim_gd, feeds, ["logits:0"])[0], run_graph(sparse_gd, feeds, ["logits:0"])[0],
                               rtol=1e-5, atol=1e-5)
    a = analyse(chain_gd)
    path = str(tmp_path / "m.spec")
    tf1prune.make_spec(a, sparsity=0.5).save(path)
    by_file = tf1prune.slim_graph_def(chain_gd, path, SPECS, ["logits"])
    by_target = tf1prune.slim_graph_def(chain_gd, sparsity=0.5, input_specs=SPECS, output_node_names=["logits"])
    assert by_file == by_target
    with pytest.raises(tf1prune.Tf1PruneError, match="not several"):
        tf1prune.slim_graph_def(chain_gd, path, SPECS, ["logits"], ratio=0.5)
    assert slim.apply_slim(a.plan(tf1prune.Spec.load(path))) == by_file


def test_public_names_resolve_and_are_documented():
    for name in tf1prune.__all__:
        obj = getattr(tf1prune, name)
        assert not name.startswith("_") and (obj.__doc__ or "").strip(), name
    for name in ("slim_graph_def", "sparse_graph_def", "analyze", "make_spec", "count_macs"):
        assert "Example" in getattr(tf1prune, name).__doc__, name
    assert "Example" in rules.register.__doc__ or "Example" in rules.__doc__


def test_importing_tf1prune_changes_no_process_state():
    code = ("import os, sys\n"
            "env, fd2 = dict(os.environ), os.fstat(2)\n"
            "import tf1prune, tf1prune.cli, tf1prune.cli.analyze, tf1prune.cli.convert, "
            "tf1prune.cli.strip_checkpoint, tf1prune.core.rules, tf1prune.choose.criteria\n"
            "assert 'tensorflow' not in sys.modules, 'a tool module loaded TensorFlow'\n"
            "import tf1prune.core.analysis, tf1prune.workflows.iterative, tf1prune.apply.checkpoint, tf1prune.workflows.sfp, tf1prune.apply.masks\n"
            "after = os.fstat(2)\n"
            "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
            "assert (after.st_ino, after.st_dev) == (fd2.st_ino, fd2.st_dev)\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_runner_state_exists_after_init():
    from tf1prune.workflows.iterative import IterativePruningRunner
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, (None, H, H, 3), name="x")
        chain(x)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            import tempfile
            runner = IterativePruningRunner("tiny", sess, SPECS, ["logits"], workspace=tempfile.mkdtemp())
            assert runner.sens is None and runner.mask_set is None and runner.spec is None
            with pytest.raises(tf1prune.Tf1PruneError, match="call prune"):
                runner.mask_hook()
            with pytest.raises(tf1prune.Tf1PruneError, match="call prune"):
                runner.apply_masks_op  # noqa: B018
            shape_tensors, masks = runner.prune(sparsity=0.5, strategy="uniform")
            assert runner.mask_hook() is not None and masks and runner.frozen_graph_def().node


def test_mask_bookkeeping_is_per_graph():
    from tf1prune.apply import masks as masks_lib
    sets = []
    for _ in range(2):
        graph = tf.Graph()
        with graph.as_default():
            v = tf.Variable(tf.ones([2, 3]), name="w")
            sets.append(masks_lib.MaskSet(graph, {"w": v}))
    assert sets[0].masked_ops and sets[0].masked_ops is not sets[1].masked_ops
    assert sets[0].apply_op.name in sets[0].masked_ops and sets[0].apply_op.graph is not sets[1].apply_op.graph


def test_sensitivity_allocation_weighs_drops_against_macs_and_stays_near_uniform():
    def fn(x):
        y = tf.nn.relu(conv(x, 64, "c1", 3))
        y = tf.nn.relu(conv(y, 64, "c2", 3))
        y = tf.nn.relu(conv(y, 64, "c3", 3))
        head(conv(y, 64, "c4", 3))
    a = analyse(build(fn))
    order = allocation.rank_units(a, criteria.unit_scores(a))
    gids = sorted(order)
    flat = [(r, 0.0) for r in (0.2, 0.4, 0.6, 0.8)]
    steep = [(r, r * 2) for r in (0.2, 0.4, 0.6, 0.8)]
    curves = {gids[0]: steep, gids[1]: flat, gids[2]: flat, gids[3]: [(0.2, 0.1), (0.4, float("inf"))]}
    before = tf1prune.count_macs(a).macs
    uniform = allocation.solve_sparsity(a, order, 0.5)
    for shift in (0.0, 0.1, 0.2):
        counts = allocation.sensitivity_allocation(a, order, curves, 0.5, max_shift=shift)
        achieved = 1 - tf1prune.count_macs(a, Choice.from_counts(a, order, counts)).macs / before
        assert abs(achieved - 0.5) <= 0.005, (shift, achieved)
        ratios = {g: 1 - counts[g] / 64 for g in gids}
        u = {g: 1 - uniform[g] / 64 for g in gids}
        assert all(abs(ratios[g] - u[g]) <= shift + 1 / 64 + 1e-9 for g in gids), (shift, ratios, u)
        if shift == 0:
            assert counts == uniform
        else:   # the steep and the failing groups are pruned less than the flat ones
            assert ratios[gids[0]] < ratios[gids[1]] and ratios[gids[3]] < ratios[gids[2]], ratios
