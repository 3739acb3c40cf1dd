"""The labeling flow page by page in AppTest: demo upload -> pseudo-label -> review -> export."""

import re
import sys

import pytest
from streamlit.testing.v1 import AppTest

from mssl_core.engine.data.paths import ASSETS_DIR, REPO_ROOT
from mssl_core.labeling import label_issues
from mssl_core.project import store

APP = str(REPO_ROOT / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
    store.open_project("demo").close()
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["project"] = "demo"
    app.run()
    return app


def _button(app, label_start: str):
    return next(b for b in app.button if b.label.startswith(label_start))


def _demo_on_the_review_page(app) -> None:
    """The demo loaded, pseudo-labeled with the default model, and the Review page shown."""
    app.switch_page("views/upload.py").run()
    _button(app, "Load demo data").click().run()
    app.switch_page("views/pseudo_label.py").run()
    _button(app, "Pseudo-label").click().run()
    app.switch_page("views/review.py").run()


@pytest.mark.usefixtures("refuse_outbound")  # a full session, every byte stays on the machine
def test_demo_pseudo_label_review_and_export(app):
    app.switch_page("views/upload.py").run()
    _button(app, "Load demo data").click().run()
    assert not app.exception
    project = store.open_project("demo", create=False)
    assert len(project.images("labeled")) == 25 and len(project.images("unlabeled")) == 300

    app.switch_page("views/pseudo_label.py").run()
    app.selectbox[0].set_value("conv4").run()
    _button(app, "Pseudo-label").click().run()
    assert not app.exception
    assert "Pseudo-labeled 300 images" in app.success[0].value
    assert len(project.predictions()) == 300
    measured = next(m.value for m in app.markdown if "Demo images come with" in m.value)
    assert int(measured.split("**")[1].rstrip("%")) > 50  # five classes: chance is 20%

    app.switch_page("views/review.py").run()
    assert not app.exception
    first_accept = next(b for b in app.button if b.label in ("Accept", "Correct"))
    first_accept.click().run()
    assert len(project.current_decisions()) == 1
    # what the model showed is kept with the decision: it checks the confidence of the rest
    ((label, shown),) = project.reviewed_one_by_one()
    assert max(shown, key=shown.get) == label and sum(shown.values()) == pytest.approx(1, abs=1e-4)
    assert len(shown) == 5

    app.slider[0].set_value(0.9).run()
    bulk = next(b for b in app.button if re.fullmatch(r"Accept \d+ images", b.label))
    expected = int(bulk.label.split()[1])
    bulk.click().run()
    decisions = project.current_decisions()
    assert len(decisions) == 1 + expected
    assert len(project.reviewed_one_by_one()) == 1  # images accepted unseen check nothing
    assert all(action in ("accept", "correct") for action, _ in decisions.values())

    app.switch_page("views/explore.py").run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 2  # the map and the confidence histogram

    app.switch_page("views/export.py").run()
    assert not app.exception
    assert f"**{25 + len(decisions)} images**" in app.markdown[0].value


@pytest.mark.usefixtures("refuse_outbound")
def test_upload_files_with_a_labels_csv_and_a_broken_file(app):
    app.switch_page("views/upload.py").run()
    demo = ASSETS_DIR / "demo" / "labeled"
    files = [p for p in sorted(demo.rglob("*.png")) if p.parent.name in ("bag", "dress")][:6]
    uploads = [(f"{p.parent.name}-{p.name}", p.read_bytes(), "image/png") for p in files]
    uploads.append(("scan.png", b"<html>not an image</html>", "image/png"))
    app.get("file_uploader")[0].set_value(uploads).run()
    labels = "file,label\n" + "".join(f"{name},{name.split('-')[0]}\n" for name, _, _ in uploads[:-1])
    app.get("file_uploader")[1].set_value(("labels.csv", labels.encode(), "text/csv")).run()
    _button(app, "Add labeled images").click().run()
    assert not app.exception
    project = store.open_project("demo", create=False)
    assert sorted({i.label for i in project.images("labeled")}) == ["bag", "dress"]
    assert len(project.images("labeled")) == 6
    assert any("scan\\.png" in e.value and "not an image" in e.value for e in app.error)  # markdown-escaped


def test_model_page_shows_cards():
    app = AppTest.from_file(APP, default_timeout=60).run()
    app.switch_page("views/model.py").run()
    assert not app.exception
    assert "Recommended method" in app.info[0].value
    # the review curves, from docs/review-curves.json, on the demo by default
    from mssl_core.benchmarks.simulate import load_curves

    demo = next(row for row in load_curves() if row["task"] == "demo" and row["order"] == "app")
    said = next(m.value for m in app.markdown if "99% right, review about" in m.value)
    assert f"review about **{demo['to_99']}** of them" in said


def test_decided_images_count_once_as_support_not_again_as_unlabeled(tmp_path, monkeypatch):
    from mssl_core.labeling.adapt import model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.project.ingest import load_demo
    from mssl_core.project.pseudo_label import pseudo_label_project

    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path))
    project = store.open_project("once")
    load_demo(project)
    model = model_for("softkmeans", "conv4")
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    fitted = []
    method_class = type(model.method)  # adapt() fits a private copy of the shared method
    original_fit = method_class.fit
    monkeypatch.setattr(
        method_class,
        "fit",
        lambda self, s, y, u=None: fitted.append((len(s), len(u))) or original_fit(self, s, y, u),
    )
    first = pseudo_label_project(project, model, cache)
    project.decide(first.images[0].id, "correct", "bag")
    fitted.clear()
    second = pseudo_label_project(project, model, cache)
    assert fitted[-1] == (26, 299)  # the corrected image moved from the unlabeled batch to support
    assert len(second.prediction.labels) == 300  # yet every unlabeled image is still predicted


