import numpy as np
import pytest
import torch

from mssl_core.engine import evaluate

pytestmark = pytest.mark.slow


def _blob_pool(dataset: str) -> np.ndarray:
    """6 classes x 40 images: each class a fixed random pattern plus noise."""
    rng = np.random.default_rng(0)
    patterns = rng.uniform(0, 255, size=(6, 1, 28, 28))
    noisy = patterns + rng.normal(0, 40, size=(6, 40, 28, 28))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def _pool_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "cache_dir", lambda: tmp_path / "cache")


def test_benchmark_rows_cover_every_model_and_baseline(tiny_models, monkeypatch):
    monkeypatch.setattr(evaluate, "image_pool", _blob_pool)
    rows = evaluate.run_benchmark(episodes=5, quick=True, folder=tiny_models, log=lambda _: None)
    methods = {r["method"] for r in rows}
    assert methods == {
        "nearest centroid",
        "logistic regression",
        "LabelSpreading",
        "conv4-protonet",
        "conv4-protonet + self-training",
        "conv4-softkmeans",
        "conv4-softkmeans (labeled only)",
    }
    semi = {r["method"]: r["semi_supervised"] for r in rows}
    assert semi["conv4-softkmeans"] and not semi["conv4-softkmeans (labeled only)"]
    assert semi["conv4-protonet + self-training"] and not semi["conv4-protonet"]
    # soft k-means without its unlabeled images is prototypical on the same episodes
    for dataset in ("characters", "fashion-mnist"):
        same = {r["method"]: r for r in rows if r["dataset"] == dataset}
        assert same["conv4-softkmeans (labeled only)"]["seed"] == same["conv4-softkmeans"]["seed"]
    assert {r["dataset"] for r in rows} == {"characters", "fashion-mnist"}
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["ci95"] >= 0 and 0 <= row["ece"] <= 1
        assert row["episodes"] == 5
    # raw pixels separate these noisy patterns almost perfectly: the table reflects real work
    pixels = [r for r in rows if r["method"] == "nearest centroid"]
    assert all(r["accuracy"] > 0.9 for r in pixels)
    table = evaluate.format_table(rows)
    assert all(name in table for name in methods)


def test_quick_benchmark_does_not_touch_model_cards(tiny_models, monkeypatch):
    monkeypatch.setattr(evaluate, "image_pool", _blob_pool)
    before = (tiny_models / "conv4-protonet.json").read_text()
    evaluate.run_benchmark(episodes=3, quick=True, folder=tiny_models, log=lambda _: None)
    assert (tiny_models / "conv4-protonet.json").read_text() == before


def test_benchmark_in_parallel_gives_the_same_rows(tiny_models, monkeypatch):
    monkeypatch.setattr(evaluate, "image_pool", _blob_pool)
    kwargs = {"episodes": 3, "quick": True, "folder": tiny_models, "log": lambda _: None}
    serial = evaluate.run_benchmark(**kwargs)
    parallel = evaluate.run_benchmark(**kwargs, jobs=2)
    drop = ("ms_per_episode",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in serial] == [
        {k: v for k, v in r.items() if k not in drop} for r in parallel
    ]


def test_embedded_pools_are_cached_on_disk_by_checkpoint_and_content(tiny_models, tmp_path):
    from mssl_core.engine.checkpoints import load_model

    model = load_model("conv4-protonet", tiny_models)
    images = _blob_pool("characters")
    first = evaluate.cached_pool("characters", model.backbone_key, model.backbone, images)
    assert len(list((tmp_path / "cache" / "pools").iterdir())) == 1
    again = evaluate.cached_pool("characters", model.backbone_key, None, images)  # no backbone needed
    assert torch.equal(first, again)
    other = evaluate.cached_pool("characters", model.backbone_key, model.backbone, images[:, :20])
    assert other.shape[0] == 6 * 20 and len(list((tmp_path / "cache" / "pools").iterdir())) == 2
