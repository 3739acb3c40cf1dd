import io
import json
import zipfile

from PIL import Image
from torchvision.datasets import ImageFolder

from mssl_core.project.export import ExportRow, to_class_folders_zip, to_csv, to_label_studio


def _rows(tmp_path):
    rows = []
    for i, (label, status) in enumerate([("cat", "labeled"), ("dog", "accepted"), ("dog", "pseudo-labeled")]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(path)
        rows.append(ExportRow("same name.png", label, None if status == "labeled" else 0.9, status, path))
    return rows


def test_class_folder_zip_reads_back_with_imagefolder(tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(to_class_folders_zip(_rows(tmp_path))))
    archive.extractall(tmp_path / "out")
    dataset = ImageFolder(str(tmp_path / "out"))
    assert dataset.classes == ["cat", "dog"]
    assert sorted(dataset.targets) == [0, 1, 1]  # clashing file names were kept apart


def test_csv_and_label_studio(tmp_path):
    rows = _rows(tmp_path)
    lines = to_csv(rows).decode().splitlines()
    assert lines[0] == "file,label,confidence,status" and lines[1] == "same name.png,cat,,labeled"
    tasks = json.loads(to_label_studio(rows))
    assert tasks[0]["annotations"][0]["result"][0]["value"]["choices"] == ["cat"]
    assert tasks[2]["predictions"][0]["score"] == 0.9 and "annotations" not in tasks[2]