def test_a_decision_that_cannot_be_saved_is_reported_not_a_traceback(app, monkeypatch):
    app.switch_page("views/upload.py").run()
    _button(app, "Load demo data").click().run()
    app.switch_page("views/pseudo_label.py").run()
    app.selectbox[0].set_value("conv4").run()
    _button(app, "Pseudo-label").click().run()
    app.switch_page("views/review.py").run()

    def disk_full(self, *args, **kwargs):
        # the class as the app imports it now (Streamlit may reload the app's modules)
        error = sys.modules["mssl_core.project.store"].StorageError
        raise error("Could not save the decision on image 1: the disk holding data is full.")

    monkeypatch.setattr(store.LabelingProject, "decide", disk_full)
    next(b for b in app.button if b.label in ("Accept", "Correct")).click().run()
    assert not app.exception
    assert any("disk holding data is full" in e.value for e in app.error)


def test_deleting_the_project_from_the_upload_page(app):
    app.switch_page("views/upload.py").run()
    _button(app, "Load demo data").click().run()
    delete = _button(app, "Delete project")
    assert delete.disabled  # only after the confirmation box is ticked
    next(c for c in app.checkbox if c.label.startswith("Yes, delete")).check().run()
    _button(app, "Delete project").click().run()
    assert not app.exception
    assert store.list_projects() == []
    assert "project" not in app.session_state


def test_with_one_labeled_image_in_a_class_the_page_says_confidence_was_not_checked(app):
    from mssl_core.labeling.images import list_files
    from mssl_core.project.ingest import DEMO_DIR, UploadedFile, ingest

    project = store.open_project("demo", create=False)
    first_per_class = {p.parent.name: p for p in reversed(list_files(DEMO_DIR / "labeled"))}
    ingest(project, [UploadedFile(p.name, p.read_bytes(), c) for c, p in first_per_class.items()], "labeled")
    unlabeled = list_files(DEMO_DIR / "unlabeled")[:20]
    ingest(project, [UploadedFile(p.name, p.read_bytes()) for p in unlabeled], "unlabeled")
    app.switch_page("views/pseudo_label.py").run()
    _button(app, "Pseudo-label").click().run()
    assert not app.exception
    assert "Pseudo-labeled 20 images" in app.success[0].value
    assert any("all of them combined" in c.value for c in app.caption)
    assert any("could not be checked on your own images" in w.value for w in app.warning)
    app.switch_page("views/review.py").run()
    assert not app.exception
    app.slider[0].set_value(0.5).run()  # one-shot confidence runs low: make the slider accept some
    summary = next(m.value for m in app.markdown if m.value.startswith("Accepts "))
    assert "precision not estimated" in summary and "expected precision" not in summary


