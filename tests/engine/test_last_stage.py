"""Tuning MobileNetV2's last stage to the task at labeling time (last_stage.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mssl_core.engine import last_stage
from mssl_core.engine.last_stage import BLOCK17, LastStageTuning, matched_temperature

FINAL, HEAD = slice(576, 1856), slice(1856, 1864)


def _tuning(seed: int = 0) -> LastStageTuning:
    """A last block of MobileNetV2's shape (random weights) and an 8-d head."""
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()).eval()
    return LastStageTuning(block.requires_grad_(False), nn.Linear(1280, 8).requires_grad_(False), FINAL, HEAD)


def _rows(tuning: LastStageTuning, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Joint rows whose pooled block-17 features hold the class (with much noise), and whose
    final stage and head slices are what the frozen block and head make of them."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(labels.max()) + 1, 320, generator=torch.Generator().manual_seed(99))
    rows = torch.randn(len(labels), 1864, generator=generator)
    rows[:, BLOCK17] = centres[labels] + 3 * torch.randn(len(labels), 320, generator=generator)
    with torch.no_grad():
        rows[:, FINAL] = tuning.frozen_block(rows[:, BLOCK17, None, None]).flatten(1)
        rows[:, HEAD] = tuning.head(rows[:, FINAL])
    return rows


def _task(tuning: LastStageTuning, shots: int = 5, batch: int = 40):
    labels = torch.arange(3).repeat_interleave(shots)
    batch_labels = torch.arange(3).repeat_interleave(batch)
    teacher = nn.functional.one_hot(batch_labels, 3).float() * 0.95 + 0.05 / 3
    return _rows(tuning, labels, 1), labels, _rows(tuning, batch_labels, 2), teacher


def test_tuning_lowers_the_labeled_images_loss_and_changes_only_the_final_stage_and_head(monkeypatch):
    monkeypatch.setattr(last_stage, "MAX_SECONDS", 1e9)  # every step, however busy the machine
    tuning = _tuning()
    support, labels, batch, teacher = _task(tuning)
    assert tuning.fit(support, labels, batch, teacher)
    assert len(tuning.losses) == last_stage.STEPS
    first, last = sum(tuning.losses[:5]) / 5, sum(tuning.losses[-5:]) / 5
    assert last < 0.5 * first
    tuned = tuning.transform(batch)
    assert not torch.allclose(tuned[:, FINAL], batch[:, FINAL])
    with torch.no_grad():
        assert torch.allclose(tuned[:, HEAD], tuning.head(tuned[:, FINAL]))
    untouched = torch.ones(batch.shape[1], dtype=torch.bool)
    untouched[FINAL], untouched[HEAD] = False, False
    assert torch.equal(tuned[:, untouched], batch[:, untouched])


def test_the_untuned_block_gives_the_frozen_features_exactly():
    tuning = _tuning()
    support, *_ = _task(tuning)
    tuning.tuned_block = tuning.frozen_block
    assert torch.allclose(tuning.transform(support), support, atol=1e-5)


def test_too_few_confident_pseudo_labels_leave_the_stage_frozen():
    tuning = _tuning()
    support, labels, batch, _ = _task(tuning)
    unsure = torch.full((len(batch), 3), 1 / 3)
    assert not tuning.fit(support, labels, batch, unsure)
    assert torch.equal(tuning.transform(batch), batch)


def test_tuning_stops_at_its_time_budget_and_its_work_per_step_does_not_grow_with_the_task(monkeypatch):
    tuning = _tuning()
    support, labels, batch, teacher = _task(tuning, shots=200, batch=400)
    seen = []
    original = LastStageTuning._final

    def counting(self, block, block17, frozen_final):
        seen.append(len(block17))
        return original(self, block, block17, frozen_final)

    monkeypatch.setattr(LastStageTuning, "_final", counting)
    monkeypatch.setattr(last_stage, "MAX_SECONDS", 0.0)
    assert tuning.fit(support, labels, batch, teacher)
    assert len(tuning.losses) == 1  # stopped after the first step
    assert max(seen) <= max(last_stage.SUPPORT_PER_STEP, last_stage.PSEUDO_PER_STEP)


@pytest.mark.parametrize("target", [0.4, 0.7, 0.95])
def test_the_matched_temperature_gives_the_asked_mean_confidence(target):
    logits = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * 3
    temperature = matched_temperature(logits, target)
    mean = torch.softmax(logits / temperature, dim=1).max(1).values.mean().item()
    assert mean == pytest.approx(target, abs=1e-3)


def test_a_decision_in_review_reuses_the_tuned_stage_and_its_rows(monkeypatch):
    """The first adaptation tunes; after a decision the remembered block is used again and the
    same rows get the same tuned features from memory, nothing recomputed."""
    import numpy as np

    from mssl_core.labeling.adapt import model_for
    from mssl_core.project.pseudo_label import UNDECIDED, adapt_batch

    model = model_for("protonet", "combined")
    generator = torch.Generator().manual_seed(0)
    dim, size = model.backbone.embedding_dim, 1200
    centres = torch.randn(3, dim, generator=generator) * 0.6
    truth = torch.arange(3).repeat(size // 3)
    batch = centres[truth] + torch.randn(size, dim, generator=generator) * 0.5
    labels = torch.arange(3).repeat_interleave(4)
    support = centres[labels] + torch.randn(len(labels), dim, generator=generator) * 0.5
    tunings, computed = [], []
    fit, written = LastStageTuning.fit, LastStageTuning._written
    monkeypatch.setattr(LastStageTuning, "fit", lambda self, *a: tunings.append(1) or fit(self, *a))
    monkeypatch.setattr(
        LastStageTuning, "_written", lambda self, r: computed.append(len(r)) or written(self, r)
    )
    first = adapt_batch(model, list("abc"), support, labels, batch, np.full(size, UNDECIDED))
    assert tunings == [1] and computed
    computed.clear()
    decided = np.where(np.arange(size) < 1, truth.numpy(), UNDECIDED)
    second = adapt_batch(model, list("abc"), support, labels, batch, decided)
    assert tunings == [1] and not computed
    assert (second.probabilities.argmax(1) == truth.numpy()).mean() >= 0.95
    assert first.probabilities.shape == second.probabilities.shape


def test_a_few_more_labeled_images_keep_the_tuned_stage_until_the_set_grows_by_half(monkeypatch):
    """Label Studio's path: each annotation refits with the earlier tuned block (its temperature
    scaled as matched then) until the labeled set is RETUNE_GROWTH times the one it was tuned on,
    or the classes change."""
    from mssl_core.labeling.adapt import RETUNE_GROWTH, fit_task, model_for

    model = model_for("protonet", "combined")
    generator = torch.Generator().manual_seed(1)
    dim = model.backbone.embedding_dim
    centres = torch.randn(3, dim, generator=generator) * 0.6
    truth = torch.arange(3).repeat(100)
    batch = centres[truth] + torch.randn(len(truth), dim, generator=generator) * 0.5
    labels = torch.arange(3).repeat(8)
    support = centres[labels] + torch.randn(len(labels), dim, generator=generator) * 0.5
    tunings = []
    fit = LastStageTuning.fit
    monkeypatch.setattr(LastStageTuning, "fit", lambda self, *a: tunings.append(1) or fit(self, *a))

    def fitted(shots: int, classes="abc", earlier=None):
        rows = slice(0, 3 * shots)
        return fit_task(model, list(classes), support[rows], labels[rows], batch, earlier=earlier)

    first = fitted(4)
    tuned = first.method.calibration
    assert len(tunings) == 1 and tuned.tuned_block is not None and tuned.tuned_on == 12
    second = fitted(5, earlier=first)
    kept = second.method.calibration
    assert len(tunings) == 1 and kept.tuned_block is tuned.tuned_block and kept.tuned_on == 12
    frozen = copy.deepcopy(model.method).calibrate(support[:15], labels[:15], batch)
    assert kept.temperature == pytest.approx(frozen.temperature * tuned.tuned_ratio)
    assert (second.probabilities(batch).argmax(1) == truth).float().mean() >= 0.95
    assert 5 < RETUNE_GROWTH * 4 <= 6
    assert fitted(6, earlier=second).method.calibration.tuned_block is not tuned.tuned_block
    assert len(tunings) == 2
    fitted(5, classes="xyz", earlier=first)
    assert len(tunings) == 3
