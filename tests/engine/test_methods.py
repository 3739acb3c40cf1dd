import pytest
import torch
from conftest import gaussian_task
from torch import nn

from mssl_core.engine.methods import METHODS, make_method
from mssl_core.engine.methods.base import class_means


def test_soft_kmeans_without_unlabeled_equals_prototypical():
    _, support, labels, _, _ = gaussian_task()
    query = torch.randn(7, 8)
    proto = make_method("protonet").fit(support, labels).predict_proba(query)
    soft = make_method("softkmeans").fit(support, labels, None).predict_proba(query)
    empty = make_method("softkmeans").fit(support, labels, support[:0]).predict_proba(query)
    assert torch.allclose(proto, soft) and torch.allclose(proto, empty)


def test_soft_kmeans_moves_prototypes_towards_cluster_means():
    centres, support, labels, unlabeled, unlabeled_labels = gaussian_task(shots=1, unlabeled_per_class=50)
    before = class_means(support, labels)
    after = make_method("softkmeans").fit(support, labels, unlabeled).prototypes
    cluster_means = class_means(unlabeled, unlabeled_labels)
    assert ((after - cluster_means).norm(dim=1) < (before - cluster_means).norm(dim=1)).all()


def test_masked_soft_kmeans_discounts_distractors_more_than_soft_kmeans():
    centres, support, labels, unlabeled, _ = gaussian_task(shots=1, unlabeled_per_class=20)
    distractors = torch.randn(60, 8) * 0.5 + centres.mean(0) + 40  # far from every class
    pool = torch.cat([unlabeled, distractors])
    true_means = centres
    soft = make_method("softkmeans").fit(support, labels, pool).prototypes
    masked = make_method("masked-softkmeans").fit(support, labels, pool).prototypes
    assert (masked - true_means).norm(dim=1).mean() < (soft - true_means).norm(dim=1).mean()


def test_meta_trained_methods_are_differentiable():
    _, support, labels, unlabeled, unlabeled_labels = gaussian_task()
    support, unlabeled = support * 0.05, unlabeled * 0.05  # unsaturated softmax: non-zero loss
    support.requires_grad_(True)
    meta_trained = [name for name, cls in METHODS.items() if getattr(cls, "meta_trained", True)]
    assert len(meta_trained) == 8
    for name in meta_trained:
        method = make_method(name, embedding_dim=8).fit(support, labels, unlabeled)
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


def test_matching_prediction_is_attention_weighted_sum_of_support_labels():
    _, support, labels, _, _ = gaussian_task()
    query = torch.randn(5, 8) * 10
    method = make_method("matching", embedding_dim=8).fit(support, labels)
    attention = torch.softmax(method.log_scale.exp() * method.queries(query) @ method.keys(support).T, dim=1)
    expected = attention @ nn.functional.one_hot(labels).float()
    assert torch.allclose(method.predict_proba(query), expected, atol=1e-5)


def test_matching_and_siamese_store_confident_unlabeled_images_with_soft_labels():
    _, support, labels, unlabeled, _ = gaussian_task()
    for name in ("matching", "siamese"):
        method = make_method(name, embedding_dim=8).fit(support, labels, unlabeled)
        extra = method.stored_labels[len(support) :]
        assert len(extra) > 0, name  # well-separated clusters: many confident images
        assert (extra.max(1).values >= method.threshold).all()
        assert torch.allclose(extra.sum(1), torch.ones(len(extra)))


def test_siamese_scores_identical_pairs_highest_and_symmetrically():
    method = make_method("siamese", embedding_dim=8)
    a, b = torch.randn(4, 8), torch.randn(6, 8)
    assert torch.allclose(method.scores(a, b), method.scores(b, a).T)
    assert (method.scores(a, a).argmax(1) == torch.arange(4)).all()


def test_memory_retrieval_returns_the_written_label_for_a_stored_key():
    method = make_method("memory", embedding_dim=8)
    keys = torch.eye(8)[:6] * 3  # six orthogonal memories
    method.fit(keys, torch.tensor([0, 1, 2, 3, 4, 5]))
    assert (method.predict_proba(keys).argmax(1) == torch.arange(6)).all()


def test_memory_merges_examples_of_a_class_and_respects_its_capacity():
    _, support, labels, _, _ = gaussian_task(shots=5)
    merged = make_method("memory", embedding_dim=8).fit(support, labels)
    assert len(merged.stored_keys) < len(support)  # nearest slot of the same class: merged
    tiny = make_method("memory", embedding_dim=8, slots=2)
    tiny.fit(torch.eye(8)[:4], torch.tensor([0, 1, 2, 3]))
    assert len(tiny.stored_keys) == 2
    assert set(tiny.stored_labels.argmax(1).tolist()) == {2, 3}  # the oldest were overwritten


def test_propagation_follows_the_unlabeled_manifold():
    # Two parallel lines of points. The query at the far end of line 0 is nearer to the
    # labeled point of line 1; only propagation through the unlabeled points gets it right.
    line = torch.linspace(0, 10, 41).unsqueeze(1)
    line0 = torch.cat([line, torch.zeros_like(line)], 1)
    line1 = torch.cat([line, torch.full_like(line, 1.5)], 1)
    support = torch.stack([line0[0], line1[-1]])
    query = line0[-1:]
    unlabeled = torch.cat([line0[1:], line1[:-1]])
    graph = make_method("propagation", neighbours=2).fit(support, torch.tensor([0, 1]), unlabeled)
    assert graph.predict_proba(query).argmax(1).item() == 0
    alone = make_method("propagation", neighbours=2).fit(support, torch.tensor([0, 1]), None)
    assert alone.predict_proba(query).argmax(1).item() == 1


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_inner_steps_lower_the_support_loss(first_order):
    # Overlapping classes: the prototype-initialised head is not already perfect.
    support = torch.randn(12, 8, generator=torch.Generator().manual_seed(1)) * 0.3
    labels = torch.arange(3).repeat(4)
    losses = []
    for steps in (0, 1, 5):
        method = make_method("maml", steps=steps, first_order=first_order).fit(support, labels)
        losses.append(nn.functional.cross_entropy(method.logits(support), labels).item())
    assert losses[1] < losses[0] and losses[2] < losses[1]


