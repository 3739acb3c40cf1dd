import pytest
import torch

from mssl_core.methods import METHODS, make_method
from mssl_core.methods.base import class_means


def _task(seed: int = 0, ways: int = 3, shots: int = 2, unlabeled_per_class: int = 10):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, 8, generator=generator) * 10
    support_labels = torch.arange(ways).repeat_interleave(shots)
    support = centres[support_labels] + torch.randn(len(support_labels), 8, generator=generator)
    unlabeled_labels = torch.arange(ways).repeat_interleave(unlabeled_per_class)
    unlabeled = centres[unlabeled_labels] + torch.randn(len(unlabeled_labels), 8, generator=generator)
    return centres, support, support_labels, unlabeled, unlabeled_labels


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_probabilities(name):
    _, support, labels, unlabeled, _ = _task()
    proba = make_method(name).fit(support, labels, unlabeled).predict_proba(unlabeled)
    assert proba.shape == (len(unlabeled), 3)
    assert torch.allclose(proba.sum(1), torch.ones(len(unlabeled)), atol=1e-5)
    assert (proba >= 0).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_works_without_unlabeled(name):
    _, support, labels, unlabeled, unlabeled_labels = _task()
    proba = make_method(name).fit(support, labels, None).predict_proba(unlabeled)
    assert (proba.argmax(1) == unlabeled_labels).float().mean() > 0.9


def test_soft_kmeans_without_unlabeled_equals_prototypical():
    _, support, labels, _, _ = _task()
    query = torch.randn(7, 8)
    proto = make_method("protonet").fit(support, labels).predict_proba(query)
    soft = make_method("softkmeans").fit(support, labels, None).predict_proba(query)
    empty = make_method("softkmeans").fit(support, labels, support[:0]).predict_proba(query)
    assert torch.allclose(proto, soft) and torch.allclose(proto, empty)


def test_soft_kmeans_moves_prototypes_towards_cluster_means():
    centres, support, labels, unlabeled, unlabeled_labels = _task(shots=1, unlabeled_per_class=50)
    before = class_means(support, labels)
    after = make_method("softkmeans").fit(support, labels, unlabeled).prototypes
    cluster_means = class_means(unlabeled, unlabeled_labels)
    assert ((after - cluster_means).norm(dim=1) < (before - cluster_means).norm(dim=1)).all()


def test_masked_soft_kmeans_discounts_distractors_more_than_soft_kmeans():
    centres, support, labels, unlabeled, _ = _task(shots=1, unlabeled_per_class=20)
    distractors = torch.randn(60, 8) * 0.5 + centres.mean(0) + 40  # far from every class
    pool = torch.cat([unlabeled, distractors])
    true_means = centres
    soft = make_method("softkmeans").fit(support, labels, pool).prototypes
    masked = make_method("masked-softkmeans").fit(support, labels, pool).prototypes
    assert (masked - true_means).norm(dim=1).mean() < (soft - true_means).norm(dim=1).mean()


def test_meta_trained_methods_are_differentiable():
    _, support, labels, unlabeled, unlabeled_labels = _task()
    support, unlabeled = support * 0.05, unlabeled * 0.05  # unsaturated softmax: non-zero loss
    support.requires_grad_(True)
    for name in ("protonet", "softkmeans", "masked-softkmeans"):
        method = make_method(name).fit(support, labels, unlabeled)
        loss = torch.nn.functional.cross_entropy(method.logits(unlabeled), unlabeled_labels)
        (grad,) = torch.autograd.grad(loss, support)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_method_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        make_method("nope")


def test_label_spreading_gives_unreached_points_a_uniform_distribution():
    support = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    far = torch.tensor([[-1.0, 0.0]])  # after normalisation, no neighbour links it to a label
    method = make_method("label-spreading", neighbours=1).fit(support, torch.tensor([0, 1]))
    proba = method.predict_proba(far)
    assert torch.isfinite(proba).all() and torch.allclose(proba.sum(1), torch.ones(1))