def test_review_says_how_many_errors_the_rest_holds_and_offers_to_stop(app):
    import numpy as np

    from mssl_core.project.review import likely_most_errors

    _demo_on_the_review_page(app)
    assert not app.exception
    project = store.open_project("demo", create=False)
    confidence = np.array([c for _, c in project.predictions().values()])
    errors, precision = float((1 - confidence).sum()), float(confidence.mean())
    said = next(m.value for m in app.markdown if "expected among the 300 images not yet reviewed" in m.value)
    assert f"**{errors:.0f} wrong label" in said and f"{precision:.1%}" in said
    assert f"likely no more than {likely_most_errors(errors, 300)} " in said
    app.select_slider[0].set_value(0.9).run()
    if precision >= 0.9:
        _button(app, "Accept the remaining 300").click().run()
        assert len(project.current_decisions()) == 300
    else:
        assert any("Keep reviewing" in c.value for c in app.caption)


def test_accepting_above_a_threshold_says_how_many_wrong_labels_it_likely_takes_in(app):
    import numpy as np

    from mssl_core.project.review import ACCEPTED_ERROR_RATIO_90, likely_most_errors

    _demo_on_the_review_page(app)
    project = store.open_project("demo", create=False)
    confidence = np.array([c for _, c in project.predictions().values()])
    above = confidence[confidence >= 0.95]  # the slider's default
    wrong = float((1 - above).sum())
    summary = next(m.value for m in app.markdown if m.value.startswith("Accepts "))
    assert f"Accepts **{len(above)}** images, expected precision {above.mean():.1%}" in summary
    most = likely_most_errors(wrong, len(above), ACCEPTED_ERROR_RATIO_90)
    assert f"no more than {most} wrong" in summary and most > wrong


def test_review_says_when_the_decisions_have_checked_the_confidence(app):
    import time

    _demo_on_the_review_page(app)
    assert not any("one-by-one decision" in c.value for c in app.caption)
    for _ in range(2):
        _button(app, "Accept '").click().run()  # the focus image, as the A key does
    # the rest re-adapts in the background; a later run of the page shows both decisions
    for _ in range(60):
        said = [c.value for c in app.caption if "your 2 one-by-one decisions" in c.value]
        if said:
            break
        time.sleep(0.5)
        app.run()
    assert said and said[0].startswith("Checked against your 2 one-by-one decisions: they found ")
    assert len(store.open_project("demo", create=False).reviewed_one_by_one()) == 2


def test_review_shows_every_class_button_with_its_full_name(tmp_path, monkeypatch):
    """Twelve classes with long clinical names: each has its own button, the name whole (the
    five-class demo truncated 'grass' and 'gravel' alike to 'gr…'), keys 1-9 on the first nine."""
    import io

    import numpy as np

    from mssl_core.labeling.adapt import model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.project.pseudo_label import pseudo_label_project
    from tests.conftest import draw_shape

    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
    classes = [f"Grade {i} adenocarcinoma, poorly differentiated, with necrosis" for i in range(12)]
    project = store.open_project("long names")
    rng = np.random.default_rng(0)
    for number, name in enumerate(classes):
        for role in ("labeled", "labeled", "unlabeled"):
            picture = io.BytesIO()
            draw_shape(("circle", "square", "cross")[number % 3], rng).save(picture, format="PNG")
            project.add_image(
                picture.getvalue(),
                f"{number}-{rng.integers(1e9)}.png",
                role,
                name if role == "labeled" else None,
            )
    project.set_setting("backbone", "conv4")
    pseudo_label_project(project, model_for("softkmeans", "conv4"), EmbeddingCache(tmp_path / "e.sqlite"))

    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["project"] = "long names"
    app.run()
    app.switch_page("views/review.py").run()
    assert not app.exception
    labels = [b.label for b in app.button]
    for number, name in enumerate(sorted(classes), 1):
        expected = f"{number} · {name}" if number <= 9 else name
        assert any(label.replace("\\", "") == expected for label in labels), expected


