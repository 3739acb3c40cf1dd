"""The cross-domain benchmark and the task-centred feature sources it measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mssl_core.benchmarks import crossdomain
from mssl_core.engine.data.domains import Domain

pytestmark = pytest.mark.slow


def _blob_domain(role: str = "development") -> Domain:
    """Three classes of 40 colour images: a bright blob in one of three places, on noise."""

    def load():
        rng = np.random.default_rng(0)
        images, labels = [], []
        for label, (y, x) in enumerate([(8, 8), (8, 40), (40, 24)]):
            for _ in range(40):
                image = rng.integers(0, 80, (56, 56, 3), dtype=np.uint8)
                image[y : y + 12, x : x + 12] = 230
                images.append(image)
                labels.append(label)
        return np.stack(images), np.array(labels), ["top-left", "top-right", "bottom"]

    return Domain(f"blobs-{role}", "synthetic blobs", role, load, "none")


@pytest.fixture
def blob_domains(monkeypatch):
    domains = (_blob_domain("development"), _blob_domain("test"))
    monkeypatch.setattr(crossdomain, "DOMAINS", domains)
    monkeypatch.setattr("mssl_core.benchmarks.crossdomain.domain", {d.name: d for d in domains}.__getitem__)
    return domains


def test_the_benchmark_scores_the_default_and_the_baselines_on_the_same_batches(blob_domains):
    rows = crossdomain.run_crossdomain(
        ["blobs-development"], episodes=3, shots=(1, 2), log=lambda _: None, ways=(2, 5)
    )
    results = [r for r in rows if "row" in r]
    assert {r["row"] for r in results} >= {
        crossdomain.DEFAULT_ROW,
        crossdomain.LABELED_ONLY_ROW,
        *crossdomain.BASELINES,
    }
    # five ways asked, three classes in the domain: 3-way
    assert {(r["ways"], r["shots"], r["episodes"]) for r in results} == {
        (2, 1, 3),
        (2, 2, 3),
        (3, 1, 3),
        (3, 2, 3),
    }
    by_row = {(r["row"], r["ways"], r["shots"]): r for r in results}
    for ways, shots in [(2, 1), (2, 2), (3, 1), (3, 2)]:
        default = by_row[crossdomain.DEFAULT_ROW, ways, shots]
        assert 0 <= default["ece"] <= 1
        assert default["accuracy"] == by_row["combined features", ways, shots]["accuracy"]
        assert 0 <= by_row[crossdomain.LABELED_ONLY_ROW, ways, shots]["ece"] <= 1
    table = crossdomain.format_table(rows)
    assert "blobs-development" in table and "best baseline" in table


def test_a_run_of_one_source_refreshes_its_rows_and_leaves_the_others(blob_domains):
    full = crossdomain.run_crossdomain(["blobs-development"], episodes=2, shots=(2,), log=lambda _: None)
    combined_only = crossdomain.run_crossdomain(
        ["blobs-development"], episodes=2, shots=(2,), log=lambda _: None, sources=("combined",)
    )
    assert {r["row"] for r in combined_only} == {
        crossdomain.DEFAULT_ROW,
        crossdomain.LABELED_ONLY_ROW,
        "combined features",
        *crossdomain.BASELINES,
    }
    stale = [{**r, "accuracy": -1.0} for r in full]
    published = crossdomain.merged(stale, combined_only)
    assert [(r["row"], r["accuracy"]) for r in published] == [
        (r["row"], -1.0 if r["row"] not in {x["row"] for x in combined_only} else r["accuracy"]) for r in full
    ]


def test_one_shot_factors_are_fitted_on_development_domains_only(blob_domains):
    from mssl_core.engine.combined_source import ONE_SHOT_FACTORS

    factors = crossdomain.fit_one_shot_factors(["blobs-development"], episodes=2)
    assert factors.keys() == ONE_SHOT_FACTORS.keys() and all(f > 0 for f in factors.values())
    with pytest.raises(ValueError, match="development domains only.*blobs-test"):
        crossdomain.fit_one_shot_factors(["blobs-development", "blobs-test"], episodes=1)


def test_centring_is_the_same_in_label_the_app_and_the_benchmark(shape_folders, tmp_path):
    """One set of files, three front ends, the same probabilities: the task mean is taken over
    the labeled and unlabeled images wherever the ImageNet source is used."""
    from mssl_core.engine.backbones import embed_images
    from mssl_core.labeling.adapt import fit_task, model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.labeling.folders import label_folders
    from mssl_core.labeling.images import class_folder_files, decode_image, list_files
    from mssl_core.project import store
    from mssl_core.project.ingest import UploadedFile, ingest
    from mssl_core.project.pseudo_label import pseudo_label_project

    support_dir, unlabeled_dir, _ = shape_folders
    (unlabeled_dir / "broken.png").unlink()
    by_label = label_folders(support_dir, unlabeled_dir, "protonet", "imagenet", log=lambda _: None)
    from_label = {row.path: row.probabilities for row in by_label.rows}

    project = store.open_project("centring", create=True)
    files = class_folder_files(support_dir)
    ingest(project, [UploadedFile(f.path.name, f.path.read_bytes(), f.label) for f in files], "labeled")
    batch = list_files(unlabeled_dir)
    ingest(project, [UploadedFile(p.name, p.read_bytes()) for p in batch], "unlabeled")
    model = model_for("protonet", "imagenet")
    result = pseudo_label_project(project, model, EmbeddingCache(tmp_path / "cache.sqlite"))
    from_app = {i.name: p for i, p in zip(result.images, result.prediction.probabilities, strict=True)}
    assert from_app.keys() == from_label.keys()
    for name, probabilities in from_app.items():
        np.testing.assert_allclose(probabilities, from_label[name], atol=1e-5)

    # the benchmark's source rows: fit_task on the same embeddings, centred the same way
    classes = sorted({f.label for f in files})
    support = embed_images(model.backbone, [decode_image(f.path) for f in files])
    unlabeled = embed_images(model.backbone, [decode_image(p) for p in batch])
    labels = torch.tensor([classes.index(f.label) for f in files])
    task = fit_task(model, classes, support, labels, unlabeled)
    # the middle of the classes: the mean of the labeled images' class means
    powered = support.clamp_min(0).sqrt()
    mean = torch.stack([powered[labels == c].mean(0) for c in range(len(classes))]).mean(0, keepdim=True)
    assert torch.allclose(task.method.mean, mean)
    bench = task.probabilities(unlabeled).numpy()
    for path, probabilities in zip(batch, bench, strict=True):
        np.testing.assert_allclose(probabilities, from_label[path.name], atol=1e-5)


def test_task_centred_features_do_not_depend_on_where_the_batch_is_centred():
    """Shifting every image by the same vector changes nothing: the task's mean is removed."""
    from mssl_core.engine.feature_sources import TaskCentred
    from mssl_core.engine.methods import make_method

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(2)
    support, batch = torch.randn(6, 20, generator=generator), torch.randn(30, 20, generator=generator)
    shift = torch.randn(1, 20, generator=generator) * 50
    first = TaskCentred(make_method("protonet"), (10, 10), None, 8, 3.0).fit(support, labels, batch)
    second = TaskCentred(make_method("protonet"), (10, 10), None, 8, 3.0).fit(
        support + shift, labels, batch + shift
    )
    assert torch.allclose(first.predict_proba(batch), second.predict_proba(batch + shift), atol=1e-4)
    assert not torch.allclose(first.transform(batch), first.transform(batch + shift))


def test_one_shot_confidence_uses_the_development_factor_and_says_it_was_not_checked(shape_folders):
    from mssl_core.engine.combined_source import SINGLE_SOURCE_ONE_SHOT_FACTORS
    from mssl_core.labeling.adapt import fit_task, model_for

    model = model_for("protonet", "imagenet")
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    from mssl_core.engine.backbones import embed_images

    support = embed_images(model.backbone, images)
    batch = embed_images(model.backbone, images * 2)
    task = fit_task(model, ["r", "g", "b"], support, torch.arange(3), batch)
    assert not task.confidence_checked
    assert task.temperature == pytest.approx(
        task.method.temperature * SINGLE_SOURCE_ONE_SHOT_FACTORS["imagenet"]
    )
