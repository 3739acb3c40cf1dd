import pytest

from mssl_core import store


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
    assert [i.name for i in project.images("unlabeled")] == ["a.png"]


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
