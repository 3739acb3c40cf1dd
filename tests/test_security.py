"""Safe on a hospital network (issue 15): what an export carries, what a name can do, and what
the log-in holds back. Each test fails on the code before the fix."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.labeling.images import UploadedFile
from mssl_core.project import store
from mssl_core.project.export import ExportRow, pseudonymised, to_class_folders_zip, to_csv
from mssl_core.project.ingest import class_name_problem, ingest

APP = str(REPO_ROOT / "app.py")


@pytest.fixture
def project():
    return store.open_project("security", create=True)


def _jpeg_with_metadata() -> bytes:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "DOE^JANE 1961-04-02"  # ImageDescription
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), comment=b"MRN 0042-DOE^JANE")
    return buffer.getvalue()


def _png_with_text() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Patient", "DOE^JANE")
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 90).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_exported_images_carry_no_metadata_and_names_can_be_pseudonyms(project):
    from mssl_core.project.pseudo_label import export_rows

    files = [
        UploadedFile("DOE_JANE_chest.jpg", _jpeg_with_metadata(), "lung"),
        UploadedFile("scan.png", _png_with_text(), "lung"),
    ]
    ingest(project, files, "labeled")
    for content in (f.content for f in files):
        assert b"DOE^JANE" in content  # the uploads really carry it
    rows = pseudonymised(export_rows(project, include_pseudo_labels=False))
    archive = zipfile.ZipFile(io.BytesIO(to_class_folders_zip(rows)))
    assert sorted(archive.namelist()) == ["lung/image-000001.jpg", "lung/image-000002.png"]
    for member in archive.namelist():
        data = archive.read(member)
        assert b"DOE" not in data and b"Exif" not in data
        Image.open(io.BytesIO(data)).load()  # still an image
    exported = to_csv(rows).decode()
    assert "DOE" not in exported and "image-000001.jpg" in exported


def test_spreadsheet_formulas_in_names_are_defused_in_the_csv():
    rows = [
        ExportRow(name, label, 0.9, "accepted", Path("x.png"))
        for name, label in [
            ('=HYPERLINK("http://203.0.113.7")', "@SUM(1+1)"),
            ("+1.png", "-2"),
            ("a.png", "ok"),
        ]
    ]
    cells = list(csv.reader(io.StringIO(to_csv(rows).decode())))[1:]
    assert [c[:2] for c in cells] == [
        ['\'=HYPERLINK("http://203.0.113.7")', "'@SUM(1+1)"],
        ["'+1.png", "'-2"],
        ["a.png", "ok"],
    ]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "CON", "nul.txt", "tab\there", "x" * 101, " "])
def test_class_names_that_could_become_paths_are_refused_at_upload(project, name):
    assert class_name_problem(name)
    report = ingest(project, [UploadedFile("a.png", _png_with_text(), name)], "labeled")
    assert report.added == 0 and "class name" in report.problems[0][1]


def test_the_zip_never_has_a_member_outside_its_class_folder(tmp_path):
    image = tmp_path / "b.png"
    image.write_bytes(_png_with_text())
    rows = [
        ExportRow(file, label, None, "labeled", image)
        for file, label in [("b.png", ".."), ("..\\..\\c.png", "x\\y")]
    ]
    names = zipfile.ZipFile(io.BytesIO(to_class_folders_zip(rows))).namelist()
    assert all(len(Path(n).parts) == 2 and ".." not in Path(n).parts and "\\" not in n for n in names), names


def test_markdown_in_names_is_shown_as_text():
    from views.access import md

    for hostile in ["![x](http://203.0.113.7/b.png)", "[Session expired](http://203.0.113.7)", ":red[x] **b**"]:
        escaped = md(hostile)
        # every character that opens a link, image, formatting or icon is escaped
        assert all(escaped[i - 1] == "\\" for i, c in enumerate(escaped) if c in "[]()!*:" and i > 0), escaped


def _log_in(app: AppTest, password: str) -> AppTest:
    app.text_input[0].input(password)
    return app.button[0].click().run()


def test_wrong_passwords_lock_the_log_in_for_everyone_for_a_while(monkeypatch):
    from views import access

    monkeypatch.setenv("MSSL_PASSWORD", "correct horse")
    throttle = access.LoginThrottle()
    monkeypatch.setattr(access, "login_throttle", lambda: throttle)
    app = AppTest.from_file(APP, default_timeout=60).run()
    for _ in range(access.FREE_ATTEMPTS):
        assert "Wrong password." in [e.value for e in _log_in(app, "guess").error]
    # a new session (a guesser's new tab) with the right password still waits
    other = _log_in(AppTest.from_file(APP, default_timeout=60).run(), "correct horse")
    assert any("Too many wrong passwords" in e.value for e in other.error) and other.text_input
    throttle.locked_until = 0.0  # the lock-out has passed
    other = _log_in(other, "correct horse")
    assert not other.text_input and not other.exception


def test_a_session_idle_too_long_is_logged_out(monkeypatch):
    from views import access

    monkeypatch.setenv("MSSL_PASSWORD", "correct horse")
    app = _log_in(AppTest.from_file(APP, default_timeout=60).run(), "correct horse")
    assert not app.text_input
    app.session_state["last_seen"] -= access.IDLE_MINUTES * 60 + 1
    app.run()
    assert app.text_input and app.text_input[0].label == "Password"


def test_a_network_address_without_a_password_is_refused():
    app = AppTest.from_file(APP, default_timeout=60)
    from streamlit import config

    previous = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        app.run()
    finally:
        config.set_option("server.address", previous)
    assert any("has no password" in e.value for e in app.error) and not app.title


def test_pages_show_images_inline_never_at_a_media_url(project):
    """Streamlit serves `st.image` at /media/... to any client, logged in or not."""
    from mssl_core.project.ingest import load_demo

    load_demo(project)
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["project"] = project.name
    app.run()
    app.switch_page("views/upload.py").run()
    assert not app.exception
    assert not app.get("imgs")
    inline = [h for h in app.get("html") if "data:image/png;base64," in h.proto.body]
    assert inline and "/media/" not in "".join(h.proto.body for h in app.get("html"))


def _dataset(pixels: np.ndarray, frames: int = 1):
    """A small uncompressed DICOM dataset (pydicom), `frames` copies of `pixels` offset by 100 each."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.concatenate([pixels + 100 * f for f in range(frames)]).astype(np.uint16).tobytes()
    return ds


