import numpy as np
import torch

from mssl_core.calibration import expected_calibration_error, fit_temperature


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


def test_leave_one_out_temperature_tempers_an_overconfident_task():
    from mssl_core.calibration import leave_one_out_temperature
    from mssl_core.methods import make_method

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(6)
    # overlapping classes at a large scale: raw softmax of squared distances is far too sure
    support = (torch.randn(4, 8, generator=generator)[labels] + torch.randn(24, 8, generator=generator)) * 5
    method = make_method("protonet")
    assert leave_one_out_temperature(method, support, labels, None) > 5
    assert leave_one_out_temperature(method, support[:5], torch.tensor([0, 0, 1, 1, 2]), None) is None


def test_fit_temperature_stays_finite_on_perfectly_separable_logits():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]] * 10)
    labels = torch.tensor([0, 1] * 10)
    temperature = fit_temperature(logits, labels)
    assert np.isfinite(temperature) and temperature > 0
