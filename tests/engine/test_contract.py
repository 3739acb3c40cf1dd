"""The contract every registered method obeys (DESIGN.md), checked over the whole registry."""

import pytest
import torch
from conftest import gaussian_task

from mssl_core.engine.contract import Method
from mssl_core.engine.methods import METHODS, make_method
from mssl_core.engine.ssl import SSLOptions, with_ssl


def _task(ways: int = 3, shots: int = 2, unlabeled_per_class: int = 6):
    return gaussian_task(ways, shots, unlabeled_per_class, spread=6)[1:]


def _method(name: str, ssl: bool):
    method = make_method(name, embedding_dim=8)
    if ssl:  # every method also works behind ssl.py's terms
        method = with_ssl(method, SSLOptions(pseudo_label_rounds=1, entropy_weight=0.1, consistency_weight=0.1))
    return method


VARIANTS = [(name, ssl) for name in sorted(METHODS) for ssl in (False, True)]


def _probabilities_are_valid(proba: torch.Tensor, rows: int, columns: int) -> None:
    assert proba.shape == (rows, columns)
    assert torch.isfinite(proba).all() and (proba >= 0).all()
    assert torch.allclose(proba.sum(1), torch.ones(rows), atol=1e-5)


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_fits_a_task_and_returns_probabilities(name, ssl):
    support, labels, unlabeled, unlabeled_labels = _task()
    proba = _method(name, ssl).fit(support, labels, unlabeled).predict_proba(unlabeled)
    _probabilities_are_valid(proba, len(unlabeled), 3)
    assert (proba.argmax(1) == unlabeled_labels).float().mean() > 0.8


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_is_deterministic_under_a_seed(name, ssl):
    support, labels, unlabeled, _ = _task()
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        results.append(_method(name, ssl).fit(support, labels, unlabeled).predict_proba(unlabeled))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_handles_zero_unlabeled_images(name, ssl):
    support, labels, unlabeled, unlabeled_labels = _task()
    for nothing in (None, unlabeled[:0]):
        proba = _method(name, ssl).fit(support, labels, nothing).predict_proba(unlabeled)
        _probabilities_are_valid(proba, len(unlabeled), 3)
        assert (proba.argmax(1) == unlabeled_labels).float().mean() > 0.8


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_handles_a_single_class(name, ssl):
    support, labels, unlabeled, _ = _task(ways=1)
    proba = _method(name, ssl).fit(support, labels, unlabeled).predict_proba(unlabeled)
    _probabilities_are_valid(proba, len(unlabeled), 1)


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_handles_more_classes_than_shots(name, ssl):
    support, labels, unlabeled, unlabeled_labels = _task(ways=12, shots=1, unlabeled_per_class=2)
    proba = _method(name, ssl).fit(support, labels, unlabeled).predict_proba(unlabeled)
    _probabilities_are_valid(proba, len(unlabeled), 12)
    assert (proba.argmax(1) == unlabeled_labels).float().mean() > 0.6


@pytest.mark.parametrize(("name", "ssl"), VARIANTS)
def test_declares_everything_callers_use(name, ssl):
    """The whole contract, declared rather than probed: descriptions for the app, and logits at
    the temperature are the probabilities (baselines: no temperature, logits are log-probabilities)."""
    support, labels, unlabeled, _ = _task()
    method = _method(name, ssl).fit(support, labels, unlabeled)
    assert isinstance(method, Method)
    assert method.name == name and method.family and method.description
    assert method.meta_trained == METHODS[name].meta_trained
    assert method.uses_unlabeled == (ssl or METHODS[name].uses_unlabeled)
    assert all(isinstance(t, torch.Tensor) for t in method.task_parameters())
    temperature = 1.0 if method.temperature is None else method.temperature
    assert (method.temperature is None) == (not METHODS[name].meta_trained)
    proba = method.predict_proba(unlabeled)
    assert torch.allclose(torch.softmax(method.logits(unlabeled) / temperature, dim=1), proba, atol=1e-4)