def _saved(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_small_deflated_dicom_that_would_inflate_hugely_is_refused_before_inflating():
    import zlib

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from mssl_core.labeling.images import ImageError, decode_image

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    # one private OB element of 256 MB of zeros, compressed as it is generated
    size = 256 * 2**20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [compressor.compress(b"\x09\x00\x10\x10OB\x00\x00" + size.to_bytes(4, "little"))]
    zeros = bytes(2**20)
    body += [compressor.compress(zeros) for _ in range(size // len(zeros))] + [compressor.flush()]
    bomb = head.getvalue() + b"".join(body)
    assert len(bomb) < 400_000
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="expands beyond"):
            decode_image(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20  # never inflated whole (it would be 256 MB)


def test_a_multi_frame_dicom_decodes_its_first_frame_only(monkeypatch):
    import pydicom.pixels

    from mssl_core.labeling.images import decode_image

    asked = []
    original = pydicom.pixels.pixel_array
    monkeypatch.setattr(
        pydicom.pixels, "pixel_array", lambda *a, **k: asked.append(k.get("index")) or original(*a, **k)
    )
    image = decode_image(_saved(_dataset(np.tile(np.arange(16), (16, 1)) * 10, frames=5)))
    assert asked == [0] and image.size == (16, 16)


def test_a_broken_lookup_table_is_a_named_problem_and_the_rest_of_the_upload_goes_on(project):
    from pydicom.dataset import Dataset

    broken = _dataset(np.eye(16) * 500)
    broken.ModalityLUTSequence = [Dataset()]  # an empty item: pydicom raises AttributeError
    files = [UploadedFile("lut.dcm", _saved(broken), "ct"), UploadedFile("fine.png", _png_with_text(), "ct")]
    report = ingest(project, files, "labeled")
    assert report.added == 1
    assert report.problems[0][0] == "lut.dcm" and "DICOM" in report.problems[0][1]


@pytest.mark.parametrize("name", ["🩻", "x" * 300])
def test_a_project_name_no_project_can_have_is_a_message_not_a_traceback(name):
    app = AppTest.from_file(APP, default_timeout=60)
    app.query_params["project"] = name
    app.run()
    app.switch_page("views/review.py").run()
    assert not app.exception
    assert any("project name" in w.value for w in app.warning)


def test_creating_a_project_whose_folder_exists_is_refused():
    store.create_project("Skin lesions").close()
    with pytest.raises(ValueError, match="already exists"):
        store.create_project("skin-lesions")


def test_a_dicom_named_png_is_shown_from_its_pixels_and_the_page_keeps_working(project):
    ingest(project, [UploadedFile("scan.png", _saved(_dataset(np.eye(16) * 500)), "ct")], "labeled")
    ingest(project, [UploadedFile("b.png", _png_with_text(), "other")], "labeled")
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["project"] = project.name
    app.run()
    app.switch_page("views/upload.py").run()
    assert not app.exception
    assert sum(h.proto.body.count("data:image/png;base64,") for h in app.get("html")) == 2
    assert any(b.label == "Delete project" for b in app.button)


def test_undo_is_per_session_and_never_undoes_an_undo_or_someone_elses_change(project):
    images = []
    for value in (10, 20, 30):
        content = io.BytesIO()
        Image.new("L", (8, 8), value).save(content, format="PNG")
        images.append(project.add_image(content.getvalue(), f"{value}.png", "unlabeled")[0].id)
    tab_a, tab_b = (
        store.open_project(project.name, create=False),
        store.open_project(project.name, create=False),
    )
    tab_a.decide(images[0], "accept", "x", session="a")
    tab_b.decide(images[1], "accept", "y", session="b")
    assert tab_a.undoable("a")["image_id"] == images[0]  # not tab B's later decision
    tab_a.decide(images[0], "undo", session="a")
    assert tab_a.undoable("a") is None  # the undo itself is not undone
    tab_a.decide(images[2], "accept", "x", session="a")
    tab_b.decide(images[2], "correct", "z", session="b")
    assert tab_a.undoable("a") is None  # changed by tab B since: not A's to undo
    assert tab_b.undoable("b")["image_id"] == images[2]


def test_a_decision_on_an_image_changed_since_it_was_shown_is_refused(project):
    content = io.BytesIO()
    Image.new("L", (8, 8), 50).save(content, format="PNG")
    image_id = project.add_image(content.getvalue(), "a.png", "unlabeled")[0].id
    tab_a, tab_b = (
        store.open_project(project.name, create=False),
        store.open_project(project.name, create=False),
    )
    tab_b.decide(image_id, "correct", "b", session="b", shown=None)
    with pytest.raises(store.DecisionConflict, match="another session"):
        tab_a.decide(image_id, "accept", "a", session="a", shown=None)  # A saw it undecided
    assert tab_a.decision_of(image_id) == ("correct", "b")
    tab_a.decide(image_id, "accept", "a", session="a", shown=("correct", "b"))
    assert tab_b.decision_of(image_id) == ("accept", "a")


def test_each_browser_session_has_its_own_database_connection(project):
    sessions = []
    for _ in range(2):
        app = AppTest.from_file(APP, default_timeout=60)
        app.session_state["project"] = project.name
        app.run()
        app.switch_page("views/upload.py").run()
        assert not app.exception
        sessions.append(app.session_state["connection"][1])
    assert sessions[0] is not sessions[1] and sessions[0].db is not sessions[1].db


def test_what_the_app_stores_is_readable_by_its_user_alone():
    import os
    import stat

    previous = os.umask(0o022)
    try:
        app = AppTest.from_file(APP, default_timeout=60).run()
        app.switch_page("views/upload.py").run()
        app.text_input[0].input("private ward")
        next(b for b in app.button if b.label == "Create project").click().run()
        assert not app.exception
        folder = store.project_folder("private ward")
        ingest(
            store.open_project("private ward", create=False),
            [UploadedFile("a.png", _png_with_text(), "x")],
            "labeled",
        )
        modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}
        assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    finally:
        os.umask(previous)


def _old_layout_project(name: str):
    """A project database as every release before schema versions wrote it (user_version 0)."""
    import sqlite3

    folder = store.project_folder(name)
    (folder / "images").mkdir(parents=True)
    db = sqlite3.connect(folder / "project.sqlite")
    db.executescript(store.SCHEMA)
    db.execute(
        "INSERT INTO images (sha256, name, role, label, file, added_at) "
        "VALUES ('s', 'a.png', 'labeled', 'x', 's.png', 0)"
    )
    db.execute(
        "INSERT INTO decisions (image_id, action, label, session, decided_at) VALUES (1, 'accept', 'x', 'r', 0)"
    )
    db.commit()
    return db


@pytest.mark.parametrize("version", [0, 1])  # before versions were recorded; before named users
def test_a_project_of_an_older_layout_is_migrated_and_keeps_everything(version):
    db = _old_layout_project("old")
    for step in range(1, version + 1):
        db.execute(store.MIGRATIONS[step])
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    project = store.open_project("old", create=False, user="alice")
    assert project.db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    indexes = {r[0] for r in project.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "decisions_by_image" in indexes
    assert project.current_decisions() == {1: ("accept", "x")} and project.image(1).name == "a.png"
    project.decide(1, "correct", "y", session="s")  # the old decision has no user; a new one has
    trail = [(t["user"], t["action"], t["label"], t["session"]) for t in project.audit_trail()]
    assert trail == [(None, "accept", "x", "r"), ("alice", "correct", "y", "s")]


def test_a_project_from_a_newer_version_is_refused_with_a_message():
    db = _old_layout_project("future")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(store.StorageError, match="newer version"):
        store.open_project("future", create=False)


def test_an_image_file_is_on_disk_before_its_row_commits(project, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd)
    )
    project.add_image(_png_with_text(), "a.png", "labeled", "x")
    assert any(p.endswith(".png.part") for p in synced)  # the file, before it is renamed
    assert str(project.images_dir) in synced  # and the folder holding the new name


def test_a_cache_that_cannot_be_written_is_a_message(tmp_path, monkeypatch):
    import sqlite3

    from mssl_core.labeling.embedding_cache import CacheError, EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache.sqlite")

    class FullDisk:
        def __enter__(self):
            raise sqlite3.OperationalError("database or disk is full")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cache, "db", FullDisk())
    with pytest.raises(CacheError, match="disk is full.*nothing you decided"):
        cache.put_many("m", {"h": np.zeros(3)})


def test_a_rerun_reads_no_stored_file_and_writes_no_unchanged_prediction(project, tmp_path, monkeypatch):
    from mssl_core.labeling.adapt import model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.project import pseudo_label
    from mssl_core.project.ingest import load_demo

    load_demo(project)
    model, cache = model_for("protonet", "conv4"), EmbeddingCache(tmp_path / "cache.sqlite")
    first = pseudo_label.pseudo_label_project(project, model, cache)
    monkeypatch.setattr(pseudo_label, "embed_files", lambda *a, **k: pytest.fail("files read again"))
    writes = []
    monkeypatch.setattr(type(project), "save_predictions", lambda self, rows, method: writes.append(rows))
    again = pseudo_label.pseudo_label_project(project, model, cache)
    assert writes == [] and again.prediction.labels == first.prediction.labels


def test_labeling_goes_on_and_says_so_when_the_cache_cannot_be_written(shape_folders, tmp_path, monkeypatch):
    from mssl_core.labeling.embedding_cache import CacheError, EmbeddingCache
    from mssl_core.labeling.folders import label_folders

    def full(self, model, vectors):
        raise CacheError("Could not save embeddings to the cache: database or disk is full.")

    monkeypatch.setattr(EmbeddingCache, "put_many", full)
    said = []
    support, unlabeled, truth = shape_folders
    result = label_folders(
        support, unlabeled, "protonet", "conv4", log=said.append, cache=EmbeddingCache(tmp_path / "c.sqlite")
    )
    assert sum(1 for row in result.rows if row.label) == len(truth)
    assert any("disk is full" in line for line in said)


def test_a_zip_is_unpacked_to_disk_a_member_at_a_time_never_into_memory(project, tmp_path):
    """32 MB of images in a 2 MB zip: before, the upload and every unpacked member were held in
    memory at once (peak above 32 MB); now the peak stays a few chunks."""
    import tracemalloc

    from mssl_core.project.ingest import ingest_uploads

    rng = np.random.default_rng(0)
    path = tmp_path / "batch.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(16):  # sparse noise: 2 MB bitmaps that deflate 16:1, below the bomb ratio
            buffer = io.BytesIO()
            Image.fromarray((rng.random((1024, 2048)) < 0.05).astype(np.uint8) * 255).save(buffer, "BMP")
            archive.writestr(f"batch/{i}.bmp", buffer.getvalue())
    unpacked = sum(member.file_size for member in zipfile.ZipFile(path).infolist())
    tracemalloc.start()
    try:
        with path.open("rb") as upload:
            report = ingest_uploads(project, [("batch.zip", upload)], "unlabeled")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.added == 16 and not report.problems
    assert unpacked > 32_000_000 and peak < 8_000_000, peak
    assert not list(store.data_dir().glob("upload-*"))  # the temporary copies are gone


def test_the_upload_page_states_the_size_limits(project):
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["project"] = project.name
    app.run()
    app.switch_page("views/upload.py").run()
    captions = " ".join(c.value for c in app.caption)
    assert "up to 1,024 MB" in captions and "4 GB once unpacked" in captions
