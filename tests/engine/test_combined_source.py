"""The combined source: every feature source in one embedding, their calibrated predictions averaged."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mssl_core.engine.combined_source import Sliced, SourceEnsemble
from mssl_core.engine.methods import make_method


def _two_sources(shots: int, seed: int = 0, spread: float = 6):
    """Joint 16-d features: dims 0-7 separate three classes, dims 8-15 are noise."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 8, generator=generator) * spread

    def draw(labels: torch.Tensor) -> torch.Tensor:
        informative = centres[labels] + torch.randn(len(labels), 8, generator=generator)
        return torch.cat([informative, torch.randn(len(labels), 8, generator=generator) * 6], dim=1)

    labels, batch_labels = torch.arange(3).repeat_interleave(shots), torch.arange(3).repeat_interleave(20)
    return draw(labels), labels, draw(batch_labels), batch_labels


def _ensemble(one_shot: dict[str, float] | None = None) -> SourceEnsemble:
    members = {
        "informative": Sliced(make_method("protonet"), slice(0, 8)),
        "noise": Sliced(make_method("protonet"), slice(8, 16)),
    }
    return SourceEnsemble(members, one_shot or {"informative": 1.0, "noise": 1.0, "combined": 1.0})


def test_a_member_that_only_adds_noise_is_tempered_and_the_ensemble_keeps_the_good_one():
    support, labels, batch, truth = _two_sources(shots=4)
    ensemble = _ensemble().fit(support, labels, batch)
    assert ensemble.checked
    # held out, the noise member's predictions are poor, so its confidence is softened most
    assert ensemble.factors["noise"] > 2 * ensemble.factors["informative"]
    probabilities = ensemble.predict_proba(batch)
    assert torch.allclose(probabilities.sum(1), torch.ones(len(batch)))
    informative_alone = make_method("protonet").fit(support[:, :8], labels).predict_proba(batch[:, :8])
    accuracy = (probabilities.argmax(1) == truth).float().mean()
    assert accuracy >= (informative_alone.argmax(1) == truth).float().mean() - 0.05
    noise_alone = make_method("protonet").fit(support[:, 8:], labels).predict_proba(batch[:, 8:])
    assert accuracy > (noise_alone.argmax(1) == truth).float().mean() + 0.3


def test_with_one_labeled_image_per_class_the_development_factors_stand_in():
    support, labels, batch, _ = _two_sources(shots=1)
    factors = {"informative": 3.0, "noise": 9.0, "combined": 0.5}
    ensemble = _ensemble(factors).fit(support, labels, batch)
    assert not ensemble.checked
    assert ensemble.factors == {"informative": 3.0, "noise": 9.0} and ensemble.temperature == 0.5


def test_joint_features_hold_each_source_as_it_embeds_alone(shape_folders):
    from mssl_core.engine.backbones import MobileNetV3Small, PixelBackbone, embed_images
    from mssl_core.engine.feature_sources import ImageNetStages
    from mssl_core.labeling.adapt import model_for
    from mssl_core.labeling.images import decode_image, list_files

    images = [decode_image(p) for p in list_files(shape_folders[1])[:4] if p.name != "broken.png"]
    combined = model_for("protonet", "combined")
    joint = embed_images(combined.backbone, images)
    where = combined.backbone.slices()
    alone = {
        "imagenet": ImageNetStages(),
        "mobilenetv2": model_for("protonet", "mobilenetv2").backbone,
        "conv4": model_for("protonet", "conv4").backbone,
        "pixels": PixelBackbone(),
        "mobilenetv3": MobileNetV3Small(),
    }
    for name, backbone in alone.items():
        assert torch.allclose(joint[:, where[name]], embed_images(backbone, images), atol=1e-4), name
    assert torch.equal(joint[:, where["final"]], joint[:, where["imagenet"]][:, -1280:])


def test_a_head_made_to_hurt_does_not_drag_the_combined_source_down(both_backbones, shape_folders):
    """The MobileNetV2 head made to map every image to the same point (its correction cancels
    the projection) and Conv-4 untrained: labeling with the default features still does as
    well as the ImageNet features without any head."""
    from mssl_core.engine.checkpoints import load_model, save_model
    from mssl_core.labeling.adapt import choose_backbone
    from mssl_core.labeling.folders import label_folders

    model = load_model("mobilenetv2-protonet", both_backbones)
    head = model.backbone.head
    with torch.no_grad():
        head.correction.weight.copy_(-head.projection.T)
    save_model(model, both_backbones)
    support, unlabeled, truth = shape_folders

    def accuracy(backbone: str) -> float:
        result = label_folders(support, unlabeled, "protonet", backbone, both_backbones, log=lambda _: None)
        rows = [r for r in result.rows if r.label]
        return float(np.mean([r.label == truth[r.path] for r in rows]))

    assert choose_backbone(both_backbones)[0] == "combined"
    assert accuracy("mobilenetv2") <= 0.5  # the head alone is made useless
    assert accuracy("auto") >= accuracy("imagenet") - 1 / len(truth)


