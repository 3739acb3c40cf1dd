import numpy as np
import pytest

from mssl_core.project.review import review_order, threshold_summary


def test_the_app_shows_the_least_confident_image_first_and_random_is_a_permutation():
    probabilities = np.array([[0.99, 0.01], [0.55, 0.45], [0.9, 0.1], [0.3, 0.7]])
    assert list(review_order(probabilities)) == [1, 3, 2, 0]
    assert list(review_order(probabilities, "least-confident")) == [1, 3, 2, 0]
    shuffled = review_order(probabilities, "random", np.random.default_rng(3))
    assert sorted(shuffled) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown order"):
        review_order(probabilities, "alphabetical")


def test_threshold_summary_counts_and_expected_precision():
    confidence = np.array([0.99, 0.97, 0.8, 0.5])
    assert threshold_summary(confidence, 0.95) == (2, 0.98)
    assert threshold_summary(confidence, 1.0) == (0, None)


def test_expected_errors_of_the_rest_is_the_sum_of_doubts():
    from mssl_core.project.review import expected_errors

    errors, precision = expected_errors(np.array([0.9, 0.99, 0.6]))
    assert errors == pytest.approx(0.51) and precision == pytest.approx(0.83)
    assert expected_errors(np.array([])) == (0.0, None)


def test_the_likely_most_errors_is_above_the_expected_count_and_grows_with_it():
    from mssl_core.project.review import ERROR_COUNT_RATIO_90, likely_most_errors

    assert ERROR_COUNT_RATIO_90 > 1
    previous = 0
    for expected in (0.0, 0.4, 3.0, 12.5, 42.3, 400.0):
        most = likely_most_errors(expected)
        assert most >= expected and most >= previous
        previous = most
    assert likely_most_errors(12.5) > 13  # a bound, not the expected count rounded
    assert likely_most_errors(400.0, images=420) == 420  # never more errors than images


def test_the_bound_on_accepted_images_holds_where_confidence_is_right():
    """Among images accepted above a threshold, a bound for 9 tasks in 10: with perfectly
    calibrated confidence (each image wrong with probability 1 - confidence) it must hold at least
    that often, from a handful of expected errors to dozens."""
    from mssl_core.project.review import ACCEPTED_ERROR_RATIO_90, ERROR_COUNT_RATIO_90, likely_most_errors

    assert ACCEPTED_ERROR_RATIO_90 >= ERROR_COUNT_RATIO_90  # a few wrong labels vary more than many
    rng = np.random.default_rng(0)
    for low in (0.97, 0.9, 0.8):
        held = []
        for _ in range(400):
            confidence = rng.uniform(low, 1.0, size=150)
            wrong = int((rng.random(150) > confidence).sum())
            held.append(
                wrong <= likely_most_errors(float((1 - confidence).sum()), 150, ACCEPTED_ERROR_RATIO_90)
            )
        assert np.mean(held) >= 0.9, low


def test_the_command_line_summary_states_the_expected_wrong_labels_and_their_likely_most():
    from mssl_core.project.review import ACCEPTED_ERROR_RATIO_90, confidence_summary, likely_most_errors

    confidence = np.array([0.98] * 50 + [0.6] * 10)  # 1 + 4 wrong labels expected
    overall, above = confidence_summary(confidence, checked=True)
    assert overall == (
        "about 5 wrong labels expected among the 60 images (expected precision 91.7%), "
        f"likely no more than {likely_most_errors(float((1 - confidence).sum()), 60)}"
    )
    most = likely_most_errors(float((1 - confidence[:50]).sum()), 50, ACCEPTED_ERROR_RATIO_90)
    assert (
        above == f"at >= 90% confidence: 50 images, expected precision 98.0%, likely no more than {most} wrong"
    )
    assert confidence_summary(confidence, checked=False)[0].startswith("confidence not checked")
    assert confidence_summary(np.array([]), checked=True) == []