def test_maml_meta_gradient_is_second_order_unless_asked_otherwise():
    _, support, labels, unlabeled, unlabeled_labels = gaussian_task()
    support, unlabeled = support * 0.05, unlabeled * 0.05
    gradients = {}
    for first_order in (False, True):
        method = make_method("maml", first_order=first_order).train()
        method.fit(support, labels, unlabeled)
        loss = method.meta_loss(unlabeled, unlabeled_labels)
        (gradients[first_order],) = torch.autograd.grad(loss, method.log_step_size)
    # The step size only reaches the loss through the inner updates in both cases, but the
    # second-order gradient also differentiates the inner gradients themselves.
    assert gradients[False] != 0 and gradients[True] != 0
    assert not torch.isclose(gradients[False], gradients[True])


def test_propagation_on_large_batches_iterates_over_knn_lists_with_the_same_answers(monkeypatch):
    from mssl_core.engine.methods import propagation

    _, support, labels, unlabeled, unlabeled_labels = gaussian_task(ways=4, shots=1, unlabeled_per_class=60)
    with torch.no_grad():
        exact = make_method("propagation").fit(support, labels, unlabeled).predict_proba(unlabeled)
        monkeypatch.setattr(propagation, "DENSE_LIMIT", 10)  # force the large-batch path
        monkeypatch.setattr(propagation, "CHUNK", 64)
        listed = make_method("propagation").fit(support, labels, unlabeled).predict_proba(unlabeled)
    # the same graph and fixed point: the same probabilities, not merely the same labels
    assert torch.allclose(listed, exact, atol=1e-5)
    assert (listed.argmax(1) == unlabeled_labels).float().mean() > 0.95


def test_propagation_labels_twenty_thousand_images_without_an_n_by_n_matrix():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator) * 8
    truth = torch.randint(0, 5, (20_000,), generator=generator)
    batch = centres[truth] + torch.randn(20_000, 16, generator=generator)
    support_labels = torch.arange(5)
    support = centres + torch.randn(5, 16, generator=generator)
    with torch.no_grad():
        proba = make_method("propagation").fit(support, support_labels, batch).predict_proba(batch)
    assert proba.shape == (20_000, 5) and (proba.argmax(1) == truth).float().mean() > 0.95


def test_propagation_reuses_the_graph_when_a_correction_moves_an_image_into_the_support_set(monkeypatch):
    from mssl_core.engine import row_sets
    from mssl_core.engine.methods import neighbour_graphs, propagation

    monkeypatch.setattr(row_sets, "SMALLEST", 50)
    monkeypatch.setattr(propagation, "DENSE_LIMIT", 10)  # the large-batch path, where it matters
    _, support, labels, unlabeled, unlabeled_labels = gaussian_task(ways=4, shots=1, unlabeled_per_class=60)
    neighbour_graphs._graphs.clear()
    with torch.no_grad():
        first = make_method("propagation").fit(support, labels, unlabeled)
        assert len(neighbour_graphs._graphs) == 1
        # a person labels unlabeled image 7: it joins the support set, the nodes are the same
        corrected_support = torch.cat([support, unlabeled[7:8]])
        corrected_labels = torch.cat([labels, unlabeled_labels[7:8]])
        rest = torch.cat([unlabeled[:7], unlabeled[8:]])
        computed, nearest = [], propagation.LabelPropagation._nearest
        monkeypatch.setattr(
            propagation.LabelPropagation, "_nearest", lambda *a, **k: computed.append(1) or nearest(*a, **k)
        )
        remembered = make_method("propagation").fit(corrected_support, corrected_labels, rest)
        remembered_proba = remembered.predict_proba(unlabeled)
        assert not computed and remembered.node_lists is not None  # no distances computed again
        neighbour_graphs._graphs.clear()
        fresh_proba = (
            make_method("propagation").fit(corrected_support, corrected_labels, rest).predict_proba(unlabeled)
        )
    assert computed  # the fresh fit did compute them
    assert torch.allclose(remembered_proba, fresh_proba, atol=1e-5)
    assert first.predict_proba(unlabeled).shape == fresh_proba.shape


@pytest.mark.parametrize("columns", [33, 34])  # 32-bit words, and pairs of values as 64-bit words
def test_row_fingerprints_see_bitwise_equality_regardless_of_position(columns):
    from mssl_core.engine.row_sets import FINGERPRINT_CHUNK, row_fingerprints

    rows = torch.randn(2 * FINGERPRINT_CHUNK + 7, columns)  # across chunks
    permutation = torch.randperm(len(rows))
    assert (row_fingerprints(rows)[permutation.numpy()] == row_fingerprints(rows[permutation])).all()
    nudged = rows.clone()
    nudged[5, 7] = torch.nextafter(nudged[5, 7], torch.tensor(10.0))
    assert (row_fingerprints(nudged) != row_fingerprints(rows)).sum() == 1