@pytest.mark.parametrize("shots", [1, 3])
def test_semi_supervised_terms_reach_every_member(shots):
    from mssl_core.engine.ssl import SSLOptions

    support, labels, batch, _ = _two_sources(shots=shots, spread=1)
    plain = _ensemble().fit(support, labels, batch).predict_proba(batch)
    tuned = _ensemble().with_ssl(SSLOptions(pseudo_label_rounds=1, pseudo_label_threshold=0.5))
    assert not torch.allclose(plain, tuned.fit(support, labels, batch).predict_proba(batch))


def test_after_a_correction_every_member_finds_its_neighbour_lists_again(monkeypatch):
    """Six members, six graphs over the same batch (as many as the default has): all of them are
    remembered, so moving one image into the labeled set does not recompute any (the costly part
    at 10,000 images)."""
    from mssl_core.engine.methods.propagation import LabelPropagation

    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(1200, 48, generator=generator)
    support, labels = torch.randn(6, 48, generator=generator), torch.arange(3).repeat_interleave(2)
    members = {f"m{i}": Sliced(make_method("propagation"), slice(8 * i, 8 * i + 8)) for i in range(6)}
    ensemble = SourceEnsemble(members, {**{n: 1.0 for n in members}, "combined": 1.0})
    ensemble.fit(support, labels, batch)
    searched = []
    original = LabelPropagation._nearest
    monkeypatch.setattr(
        LabelPropagation,
        "_nearest",
        lambda self, x, *a, **k: searched.append(len(x)) or original(self, x, *a, **k),
    )
    ensemble.fit(torch.cat([support, batch[:1]]), torch.cat([labels, torch.tensor([0])]), batch[1:])
    assert not [n for n in searched if n >= 1000], searched


@pytest.mark.parametrize("refit_only", [False, True])
def test_a_refit_after_a_decision_hashes_the_task_rows_once(monkeypatch, refit_only):
    """As review refits, with the self-labeled images joined (no decision yet) or left out (a
    decision made), six graph members on their columns: the task rows are hashed once, the
    members find their rows from those fingerprints, and predict exactly what they predict when
    every row is hashed afresh."""
    from mssl_core.engine import row_sets

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 48, generator=generator)
    truth = torch.arange(3).repeat(400)
    batch = centres[truth] + 0.8 * torch.randn(1200, 48, generator=generator)
    labels = torch.arange(3).repeat_interleave(3)
    support = centres[labels] + 0.8 * torch.randn(9, 48, generator=generator)
    members = {f"m{i}": Sliced(make_method("propagation"), slice(8 * i, 8 * i + 8)) for i in range(6)}
    ensemble = SourceEnsemble(members, {**{n: 1.0 for n in members}, "combined": 1.0})
    calibration = ensemble.fit(support, labels, batch).calibration
    assert calibration.self_labeled is not None

    def refit_and_predict() -> torch.Tensor:
        task_rows = torch.cat([support, batch[:1], batch[1:]])  # one decision, as adapt_batch lays it out
        row_sets.remember_fingerprints(task_rows)
        refit = SourceEnsemble(ensemble.members, ensemble.one_shot_factors)
        refit.fit(task_rows[:10], torch.cat([labels, truth[:1]]), task_rows[10:], calibration, refit_only)
        return refit.predict_proba(task_rows)

    hashed = []
    original = row_sets.row_fingerprints

    def counting(rows):
        if row_sets._known_view(rows) is None:
            hashed.append(len(rows))
        return original(rows)

    for name in ("row_sets", "methods.neighbour_graphs", "feature_sources", "combined_source", "last_stage"):
        monkeypatch.setattr(sys.modules[f"mssl_core.engine.{name}"], "row_fingerprints", counting)
    remembered = refit_and_predict()
    assert [n for n in hashed if n >= 1000] == [len(support) + len(batch)]  # the task rows, once
    monkeypatch.setattr(row_sets, "_known_view", lambda rows: None)
    assert torch.equal(refit_and_predict(), remembered)


