import numpy as np

from mssl_core import train
from mssl_core.checkpoints import load_model
from mssl_core.data.characters import CharacterCorpus


def _blobs(split: str, n_per_class: int = 20, workers: int = 2) -> CharacterCorpus:
    """Stand-in corpus: 30 classes, each a random pattern plus noise (rendering takes minutes)."""
    rng = np.random.default_rng({"train": 0, "val": 1, "test": 2}[split])
    patterns = rng.uniform(0, 255, size=(30, 1, 28, 28))
    images = np.clip(patterns + rng.normal(0, 60, size=(30, n_per_class, 28, 28)), 0, 255)
    return CharacterCorpus(images.astype(np.uint8), [f"c{i}" for i in range(30)])


def test_meta_training_learns_and_writes_a_loadable_checkpoint_with_its_card(tmp_path, monkeypatch):
    monkeypatch.setattr(train.characters, "load_characters", _blobs)
    cfg = train.TrainConfig("conv4", "masked-softkmeans", episodes=30, ways=5, unlabeled=2, distractors=1)
    model = train.train_and_save(cfg, folder=tmp_path, log=lambda _: None)
    card = model.card
    assert card["training"]["episodes"] == 30 and card["split"]["seed"] == 2018
    assert card["wall_time_s"] > 0 and 0.05 < card["temperature"] < 60
    # validation classes are new noisy patterns: far above the 20% chance of 5-way
    assert card["validation"]["5-way 5-shot, 20 unlabeled"]["accuracy"] > 0.6
    loaded = load_model("conv4-masked-softkmeans", tmp_path)
    assert abs(float(loaded.method.temperature) - card["temperature"]) < 1e-5
