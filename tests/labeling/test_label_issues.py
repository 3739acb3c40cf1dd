"""Suspicious labeled examples: cleanlab on held-out predictions flags a planted mistake."""

import numpy as np
import torch

from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.methods import make_method
from mssl_core.labeling.adapt import fit_task
from mssl_core.labeling.label_issues import SLIP_RATE, likely_slips, suspicious_labels
from tests.conftest import gaussian_task


def _held_out(labels: torch.Tensor, support: torch.Tensor, batch: torch.Tensor) -> np.ndarray:
    model = Model("tiny-protonet", make_backbone("conv4"), make_method("protonet"), {}, "tiny")
    return fit_task(model, ["a", "b", "c"], support, labels, batch).held_out.cross_fitted.numpy()


def test_a_flipped_label_is_flagged_and_a_clean_task_is_not():
    hits, false_alarms = 0, 0
    for seed in range(10):
        _, support, labels, batch, _ = gaussian_task(
            ways=3, shots=5, unlabeled_per_class=10, seed=seed, spread=4
        )
        false_alarms += bool(suspicious_labels(labels.numpy(), _held_out(labels, support, batch)))
        flipped = labels.clone()
        flipped[seed % len(labels)] = (flipped[seed % len(labels)] + 1) % 3
        found = suspicious_labels(flipped.numpy(), _held_out(flipped, support, batch))
        hits += bool(found) and found[0] == seed % len(labels)
    assert hits >= 9 and false_alarms <= 1


def test_held_out_rows_follow_the_support_order():
    """Each labeled image's held-out row is its own: a task whose classes sit far apart puts
    every row's mass on that row's label."""
    _, support, labels, batch, _ = gaussian_task(ways=3, shots=4, unlabeled_per_class=5, seed=1, spread=30)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    held_out = _held_out(labels[order], support[order], batch)
    assert (held_out.argmax(1) == labels[order].numpy()).all()


def test_nothing_to_judge_gives_no_flags():
    assert suspicious_labels(np.array([0, 0]), np.array([[0.9, 0.1], [0.2, 0.8]])) == []


def test_the_check_starts_no_process(monkeypatch):
    """cleanlab's default forks workers; forked from the app's server they outlive it, holding
    its port (seen in the browser tests)."""
    import multiprocessing

    def refuse(process):
        raise AssertionError(f"a process was started: {process}")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    _, support, labels, batch, _ = gaussian_task(ways=3, shots=5, unlabeled_per_class=10, seed=0, spread=4)
    flipped = labels.clone()
    flipped[0] = 1
    assert suspicious_labels(flipped.numpy(), _held_out(flipped, support, batch)) == [0]


def test_a_likely_slip_is_one_a_slip_explains_better_than_its_image():
    """Odds of a slip: SLIP_RATE (1 - p) / (K - 1) against (1 - SLIP_RATE) p, p the held-out
    probability of the given class; a row predicted as its own class is never one."""
    threshold = SLIP_RATE / 4 / (SLIP_RATE / 4 + 1 - SLIP_RATE)  # 5 classes
    below, above = ([own] + [(1 - own) / 4] * 4 for own in (threshold * 0.9, threshold * 1.1))
    held_out = np.array([below, above, [0.3, 0.7, 0, 0, 0], [0.15] * 4 + [0.4]])
    labels = np.array([0, 0, 0, 4])
    assert likely_slips(labels, held_out) == {0}


def test_likely_slips_are_flagged_first():
    labels = np.array([0, 0, 0, 1, 1, 1])
    held_out = np.array([[0.9, 0.1], [0.8, 0.2], [0.001, 0.999], [0.1, 0.9], [0.6, 0.4], [0.2, 0.8]])
    flagged = suspicious_labels(labels, held_out)
    assert flagged[0] == 2 and set(flagged) >= likely_slips(labels, held_out) == {2}
