import io
import zipfile

import pytest
from PIL import Image

from mssl_core.labeling.images import UploadedFile, expand_uploads, read_label_csv
from mssl_core.project import store
from mssl_core.project.ingest import DEMO_DIR, class_counts, demo_accuracy, ingest


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), value).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_zip_class_folders_are_labels_and_unsafe_members_are_reported(tmp_path):
    archive = _zip(
        {
            "set/cat/1.png": _png(10),
            "set/dog/2.png": _png(20),
            "__MACOSX/set/cat/._1.png": b"junk",
            "set/.DS_Store": b"junk",
            "../evil.png": _png(30),
            "inner.zip": _zip({"a.png": _png(40)}),
        }
    )
    files, problems = expand_uploads(
        [("batch.zip", io.BytesIO(archive)), ("loose.png", io.BytesIO(_png(50)))], tmp_path
    )
    assert [(f.name, f.label) for f in files] == [("1.png", "cat"), ("2.png", "dog"), ("loose.png", None)]
    reasons = dict(problems)
    assert "unsafe path" in reasons["batch.zip/../evil.png"]
    assert "archives inside archives" in reasons["batch.zip/inner.zip"]
    broken = expand_uploads([("broken.zip", io.BytesIO(b"not a zip"))], tmp_path)[1]
    assert broken == [("broken.zip", "not a readable zip archive")]


def test_label_csv_with_bom_semicolons_and_blank_labels():
    content = "\ufefffile;label\nfolder/a.png;cat\nb.png; dog \nc.png;\n".encode()
    labels, problems = read_label_csv(content)
    assert labels == {"a.png": "cat", "b.png": "dog"}
    assert problems == [("labels CSV line 4", "no label given")]
    assert read_label_csv(b"only-a-name.png\n") == ({}, [("labels CSV line 1", "no label given")])
    assert read_label_csv(b"") == ({}, [])


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path))
    return store.open_project("ingest")


def test_ingest_reports_unreadable_unlabelled_and_duplicate_files(project):
    files = [
        UploadedFile("a.png", _png(1), "cat"),
        UploadedFile("copy of a.png", _png(1), "cat"),
        UploadedFile("b.png", _png(2)),
        UploadedFile("empty.png", b"", "cat"),
    ]
    report = ingest(project, files, "labeled", csv_labels={"b.png": "dog"})
    assert report.added == 2 and class_counts(project) == {"cat": 1, "dog": 1}
    assert report.duplicates == ["copy of a.png (same image as a.png)"]
    assert report.problems == [("empty.png", "the file is empty (0 bytes)")]
    unlabeled = ingest(
        project, [UploadedFile("x.png", _png(1)), UploadedFile("nolabel.png", _png(9))], "unlabeled"
    )
    assert unlabeled.added == 1
    assert unlabeled.duplicates == ["x.png is already labeled (a.png); not added to the batch"]
    assert [i.name for i in project.images("unlabeled")] == ["nolabel.png"]
    missing = ingest(project, [UploadedFile("z.png", _png(7))], "labeled")
    assert missing.problems == [("z.png", "no class given (folder, CSV or typed name)")]


def test_demo_accuracy_scores_demo_images_by_content_not_by_name(project):
    truth_rows = (DEMO_DIR / "unlabeled_truth.csv").read_text().splitlines()[1:3]
    (first, first_label), (second, second_label) = (row.split(",", 1) for row in truth_rows)
    ingest(project, [UploadedFile(n, DEMO_DIR / "unlabeled" / n) for n in (first, second)], "unlabeled")
    # a user's own image that happens to share a demo file's name
    ingest(project, [UploadedFile(first, _png(3))], "unlabeled")
    images = project.images("unlabeled")
    assert [i.name for i in images] == [first, second, first]
    wrong_for_second = "dress" if second_label != "dress" else "bag"
    labels = [first_label, wrong_for_second, first_label]
    assert demo_accuracy([i.sha256 for i in images], labels) == (2, 0.5)
    assert demo_accuracy([images[2].sha256], [first_label]) is None  # a real project's image
