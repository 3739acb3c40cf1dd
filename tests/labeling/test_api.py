"""The Python API at the package's top level (mssl_core.labeling.api)."""

import csv
import logging

import numpy as np
import pytest
from PIL import Image

import mssl_core
from mssl_core.cli import main


def test_label_folder_gives_what_the_cli_writes(shape_folders, tiny_models, tmp_path):
    support, unlabeled, truth = shape_folders
    result = mssl_core.label_folder(support, unlabeled, models=tiny_models)
    assert result.classes == ["circle", "cross", "square"]
    readable = [i for i, error in enumerate(result.errors) if not error]
    broken = result.paths.index("broken.png")
    assert len(readable) == len(truth) and broken not in readable and result.labels[broken] == ""
    probabilities = result.probabilities
    assert probabilities.shape == (len(truth) + 1, 3) and np.isnan(probabilities[broken]).all()
    assert np.allclose(probabilities[readable].sum(1), 1, atol=1e-5)
    assert [result.classes[i] for i in probabilities[readable].argmax(1)] == [
        result.labels[i] for i in readable
    ]
    assert np.allclose(result.confidence[readable], probabilities[readable].max(1))

    result.to_csv(tmp_path / "api.csv")
    main(["label", "--support", str(support), "--unlabeled", str(unlabeled), "--out", str(tmp_path / "cli.csv"),
          "--models", str(tiny_models), "--no-cache"])  # fmt: skip
    assert (tmp_path / "api.csv").read_text() == (tmp_path / "cli.csv").read_text()


def test_label_images_in_memory_match_the_same_files(shape_folders, tiny_models, caplog):
    support, unlabeled, truth = shape_folders
    labeled = sorted(p for p in support.rglob("*.png"))
    batch = sorted(unlabeled.glob("*_*.png"))
    result = mssl_core.label_images(
        [Image.open(p) for p in labeled], [p.parent.name for p in labeled], [Image.open(p) for p in batch],
        models=tiny_models,
    )  # fmt: skip
    assert result.paths == [str(i) for i in range(len(batch))]
    from_files = mssl_core.label_folder(support, unlabeled, models=tiny_models)
    rows = {path: i for i, path in enumerate(from_files.paths)}
    expected = from_files.probabilities[[rows[p.name] for p in batch]]
    assert np.allclose(result.probabilities, expected, atol=1e-4)


def test_unreadable_files_are_logged_not_printed(shape_folders, tiny_models, caplog, capsys):
    support, unlabeled, _ = shape_folders
    with caplog.at_level(logging.WARNING, logger="mssl_core"):
        mssl_core.label_folder(support, unlabeled, models=tiny_models)
    assert any("broken.png" in record.getMessage() for record in caplog.records)
    assert "broken.png" not in capsys.readouterr().out


def test_label_images_refuses_mismatched_labels(tiny_models):
    image = Image.new("L", (28, 28))
    with pytest.raises(ValueError, match="2 labeled images but 1 labels"):
        mssl_core.label_images([image, image], ["a"], [image], models=tiny_models)


def test_the_csv_names_every_class(shape_folders, tiny_models, tmp_path):
    support, unlabeled, _ = shape_folders
    mssl_core.label_folder(support, unlabeled, models=tiny_models).to_csv(tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header == ["path", "label", "confidence", "error", "p_circle", "p_cross", "p_square"]
