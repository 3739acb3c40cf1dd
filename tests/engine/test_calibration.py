import numpy as np
import pytest
import torch
from torch import Tensor

from mssl_core.engine.calibration import (
    DOMAIN_PRIOR_SD,
    HeldOut,
    expected_calibration_error,
    fit_temperature,
    held_out_domain_factor,
    task_shape,
    temperature_for_shape,
)
from mssl_core.engine.methods import make_method


def test_fit_temperature_recovers_the_temperature_that_generated_labels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 5, generator=generator) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, 1), 1, generator=generator).squeeze(1)
    assert abs(fit_temperature(logits, labels) - 2.0) < 0.1


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.2, 1.0, 50000)
    correct = rng.uniform(size=confidence.size) < confidence
    assert expected_calibration_error(confidence, correct) < 0.01
    assert expected_calibration_error(np.full(1000, 0.99), np.arange(1000) < 500) > 0.45


def _overlapping_classes(scale: float = 5.0) -> tuple[Tensor, Tensor]:
    """Overlapping classes at a large scale: raw softmax of squared distances is far too sure."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(6)
    support = (torch.randn(4, 8, generator=generator)[labels] + torch.randn(24, 8, generator=generator)) * scale
    return support, labels


def test_held_out_domain_factor_tempers_an_overconfident_task():
    method = make_method("protonet")
    support, labels = _overlapping_classes()
    assert held_out_domain_factor(method, support, labels, None) > 5
    assert held_out_domain_factor(method, support[:5], torch.tensor([0, 0, 1, 1, 2]), None) is None


def test_the_domain_factor_is_read_against_the_table_of_the_smaller_task():
    support, labels = _overlapping_classes(scale=1.5)
    plain, tabled = make_method("protonet"), make_method("protonet")
    # leave-one-out fits have 5 shots, not 6: a table twice as sharp at 5 shots as at 10
    # means the logits measured are twice as sharp, and the factor about twice as large (the
    # prior on log r holds the larger one back a little)
    tabled.temperatures[2] = 0.5
    factor_plain = held_out_domain_factor(plain, support, labels, None)
    factor_tabled = held_out_domain_factor(tabled, support, labels, None)
    assert factor_plain > 1.5
    assert 1.4 * factor_plain < factor_tabled < 2 * factor_plain


def test_the_prior_keeps_a_few_labeled_images_from_moving_the_temperature_far():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])  # one confident mistake in four
    free = fit_temperature(logits, labels)
    held = fit_temperature(logits, labels, prior_sd=DOMAIN_PRIOR_SD)
    assert 1.0 < held < free


def test_the_temperature_of_a_task_comes_from_its_shape():
    table = torch.tensor([[1.0, 2.0, 4.0], [0.5, 1.0, 2.0], [0.25, 0.5, 1.0], [0.2, 0.4, 0.8]])
    assert temperature_for_shape(table, 5, 10) == pytest.approx(0.5)
    assert temperature_for_shape(table, 1, 20) == pytest.approx(4.0)
    # halfway in log shots between 1 and 2 shots: the geometric mean
    assert temperature_for_shape(table, 2**0.5, 5) == pytest.approx(0.5**0.5)
    # beyond the grid: its edge
    assert temperature_for_shape(table, 50, 2) == pytest.approx(0.2)
    assert temperature_for_shape(table, 10, 100) == pytest.approx(0.8)
    assert task_shape(torch.tensor([0, 0, 1, 1, 1, 2])) == (2.0, 3)


def test_a_method_predicts_at_the_temperature_of_the_task_it_was_fitted_to():
    method = make_method("protonet")
    method.temperatures[:] = torch.tensor([[1.0], [0.5], [0.25], [0.2]])
    support, labels = _overlapping_classes(scale=1.0)
    method.fit(support[::3], labels[::3])  # 2 shots
    assert method.shape == (2.0, 4) and method.temperature == pytest.approx(0.5)
    expected = torch.softmax(method.logits(support) / 0.5, dim=1)
    assert torch.allclose(method.predict_proba(support), expected)
    method.fit(support, labels)  # 6 shots: between 5 and 10
    assert 0.2 < method.temperature < 0.25


def test_fit_temperature_stays_finite_on_perfectly_separable_logits():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]] * 10)
    labels = torch.tensor([0, 1] * 10)
    temperature = fit_temperature(logits, labels)
    assert np.isfinite(temperature) and temperature > 0


def test_a_wrong_label_is_judged_by_a_calibration_fitted_without_it():
    """24 confident, right held-out predictions and one confidently against its label: fitted
    with that row, the temperature softens and the row's given class looks plausible; fitted
    without it (cross-fitted), it does not. The others barely move."""
    labels = torch.arange(5).repeat(5)
    logits = torch.nn.functional.one_hot(labels, 5).float() * 6
    logits[0] = torch.tensor([0.0, 6.0, 0.0, 0.0, 0.0])  # labeled 0, looks like 1
    rows = torch.arange(25).flip(0)  # row r is labeled image 24 - r
    held_out = HeldOut({"a": logits, "b": logits * 0.8}, labels, rows, 0.5)
    _, _, with_itself = held_out.fit()
    cross_fitted = held_out.cross_fitted
    assert cross_fitted[24, 0] < with_itself[0, 0] / 5
    assert torch.allclose(cross_fitted[rows[1:]], with_itself[1:], atol=0.02)
    assert torch.allclose(cross_fitted.sum(1), torch.ones(25))


def test_one_source_is_calibrated_by_its_factor_alone():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 4, generator=generator) * 3, torch.arange(4).repeat(10)
    factors, temperature, probabilities = HeldOut({"": logits}, labels, torch.arange(40), 1.0).fit()
    assert temperature == 1.0 and factors[""] == fit_temperature(logits, labels, prior_sd=1.0)
    assert torch.allclose(probabilities, torch.softmax(logits / factors[""], dim=1))