def test_a_classifier_member_sits_out_tasks_with_one_labeled_image_in_a_class():
    members = {
        "informative": Sliced(make_method("protonet"), slice(0, 8)),
        "logreg": Sliced(make_method("logreg"), slice(0, 8)),
    }
    ensemble = SourceEnsemble(members, {"informative": 1.0, "combined": 1.0})
    support, labels, batch, _ = _two_sources(shots=1)
    ensemble.fit(support, labels, batch)
    assert set(ensemble.factors) == {"informative"} and ensemble.predict_proba(batch).shape == (60, 3)
    support, labels, batch, _ = _two_sources(shots=3)
    ensemble.fit(support, labels, batch)
    assert set(ensemble.factors) == {"informative", "logreg"}


def test_the_centred_imagenet_members_propagate_at_the_plain_local_scale():
    """Their graph's kernel width is the plain local scale; the meta-trained members keep the
    scale learned with their features."""
    from mssl_core.engine.combined_source import PLAIN_LOCAL_SCALE
    from mssl_core.labeling.adapt import model_for

    members = model_for("propagation", "combined").method.members
    for name in PLAIN_LOCAL_SCALE:
        assert members[name].method.method.log_scale.item() == 0.0
    assert members["mobilenetv2"].method.log_scale.item() < -0.5


