import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mssl_core.cli import main
from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.checkpoints import MODELS_DIR, Model, load_model, save_model
from mssl_core.engine.methods import make_method
from mssl_core.engine.train import SHIPPED_METHODS
from tests.conftest import draw_shape


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


def test_label_cli_says_what_the_confidence_promises_or_that_it_was_not_checked(
    shape_folders, tiny_models, tmp_path, capsys
):
    support, unlabeled, truth = shape_folders
    args = ["label", "--support", str(support), "--unlabeled", str(unlabeled), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--models", str(tiny_models), "--no-cache"]) == 0
    said = capsys.readouterr().err
    assert re.search(
        rf"about \d+ wrong labels expected among the {len(truth)} images \(expected precision", said
    )
    assert "likely no more than" in said and "not checked" not in said
    for extra in sorted((support / "circle").iterdir())[1:]:  # one labeled circle: nothing to check on
        extra.unlink()
    assert main([*args, "--models", str(tiny_models), "--no-cache"]) == 0
    said = capsys.readouterr().err
    assert "confidence not checked on your images" in said and "wrong labels expected" not in said


def test_label_cli_refuses_a_single_class(shape_folders, tiny_models, tmp_path):
    support, unlabeled, _ = shape_folders
    for extra in ("square", "cross"):
        for file in (support / extra).iterdir():
            file.unlink()
        (support / extra).rmdir()
    with pytest.raises(ValueError, match="at least two classes"):
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
    from mssl_core.labeling import adapt as labeling
    from mssl_core.labeling.folders import label_folders

    support, unlabeled, truth = shape_folders
    assert list(labeling.fit_sample(5, limit=8)) == [0, 1, 2, 3, 4]
    sample = labeling.fit_sample(1_000, limit=8)
    assert len(set(sample)) == 8 and list(sample) == sorted(sample)
    assert list(sample) == list(labeling.fit_sample(1_000, limit=8))  # the same on every run
    monkeypatch.setattr(labeling, "FIT_LIMIT", 6)
    fitted = []
    original = labeling.fit_task
    monkeypatch.setattr(labeling, "fit_task", lambda *a, **k: fitted.append(len(a[4])) or original(*a, **k))
    result = label_folders(support, unlabeled, folder=tiny_models, log=lambda _: None)
    assert fitted == [6]
    assert sum(1 for row in result.rows if row.label) == len(truth)


def test_label_cli_names_a_labeled_image_filed_under_the_wrong_class(shape_folders, tmp_path, capsys):
    """A cross dropped into the circle folder: `label` names that file (relative to the labeled
    folder), the class it looks like, and calls it a likely slip."""
    support, unlabeled, _ = shape_folders
    arguments = [
        "label",
        "--support",
        str(support),
        "--unlabeled",
        str(unlabeled),
        "--no-cache",
        "--out",
        str(tmp_path / "p.csv"),
        "--backbone",
        "conv4",
        "--models",
        str(MODELS_DIR),
    ]
    (support / "cross" / "0.png").rename(support / "circle" / "slip.png")
    draw_shape("cross", np.random.default_rng(1)).save(support / "cross" / "3.png")  # still 3 crosses
    main(arguments)
    said = capsys.readouterr().err
    assert re.search(
        r"\n  circle[/\\]slip\.png: labeled circle, looks like cross \(\d+%\): likely mislabeled", said
    )
