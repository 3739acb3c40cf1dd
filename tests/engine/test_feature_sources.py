"""Task-centred features (feature_sources.TaskCentred): where the centre of a task sits."""

import torch

from mssl_core.engine import feature_sources, row_sets
from mssl_core.engine.feature_sources import TaskCentred, centre_on, centred_on_leading, class_centre
from mssl_core.engine.methods import make_method


def two_classes(majority: int, minority: int, seed: int = 0):
    """Two tight classes on either side of the origin; 5 labeled images each, a batch of
    `majority` images of class 0 and `minority` of class 1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.zeros(2, 20)
    centres[0, 0], centres[1, 0] = 3.0, -3.0
    labels = torch.arange(2).repeat_interleave(5)
    truth = torch.cat([torch.zeros(majority, dtype=torch.long), torch.ones(minority, dtype=torch.long)])
    support = centres[labels] + 0.5 * torch.randn(len(labels), 20, generator=generator)
    batch = centres[truth] + 0.5 * torch.randn(len(truth), 20, generator=generator)
    return support, labels, batch, truth


def centred(support: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor) -> TaskCentred:
    return TaskCentred(make_method("protonet"), (20,), None, 8, 3.0).fit(support, labels, batch)


def test_a_batch_mostly_of_one_class_keeps_its_images_on_their_side():
    """The mean of such a batch sits on its big class; centred there and normalised, that
    class's images would point every way, many towards the rare one. The middle of the
    classes keeps them apart."""
    support, labels, batch, truth = two_classes(majority=300, minority=6)
    method = centred(support, labels, batch)
    assert torch.allclose(method.mean, class_centre(support, labels))
    assert (method.predict_proba(batch).argmax(1) == truth).float().mean() > 0.97


def test_the_centre_does_not_depend_on_how_the_batch_is_made_up():
    support, labels, batch, _ = two_classes(majority=300, minority=6)
    other_batch = two_classes(majority=10, minority=200, seed=1)[2]
    assert torch.equal(centred(support, labels, batch).mean, centred(support, labels, other_batch).mean)


def test_review_decisions_leave_the_centre_on_the_labeled_images():
    support, labels, batch, truth = two_classes(majority=40, minority=40)
    decided = torch.cat([support, batch[:30]])  # 30 decisions, all of class 0, after the labeled rows
    method = TaskCentred(make_method("protonet"), (20,), None, 8, 3.0)
    centre_on(method, len(support))
    method.fit(decided, torch.cat([labels, truth[:30]]), batch[30:])
    assert torch.allclose(method.mean, class_centre(support, labels))


def test_a_relabeled_image_moves_the_centre_of_a_remembered_task(monkeypatch):
    """The same rows with another label are another task: the memory of centred features must
    not hand back the centre of the old labels."""
    monkeypatch.setattr(row_sets, "SMALLEST", 20)
    feature_sources._centred_tasks.clear()
    support, labels, batch, _ = two_classes(majority=40, minority=40)
    first = centred(support, labels, batch).mean
    relabeled = labels.clone()
    relabeled[0] = 1
    moved = centred(support, relabeled, batch).mean
    assert not torch.allclose(first, moved)
    assert torch.equal(centred(support, labels, batch).mean, first)  # remembered: the same bits


def test_centring_on_the_leading_rows_lasts_the_block_only():
    wrapped = TaskCentred(make_method("protonet"), (4,), None, 8, 1.0)
    centre_on(wrapped, None)
    with centred_on_leading(wrapped, 6):
        assert wrapped.centre_rows == 6
    assert wrapped.centre_rows is None
    centre_on(wrapped, 3)  # in review: already on fewer rows, which stay
    with centred_on_leading(wrapped, 6):
        assert wrapped.centre_rows == 3
    assert wrapped.centre_rows == 3


def test_the_batch_alone_in_another_order_takes_the_features_its_fit_computed(monkeypatch):
    """Self-training predicts the batch without the labeled images, and in another order."""
    generator = torch.Generator().manual_seed(3)
    wrapped = TaskCentred(make_method("protonet"), (4,), None, 8, 1.0)
    support, labels = torch.randn(6, 4, generator=generator), torch.arange(3).repeat(2)
    batch = torch.randn(row_sets.SMALLEST, 4, generator=generator)
    wrapped.fit(support, labels, batch)
    expected = wrapped._mapped(batch)
    computed = []
    original = TaskCentred._mapped
    monkeypatch.setattr(TaskCentred, "_mapped", lambda self, x: computed.append(len(x)) or original(self, x))
    assert torch.allclose(wrapped.transform(batch.flip(0)), expected.flip(0), atol=1e-6)
    assert not computed
    # once only: a kept task holds no copy of its images
    wrapped.transform(batch)
    assert computed == [len(batch)]
