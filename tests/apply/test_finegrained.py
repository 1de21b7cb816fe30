"""Fine-grained sparsity: schedules and masks with TFMOT's and tf.contrib.model_pruning's semantics."""
import numpy as np
import pytest

import tf1prune
from tf1prune.apply.finegrained import magnitude_mask, satisfied_n_m
from tf1prune.workflows.schedules import ConstantSparsity, PolynomialDecay

BLOCK_WEIGHTS = np.array([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]])
SPIKY_WEIGHTS = np.array([[0.1, 0.0, 0.2, 0.0], [0.0, -0.1, 0.0, -0.2], [0.3, 0.0, 0.4, 0.0], [0.0, -0.3, 0.0, -0.4]])
EXPECTED_BLOCK_MASK = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_linearly_spaced_weights_at_half_keep_exactly_fifty():
    mask = magnitude_mask(np.linspace(1.0, 100.0, 100), 0.5)
    assert mask.sum() == 50 and mask[50:].all() and not mask[:50].any()
    assert magnitude_mask(np.linspace(1.0, 100.0, 100), 0.999).sum() == 1    # at least one


@pytest.mark.parametrize("pooling,weights", [("AVG", BLOCK_WEIGHTS), ("MAX", SPIKY_WEIGHTS)])
@pytest.mark.parametrize("rank3", [False, True])
def test_block_masks(pooling, weights, rank3):
    w = np.stack([weights, weights]) if rank3 else weights
    mask = magnitude_mask(w, 0.5, block_size=(2, 2), block_pooling=pooling)
    expected = np.stack([EXPECTED_BLOCK_MASK] * 2) if rank3 else EXPECTED_BLOCK_MASK
    np.testing.assert_array_equal(mask, expected)


def test_m_by_n_along_the_input_channels():
    rng = np.random.RandomState(0)
    kernel = rng.randn(3, 3, 8, 5)
    mask = magnitude_mask(kernel, None, m_by_n=(2, 4), in_axis=2)
    groups = np.moveaxis(mask, 2, -1).reshape(3, 3, 5, 2, 4)
    assert (groups.sum(-1) == 2).all()
    kept = np.moveaxis(np.abs(kernel), 2, -1).reshape(3, 3, 5, 2, 4)
    dropped = np.where(groups == 0, kept, -1).max(-1)
    assert (dropped <= np.where(groups == 1, kept, np.inf).min(-1)).all()   # the 2 largest of each 4 stay
    assert satisfied_n_m(kernel * mask, in_axis=2) == [(2, 4), (4, 8)]
    dense = magnitude_mask(rng.randn(12, 3), None, m_by_n=(1, 4), in_axis=0)
    assert (dense.reshape(3, 4, 3).sum(1) == 1).all()


def test_schedules_follow_tfmot():
    constant = ConstantSparsity(0.5, begin_step=10, end_step=40, frequency=10)
    assert [constant(s) for s in (5, 10, 15, 20, 40, 50)] == [(False, 0.5), (True, 0.5), (False, 0.5), (True, 0.5),
                                                             (True, 0.5), (False, 0.5)]
    assert ConstantSparsity(0.3, 0, frequency=1)(10 ** 6) == (True, 0.3)      # end_step -1: forever
    poly = PolynomialDecay(0.1, 0.9, begin_step=0, end_step=100, power=3, frequency=25)
    assert poly(0) == (True, pytest.approx(0.1)) and poly(100)[1] == pytest.approx(0.9)
    assert poly(50)[1] == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3) and poly(200)[1] == pytest.approx(0.9)
    assert poly.with_target(0.5)(100)[1] == pytest.approx(0.5)


@pytest.mark.parametrize("make,message", [
    (lambda: ConstantSparsity(1.0, 0), "target_sparsity must be in"),
    (lambda: ConstantSparsity(-0.1, 0), "target_sparsity must be in"),
    (lambda: ConstantSparsity(0.5, 10, end_step=5), "must not be before begin_step"),
    (lambda: PolynomialDecay(0.0, 0.5, 10, 5), "must not be before begin_step"),
    (lambda: PolynomialDecay(0.0, 0.5, 0, -1), "needs an end_step"),
    (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency must be"),
    (lambda: magnitude_mask(np.ones(4), 1.5), "sparsity must be in"),
    (lambda: magnitude_mask(np.ones((4, 4)), 0.5, m_by_n=(4, 4)), "0 < N < M"),
    (lambda: magnitude_mask(np.ones((6, 4)), 0.5, m_by_n=(2, 4), in_axis=0), "multiple of 4"),
    (lambda: magnitude_mask(np.ones((3, 3, 2, 2)), 0.5, block_size=(4, 1)), "larger than"),
    (lambda: magnitude_mask(np.ones((4, 4)), 0.5, block_size=(2, 2), block_pooling="MIN"), "AVG or MAX"),
])
def test_bad_input_is_refused(make, message):
    with pytest.raises(tf1prune.Tf1PruneError, match=message):
        make()
