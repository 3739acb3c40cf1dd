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
