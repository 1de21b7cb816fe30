"""The typed choice, specs with typed groups, and the criterion and cost-model registries."""
import json
import warnings

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from graphs import analyse, build, conv, head
from tf1prune.choose import allocation, costs, criteria
from tf1prune.choose.spec import SpecGroup
from tf1prune.core.choice import Choice
from tf1prune.errors import Tf1PruneError


@pytest.fixture(scope="module")
def analysis():
    def fn(x):
        y = tf.nn.relu(conv(x, 8, "c1", 3))
        y = tf.nn.relu(conv(y, 16, "c2", 3) + conv(x, 16, "skip", 1))
        head(conv(y, 12, "c3", 3))
    return analyse(build(fn))


def test_a_choice_is_kept_channels_per_group_for_one_graph(analysis):
    ranking = allocation.rank_units(analysis, criteria.unit_scores(analysis))
    counts = {gid: len(r) // 2 for gid, r in ranking.items()}
    choice = Choice.from_counts(analysis, ranking, counts)
    assert choice.counts(analysis) == counts and choice.pruned
    assert Choice.from_mask(analysis, choice.mask(analysis)) == choice
    assert Choice.everything(analysis).mask(analysis).all() and not Choice.everything(analysis).pruned
    spec = tf1prune.Spec.of(analysis, choice, "l1", 1)
    assert spec == choice and isinstance(spec, Choice)
    assert all(isinstance(g, SpecGroup) for g in spec.groups)
    loaded = tf1prune.Spec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert loaded == choice and loaded.groups == spec.groups
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert spec.groups[0]["keep"] == spec.groups[0].keep   # tf1prune 0.1's dict access, deprecated
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    other = analyse(build(lambda x: head(conv(x, 6, "c1", 3))))
    with pytest.raises(Tf1PruneError, match="another graph"):
        other.plan(choice)
    gid = next(iter(choice.kept))
    for bad, message in (({gid: [999]}, "invalid channel"), ({99: [0]}, "names group 99"),
                         ({gid: []}, "without channels")):
        with pytest.raises(Tf1PruneError, match=message):
            Choice(analysis.digest(), bad).mask(analysis)
    fixed = next(g for g in analysis.groups if not g.prunable)
    with pytest.raises(Tf1PruneError, match="not prunable"):
        Choice(analysis.digest(), {fixed.id: [0]}).mask(analysis)


def test_a_new_criterion_is_one_registration_and_may_read_activations(analysis, tmp_path):
    class MeanActivation(criteria.Criterion):
        """Scores a unit by the mean |activation| of the first tensor carrying it (a data-driven criterion)."""
        needs_data = True

        def scores(self, inputs):
            a = inputs.analysis
            out = np.zeros(a.num_units)
            for g in a.groups:
                tensor = g.nodes[0] + ":0"
                info = a.tensor_info(tensor)
                values = inputs.activations([tensor])[tensor]
                mean = np.abs(np.moveaxis(values, info.axis, -1)).reshape(-1, values.shape[info.axis]).mean(0)
                out[a.unit_of[info.elems]] = mean
            return out

    criteria.register("test_mean_activation", MeanActivation())
    try:
        assert "test_mean_activation" in criteria.names()
        with pytest.raises(Tf1PruneError, match="calibration data"):
            tf1prune.make_spec(analysis, ratio=0.5, criterion="test_mean_activation")
        batches = [{"x:0": np.random.RandomState(0).rand(4, 8, 8, 3).astype(np.float32)}]
        spec = tf1prune.make_spec(analysis, ratio=0.5, criterion="test_mean_activation", calibration=batches)
        assert spec.criterion == "test_mean_activation" and spec.pruned
        scores = criteria.unit_scores(analysis, "test_mean_activation", calibration=batches)
        for g in spec.groups:   # the kept channels are the most active ones
            units = np.array(analysis.groups[g.id].units)
            kept = np.zeros(len(units), bool)
            kept[g.keep] = True
            if (~kept).any():
                assert scores[units[kept]].min() >= scores[units[~kept]].max() - 1e-9
    finally:
        del criteria.REGISTRY["test_mean_activation"]
    with pytest.raises(Tf1PruneError, match="unknown criterion 'nope'"):
        tf1prune.make_spec(analysis, ratio=0.5, criterion="nope")
    with pytest.raises(Tf1PruneError, match="Criterion instance"):
        criteria.register("bad", lambda inputs: None)


def test_cost_models_are_a_registry_and_budgets_ask_them_by_name(analysis):
    ranking = allocation.rank_units(analysis, criteria.unit_scores(analysis))
    full = {g.id: g.channels for g in analysis.groups if g.prunable}
    assert costs.make("macs", analysis, ranking).total == tf1prune.count_macs(analysis).macs
    assert costs.make("params", analysis, ranking).total == tf1prune.count_macs(analysis).params
    assert costs.make("params", analysis, ranking)(full) == tf1prune.count_macs(analysis).params
    spec = tf1prune.make_spec(analysis, sparsity=0.4, cost="params", best_effort=True)
    before, after = tf1prune.count_macs(analysis), tf1prune.count_macs(analysis, spec)
    assert abs(1 - after.params / before.params - 0.4) <= 0.03
    with pytest.raises(Tf1PruneError, match="unknown cost model"):
        tf1prune.make_spec(analysis, sparsity=0.4, cost="joules")

    class Layers(costs.CostModel):   # a cost model: the number of conv layers that keep over half their channels
        unit = "wide layers"

        def __call__(self, counts):
            return sum(counts.get(g, c) > c // 2 for g, c in full.items())
    costs.register("test_wide", Layers)
    try:
        assert costs.make("test_wide", analysis, ranking).total == len(full)
    finally:
        del costs.REGISTRY["test_wide"]
    with pytest.raises(Tf1PruneError, match="CostModel subclass"):
        costs.register("bad", object)


def test_the_importance_allocation_prunes_where_little_importance_is_lost_for_much_cost():
    """Data-free allocation: a group whose criterion importance sits in a few channels loses little by
    losing the rest, so it is pruned more than uniform; the target holds, within ``max_shift``."""
    def fn(x):
        y = tf.nn.relu(conv(x, 32, "c1", 3))
        y = tf.nn.relu(conv(y, 64, "c2", 3) + conv(x, 64, "skip", 1))
        head(conv(y, 48, "c3", 3))
    analysis = analyse(build(fn))
    scores = criteria.unit_scores(analysis).astype(float)
    groups = [g for g in analysis.groups if g.prunable]
    concentrated = max(groups, key=lambda g: g.channels)
    scores[concentrated.units] = 1e-3
    scores[concentrated.units[:2]] = 10.0            # two channels hold this group's importance
    order = allocation.rank_units(analysis, scores)
    curves = allocation.importance_curves(order)
    for gid, curve in curves.items():
        drops = [d for _, d in curve]
        assert drops == sorted(drops) and 0.0 <= drops[0] and drops[-1] <= 1.0
    assert curves[concentrated.id][-2][1] < 0.01     # 90% removed: under 1% of its importance
    uniform = allocation.solve_sparsity(analysis, order, 0.4)
    counts = allocation.importance_allocation(analysis, order, 0.4)
    assert counts[concentrated.id] < uniform[concentrated.id]
    macs = costs.make("macs", analysis, order)
    assert abs(1 - macs(counts) / macs.total - 0.4) <= allocation.TOLERANCE
    for g in groups:
        assert abs(counts[g.id] - uniform[g.id]) / g.channels <= 0.1 + 1.0 / g.channels
    spec = tf1prune.make_spec(analysis, sparsity=0.4, values=None, allocation="importance")
    assert abs(1 - tf1prune.count_macs(analysis, spec).macs / tf1prune.count_macs(analysis).macs - 0.4) <= 0.005
    with pytest.raises(Tf1PruneError, match="allocation must be one of uniform, importance"):
        tf1prune.make_spec(analysis, sparsity=0.4, allocation="greedy")