def _rare_class_task(shots: int, batch_counts: tuple[int, int], seed: int = 0):
    """Two overlapping classes in 8-d (both members informative), `shots` labeled images each."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, 8, generator=generator) * 0.6

    def draw(labels: torch.Tensor) -> torch.Tensor:
        return torch.cat([centres[labels] + torch.randn(len(labels), 8, generator=generator)] * 2, dim=1)

    labels = torch.arange(2).repeat_interleave(shots)
    truth = torch.cat(
        [torch.zeros(batch_counts[0], dtype=torch.long), torch.ones(batch_counts[1], dtype=torch.long)]
    )
    return draw(labels), labels, draw(truth), truth


def test_a_rare_class_in_the_batch_is_weighed_by_its_share_once_every_class_has_ten_labeled_images(
    monkeypatch,
):
    support, labels, batch, truth = _rare_class_task(shots=10, batch_counts=(540, 60))
    ensemble = _ensemble().fit(support, labels, batch)
    assert ensemble.calibration.batch_log_ratios is not None
    assert ensemble.calibration.batch_log_ratios[1] < 0 < ensemble.calibration.batch_log_ratios[0]
    probabilities = ensemble.predict_proba(batch)
    assert torch.allclose(probabilities.sum(1), torch.ones(len(batch)))
    with_shares = (probabilities.argmax(1) == truth).float().mean()
    monkeypatch.setattr("mssl_core.engine.combined_source.MIN_LABELED", 11)
    without = _ensemble().fit(support, labels, batch)
    assert without.calibration.batch_log_ratios is None
    assert with_shares > (without.predict_proba(batch).argmax(1) == truth).float().mean() + 0.02


def test_batch_shares_are_left_alone_with_few_labeled_images_or_an_even_batch():
    support, labels, batch, _ = _rare_class_task(shots=5, batch_counts=(540, 60))
    assert _ensemble().fit(support, labels, batch).calibration.batch_log_ratios is None
    support, labels, batch, _ = _rare_class_task(shots=10, batch_counts=(300, 300))
    assert _ensemble().fit(support, labels, batch).calibration.batch_log_ratios is None


@pytest.mark.parametrize(("shots", "least_gain"), [(1, 0.05), (3, 0.02)])
def test_the_surest_batch_images_join_the_labeled_ones(monkeypatch, shots, least_gain):
    """Self-training, where confidence cannot be checked (one labeled image per class) and where
    it can: over ten tasks whose few labeled images place the classes poorly, it labels more of
    the batch right."""
    from mssl_core.engine import combined_source

    gains = []
    for seed in range(10):
        support, labels, batch, truth = _two_sources(shots=shots, seed=seed, spread=1.5)
        accuracy = []
        for share in (0.0, 0.5):  # 0.0: no batch image joins, the ensemble as fitted first
            monkeypatch.setattr(combined_source, "SELF_TRAINING_SHARE", share)
            ensemble = _ensemble({"informative": 1.0, "noise": 9.0, "combined": 1.0}).fit(
                support, labels, batch
            )
            accuracy.append((ensemble.predict_proba(batch).argmax(1) == truth).float().mean().item())
        gains.append(accuracy[1] - accuracy[0])
    assert np.mean(gains) > least_gain


def test_a_refit_with_the_calibration_passed_back_labels_the_same_batch_images_without_choosing_again(
    monkeypatch,
):
    """As review refits: the images self-training labeled on the first fit are found in any
    order and labeled so again (no second prediction of the batch, no new choice); one that the
    user decided has left the batch and is not."""
    support, labels, batch, _ = _two_sources(shots=5, spread=1.5)
    first = _ensemble().fit(support, labels, batch)
    calibration = first.calibration
    assert calibration.checked and calibration.self_labeled is not None
    expected = first.predict_proba(batch)

    def refuse(*args):
        raise AssertionError("chose the self-labeled images again")

    monkeypatch.setattr(SourceEnsemble, "_self_train", refuse)
    again = _ensemble().fit(support, labels, batch.flip(0), calibration)
    assert torch.allclose(again.predict_proba(batch.flip(0)), expected.flip(0), atol=1e-5)
    # a self-labeled image the user decided is labeled as the user said, once
    self_labeled = calibration.self_labeled
    decided = int(np.flatnonzero(np.isin(_fingerprints(batch), self_labeled.fingerprints))[0])
    fitted = []
    original = Sliced.fit
    monkeypatch.setattr(
        Sliced, "fit", lambda self, s, *a, **k: fitted.append(len(s)) or original(self, s, *a, **k)
    )
    rest = torch.cat([batch[:decided], batch[decided + 1 :]])
    _ensemble().fit(
        torch.cat([support, batch[decided : decided + 1]]), torch.cat([labels, labels[:1]]), rest, calibration
    )
    assert fitted == [len(support) + len(self_labeled.labels)] * 2  # both members


def test_once_a_person_has_decided_images_a_refit_leaves_self_training_out(monkeypatch):
    """Review after a decision: the members are fitted to the user's labeled and decided images
    only, and no image keeps the scores self-training gave it."""
    support, labels, batch, truth = _two_sources(shots=5, spread=1.5)
    calibration = _ensemble().fit(support, labels, batch).calibration
    assert calibration.self_labeled is not None
    fitted = []
    original = Sliced.fit
    monkeypatch.setattr(
        Sliced, "fit", lambda self, s, *a, **k: fitted.append(len(s)) or original(self, s, *a, **k)
    )
    decided = torch.cat([support, batch[:1]]), torch.cat([labels, truth[:1]])
    refit = _ensemble().fit(*decided, batch[1:], calibration, refit_only=True)
    assert fitted == [len(support) + 1] * 2  # both members, no self-labeled image among them
    assert refit.calibration.self_labeled is None
    assert refit.calibration.tuned_block is calibration.tuned_block


def _fingerprints(rows: torch.Tensor) -> np.ndarray:
    from mssl_core.engine.row_sets import row_fingerprints

    return row_fingerprints(rows)


def test_images_labeled_by_self_training_keep_the_confidence_that_chose_them(monkeypatch):
    from mssl_core.engine import combined_source

    support, labels, batch, _ = _two_sources(shots=1, seed=8, spread=1.5)
    factors = {"informative": 1.0, "noise": 9.0, "combined": 1.0}
    monkeypatch.setattr(combined_source, "SELF_TRAINING_SHARE", 0.0)
    first = _ensemble(factors).fit(support, labels, batch).predict_proba(batch)
    monkeypatch.setattr(combined_source, "SELF_TRAINING_SHARE", 0.5)
    ensemble = _ensemble(factors).fit(support, labels, batch)
    after = ensemble.predict_proba(batch)
    kept = torch.isclose(after, first).all(1)
    # at most 10 per class (half an even share of 60 images) keep the first probabilities
    assert 0 < kept.sum() <= 30 and not kept.all()
    # found again in any order, as review passes the batch
    assert torch.allclose(ensemble.predict_proba(batch.flip(0)), after.flip(0), atol=1e-6)


def test_with_the_batch_shares_applied_self_labeled_images_keep_their_first_confidence(monkeypatch):
    """The shares are added to the kept scores once, as to every other image's."""
    from mssl_core.engine import combined_source

    support, labels, batch, _ = _rare_class_task(shots=10, batch_counts=(540, 60))
    monkeypatch.setattr(combined_source, "SELF_TRAINING_SHARE", 0.0)
    first = _ensemble().fit(support, labels, batch)
    assert first.calibration.batch_log_ratios is not None
    monkeypatch.setattr(combined_source, "SELF_TRAINING_SHARE", 0.5)
    ensemble = _ensemble().fit(support, labels, batch)
    kept = np.isin(_fingerprints(batch), ensemble.calibration.self_labeled.fingerprints)
    assert 0 < kept.sum() < len(batch)
    assert torch.allclose(ensemble.predict_proba(batch)[kept], first.predict_proba(batch)[kept], atol=1e-6)