def _review_the_demo_with_a_slip(app):
    """The demo with a bag filed under 'trouser' among its labeled examples, pseudo-labeled
    (Conv-4, fast) and shown on the Review page: the project and the mislabeled image."""
    app.switch_page("views/upload.py").run()
    _button(app, "Load demo data").click().run()
    project = store.open_project("demo", create=False)
    slip = next(image for image in project.images("labeled") if image.label == "bag")
    project.db.execute("UPDATE images SET label = 'trouser' WHERE id = ?", (slip.id,))
    project.db.commit()
    app.switch_page("views/pseudo_label.py").run()
    app.selectbox[0].set_value("conv4").run()
    _button(app, "Pseudo-label").click().run()
    app.switch_page("views/review.py").run()
    assert not app.exception
    return project, slip


def test_a_labeled_example_in_the_wrong_class_is_flagged_and_fixed_in_one_click(app, monkeypatch):
    """Review names the mislabeled image with the likelier class and how sure the held-out
    prediction is, and says when the check is weak evidence; one click relabels it, saved and
    not flagged again."""
    project, slip = _review_the_demo_with_a_slip(app)
    said = next(m.value for m in app.markdown if "labeled **trouser**" in m.value)
    assert slip.name.split(".")[0] in said.replace("\\", "") and "looks like **bag**" in said
    assert re.search(r"\(\d+% when predicted from the others\)", said)
    assert not said.startswith("**Likely mislabeled.**")  # held out, not much surer than the other flags
    for weak_below, shown in ((0.0, False), (1.01, True)):  # the check trusted, then not
        monkeypatch.setattr(label_issues, "WEAK_CHECK_BELOW", weak_below)
        app.run()
        assert any("Weak evidence" in c.value for c in app.caption) == shown
    weak = next(c.value for c in app.caption if "Weak evidence" in c.value)
    assert re.search(r"only \d+% of your labeled examples", weak)
    _button(app, "Relabel as bag").click().run()
    assert not app.exception
    assert project.image(slip.id).label == "bag"
    assert not any(b.label.startswith("Relabel as") and b.key == f"relabel-{slip.id}" for b in app.button)


def test_a_likely_slip_is_marked_and_not_called_weak_evidence(app, monkeypatch):
    """A flag that a slip explains better than its image is marked likely mislabeled, and the
    weak-evidence note, which speaks of the other flags, is not shown for it."""
    monkeypatch.setattr(label_issues, "SLIP_RATE", 0.9)  # a prior under which every flag is a likely slip
    monkeypatch.setattr(label_issues, "WEAK_CHECK_BELOW", 1.01)
    _review_the_demo_with_a_slip(app)
    said = next(m.value for m in app.markdown if "labeled **trouser**" in m.value)
    assert said.startswith("**Likely mislabeled.**") and "looks like **bag**" in said
    assert not any("Weak evidence" in c.value for c in app.caption)


def test_try_the_demo_is_one_click_from_the_landing_page(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception and app.title[0].value == "MSSL Label Assist"
    _button(app, "Try the demo").click().run()
    assert not app.exception
    assert app.title[0].value == "Pseudo-label" and app.session_state["project"] == "demo"
    project = store.open_project("demo", create=False)
    assert len(project.images("labeled")) == 25 and len(project.images("unlabeled")) == 300
    # again (another visit): the same project, nothing added twice
    _button(AppTest.from_file(APP, default_timeout=120).run(), "Try the demo").click().run()
    assert len(project.images("unlabeled")) == 300
