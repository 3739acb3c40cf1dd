import numpy as np
import pytest
import torch

from mssl_core import evaluate


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
    from mssl_core.checkpoints import load_model

    model = load_model("conv4-protonet", tiny_models)
    images = _blob_pool("characters")
    first = evaluate.cached_pool("characters", model.backbone_key, model.backbone, images)
    assert len(list((tmp_path / "cache" / "pools").iterdir())) == 1
    again = evaluate.cached_pool("characters", model.backbone_key, None, images)  # no backbone needed
    assert torch.equal(first, again)
    other = evaluate.cached_pool("characters", model.backbone_key, model.backbone, images[:, :20])
    assert other.shape[0] == 6 * 20 and len(list((tmp_path / "cache" / "pools").iterdir())) == 2


def _separated_and_mixed_pools() -> tuple[torch.Tensor, torch.Tensor]:
    """Two embeddings of the same 6 classes x 40 images: one separates the classes, one is noise."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(40)
    centres = torch.randn(6, 8, generator=generator) * 4
    separated = centres[labels] + torch.randn(240, 8, generator=generator) * 0.5
    return separated, torch.randn(240, 8, generator=generator)


@pytest.mark.parametrize("shots", [1, 5])
def test_backbone_choice_takes_the_backbone_that_predicts_the_labeled_images_best(shots):
    from mssl_core.data.episodes import EpisodeSpec
    from mssl_core.episodic import BackboneChoice, run_episodes
    from mssl_core.methods import make_method

    separated, mixed = _separated_and_mixed_pools()
    spec = EpisodeSpec(5, shots, 4, 0, 5)
    options = {"good": (make_method("softkmeans"), separated), "noise": (make_method("softkmeans"), mixed)}
    # at one shot nothing can be held out: every task goes to the fallback, here the worse one
    result = run_episodes(BackboneChoice(options, lambda episode: "noise"), None, 6, 40, spec, 20, 0)
    expected = "good" if shots > 1 else "noise"
    assert result.chosen == {expected: 20}
    alone = run_episodes(make_method("softkmeans"), options[expected][1], 6, 40, spec, 20, 0)
    assert np.array_equal(result.accuracies, alone.accuracies)  # the same episodes, the same fits


def test_benchmark_has_an_automatic_backbone_row_per_method_on_both_backbones(both_backbones, monkeypatch):
    monkeypatch.setattr(evaluate, "image_pool", _blob_pool)
    rows = evaluate.run_benchmark(episodes=4, quick=True, folder=both_backbones, log=lambda _: None)
    automatic = [r for r in rows if r["backbone"] == "auto"]
    # only prototypical networks exist on both backbones; characters run on Conv-4 alone
    assert [(r["dataset"], r["method"]) for r in automatic] == [("fashion-mnist", "auto-protonet")]
    assert sum(automatic[0]["chosen"].values()) == 4
    assert set(automatic[0]["chosen"]) <= {"conv4", "mobilenetv2"}
    assert automatic[0]["ece_support_calibrated"] is not None  # what the app reports, at 5 shots
    assert "conv4" in evaluate.format_table(rows).splitlines()[-3] or "auto-protonet" in evaluate.format_table(
        rows
    )
