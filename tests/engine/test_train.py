import numpy as np
import pytest
import torch

from mssl_core.engine import train
from mssl_core.engine.checkpoints import load_model, save_model
from mssl_core.engine.data.characters import CharacterCorpus

pytestmark = pytest.mark.slow


def _blobs(split: str, n_per_class: int = 20, workers: int = 2) -> CharacterCorpus:
    """Stand-in corpus: 30 classes, each a random pattern plus noise (rendering takes minutes)."""
    rng = np.random.default_rng({"train": 0, "val": 1, "test": 2}[split])
    patterns = rng.uniform(0, 255, size=(30, 1, 28, 28))
    images = np.clip(patterns + rng.normal(0, 60, size=(30, n_per_class, 28, 28)), 0, 255)
    return CharacterCorpus(images.astype(np.uint8), [f"c{i}" for i in range(30)])


def test_meta_training_learns_and_writes_a_loadable_checkpoint_with_its_card(tmp_path, monkeypatch):
    monkeypatch.setattr(train.characters, "load_characters", _blobs)
    cfg = train.TrainConfig(
        "conv4", "masked-softkmeans", episodes=30, ways=5, unlabeled=2, distractors=1, calibration_episodes=20
    )
    model = train.train_and_save(cfg, folder=tmp_path, log=lambda _: None)
    card = model.card
    assert card["training"]["episodes"] == 30 and card["split"]["seed"] == 2018
    table = card["temperatures"]["table"]
    assert card["wall_time_s"] > 0 and all(0.05 < t < 60 for row in table for t in row)
    # validation classes are new noisy patterns: far above the 20% chance of 5-way
    assert card["validation"]["5-way 5-shot, 20 unlabeled"]["accuracy"] > 0.6
    loaded = load_model("conv4-masked-softkmeans", tmp_path)
    assert torch.allclose(loaded.method.temperatures, torch.tensor(table), atol=1e-4)
    # fewer shots, softer confidence: the 1-shot temperatures are the largest of the table
    assert all(table[0][w] > table[-1][w] for w in range(len(table[0])))
    assert all(r["ece"] < 0.05 for r in card["validation"].values())

    # --calibrate-only: the same temperatures again, the weights untouched
    weights = {k: v.clone() for k, v in loaded.backbone.trainable_state().items()}
    loaded.method.temperatures.fill_(1.0)
    save_model(loaded, tmp_path)
    again = train.recalibrate("conv4-masked-softkmeans", tmp_path, log=lambda _: None)
    assert again.card["temperatures"]["table"] == table
    reloaded = load_model("conv4-masked-softkmeans", tmp_path)
    assert all(torch.equal(v, weights[k]) for k, v in reloaded.backbone.trainable_state().items())


def _clustered_features(n_classes: int, n_per_class: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, 1280, generator=generator)
    return (centres + 0.3 * torch.randn(n_classes, n_per_class, 1280, generator=generator)).flatten(0, 1)


def test_photo_task_share_draws_episodes_from_the_photo_pool_alone(tmp_path, monkeypatch):
    """With every episode from the photos, the character pool is never read in training: it is
    poisoned with NaN here and the head still comes out finite; at share 0 the photos are never
    embedded."""

    def characters(backbone, split, n_classes, n_per_class):
        pool = _clustered_features(n_classes, n_per_class, seed=1)
        return torch.full_like(pool, float("nan")) if split == "train" else pool

    monkeypatch.setattr(train, "frozen_feature_pool", characters)
    monkeypatch.setattr(train, "photo_feature_pool", lambda backbone: (_clustered_features(20, 16, 2), 20, 16))
    monkeypatch.setattr(train.photo_tasks, "photo_paths", lambda: ["a.png", "b.png"])
    cfg = train.TrainConfig(
        "mobilenetv2",
        "protonet",
        episodes=12,
        ways=5,
        unlabeled=2,
        distractors=1,
        calibration_episodes=2,
        train_classes_for_head=150,
        photo_task_share=1.0,
    )
    model = train.meta_train(cfg, log=lambda _: None)
    assert torch.isfinite(model.backbone.head.correction.weight).all()
    assert "100% of episodes from augmented regions of unlabeled photos" in model.card["data"]
    assert model.card["training"]["photo_task_share"] == 1.0

    def never(backbone):
        raise AssertionError("photos embedded at share 0")

    monkeypatch.setattr(train, "photo_feature_pool", never)
    monkeypatch.setattr(train, "frozen_feature_pool", lambda b, s, n, k: _clustered_features(n, k, seed=3))
    cfg.photo_task_share = 0.0
    assert "photos" not in train.meta_train(cfg, log=lambda _: None).card["data"]


def test_photo_tasks_ask_for_the_mobilenetv2_head():
    cfg = train.TrainConfig("conv4", "protonet", episodes=1, photo_task_share=0.5)
    with pytest.raises(ValueError, match="MobileNetV2 head"):
        train.meta_train(cfg, log=lambda _: None)
