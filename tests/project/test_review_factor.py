"""The reviewer's one-by-one decisions check the confidence they were shown (review.review_factor),
and the review step corrects the rest of the batch by them (pseudo_label.adapt_batch)."""

import numpy as np
import pytest

from mssl_core.labeling.adapt import model_for
from mssl_core.project import store
from mssl_core.project.pseudo_label import UNDECIDED, Reviewed, adapt_batch, reviewed_in
from mssl_core.project.review import recalibrated, review_factor
from tests.project.test_pseudo_label import review_task


def shown(confidence: float, right: float, n: int = 300, seed: int = 0):
    """`n` decisions on 3-way predictions shown at `confidence`, the model right on `right` of them."""
    rng = np.random.default_rng(seed)
    predicted = rng.integers(0, 3, n)
    probabilities = np.full((n, 3), (1 - confidence) / 2)
    probabilities[np.arange(n), predicted] = confidence
    wrong = rng.random(n) >= right
    answers = np.where(wrong, (predicted + 1 + rng.integers(0, 2, n)) % 3, predicted)
    return probabilities, answers


def test_decisions_that_find_more_errors_than_promised_lower_the_confidence():
    probabilities, answers = shown(confidence=0.95, right=0.7)
    factor = review_factor(probabilities, answers)
    assert factor > 1
    corrected = recalibrated(probabilities, factor)
    assert np.array_equal(corrected.argmax(1), probabilities.argmax(1))  # the labels stay
    # 300 decisions outweigh the prior: the confidence moves most of the way to what was found
    assert abs(corrected.max(1).mean() - 0.7) < abs(0.95 - 0.7) / 3


def test_decisions_that_find_fewer_errors_than_promised_raise_it_and_none_leave_it():
    probabilities, answers = shown(confidence=0.6, right=0.97)
    factor = review_factor(probabilities, answers)
    assert factor < 1 and recalibrated(probabilities, factor).max(1).mean() > 0.6
    assert review_factor(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    assert recalibrated(probabilities, 1.0) is probabilities


def test_a_few_decisions_move_the_confidence_less_than_many():
    few = review_factor(*shown(confidence=0.95, right=0.7, n=10))
    many = review_factor(*shown(confidence=0.95, right=0.7, n=300))
    assert 1 < few < many


def test_the_review_step_corrects_the_rest_only_where_confidence_was_checked(both_backbones):
    model = model_for("protonet", "imagenet", both_backbones)
    batch, truth, labeled, labeled_labels = review_task(model, seed=0, per_class=20)
    classes = ["a", "b", "c"]
    decided = np.full(len(batch), UNDECIDED)
    plain = adapt_batch(model, classes, labeled, labeled_labels, batch, decided)
    assert plain.confidence_checked and plain.model_probabilities is None and plain.review_factor == 1
    # the reviewer found the first 30 images' shown labels wrong half the time
    rows = np.arange(30)
    answers = np.where(rows % 2 == 0, truth[rows].numpy(), (plain.probabilities[rows].argmax(1) + 1) % 3)
    reviewed = Reviewed(plain.probabilities[rows], answers)
    corrected = adapt_batch(model, classes, labeled, labeled_labels, batch, decided, reviewed=reviewed)
    assert corrected.reviewed == 30 and corrected.review_factor > 1
    assert np.allclose(corrected.before_review, plain.probabilities, atol=1e-6)
    assert corrected.labels == plain.labels
    assert corrected.confidence.sum() < plain.confidence.sum()

    # one labeled image in a class: confidence was not checked, and is not corrected either
    single = adapt_batch(model, classes, labeled[1:], labeled_labels[1:], batch, decided, reviewed=reviewed)
    assert not single.confidence_checked and single.model_probabilities is None


def test_one_by_one_decisions_keep_what_the_model_showed_and_bulk_accepts_do_not_count():
    project = store.open_project("review-factor")
    project.add_image(b"labeled-a", "a.png", "labeled", "cat")
    ids = [project.add_image(f"batch-{i}".encode(), f"{i}.png", "unlabeled")[0].id for i in range(4)]
    cat = {"cat": 0.8, "dog": 0.2}
    project.decide(ids[0], "accept", "cat", model_probabilities=cat)
    project.decide(ids[1], "correct", "dog", model_probabilities={"cat": 0.9, "dog": 0.1})
    project.decide_many({ids[2]: "cat"})
    project.decide(ids[3], "accept", "dog", model_probabilities={"cat": 0.3, "dog": 0.7})
    project.decide(ids[3], "undo")
    assert project.reviewed_one_by_one() == [("cat", cat), ("dog", {"cat": 0.9, "dog": 0.1})]

    project.close()
    reopened = store.open_project("review-factor", create=False)  # saved, not held in memory
    evidence = reviewed_in(reopened, ["cat", "dog"])
    assert evidence.probabilities.tolist() == [[0.8, 0.2], [0.9, 0.1]] and evidence.answers.tolist() == [0, 1]
    # shown while the project had other classes: over other classes, so left out
    assert len(reviewed_in(reopened, ["cat", "dog", "bird"]).answers) == 0


@pytest.mark.parametrize("classes", [2, 5])
def test_reviewed_none_and_plus(classes):
    evidence = Reviewed.none(classes).plus(np.full(classes, 1 / classes), 1)
    assert evidence.probabilities.shape == (1, classes) and evidence.answers.tolist() == [1]
