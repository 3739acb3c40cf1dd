import pytest

from mssl_core.project import store


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))


def test_images_are_deduplicated_by_content_per_role():
    project = store.open_project("Skin lesions (pilot)")
    first, new = project.add_image(b"abc", "a.png", "unlabeled")
    again, new_again = project.add_image(b"abc", "copy of a.png", "unlabeled")
    as_labeled, new_labeled = project.add_image(b"abc", "a.png", "labeled", label="nevus")
    assert new and not new_again and new_labeled
    assert again.id == first.id and as_labeled.id != first.id
    assert first.path.read_bytes() == b"abc"
    assert [i.name for i in project.images("labeled")] == ["a.png"]
    assert project.images("unlabeled") == []  # a labeled image is no longer part of the batch


def test_decisions_survive_reopening_and_form_an_audit_trail():
    project = store.open_project("p")
    image, _ = project.add_image(b"x", "x.png", "unlabeled")
    project.decide(image.id, "accept", "cat", session="tab-1")
    project.decide(image.id, "correct", "dog", session="tab-2")
    project.close()
    reopened = store.open_project("p", create=False)
    assert reopened.current_decisions() == {image.id: ("correct", "dog")}
    trail = reopened.audit_trail()
    assert [(t["action"], t["label"], t["session"]) for t in trail] == [
        ("accept", "cat", "tab-1"),
        ("correct", "dog", "tab-2"),
    ]
    reopened.decide(image.id, "undo")
    assert reopened.current_decisions() == {}


def test_accept_needs_a_label_and_an_existing_image():
    project = store.open_project("p")
    image, _ = project.add_image(b"x", "x.png", "unlabeled")
    with pytest.raises(ValueError, match="needs a label"):
        project.decide(image.id, "accept")
    with pytest.raises(KeyError):
        project.decide(999, "skip")


def test_list_open_and_delete_projects():
    store.open_project("Alpha").close()
    store.open_project("beta").close()
    assert store.list_projects() == ["alpha", "beta"]
    with pytest.raises(FileNotFoundError, match="gamma"):
        store.open_project("gamma", create=False)
    store.delete_project("Alpha")
    assert store.list_projects() == ["beta"]
    with pytest.raises(ValueError, match="no letters"):
        store.slugify("  ***  ")


def _project_with_a_decision():
    project = store.open_project("full")
    image, _ = project.add_image(b"\x89PNG fake bytes", "a.png", "unlabeled")
    project.decide(image.id, "accept", "cat")
    return project, image


def test_a_full_disk_is_reported_and_the_saved_state_survives():
    project, image = _project_with_a_decision()
    pages = project.db.execute("PRAGMA page_count").fetchone()[0]
    project.db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk full"
    with pytest.raises(store.StorageError, match="Could not save .* is full.*Nothing was lost"):
        for _ in range(2000):
            project.decide(image.id, "correct", "dog" * 100)
    project.close()
    reopened = store.open_project("full", create=False)
    assert reopened.current_decisions()[image.id][0] in ("accept", "correct")
    assert reopened.audit_trail()[0]["label"] == "cat"


def test_a_read_only_project_is_reported_and_nothing_changes():
    project, image = _project_with_a_decision()
    project.db.execute("PRAGMA query_only = ON")  # as a read-only folder or mount behaves
    with pytest.raises(store.StorageError, match="read-only"):
        project.decide(image.id, "skip")
    with pytest.raises(store.StorageError, match="read-only"):
        project.set_setting("method", "protonet")
    assert project.current_decisions() == {image.id: ("accept", "cat")}


def test_an_image_that_cannot_be_written_leaves_no_partial_file_or_row(monkeypatch):
    project, _ = _project_with_a_decision()

    def no_space(path, data):
        path.write_bytes(data[:3])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_write_durably", no_space)
    with pytest.raises(store.StorageError, match="Could not save image b.png: the disk .* is full"):
        project.add_image(b"other bytes", "b.png", "unlabeled")
    assert [i.name for i in project.images()] == ["a.png"]
    assert not list(project.images_dir.glob("*.part"))


def test_deleting_a_project_removes_its_files_rows_and_unshared_embeddings(tmp_path):
    import numpy as np

    from mssl_core.labeling.embedding_cache import EmbeddingCache

    doomed, keeper = store.open_project("doomed"), store.open_project("keeper")
    mine, _ = doomed.add_image(b"only in doomed", "a.png", "unlabeled")
    shared, _ = doomed.add_image(b"in both", "b.png", "labeled", "cat")
    keeper.add_image(b"in both", "b.png", "unlabeled")
    doomed.decide(mine.id, "skip")
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    cache.put_many("conv4:x", {mine.sha256: np.ones(4), shared.sha256: np.zeros(4)})
    folder = doomed.folder
    doomed.close()
    store.delete_project("doomed", embeddings=cache)
    assert not folder.exists() and store.list_projects() == ["keeper"]
    assert set(cache.get_many("conv4:x", [mine.sha256, shared.sha256])) == {shared.sha256}
    assert [i.name for i in keeper.images()] == ["b.png"]


def test_a_labeled_example_relabeled_or_confirmed_is_in_the_audit_trail_and_not_flagged_again(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path))
    project = store.open_project("relabel")
    image, _ = project.add_image(b"\x89PNG one", "a.png", "labeled", "cat")
    other, _ = project.add_image(b"\x89PNG two", "b.png", "labeled", "dog")
    project.relabel(image.id, "dog", session="s1")
    project.relabel(other.id, "dog", session="s1")  # kept as it was
    reopened = store.open_project("relabel", create=False)
    assert reopened.image(image.id).label == "dog"
    assert reopened.confirmed_labels() == {image.id, other.id}
    trail = [(t["image"], t["action"], t["label"]) for t in reopened.audit_trail()]
    assert trail == [("a.png", "relabel", "dog"), ("b.png", "relabel", "dog")]
    with pytest.raises(ValueError, match="not a labeled image"):
        unlabeled, _ = reopened.add_image(b"\x89PNG three", "c.png", "unlabeled")
        reopened.relabel(unlabeled.id, "cat")


def test_decide_many_accepts_or_corrects_each_image_in_one_transaction():
    project = store.open_project("bulk")
    images = [project.add_image(bytes([i]), f"{i}.png", "unlabeled")[0] for i in range(4)]
    predicted = {image.id: "cat" for image in images}
    project.decide_many({images[0].id: "cat", images[1].id: "dog"}, predicted, session="explore")
    assert project.current_decisions() == {images[0].id: ("accept", "cat"), images[1].id: ("correct", "dog")}

    pages = project.db.execute("PRAGMA page_count").fetchone()[0]
    project.db.execute(f"PRAGMA max_page_count = {pages}")  # full before the last row is written
    many = {image.id: "bird" * 2000 for image in images[2:]}
    with pytest.raises(store.StorageError):
        project.decide_many(many, predicted)
    assert set(project.current_decisions()) == {images[0].id, images[1].id}  # all or nothing
