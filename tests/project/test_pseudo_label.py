"""The review step the app and the simulator share (mssl_core.project.pseudo_label.adapt_batch)."""

import numpy as np
import torch

from mssl_core.engine.feature_sources import TaskCentred
from mssl_core.labeling.adapt import adapt, model_for
from mssl_core.project.pseudo_label import UNDECIDED, adapt_batch


def review_task(model, seed: int, per_class: int):
    """A 3-way task near random class centres: batch, its truth, labeled images (2 per class), their labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, model.backbone.embedding_dim, generator=generator)
    truth = torch.arange(3).repeat(per_class)
    batch = centres[truth] + 0.3 * torch.rand(len(truth), centres.shape[1], generator=generator)
    labeled = centres.repeat_interleave(2, 0) + 0.3 * torch.rand(6, centres.shape[1], generator=generator)
    return batch, truth, labeled, torch.arange(3).repeat_interleave(2)


def test_the_review_step_predicts_the_batch_as_adapt_does_without_mapping_it_again(both_backbones, monkeypatch):
    model = model_for("protonet", "imagenet", both_backbones)  # task-centred ImageNet features
    batch, truth, labeled, labeled_labels = review_task(model, seed=0, per_class=20)
    decided_labels = np.full(len(batch), UNDECIDED)
    decided_labels[[3, 17, 40]] = truth[[3, 17, 40]].numpy()
    decided = torch.from_numpy(decided_labels != UNDECIDED)
    support = torch.cat([labeled, batch[decided]])
    labels = torch.cat([labeled_labels, truth[decided]])
    classes = ["a", "b", "c"]

    mapped_rows = []
    original = TaskCentred._mapped
    monkeypatch.setattr(
        TaskCentred, "_mapped", lambda self, rows: mapped_rows.append(len(rows)) or original(self, rows)
    )
    step = adapt_batch(model, classes, labeled, labeled_labels, batch, decided_labels)
    assert len(batch) not in mapped_rows  # the batch is predicted from the features `fit` made

    undecided = batch[~decided]
    plain = adapt(model, classes, support, labels, undecided, batch, labeled_rows=6)
    assert np.allclose(step.probabilities, plain.probabilities, atol=1e-5)
    assert step.labels == plain.labels
    assert np.array_equal(step.embeddings, batch.numpy())


def test_a_decision_reuses_the_task_centred_features_and_predicts_as_a_fresh_fit(both_backbones, monkeypatch):
    from mssl_core.engine import feature_sources, row_sets

    monkeypatch.setattr(row_sets, "SMALLEST", 20)  # the memory is for large batches; these are small
    model = model_for("protonet", "imagenet", both_backbones)
    batch, truth, labeled, labeled_labels = review_task(model, seed=1, per_class=15)
    classes = ["a", "b", "c"]
    feature_sources._centred_tasks.clear()
    adapt_batch(model, classes, labeled, labeled_labels, batch, np.full(len(batch), UNDECIDED))
    decided_labels = np.full(len(batch), UNDECIDED)
    decided_labels[[4, 30]] = truth[[4, 30]].numpy()  # two decisions: the same images, reordered

    mapped_rows = []
    original = TaskCentred._mapped
    monkeypatch.setattr(
        TaskCentred, "_mapped", lambda self, rows: mapped_rows.append(len(rows)) or original(self, rows)
    )
    remembered = adapt_batch(model, classes, labeled, labeled_labels, batch, decided_labels)
    assert len(labeled) + len(batch) not in mapped_rows  # not centred and projected again
    feature_sources._centred_tasks.clear()
    fresh = adapt_batch(model, classes, labeled, labeled_labels, batch, decided_labels)
    assert len(labeled) + len(batch) in mapped_rows
    assert np.array_equal(remembered.probabilities, fresh.probabilities)


def test_predicted_rows_are_recognised_as_the_fitted_ones_by_where_they_sit_or_by_their_values():
    from mssl_core.engine.feature_sources import is_stacked

    rows = torch.rand(10, 4)
    parts = (rows[:3], rows[3:])  # views, as the review step passes them
    assert is_stacked(rows, parts)
    assert is_stacked(rows.clone(), parts)  # equal values elsewhere in memory
    changed = rows.clone()
    changed[7, 2] += 1
    assert not is_stacked(changed, parts)
    assert not is_stacked(rows[:, :3], (rows[:3, :3], rows[4:, :3]))  # a row short
    assert not is_stacked(torch.cat([rows[3:], rows[:3]]), parts)  # the same rows in another order
