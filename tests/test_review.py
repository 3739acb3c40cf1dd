import numpy as np
import pytest

from mssl_core.review import review_order, threshold_summary


def test_least_confident_first_then_disagreement_and_novelty():
    probabilities = np.array([[0.99, 0.01], [0.55, 0.45], [0.9, 0.1], [0.9, 0.1]])
    embeddings = np.array([[0.0, 0], [0, 0], [0, 0], [10, 10]])
    labeled = np.array([[0.0, 0]])
    order = review_order(probabilities, embeddings, labeled)
    assert order[0] == 1 and order[-1] == 0
    assert list(order).index(3) < list(order).index(2)  # far from anything labeled
    flagged = review_order(probabilities, embeddings, labeled, np.array([False, False, True, False]))
    assert list(flagged).index(2) < list(flagged).index(3)


def test_threshold_summary_counts_and_expected_precision():
    confidence = np.array([0.99, 0.97, 0.8, 0.5])
    assert threshold_summary(confidence, 0.95) == (2, 0.98)
    assert threshold_summary(confidence, 1.0) == (0, None)


def test_expected_errors_of_the_rest_is_the_sum_of_doubts():
    from mssl_core.review import expected_errors

    errors, precision = expected_errors(np.array([0.9, 0.99, 0.6]))
    assert errors == pytest.approx(0.51) and precision == pytest.approx(0.83)
    assert expected_errors(np.array([])) == (0.0, None)
