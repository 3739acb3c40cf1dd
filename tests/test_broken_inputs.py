"""Hostile and broken input (issue: hardening): every case of `broken_inputs.py` through the
decoder, the CLI and the app's upload path — good files processed, bad ones named with a
specific reason, never a traceback; archives and label CSVs; patient identifiers kept out."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import numpy as np
import pytest
from broken_inputs import PATIENT_ID, PATIENT_NAME, Case, cases, dicom, encoded

from mssl_core.cli import main
from mssl_core.labeling.images import ImageError, UploadedFile, decode_image, expand_uploads, read_label_csv
from mssl_core.project import store
from mssl_core.project.export import to_class_folders_zip, to_csv, to_label_studio
from mssl_core.project.ingest import ingest, ingest_uploads
from mssl_core.project.pseudo_label import export_rows

CASES = cases()


def _matches(case: Case, message: str) -> bool:
    return re.search(case.reason, message, re.IGNORECASE) is not None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decoder(case, tmp_path):
    path = tmp_path / case.name
    path.write_bytes(case.content)
    if case.good:
        image = decode_image(path)
        assert image.mode in ("L", "RGB") and max(image.size) <= 1024
        assert case.check(image), case.name
    else:
        with pytest.raises(ImageError) as raised:
            decode_image(path)
        assert _matches(case, str(raised.value)), str(raised.value)


def test_cli_labels_the_good_files_and_names_each_bad_one(shape_folders, tiny_models, tmp_path, capsys):
    support, _, _ = shape_folders
    batch = tmp_path / "batch"
    batch.mkdir()
    for case in CASES:
        (batch / case.name).write_bytes(case.content)
    out = tmp_path / "predictions.csv"
    command = ["label", "--support", str(support), "--unlabeled", str(batch), "--out", str(out)]
    assert main([*command, "--models", str(tiny_models)]) == 0
    with out.open(encoding="utf-8") as handle:
        rows = {r["path"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {c.name for c in CASES}
    for case in CASES:
        row = rows[case.name]
        if case.good:
            assert row["error"] == "" and row["label"], case.name
        else:
            assert row["label"] == "" and _matches(case, row["error"]), (case.name, row["error"])
    log = capsys.readouterr().err
    assert "Traceback" not in log
    assert all(case.name in log for case in CASES if not case.good)  # each bad file named
    assert PATIENT_NAME not in log and PATIENT_ID not in log and PATIENT_NAME not in out.read_text()


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
    return store.open_project("hostile")


def test_upload_path_adds_the_good_files_and_names_each_bad_one(project):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for case in CASES:
            zipped.writestr(f"batch/{case.name}", case.content)
    report = ingest_uploads(project, [("batch.zip", archive)], "unlabeled")
    reasons = dict(report.problems)
    assert report.added == sum(c.good for c in CASES)
    for case in CASES:
        if not case.good:
            assert _matches(case, reasons[case.name]), (case.name, reasons.get(case.name))
    assert {i.name for i in project.images("unlabeled")} == {c.name for c in CASES if c.good}


def test_duplicates_by_content_are_counted_once_and_cross_set_copies_are_named(project):
    png = encoded(decode_image(CASES[-5].content), "PNG")
    other = encoded(decode_image(CASES[-5].content).rotate(180), "PNG")
    batch = [UploadedFile("a.png", png), UploadedFile("copy of a.png", png), UploadedFile("a.png", other)]
    report = ingest(project, batch, "unlabeled")
    assert report.added == 2  # the same name with other content is another image
    assert report.duplicates == ["copy of a.png (same image as a.png)"]
    labeled = ingest(project, [UploadedFile("a again.png", png, "cat")], "labeled")
    assert labeled.duplicates == ["a again.png was in the unlabeled batch; it now counts as labeled only"]
    assert len(project.images("unlabeled")) == 1 and len(project.images("labeled")) == 1  # counted once


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_archives_refuse_traversal_bombs_and_nesting_and_skip_hidden_files(tmp_path):
    png = encoded(decode_image(CASES[-5].content), "PNG")
    hostile = _zip(
        {
            "ok/cat/1.png": png,
            "../../etc/evil.png": png,
            "/absolute.png": png,
            "bomb.bin": b"\0" * 20_000_000,  # 20 MB of zeros: a ratio far above the limit
            "inner.zip": _zip({"x.png": png}),
            "__MACOSX/ok/cat/._1.png": b"resource fork",
            "ok/.hidden.png": png,
        }
    )
    files, problems = expand_uploads(
        [("hostile.zip", io.BytesIO(hostile)), ("empty.zip", io.BytesIO(_zip({})))], tmp_path
    )
    reasons = dict(problems)
    assert [(f.name, f.label) for f in files] == [("1.png", "cat")]
    assert "unsafe path" in reasons["hostile.zip/../../etc/evil.png"]
    assert "unsafe path" in reasons["hostile.zip//absolute.png"]
    assert "zip bomb" in reasons["hostile.zip/bomb.bin"]
    assert "archives inside archives" in reasons["hostile.zip/inner.zip"]
    assert reasons["empty.zip"] == "the archive holds no files"


def test_label_csv_problems_are_named(project):
    png = encoded(decode_image(CASES[-5].content), "PNG")
    other = encoded(decode_image(CASES[-4].content).rotate(90), "PNG")
    content = (
        "\ufefffile;label;comment\nx.png;cat;first\ny.png;dog;extra column\nz.png;;blank\nghost.png;bird;\n"
    )
    labels, problems = read_label_csv(content.encode())
    assert labels == {"x.png": "cat", "y.png": "dog", "ghost.png": "bird"}
    report = ingest(project, [UploadedFile("x.png", png), UploadedFile("y.png", other)], "labeled", labels)
    reasons = problems + report.problems
    assert ("labels CSV line 4", "no label given") in reasons
    assert ("labels CSV", "lists 'ghost.png', which was not uploaded") in reasons
    assert ("class 'bird'", "has no usable images (its files are missing or unreadable)") in reasons
    assert report.added == 2


def test_patient_identifiers_stay_out_of_exports(project):
    scan = dicom(np.tile(range(32), (32, 1)) * 50)
    assert PATIENT_NAME.encode() in scan  # the file really carries them
    ingest(project, [UploadedFile("scan.dcm", scan, "ct")], "labeled")
    ingest(project, [UploadedFile("other.dcm", dicom(np.eye(32) * 900), None)], "unlabeled")
    rows = export_rows(project, include_pseudo_labels=False)
    archive = zipfile.ZipFile(io.BytesIO(to_class_folders_zip(rows)))
    assert archive.namelist() == ["ct/scan.png"]
    for exported in (to_csv(rows), to_label_studio(rows), archive.read("ct/scan.png")):
        assert PATIENT_NAME.encode() not in exported and PATIENT_ID.encode() not in exported
    assert json.loads(to_label_studio(rows))[0]["data"]["image"] == "scan.dcm"
