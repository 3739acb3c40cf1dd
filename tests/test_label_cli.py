import csv
from pathlib import Path

import pytest
import torch

from mssl_core.__main__ import main
from mssl_core.backbones import make_backbone
from mssl_core.checkpoints import MODELS_DIR, Model, load_model, save_model
from mssl_core.methods import make_method
from mssl_core.train import SHIPPED_METHODS


def _read(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_checkpoint_round_trip(tiny_models):
    model = load_model("conv4-softkmeans", tiny_models)
    assert model.backbone.name == "conv4" and model.method.name == "softkmeans"
    reference = torch.load(tiny_models / "conv4-softkmeans.pt", weights_only=True)
    for key, value in reference["backbone_state"].items():
        assert torch.equal(model.backbone.state_dict()[key], value)


def test_checkpoint_round_trip_of_a_method_with_per_feature_weights(tmp_path):
    backbone = make_backbone("conv4").eval()
    method = make_method("matching", embedding_dim=backbone.embedding_dim)
    with torch.no_grad():
        method.f.weight.mul_(2)
    save_model(Model("conv4-matching", backbone, method, {"method": "matching"}), tmp_path)
    loaded = load_model("conv4-matching", tmp_path)
    assert loaded.method.embedding_dim == backbone.embedding_dim == 64
    assert torch.equal(loaded.method.f.weight, method.f.weight)


def test_unknown_model_lists_what_is_available(tiny_models):
    with pytest.raises(FileNotFoundError, match="conv4-protonet"):
        load_model("nope", tiny_models)


def test_label_cli_writes_a_row_per_file_and_reports_the_corrupt_one(
    shape_folders, tiny_models, tmp_path, capsys
):
    support, unlabeled, truth = shape_folders
    out = tmp_path / "predictions.csv"
    args = ["label", "--support", str(support), "--unlabeled", str(unlabeled), "--out", str(out)]
    assert main([*args, "--models", str(tiny_models)]) == 0
    rows = _read(out)
    assert list(rows[0]) == [
        "path",
        "label",
        "confidence",
        "error",
        *[f"p_{c}" for c in ("circle", "cross", "square")],
    ]
    assert sorted(r["path"] for r in rows) == sorted([*truth, "broken.png"])
    broken = next(r for r in rows if r["path"] == "broken.png")
    assert broken["label"] == "" and "not an image" in broken["error"]
    assert "broken.png" in capsys.readouterr().err
    for row in rows:
        if row["path"] != "broken.png":
            assert row["error"] == "" and row["label"] in ("circle", "cross", "square")
            total = sum(float(row[f"p_{c}"]) for c in ("circle", "cross", "square"))
            assert abs(total - 1) < 1e-3
            assert abs(float(row["confidence"]) - max(float(row[k]) for k in row if k[:2] == "p_")) < 1e-4


def test_label_cli_refuses_a_single_class(shape_folders, tiny_models, tmp_path):
    support, unlabeled, _ = shape_folders
    for extra in ("square", "cross"):
        for file in (support / extra).iterdir():
            file.unlink()
        (support / extra).rmdir()
    with pytest.raises(ValueError, match="at least two class"):
        main(
            [
                "label",
                "--support",
                str(support),
                "--unlabeled",
                str(unlabeled),
                "--out",
                str(tmp_path / "o.csv"),
                "--models",
                str(tiny_models),
            ]
        )


@pytest.mark.usefixtures("refuse_outbound")
@pytest.mark.parametrize("method", SHIPPED_METHODS)
def test_shipped_model_labels_unseen_shapes(shape_folders, tmp_path, method):
    """The meta-trained models never saw shapes; from 3 examples each they should still sort them."""
    support, unlabeled, truth = shape_folders
    out = tmp_path / "predictions.csv"
    main(
        [
            "label",
            "--support",
            str(support),
            "--unlabeled",
            str(unlabeled),
            "--out",
            str(out),
            "--method",
            method,
            "--backbone",
            "conv4",
            "--models",
            str(MODELS_DIR),
        ]
    )
    rows = [r for r in _read(out) if r["path"] in truth]
    accuracy = sum(r["label"] == truth[r["path"]] for r in rows) / len(rows)
    assert accuracy >= 0.8


def test_label_cli_applies_self_training_when_asked(shape_folders, tmp_path, capsys):
    support, unlabeled, truth = shape_folders
    base = ["label", "--support", str(support), "--unlabeled", str(unlabeled), "--backbone", "conv4"]
    base += ["--method", "protonet"]
    main([*base, "--out", str(tmp_path / "plain.csv")])
    main([*base, "--out", str(tmp_path / "self.csv"), "--pseudo-label-rounds", "2", "--entropy-weight", "0.1"])
    plain, self_trained = _read(tmp_path / "plain.csv"), _read(tmp_path / "self.csv")
    assert [r["path"] for r in plain] == [r["path"] for r in self_trained]
    # the extra examples change the adapted model, so the reported confidences move
    assert any(a["confidence"] != b["confidence"] for a, b in zip(plain, self_trained, strict=True))


def test_large_batches_adapt_to_a_fixed_sample_and_label_every_image(shape_folders, tiny_models, monkeypatch):
    from mssl_core import labeling

    support, unlabeled, truth = shape_folders
    assert list(labeling.fit_sample(5, limit=8)) == [0, 1, 2, 3, 4]
    sample = labeling.fit_sample(1_000, limit=8)
    assert len(set(sample)) == 8 and list(sample) == sorted(sample)
    assert list(sample) == list(labeling.fit_sample(1_000, limit=8))  # the same on every run
    monkeypatch.setattr(labeling, "FIT_LIMIT", 6)
    fitted = []
    original = labeling.fit_task
    monkeypatch.setattr(labeling, "fit_task", lambda *a, **k: fitted.append(len(a[4])) or original(*a, **k))
    result = labeling.label_folders(support, unlabeled, folder=tiny_models, log=lambda _: None)
    assert fitted == [6]
    assert sum(1 for row in result.rows if row.label) == len(truth)


@pytest.mark.parametrize("method", ["protonet", "logreg", "label-spreading"])
@pytest.mark.parametrize("winner", ["conv4", "mobilenetv2", "imagenet", "pixels"])
def test_auto_features_are_the_source_whose_held_out_predictions_score_best(
    both_backbones, monkeypatch, method, winner
):
    from mssl_core import labeling

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(4)

    def embeddings(backbone, images):  # separable classes from the winner, noise from the others
        dim = backbone.embedding_dim
        if backbone.name != winner:
            return torch.randn(12, dim, generator=generator)
        return (
            torch.randn(3, dim, generator=generator)[labels] * 3
            + torch.randn(12, dim, generator=generator) * 0.3
        )

    # no unlabeled paths: the support set alone
    monkeypatch.setattr(labeling, "embed_images", embeddings)
    backbone, reason = labeling.choose_backbone([None] * 12, labels, method, both_backbones)
    assert backbone == winner and "log loss" in reason


def test_pick_source_keeps_the_default_unless_another_wins_by_the_margin():
    from mssl_core.labeling import FEATURE_SOURCES, pick_source

    default, other = FEATURE_SOURCES[0], FEATURE_SOURCES[1]
    assert pick_source({default: 0.50, other: 0.45}, margin=0.1) == default
    assert pick_source({default: 0.50, other: 0.35}, margin=0.1) == other
    assert pick_source({other: 0.9, FEATURE_SOURCES[2]: 0.1}, margin=0.1) == FEATURE_SOURCES[2]


def test_a_head_made_to_hurt_loses_to_the_features_without_it(both_backbones, shape_folders):
    """The MobileNetV2 head made to collapse every image onto one random direction (its
    correction cancels the projection) and Conv-4 untrained: the choice, measured on the
    labeled images, takes a source without a head."""
    from mssl_core import labeling
    from mssl_core.checkpoints import load_model, save_model
    from mssl_core.images import class_folder_files, decode_image, list_files

    model = load_model("mobilenetv2-protonet", both_backbones)
    head, generator = model.backbone.head, torch.Generator().manual_seed(0)
    direction, out = (
        torch.randn(head.projection.shape[0], generator=generator),
        torch.ones(head.projection.shape[1]),
    )
    with torch.no_grad():
        head.correction.weight.copy_(-head.projection.T + torch.outer(out, direction))
    save_model(model, both_backbones)
    support, unlabeled, _ = shape_folders
    files = class_folder_files(support)
    images = [decode_image(f.path) for f in files]
    classes = sorted({f.label for f in files})
    labels = torch.tensor([classes.index(f.label) for f in files])
    paths = [p for p in list_files(unlabeled) if p.name != "broken.png"]
    backbone, reason = labeling.choose_backbone(images, labels, "protonet", both_backbones, paths)
    assert backbone in labeling.CENTRED_SOURCES, reason


def test_the_backbone_choice_embeds_a_sample_of_the_batch_into_the_cache(both_backbones, tmp_path):
    import hashlib

    import numpy as np
    from PIL import Image

    from mssl_core import labeling
    from mssl_core.embedding_cache import EmbeddingCache

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 30, (28, 28), dtype=np.uint8) + v) for v in (40,) * 3 + (200,) * 3
    ]
    batch = []
    for i in range(5):
        batch.append(tmp_path / f"batch{i}.png")
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(batch[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    backbone, reason = labeling.choose_backbone(
        images, labels, "protonet", both_backbones, [*batch, tmp_path / "broken.png"], cache
    )
    assert backbone in labeling.FEATURE_SOURCES and "log loss" in reason
    hashes = [hashlib.sha256(path.read_bytes()).hexdigest() for path in batch]
    for name in labeling.FEATURE_SOURCES:
        model = labeling.model_for("protonet", name, both_backbones)
        assert len(cache.get_many(model.backbone_key, hashes)) == 5  # the labeling run reuses them


def test_with_one_shot_drawings_go_to_conv4_and_grayscale_photos_to_imagenet_features(both_backbones):
    import numpy as np
    from PIL import Image, ImageDraw

    from mssl_core import labeling

    def drawing(i: int) -> Image.Image:
        image = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(image).line([(4, 4 + i), (24, 20 - i)], fill=255, width=3)
        return image

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(40, 220, (28, 28), dtype=np.uint8)) for _ in range(3)]
    labels = torch.arange(3)  # one image per class: nothing to hold out
    assert labeling.choose_backbone([drawing(i) for i in range(3)], labels, "protonet", both_backbones) == (
        "conv4",
        "image features conv4: small grayscale drawings, like the characters it learned from "
        "(a class has one labeled example: too few to measure which does better)",
    )
    backbone, reason = labeling.choose_backbone(photos, labels, "protonet", both_backbones)
    assert backbone == "imagenet" and "photos" in reason
    dark_on_light = [Image.eval(drawing(i), lambda v: 255 - v) for i in range(3)]
    assert labeling.backbone_by_image_kind(dark_on_light)[0] == "conv4"
    # the unlabeled batch counts too: drawings among many photos are not a drawing task
    assert labeling.backbone_by_image_kind(dark_on_light, photos * 3)[0] == "imagenet"
    large = [drawing(i).resize((256, 256)) for i in range(3)]
    colour = [drawing(i).convert("RGB") for i in range(3)]
    assert labeling.backbone_by_image_kind(large)[0] == labeling.backbone_by_image_kind(colour)[0] == "imagenet"
