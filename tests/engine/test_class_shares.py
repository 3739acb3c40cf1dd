"""The batch's class shares, estimated from its own predictions (EM) behind a test."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from mssl_core.engine.class_shares import (
    batch_log_ratios,
    describe_shares,
    equal_shares_p_value,
    estimate_shares,
)


def _posteriors(counts: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Exact class probabilities, as if both classes were equally common, of a batch drawn from
    N(-1, 1) and N(+1, 1) with `counts` images."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-1, 1, counts[0]), rng.normal(1, 1, counts[1])])
    likelihood = np.stack([norm.pdf(x, -1), norm.pdf(x, 1)], axis=1)
    return likelihood / likelihood.sum(1, keepdims=True)


def test_em_recovers_the_shares_of_a_batch_where_one_class_is_rare():
    probabilities = _posteriors((900, 100))
    shares = estimate_shares(probabilities)
    assert np.allclose(shares, [0.9, 0.1], atol=0.04)
    # the naive estimate, the mean probability, is far off: the correction is needed
    assert probabilities.mean(0)[1] > 0.2
    assert equal_shares_p_value(probabilities, shares) < 1e-5
    ratios = batch_log_ratios(probabilities)
    assert ratios is not None and ratios[0] > 0 > ratios[1]
    assert np.allclose(np.exp(ratios).mean(), 1)  # shares over equal shares


def test_a_batch_with_equal_shares_is_left_alone():
    for seed in range(5):
        probabilities = _posteriors((500, 500), seed)
        assert batch_log_ratios(probabilities) is None


def test_an_empty_batch_has_no_shares_to_apply():
    assert batch_log_ratios(np.zeros((0, 3))) is None


def test_the_shares_are_described_most_common_class_first():
    text = describe_shares(["good part", "scratch", "dent"], np.array([0.07, 0.88, 0.05]))
    assert text.startswith("the batch looks unevenly made up: about 88% scratch, 7% good part, 5% dent")
